"""Delivery of budget alerts to a Prometheus Alertmanager through its v2 API
(`POST /api/v2/alerts`, a list of postableAlerts; 200 when accepted).

Alertmanager itself groups, deduplicates by labels, silences and routes to receivers; what it
cannot know is that an alert was already sent on an earlier run, so the caller records each one
sent (warehouse `budget_alerts`) and never posts it again."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import requests

from models.errors import TransientError, UserError

TIMEOUT_S = 10


class AlertmanagerUnavailable(TransientError):
    """Alertmanager did not take the alerts (unreachable, 5xx): the next run sends them."""


def post_alerts(url: str, alerts: Sequence[dict[str, Any]]) -> None:
    """Post `alerts` (postableAlerts) to the Alertmanager at `url` (its base URL)."""
    if not url.startswith(("http://", "https://")):
        raise UserError(f"Alertmanager URL must start with http:// or https://, got {url!r}")
    endpoint = f"{url.rstrip('/')}/api/v2/alerts"
    try:
        answer = requests.post(endpoint, json=list(alerts), timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        raise AlertmanagerUnavailable(f"Alertmanager {endpoint}: {exc}") from exc
    if answer.status_code >= 500:
        raise AlertmanagerUnavailable(
            f"Alertmanager {endpoint}: HTTP {answer.status_code}: {answer.text[:300]}")
    if answer.status_code != 200:
        # 400: the alerts are malformed, which no retry mends.
        raise ValueError(f"Alertmanager {endpoint} refused the alerts: HTTP "
                         f"{answer.status_code}: {answer.text[:300]}")
