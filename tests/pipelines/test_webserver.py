"""The code location served by a real `dagster-webserver`: the UI's GraphQL API lists the jobs,
schedules, sensors and asset checks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
QUERY = """
{
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes {
        name
        location { name }
        jobs { name }
        schedules { name cronSchedule }
        sensors { name }
        assetNodes { assetKey { path } assetChecksOrError { ... on AssetChecks {
          checks { name } } } }
      }
    }
    ... on PythonError { message }
  }
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def webserver(tmp_path: Path) -> Iterator[str]:
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "CHARGEBACK_HOME": str(tmp_path)}
    log = (tmp_path / "webserver.log").open("wb")
    # Its own session, so the code server it spawns goes down with it.
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-webserver")), "-m", "pipelines.definitions",
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                pytest.fail(f"dagster-webserver exited with {server.returncode}:\n"
                            + (tmp_path / "webserver.log").read_text()[-3000:])
            try:
                if requests.get(f"{url}/server_info", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("dagster-webserver did not answer /server_info within 90 s:\n"
                            + (tmp_path / "webserver.log").read_text()[-3000:])
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.mark.slow
def test_webserver_serves_the_code_location(webserver: str) -> None:
    info = requests.get(f"{webserver}/server_info", timeout=10).json()
    assert "dagster_webserver_version" in info

    answer: dict[str, Any] = requests.post(f"{webserver}/graphql", json={"query": QUERY},
                                           timeout=60).json()

    assert "errors" not in answer, answer
    (repository,) = answer["data"]["repositoriesOrError"]["nodes"]
    assert repository["location"]["name"] == "pipelines.definitions"
    jobs = {j["name"] for j in repository["jobs"]}
    assert {"daily_usage_job", "monthly_billing_job"} <= jobs
    schedules = {s["name"]: s["cronSchedule"] for s in repository["schedules"]}
    assert schedules["monthly_close"] == "0 6 1 * *"
    assert {"hourly_ingest", "daily_aggregation"} <= set(schedules)
    assert {"late_spool_files", "rebill_after_ingest"} <= {s["name"]
                                                           for s in repository["sensors"]}
    checks = {
        "/".join(node["assetKey"]["path"]): {c["name"] for c in
                                             node["assetChecksOrError"].get("checks", [])}
        for node in repository["assetNodes"]
    }
    assert "gpu_seconds_conserved" in checks["gpu_usage_ledger"]
    assert "invoice_total_equals_lines" in checks["invoices"]
