"""`chargeback metrics serve` scraped by a real Prometheus: the budget gauges of the latest
analysed day come back through the Prometheus query API, equal to the `budgets.prom` textfile
that the same renderer writes; the warehouse is opened per scrape only."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import requests
from click.testing import CliRunner

from cli.main import main
from models.ledger import warehouse
from pipelines.analytics.budgets import tenant_budgets
from pipelines.analytics.forecast import tenant_forecasts
from tests.pipelines.test_budgets import DAY, materialize, resources, tenants_yaml, write_usage
from tests.prometheus_server import (
    free_port,
    parse_exposition,
    prometheus_with_history,
    require_prometheus,
)

ROOT = Path(__file__).resolve().parents[2]


def wait_for(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"chargeback metrics serve exited with {server.returncode}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not answering after 30 s")


def query(prometheus: str, promql: str) -> list[dict[str, object]]:
    answer = requests.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5)
    answer.raise_for_status()
    result: list[dict[str, object]] = answer.json()["data"]["result"]
    return result


@pytest.mark.slow
def test_a_real_prometheus_scrapes_the_budgets_from_the_warehouse(tmp_path: Path) -> None:
    require_prometheus()
    db = tmp_path / "warehouse.duckdb"
    write_usage(db, DAY)
    (tmp_path / "tenants.yaml").write_text(tenants_yaml(acme_dry_run=False))
    # No cluster: acme's hold is written as a manifest, which then stands for what is in force.
    assert materialize([tenant_forecasts, tenant_budgets], DAY, resources(tmp_path, None)).success
    textfile = tmp_path / "exports" / "metrics" / "budgets.prom"

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/metrics"
    server = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "metrics", "serve", "--port", str(port),
         "--bind", "127.0.0.1", "--warehouse", str(db)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for(endpoint, server)
        page = requests.get(endpoint, timeout=5)
        assert page.status_code == 200
        assert page.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        served = tmp_path / "served.prom"
        served.write_text(page.text)
        assert page.text == textfile.read_text()  # one renderer for both
        samples = {(n, tuple(sorted(labels.items()))): v
                   for n, labels, v in parse_exposition(served)}
        assert samples[("chargeback_budget_spent", (
            ("currency", ""), ("period", "2026-10"), ("tenant", "acme"),
            ("unit", "gpu_hours")))] == 1008.0
        assert samples[("chargeback_budget_spent", (
            ("currency", "USD"), ("period", "2026-10"), ("tenant", "zen"),
            ("unit", "amount")))] == 11290.32

        # No lock is held between scrapes: a writer can open the warehouse, and while it
        # holds it a scrape fails loudly (503 naming the holder) rather than reading as empty.
        con = warehouse.connect(db)
        try:
            busy = requests.get(endpoint, timeout=5)
        finally:
            con.close()
        assert busy.status_code == 503
        assert "in use by another process" in busy.text
        assert requests.get(f"http://127.0.0.1:{port}/other", timeout=5).status_code == 404

        scrape = {"job_name": "budgets", "scrape_interval": "1s", "scrape_timeout": "1s",
                  "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
        with prometheus_with_history("", tmp_path / "prometheus",
                                     scrape_configs=[scrape]) as prometheus:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not query(
                    prometheus, 'up{job="budgets"} == 1 and on() '
                    'count(chargeback_budget_used_ratio) > 0'):
                time.sleep(0.5)

            def value(promql: str) -> float:
                (sample,) = query(prometheus, promql)
                return float(sample["value"][1])  # type: ignore[index]

            assert value('chargeback_budget_used_ratio{tenant="acme",period="2026-10"}') == (
                1.008)
            assert value('chargeback_budget_used_ratio{tenant="zen"}') == pytest.approx(
                11290.32 / 14000)
            assert value('chargeback_budget_limit{tenant="acme",unit="gpu_hours"}') == 1000
            assert value('chargeback_budget_queue_held{tenant="acme",kind="ClusterQueue",'
                         'name="acme"}') == 1
            crossed = query(prometheus, 'chargeback_budget_threshold_crossed{tenant="acme"}')
            assert sorted((s["metric"]["basis"], s["metric"]["threshold_pct"])  # type: ignore[index]
                          for s in crossed) == [("actual", "100"), ("actual", "50"),
                                                ("actual", "80"), ("forecast", "100")]
            scenarios = query(prometheus, 'chargeback_budget_forecast{tenant="acme"}')
            by = {s["metric"]["scenario"]: float(s["value"][1])  # type: ignore[index]
                  for s in scenarios}
            assert set(by) == {"point", "lo80", "hi80", "lo95", "hi95"}
            assert by["lo95"] <= by["lo80"] <= by["point"] <= by["hi80"] <= by["hi95"]
            assert by["point"] >= 1008  # the month's total holds what is already spent
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_serve_refuses_a_missing_warehouse_with_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["metrics", "serve", "--port", "0",
                                       "--warehouse", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 2
    assert "no warehouse at" in result.output


def test_serve_refuses_a_duckdb_file_without_budget_tables_with_exit_2(tmp_path: Path) -> None:
    # A valid DuckDB file that is not a warehouse: read-only, the schema cannot be declared.
    db = tmp_path / "other.duckdb"
    duckdb.connect(str(db)).close()
    result = CliRunner().invoke(main, ["metrics", "serve", "--port", "0", "--warehouse", str(db)])
    assert result.exit_code == 2, result.output
    assert f"{db} has no budget tables" in result.output
    assert "tenant_budgets" in result.output
    assert "internal error" not in result.output
    assert "Traceback" not in result.output


def test_serve_stops_on_sigterm_even_when_started_with_it_ignored(tmp_path: Path) -> None:
    # A shell's background job starts with SIGINT ignored, and Dagster maps SIGTERM to SIGINT's
    # handler, so the server could inherit an ignored SIGTERM and outlive every stop request.
    db = tmp_path / "warehouse.duckdb"
    write_usage(db, DAY)
    port = free_port()

    def ignore_stop_signals() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    server = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "metrics", "serve", "--port", str(port),
         "--bind", "127.0.0.1", "--warehouse", str(db)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=ignore_stop_signals)
    try:
        wait_for(f"http://127.0.0.1:{port}/metrics", server)
        server.terminate()
        assert server.wait(timeout=10) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
