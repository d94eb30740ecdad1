"""`chargeback collect prometheus --once` resolves tenants through the configured namespace map.

A real Prometheus holds the last 30 minutes of real dcgm-exporter scrapes
(tests/fixtures/dcgm/): the A100 without MIG relabelled to one pod in namespace `ml` and one
in `lab`, as dcgm-exporter labels pods sharing a time-sliced GPU, and the idle T4. The agent
reads the window that holds the moment `--delay` ago and writes it to a spool; the test reads
the spool."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cli.collect import collect
from collectors.prometheus import FB_USED, GPU_UTIL, GR_ENGINE_ACTIVE
from models.ledger.usage import IDLE_TENANT, UNATTRIBUTED_TENANT, validate_ledger
from tests.prometheus_server import (
    Series,
    parse_exposition,
    prometheus_with_history,
    to_openmetrics,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dcgm"
SHARED_GPU = "GPU-7099682b-a20d-2bcc-74ab-b9060454d81e"
IDLE_GPU = "GPU-5f587dd4-6505-0873-c6db-8324dbfe5ba9"
PODS = (("ml", "trainer-0"), ("lab", "notebook-0"))
TENANTS_YAML = """\
tenants:
  ml-team:
    plan: growth
    namespaces: [ml]
    start: 2026-01-01
"""


def _first_scrape(name: str) -> list[tuple[str, dict[str, str], float]]:
    seen, kept = set(), []
    for metric, labels, value in parse_exposition(FIXTURES / name):
        key = (metric, labels["UUID"], labels.get("GPU_I_ID", ""))
        if metric in (GR_ENGINE_ACTIVE, GPU_UTIL, FB_USED) and key not in seen:
            seen.add(key)
            kept.append((metric, labels, value))
    return kept


def _recent_history(now: float) -> str:
    times = [now - 1800 + 15 * i for i in range(121)]
    series = []
    for metric, labels, value in _first_scrape("a100_mig_disabled_empty.prom"):
        for namespace, pod in PODS:
            pod_labels = {**labels, "namespace": namespace, "pod": pod, "container": "c"}
            series.append(Series(metric, pod_labels, [(t, value) for t in times]))
    for metric, labels, value in _first_scrape("t4_fractional_1_workload_pod_labels.prom"):
        if labels["UUID"] == IDLE_GPU:
            series.append(Series(metric, labels, [(t, value) for t in times]))
    return to_openmetrics(series, {})


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory):
    # The history ends at `now`; the agent reads the window holding the moment --delay
    # (120 s) before it runs, well inside it.
    now = float(int(time.time()))
    with prometheus_with_history(_recent_history(now),
                                 tmp_path_factory.mktemp("prometheus")) as url:
        yield url


def _collect_once(url: str, spool: Path, *options: str) -> list[dict]:
    result = CliRunner().invoke(collect, [
        "prometheus", "--once", "--spool", str(spool), "--url", url, "--interval", "60",
        "--delay", "120", "--cluster", "qa", "--node", "agent-0", *options,
    ])
    assert result.exit_code == 0, result.output
    files = sorted((spool / "usage").rglob("*.parquet"))
    assert len(files) == 1, result.output
    return pq.read_table(files[0]).to_pylist()


def _tenants(rows: list[dict]) -> dict[tuple[str | None, str | None, str], str]:
    return {(r["namespace"], r["pod"], r["gpu_uuid"]): r["tenant"] for r in rows}


def test_once_with_tenants_file_attributes_mapped_namespaces(prometheus_url, tmp_path):
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(TENANTS_YAML)
    rows = _collect_once(prometheus_url, tmp_path / "spool", "--tenants", str(tenants))
    assert validate_ledger(rows) == []
    assert _tenants(rows) == {
        ("ml", "trainer-0", SHARED_GPU): "ml-team",
        ("lab", "notebook-0", SHARED_GPU): UNATTRIBUTED_TENANT,
        (None, None, IDLE_GPU): IDLE_TENANT,
    }
    (window,) = {r["window_start"] for r in rows}
    age = datetime.now(UTC) - window.replace(tzinfo=UTC)
    # The 60 s window that holds the moment --delay (120 s) ago: it started 120-180 s ago.
    assert 120 < age.total_seconds() < 180 + 30
    # Two pods share the A100: half of its 60 s each.
    assert {r["allocated_gpu_seconds"] for r in rows if r["gpu_uuid"] == SHARED_GPU} == {30.0}


def test_namespace_tenant_pairs_win_over_the_file(prometheus_url, tmp_path):
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(TENANTS_YAML)
    rows = _collect_once(prometheus_url, tmp_path / "spool", "--tenants", str(tenants),
                         "--namespace-tenant", "ml=research", "--namespace-tenant", "lab=lab-bu")
    assert _tenants(rows) == {
        ("ml", "trainer-0", SHARED_GPU): "research",
        ("lab", "notebook-0", SHARED_GPU): "lab-bu",
        (None, None, IDLE_GPU): IDLE_TENANT,
    }


def test_without_a_map_pod_series_stay_unattributed(prometheus_url, tmp_path):
    rows = _collect_once(prometheus_url, tmp_path / "spool")
    assert {t for (_, pod, _), t in _tenants(rows).items() if pod} == {UNATTRIBUTED_TENANT}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--namespace-tenant", "ml"], "expected NAMESPACE=TENANT"),
        (["--namespace-tenant", "ml=__idle__"], "reserved"),
    ],
)
def test_bad_namespace_tenant_is_a_usage_error(tmp_path, options, message):
    result = CliRunner().invoke(collect, [
        "prometheus", "--once", "--spool", str(tmp_path), "--url", "http://127.0.0.1:1",
        *options,
    ])
    assert result.exit_code == 2
    assert message in result.output


def test_invalid_tenants_file_names_file_and_key(tmp_path):
    bad = tmp_path / "tenants.yaml"
    bad.write_text("tenants:\n  ml-team:\n    namespaces: [ml]\n")
    result = CliRunner().invoke(collect, [
        "prometheus", "--once", "--spool", str(tmp_path / "spool"), "--url",
        "http://127.0.0.1:1", "--tenants", str(bad),
    ])
    assert result.exit_code == 2
    assert f"{bad}: tenants.ml-team.plan: missing" in result.output
