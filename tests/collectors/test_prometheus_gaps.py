"""What the Prometheus reader cannot read becomes a gap, alone, through a real Prometheus.

1. History (promtool blocks) from the real T4 dcgm-exporter scrape in tests/fixtures/dcgm/,
   plus series that lack what the ledger needs: one malformed series is quarantined with its
   own device (or node, or cluster when it names neither), and every good GPU keeps its rows.
2. A live Prometheus scraping three loopback exporters every second: one serving that real
   scrape, one serving garbage (Prometheus rejects it: `up == 0`) and one serving nothing (an
   empty exporter). The garbage and empty targets are gaps on their nodes; `collect prometheus
   --once` writes the good rows and the gaps, and exits 2 naming the garbage target."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from click.testing import CliRunner

from cli.collect import collect
from collectors import spool
from collectors.prometheus import (
    FB_USED,
    GPU_UTIL,
    GR_ENGINE_ACTIVE,
    PrometheusCollector,
    PrometheusReader,
)
from models.ledger.gaps import GapReason
from models.ledger.usage import IDLE_TENANT, validate_ledger
from tests.kube_api import start_http, stop_http, url_of
from tests.prometheus_server import (
    Series,
    free_port,
    parse_exposition,
    prometheus_with_history,
    to_openmetrics,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "dcgm" / (
    "t4_fractional_1_workload_pod_labels.prom")
T0 = datetime(2025, 6, 2, tzinfo=UTC)
STEP = 60
INTERVALS = 5
HOST = "nvidia-dcgm-exporter-s228n"  # the scrape's Hostname label: the node
POD_GPU = "GPU-7a2e92f2-be71-d37e-a744-541600ffc722"
IDLE_GPU = "GPU-5f587dd4-6505-0873-c6db-8324dbfe5ba9"
NO_MODEL_GPU = "GPU-bad00001-0000-4000-8000-000000000001"
HALF_BAD_GPU = "GPU-bad00002-0000-4000-8000-000000000002"
HALF_BAD_FROM, HALF_BAD_TO = 60, 120  # seconds after T0 its one bad series has samples
# ... and, within the 90 s staleness window, stands for the next interval too.
HALF_BAD_GAP = (60, 180)


def _scrape() -> dict[tuple[str, str], dict[str, str]]:
    return {(metric, labels["UUID"]): labels for metric, labels, _ in parse_exposition(FIXTURE)
            if metric in (GR_ENGINE_ACTIVE, GPU_UTIL, FB_USED)}


def _history() -> str:
    times = [T0.timestamp() + 15 * i for i in range(INTERVALS * STEP // 15)]
    value = {GR_ENGINE_ACTIVE: 0.5, GPU_UTIL: 40.0, FB_USED: 1024.0}
    series = []

    def add(metric: str, labels: dict[str, str], during: tuple[int, int] = (0, 10**6)) -> None:
        series.append(Series(metric, labels, [
            (t, value[metric]) for t in times if during[0] <= t - T0.timestamp() < during[1]]))

    scrape = _scrape()
    for (metric, _uuid), labels in scrape.items():
        add(metric, labels)
    idle = scrape[(GR_ENGINE_ACTIVE, IDLE_GPU)]
    for metric in (GR_ENGINE_ACTIVE, GPU_UTIL, FB_USED):
        # A GPU whose exporter was relabelled without modelName: no product, no tier.
        add(metric, {k: v for k, v in {**idle, "UUID": NO_MODEL_GPU}.items()
                     if k != "modelName"})
        # A GPU with good series but one bad one for two intervals: those intervals are gaps.
        labels = {**idle, "UUID": HALF_BAD_GPU}
        if metric == FB_USED:
            add(metric, {k: v for k, v in labels.items() if k != "modelName"},
                (HALF_BAD_FROM, HALF_BAD_TO))
        else:
            add(metric, labels)
    # No UUID: its node is known, its device is not. Neither: not even its node.
    add(GR_ENGINE_ACTIVE, {k: v for k, v in idle.items() if k != "UUID"})
    add(GR_ENGINE_ACTIVE, {k: v for k, v in idle.items() if k not in ("UUID", "Hostname")})
    return to_openmetrics(series, {})


@pytest.fixture(scope="module")
def read(tmp_path_factory):
    with prometheus_with_history(_history(), tmp_path_factory.mktemp("prometheus")) as url:
        reader = PrometheusReader(url, cluster="qa", staleness_s=90)
        try:
            yield reader.read_usage(T0, T0 + timedelta(seconds=INTERVALS * STEP), STEP)
        finally:
            reader.close()


def test_good_gpus_keep_every_row_beside_malformed_series(read):
    rows = read.table.to_pylist()
    assert validate_ledger(rows) == []
    held: dict[str, dict[int, float]] = defaultdict(dict)
    for row in rows:
        k = int((row["window_start"] - T0).total_seconds()) // STEP
        held[row["gpu_uuid"]][k] = held[row["gpu_uuid"]].get(k, 0.0) + row[
            "allocated_gpu_seconds"]
    assert held[POD_GPU] == dict.fromkeys(range(INTERVALS), pytest.approx(60.0))
    assert held[IDLE_GPU] == dict.fromkeys(range(INTERVALS), pytest.approx(60.0))
    assert {r["tenant"] for r in rows if r["gpu_uuid"] == IDLE_GPU} == {IDLE_TENANT}
    assert [r["used_gpu_seconds"] for r in rows if r["gpu_uuid"] == POD_GPU] == [
        pytest.approx(30.0)] * INTERVALS
    # The device with a bad series has no rows where that series had samples, and is never
    # split on a partial view; the device that only has bad series has no rows at all.
    assert held[HALF_BAD_GPU] == {k: pytest.approx(60.0) for k in (0, 3, 4)}
    assert NO_MODEL_GPU not in held


def test_each_malformed_series_is_a_gap_of_its_own_place(read):
    spans = {(g.node, g.gpu_uuid, (g.window_start - T0).seconds, (g.window_end - T0).seconds,
              g.reason) for g in read.gaps}
    everything = INTERVALS * STEP
    assert spans == {
        (HOST, NO_MODEL_GPU, 0, everything, GapReason.MALFORMED_SERIES),
        (HOST, HALF_BAD_GPU, *HALF_BAD_GAP, GapReason.MALFORMED_SERIES),
        (HOST, None, 0, everything, GapReason.MALFORMED_SERIES),
        (None, None, 0, everything, GapReason.MALFORMED_SERIES),
    }
    details = {(g.node, g.gpu_uuid): g.detail for g in read.gaps}
    assert "no modelName label" in details[HOST, NO_MODEL_GPU]
    assert "no modelName label" in details[HOST, HALF_BAD_GPU]
    assert "DCGM_FI_DEV_FB_USED" in details[HOST, HALF_BAD_GPU]
    assert "no UUID label" in details[HOST, None]
    assert "no UUID label" in details[None, None]
    assert {g.source for g in read.gaps} == {"dcgm"}


def test_prometheus_down_is_a_cluster_wide_gap_for_both_products() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    reader = PrometheusReader(url, cluster="qa", retries=0, timeout_s=2)
    collector = PrometheusCollector(reader, STEP)
    try:
        assert collector.rows(T0, STEP).num_rows == 0
        assert collector.request_rows(T0, STEP).num_rows == 0
        gaps = collector.gaps(T0, STEP)
    finally:
        reader.close()
    assert [(g.source, g.node, g.gpu_uuid, g.reason) for g in gaps] == [
        ("dcgm", None, None, GapReason.SOURCE_UNREADABLE),
        ("gateway", None, None, GapReason.SOURCE_UNREADABLE)]
    assert all(url in g.detail and (g.window_start, g.window_end) ==
               (T0, T0 + timedelta(seconds=STEP)) for g in gaps)
    assert collector.gaps(T0, STEP) == []  # handed to the agent once


# -- live scrapes ------------------------------------------------------------------------------

GARBAGE = b"<html><body><h1>502 Bad Gateway</h1> GPU util: 97% }{</body></html>\n"


def _exporter(body: bytes) -> tuple[Any, Any]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return start_http(Handler)


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[tuple[str, dict[str, str]]]:
    """A Prometheus scraping a good, a garbage and an empty exporter; (url, node -> target)."""
    bodies = {"gpu-good": FIXTURE.read_bytes(), "gpu-garbage": GARBAGE, "gpu-empty": b""}
    servers = {node: _exporter(body) for node, body in bodies.items()}
    targets = {node: url_of(server).removeprefix("http://")
               for node, (server, _) in servers.items()}
    config = {"job_name": "dcgm-exporter", "scrape_interval": "1s", "scrape_timeout": "1s",
              "static_configs": [{"targets": [target], "labels": {"node": node}}
                                 for node, target in targets.items()]}
    try:
        with prometheus_with_history("", tmp_path_factory.mktemp("live"),
                                     scrape_configs=[config]) as url:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                result = requests.get(f"{url}/api/v1/query", timeout=5, params={
                    "query": 'count_over_time(up{job="dcgm-exporter"}[8s])'}).json()
                counts = [float(s["value"][1]) for s in result["data"]["result"]]
                if len(counts) == 3 and min(counts) >= 5:
                    break
                time.sleep(0.5)
            else:
                pytest.fail(f"Prometheus at {url} did not scrape all three targets in 60 s")
            yield url, targets
    finally:
        for server, thread in servers.values():
            stop_http(server, thread)


def test_failed_and_empty_scrapes_are_gaps_on_their_nodes(live):
    url, targets = live
    end = datetime.fromtimestamp(math.floor(time.time()) - 1, UTC)
    start = end - timedelta(seconds=4)
    reader = PrometheusReader(url, cluster="live", staleness_s=3, exporter_job="dcgm-exporter")
    try:
        read = reader.read_usage(start, end, 2)
    finally:
        reader.close()
    assert validate_ledger(read.table.to_pylist()) == []
    # The good exporter's two T4s, both intervals, on their node.
    assert {r["node"] for r in read.table.to_pylist()} == {"gpu-good"}
    assert {(r["gpu_uuid"], r["window_start"]) for r in read.table.to_pylist()} == {
        (gpu, start + timedelta(seconds=s)) for gpu in (POD_GPU, IDLE_GPU) for s in (0, 2)}
    gaps = {(g.node, g.reason): g for g in read.gaps}
    assert set(gaps) == {("gpu-garbage", GapReason.SCRAPE_FAILED),
                         ("gpu-empty", GapReason.NO_SERIES)}
    for gap in gaps.values():
        assert (gap.window_start, gap.window_end, gap.gpu_uuid, gap.source) == (
            start, end, None, "dcgm")
    failed = gaps["gpu-garbage", GapReason.SCRAPE_FAILED].detail
    assert f"dcgm-exporter target {targets['gpu-garbage']} (job dcgm-exporter)" in failed
    assert "scrape failed (up == 0)" in failed
    assert len(failed) > len("scrape failed (up == 0)") + 60  # Prometheus's own parse error
    assert "served no DCGM series" in gaps["gpu-empty", GapReason.NO_SERIES].detail


def test_collect_once_writes_rows_and_gaps_and_exits_2_naming_the_target(live, tmp_path):
    url, targets = live
    result = CliRunner().invoke(collect, [
        "prometheus", "--once", "--url", url, "--spool", str(tmp_path), "--interval", "2",
        "--delay", "2", "--cluster", "live", "--node", "reader", "--exporter-job",
        "dcgm-exporter"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "node gpu-garbage" in result.output
    assert f"{targets['gpu-garbage']} (job dcgm-exporter): scrape failed" in result.output
    assert "node gpu-empty" in result.output
    assert "2 gap(s) recorded in" in result.output

    def spooled(kind: str) -> pa.Table:
        files = [f for day in spool.days(tmp_path, kind) for f in
                 spool.day_files(tmp_path, kind, day)]
        return pa.concat_tables(pq.read_table(f, schema=spool.SCHEMAS[kind]) for f in files)

    gaps = spooled("gaps").to_pylist()
    assert sorted((g["node"], g["reason"]) for g in gaps) == [
        ("gpu-empty", "no_series"), ("gpu-garbage", "scrape_failed")]
    assert {g["cluster"] for g in gaps} == {"live"}
    usage = spooled("usage").to_pylist()
    assert {(r["node"], r["gpu_uuid"]) for r in usage} == {
        ("gpu-good", POD_GPU), ("gpu-good", IDLE_GPU)}
