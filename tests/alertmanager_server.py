"""A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`) for the tests: on
127.0.0.1 at a free port, clustering off, with its own config and data dir; stopped afterwards."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.prometheus_server import _stop, _wait_ready, free_port

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@contextmanager
def alertmanager(folder: Path) -> Iterator[str]:
    """Yield the base URL of a running Alertmanager that routes everything to a receiver
    with no integrations (alerts are kept and listed by its API, and sent nowhere)."""
    if ALERTMANAGER is None:
        pytest.skip("Alertmanager is not installed (Debian's `prometheus-alertmanager` "
                    "package; `make test-system-deps` installs it)")
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "alertmanager.yml"
    config.write_text(yaml.safe_dump({
        "route": {"receiver": "keep", "group_by": ["alertname", "tenant"]},
        "receivers": [{"name": "keep"}],
    }))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = folder / "alertmanager.log"
    log = log_path.open("w")
    server = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={config}", f"--storage.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        _wait_ready(url, server, log_path, "alertmanager")
        yield url
    finally:
        _stop(server.pid, server)
        log.close()


def active_alerts(url: str) -> list[dict[str, Any]]:
    """The alerts Alertmanager holds, through its v2 API."""
    answer = requests.get(f"{url}/api/v2/alerts", timeout=5)
    answer.raise_for_status()
    alerts: list[dict[str, Any]] = answer.json()
    return alerts
