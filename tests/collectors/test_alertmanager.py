"""Posting alerts to a real Alertmanager: accepted alerts are listed by its API; one it refuses
is an error no retry mends; an unreachable one is transient (the run retries)."""

import pytest

from collectors.alertmanager import AlertmanagerUnavailable, post_alerts
from models.errors import TransientError, UserError
from tests.alertmanager_server import active_alerts, alertmanager
from tests.prometheus_server import free_port


def test_accepted_refused_and_unreachable(tmp_path):
    with alertmanager(tmp_path / "am") as url:
        post_alerts(url, [{"labels": {"alertname": "GPUBudgetThresholdCrossed",
                                      "tenant": "acme"},
                           "annotations": {"summary": "s"}}])
        assert [a["labels"]["tenant"] for a in active_alerts(url)] == ["acme"]
        with pytest.raises(ValueError, match="refused the alerts: HTTP 400"):
            post_alerts(url, [{"labels": {}}])
    with pytest.raises(AlertmanagerUnavailable) as caught:
        post_alerts(f"http://127.0.0.1:{free_port()}", [{"labels": {"a": "b"}}])
    assert isinstance(caught.value, TransientError)
    with pytest.raises(UserError, match="must start with http"):
        post_alerts("127.0.0.1:9093", [])
