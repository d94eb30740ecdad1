"""The Prometheus reader against a real Prometheus holding history made from real DCGM scrapes.

History (10 minutes from T0, a sample every 15 s, read with 60 s steps and a 90 s staleness
window), built from the real dcgm-exporter scrapes in tests/fixtures/dcgm/:
- T4 GPU 0, pod-labelled by dcgm-exporter (runai-reservation pod): GR_ENGINE_ACTIVE stepping
  up by interval, and no samples from 240 s to 480 s (a scrape gap).
- T4 GPU 1, no pod: idle.
- A100 with MIG (3 x 1g.5gb + 2g.10gb), empty pod labels as real dcgm-exporter writes them.
- A100 without MIG whose GR_ENGINE_ACTIVE is dropped (GPU_UTIL fallback), relabelled to pods
  the pod lookup does not know, a second one sharing it (time-slicing) from 300 s.
- LiteLLM gateway series (per team) and vLLM series (per model) for a shared endpoint, as
  their projects write them; one gateway's counters restart.
Expected figures are derived here from the values written, not from the reader's output."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from collectors.prometheus import (
    FB_USED,
    GPU_UTIL,
    GR_ENGINE_ACTIVE,
    PodInfo,
    PrometheusQueryError,
    PrometheusReader,
    PrometheusUnavailable,
    mig_device_id,
)
from collectors.request_metrics import VLLM, RequestMetrics, load_request_metrics
from models.errors import UserError
from models.ledger.gaps import GapReason
from models.ledger.usage import (
    ENDPOINT_LOAD_SCHEMA,
    IDLE_TENANT,
    LEDGER_SCHEMA,
    REQUEST_WORK_SCHEMA,
    UNATTRIBUTED_TENANT,
    validate_ledger,
)
from tests.prometheus_server import (
    Series,
    free_port,
    parse_exposition,
    prometheus_with_history,
    to_openmetrics,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dcgm"
T0 = datetime(2025, 6, 1, tzinfo=UTC)
END = T0 + timedelta(minutes=10)
STEP = 60
SCRAPE = 15
STALENESS = 90
MIB = 1024 * 1024

T4_POD_GPU = "GPU-7a2e92f2-be71-d37e-a744-541600ffc722"
T4_IDLE_GPU = "GPU-5f587dd4-6505-0873-c6db-8324dbfe5ba9"
T4_POD = ("runai-reservation", "runai-reservation-gpu-qa-mig-worker-gpu-1-kvltw")
MIG_GPU = "GPU-473571f2-fb37-ef7e-50fe-9885b74a23cd"
UTIL_GPU = "GPU-7099682b-a20d-2bcc-74ab-b9060454d81e"
GAP = (240, 480)  # seconds after T0 without samples on the T4 pod GPU
SECOND_POD_FROM = 300  # a second pod shares the util-only A100 from here on

SHARED = ("llm-shared", "llama-3-70b")
SERVER_ONLY_MODEL = "qwen-2.5-7b"  # served by vLLM, no gateway traffic
MISSING_GPU = "GPU-00000000-0000-0000-0000-000000000000"

PODS = {T4_POD: PodInfo("team-a", *T4_POD, pod_uid="uid-t4", workload_kind="inference",
                        model="llama-3-8b", model_params_b=8.0)}
MIG_ALLOCATIONS = {
    (MIG_GPU, "8"): PodInfo("team-a", "runai-team-a", "job-2-0-0",
                            workload_kind="training"),
    (MIG_GPU, "5"): PodInfo("team-b", "runai-team-b", "job-7-0-0"),
}


def t4_activity(k: int) -> float:
    return (k + 1) / 20


def util_percent(k: int) -> float:
    return 10.0 * k


def _scrape(name: str) -> dict[tuple[str, str], tuple[dict[str, str], float]]:
    """(metric, UUID + GPU_I_ID) -> labels, value; the disabled-MIG file has two scrapes
    pasted, the first wins."""
    found: dict[tuple[str, str], tuple[dict[str, str], float]] = {}
    for metric, labels, value in parse_exposition(FIXTURES / name):
        if metric in (GR_ENGINE_ACTIVE, GPU_UTIL, FB_USED):
            key = (metric, labels["UUID"] + "/" + labels.get("GPU_I_ID", ""))
            found.setdefault(key, (labels, value))
    return found


def _history() -> str:
    times = [T0.timestamp() + i * SCRAPE for i in range(40)]
    series: list[Series] = []

    def add(name, labels, value_at, skip=lambda t: False):
        series.append(Series(name, labels, [
            (t, value_at(t)) for t in times if not skip(t - T0.timestamp())
        ]))

    def interval(t: float) -> int:
        return int((t - T0.timestamp()) // STEP)

    def in_gap(offset: float) -> bool:
        return GAP[0] <= offset < GAP[1]

    for (metric, _), (labels, value) in _scrape("t4_fractional_1_workload_pod_labels.prom").items():
        if labels["UUID"] == T4_POD_GPU:
            if metric == GR_ENGINE_ACTIVE:
                add(metric, labels, lambda t: t4_activity(interval(t)), in_gap)
            else:
                add(metric, labels, lambda t, v=value: v, in_gap)
        else:
            add(metric, labels, lambda t, v=value: v)
    for (metric, _), (labels, value) in _scrape("a100_mig_4_active_workloads.prom").items():
        add(metric, labels, lambda t, v=value: v)
    for (metric, _), (labels, value) in _scrape("a100_mig_disabled_empty.prom").items():
        if metric == GR_ENGINE_ACTIVE:
            continue  # as on a GPU or exporter without profiling metrics
        for pod, joins_at in (("trainer-0", 0), ("trainer-1", SECOND_POD_FROM)):
            # dcgm-exporter writes one series per pod sharing a time-sliced GPU.
            labels = {**labels, "namespace": "ml", "pod": pod, "container": "trainer"}
            def late(offset, joins_at=joins_at):
                return offset < joins_at
            if metric == GPU_UTIL:
                add(metric, labels, lambda t: util_percent(interval(t)), late)
            else:
                add(metric, labels, lambda t, v=value: v, late)

    def counter(name, labels, values):
        series.append(Series(name, labels, [
            (times[i], v) for i, v in enumerate(values) if v is not None
        ]))

    def histogram(name, labels, sums, counts, fast=None):
        # As prometheus_client writes a histogram: cumulative buckets up to +Inf, _count, _sum.
        if fast is not None:
            counter(f"{name}_bucket", {**labels, "le": "1.0"}, fast)
        counter(f"{name}_bucket", {**labels, "le": "+Inf"}, counts)
        counter(f"{name}_count", labels, counts)
        counter(f"{name}_sum", labels, sums)

    def litellm(team_alias):
        # The labels LiteLLM's Prometheus callback writes (PrometheusMetricLabels), plus the
        # namespace Prometheus's Kubernetes service discovery adds to every scraped series.
        labels = {"namespace": SHARED[0], "model": SHARED[1], "requested_model": SHARED[1],
                  "end_user": "", "user": "", "hashed_api_key": f"88dc28{len(team_alias or '')}",
                  "api_key_alias": "", "team": f"team-id-{team_alias}"}
        if team_alias is not None:
            labels["team_alias"] = team_alias
        return labels

    # acme's gateway restarts at sample 20: its counters start again from zero.
    restart = [i if i < 20 else i - 20 for i in range(40)]
    histogram("litellm_request_total_latency_metric", litellm("acme"),
              [1.5 * i if i < 20 else 0.5 + 1.5 * (i - 20) for i in range(40)],
              [float(i if i < 20 else 1 + i - 20) for i in range(40)])
    counter("litellm_input_tokens_metric_total", litellm("acme"), [100.0 * i for i in restart])
    counter("litellm_output_tokens_metric_total", litellm("acme"), [20.0 * i for i in restart])
    zen = [i if i < 20 else None for i in range(40)]
    # Half of zen's requests finish within a second.
    histogram("litellm_request_total_latency_metric", litellm("zen"),
              [None if i is None else 0.5 * i for i in zen],
              [None if i is None else float(i) for i in zen],
              fast=[None if i is None else float(i // 2) for i in zen])
    counter("litellm_input_tokens_metric_total", litellm("zen"),
            [None if i is None else 50.0 * i for i in zen])
    counter("litellm_output_tokens_metric_total", litellm("zen"),
            [None if i is None else 30.0 * i for i in zen])
    # A key of no team: work nobody can be charged for, with no token counters.
    histogram("litellm_request_total_latency_metric", litellm(None),
              [1.0 * i if i < 8 else None for i in range(40)],
              [float(i) if i < 8 else None for i in range(40)])
    for model, prefill, decode in ((SHARED[1], 0.8, 2.4), (SERVER_ONLY_MODEL, 0.1, 0.3)):
        labels = {"namespace": SHARED[0], "model_name": model, "engine": "0"}
        histogram("vllm:request_prefill_time_seconds", labels, [prefill * i for i in range(40)],
                  [2.0 * i for i in range(40)])
        histogram("vllm:request_decode_time_seconds", labels, [decode * i for i in range(40)],
                  [2.0 * i for i in range(40)])
        histogram("vllm:e2e_request_latency_seconds", labels,
                  [(prefill + decode) * 1.1 * i for i in range(40)], [2.0 * i for i in range(40)])
        counter("vllm:num_requests_running", labels, [2.0] * 40)
        counter("vllm:num_requests_waiting", labels, [float(i % 4) for i in range(40)])
        counter("vllm:prompt_tokens_total", labels, [150.0 * i for i in range(40)])
        counter("vllm:generation_tokens_total", labels, [50.0 * i for i in range(40)])
    return to_openmetrics(series, {
        "litellm_request_total_latency_metric": "histogram",
        "litellm_input_tokens_metric": "counter", "litellm_output_tokens_metric": "counter",
        "vllm:request_prefill_time_seconds": "histogram",
        "vllm:request_decode_time_seconds": "histogram",
        "vllm:e2e_request_latency_seconds": "histogram",
        "vllm:prompt_tokens": "counter", "vllm:generation_tokens": "counter",
    })


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory):
    with prometheus_with_history(_history(), tmp_path_factory.mktemp("prometheus")) as url:
        yield url


@pytest.fixture(scope="module")
def reader(prometheus_url):
    reader = PrometheusReader(prometheus_url, cluster="qa", staleness_s=STALENESS)
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def usage(reader):
    return reader.read_usage(
        T0, END, STEP, pods=PODS, mig_allocations=MIG_ALLOCATIONS,
        expected_devices=[T4_POD_GPU, MIG_GPU, MISSING_GPU],
    )


def _rows(table: pa.Table, gpu_uuid: str) -> list[dict]:
    rows = [r for r in table.to_pylist() if r["gpu_uuid"] == gpu_uuid]
    return sorted(rows, key=lambda r: (r["window_start"], r["tenant"]))


def test_pod_labelled_gpu_is_billed_its_activity_and_memory(usage):
    rows = _rows(usage.table, T4_POD_GPU)
    before_gap = [r for r in rows if r["window_start"] < T0 + timedelta(seconds=GAP[0])]
    assert len(before_gap) == 4
    for k, row in enumerate(before_gap):
        assert row["window_start"] == T0 + timedelta(seconds=k * STEP)
        assert (row["tenant"], row["namespace"], row["pod"]) == ("team-a", *T4_POD)
        assert (row["pod_uid"], row["model"], row["model_params_b"]) == ("uid-t4", "llama-3-8b", 8)
        assert row["workload_kind"] == "inference"
        assert row["node"] == "nvidia-dcgm-exporter-s228n"  # no node label: the Hostname
        assert row["gpu_product"] == "Tesla T4"
        assert row["mig_profile"] is None
        assert row["allocated_gpu_seconds"] == pytest.approx(60.0)
        # GR_ENGINE_ACTIVE, not the scrape's GPU_UTIL of 0, is the activity.
        assert row["used_gpu_seconds"] == pytest.approx(60.0 * t4_activity(k))
        assert row["memory_used_bytes"] == 128 * MIB
        assert row["source"] == "dcgm"


def test_gap_longer_than_staleness_is_a_gap_not_a_guess(usage):
    rows = {r["window_start"]: r for r in _rows(usage.table, T4_POD_GPU)}
    # [240, 300): no own sample, but the one at 225 s is within the 90 s staleness window.
    carried = rows[T0 + timedelta(seconds=240)]
    assert carried["used_gpu_seconds"] == pytest.approx(60.0 * t4_activity(3))
    # [300, 480): the last sample is more than 90 s old: who held the GPU, and how busy it
    # was, is unknown. No rows (not the last holder carried on, not idle), one gap.
    assert sorted((start - T0).seconds for start in rows) == [
        0, 60, 120, 180, 240, 480, 540]
    [gap] = [g for g in usage.gaps if g.gpu_uuid == T4_POD_GPU]
    assert (gap.window_start - T0, gap.window_end - T0) == (timedelta(seconds=300),
                                                            timedelta(seconds=480))
    assert (gap.reason, gap.source, gap.node, gap.cluster) == (
        GapReason.NO_SERIES, "dcgm", "nvidia-dcgm-exporter-s228n", "qa")
    assert "within 90 s" in gap.detail
    assert rows[T0 + timedelta(seconds=480)]["used_gpu_seconds"] == pytest.approx(
        60.0 * t4_activity(8)
    )


def test_gpu_without_pod_is_idle(usage):
    rows = _rows(usage.table, T4_IDLE_GPU)
    assert len(rows) == 10
    for row in rows:
        assert (row["tenant"], row["workload_kind"]) == (IDLE_TENANT, "idle")
        assert row["pod"] is None
        assert row["allocated_gpu_seconds"] == pytest.approx(60.0)
        assert row["used_gpu_seconds"] == 0.0
        assert row["memory_used_bytes"] == 5 * MIB


def test_mig_instances_without_pod_labels_go_through_the_mig_allocation(usage):
    # From the scrape: GI 8 (1g.5gb) at 0.408493 with 4384 MiB; GI 5 (2g.10gb) at 0.0.
    gi8 = _rows(usage.table, mig_device_id(MIG_GPU, "8"))
    assert len(gi8) == 10
    for row in gi8:
        assert (row["tenant"], row["namespace"], row["pod"]) == ("team-a", "runai-team-a",
                                                                 "job-2-0-0")
        assert row["workload_kind"] == "training"
        assert row["mig_profile"] == "1g.5gb"
        assert row["gpu_equivalents"] == pytest.approx(1 / 7)
        assert row["allocated_gpu_seconds"] == pytest.approx(60 / 7)
        assert row["used_gpu_seconds"] == pytest.approx(60 / 7 * 0.408493)
        assert row["memory_used_bytes"] == 4384 * MIB
        assert row["gpu_product"] == "NVIDIA A100-SXM4-40GB"
    gi5 = _rows(usage.table, mig_device_id(MIG_GPU, "5"))
    assert {r["tenant"] for r in gi5} == {"team-b"}
    assert gi5[0]["allocated_gpu_seconds"] == pytest.approx(60 * 2 / 7)
    for instance in ("7", "9"):
        rows = _rows(usage.table, mig_device_id(MIG_GPU, instance))
        assert len(rows) == 10
        assert {r["tenant"] for r in rows} == {UNATTRIBUTED_TENANT}
        assert {r["pod"] for r in rows} == {None}


def test_mig_without_allocation_mapping_is_unattributed_not_dropped(reader):
    table = reader.usage_rows(T0, T0 + timedelta(minutes=2), STEP, pods=PODS)
    mig = [r for r in table.to_pylist() if r["gpu_uuid"].startswith(MIG_GPU)]
    assert len(mig) == 4 * 2
    assert {r["tenant"] for r in mig} == {UNATTRIBUTED_TENANT}
    assert sum(r["allocated_gpu_seconds"] for r in mig) == pytest.approx(2 * 60 * 5 / 7)


def test_gpu_util_fallback_unknown_pods_and_time_slicing(usage):
    rows = _rows(usage.table, UTIL_GPU)
    first = [r for r in rows if r["pod"] == "trainer-0"]
    second = [r for r in rows if r["pod"] == "trainer-1"]
    assert len(first) == 10
    assert [(r["window_start"] - T0).seconds for r in second] == [300, 360, 420, 480, 540]
    for row in rows:
        assert (row["tenant"], row["namespace"]) == (UNATTRIBUTED_TENANT, "ml")
        assert row["workload_kind"] == "unknown"
        assert row["memory_used_bytes"] == 0
        k = (row["window_start"] - T0).seconds // STEP
        holders = 2 if k * STEP >= SECOND_POD_FROM else 1
        # Pods sharing a GPU split its time equally; GPU_UTIL is percent.
        assert row["allocated_gpu_seconds"] == pytest.approx(60.0 / holders)
        assert row["used_gpu_seconds"] == pytest.approx(60.0 / holders * util_percent(k) / 100)


def test_rows_are_valid_and_conserve_gpu_seconds_per_device_and_interval(usage):
    rows = usage.table.to_pylist()
    assert usage.table.schema == LEDGER_SCHEMA
    assert validate_ledger(rows) == []
    held: dict[tuple[str, datetime], float] = defaultdict(float)
    capacity = {}
    for row in rows:
        held[row["gpu_uuid"], row["window_start"]] += row["allocated_gpu_seconds"]
        capacity[row["gpu_uuid"]] = row["duration_s"] * row["gpu_equivalents"]
    # 2 T4s + 4 MIG instances + the A100 = 7 devices, each over all 10 intervals, but for the
    # 3 intervals of the T4's scrape gap, which the gaps hold instead.
    assert len(held) == 7 * 10 - 3
    gapped = {(g.gpu_uuid, g.window_start + timedelta(seconds=STEP * i))
              for g in usage.gaps
              for i in range(int((g.window_end - g.window_start).total_seconds()) // STEP)}
    assert len(gapped & set(held)) == 0
    assert len(gapped - {(MISSING_GPU, T0 + timedelta(seconds=STEP * i)) for i in range(10)}) == 3
    for (gpu_uuid, _), seconds in held.items():
        assert seconds == pytest.approx(capacity[gpu_uuid])


def test_devices_seen_and_missing_are_reported(usage):
    assert T4_POD_GPU in usage.devices
    assert mig_device_id(MIG_GPU, "7") in usage.devices
    assert usage.missing_devices == (MISSING_GPU,)
    [gap] = [g for g in usage.gaps if g.gpu_uuid == MISSING_GPU]
    assert (gap.window_start, gap.window_end, gap.reason, gap.node) == (
        T0, END, GapReason.NO_SERIES, None)


def test_same_window_read_twice_gives_the_same_sample_ids(reader, usage):
    again = reader.read_usage(T0, END, STEP, pods=PODS, mig_allocations=MIG_ALLOCATIONS)
    assert sorted(again.table["sample_id"].to_pylist()) == sorted(
        usage.table["sample_id"].to_pylist()
    )
    assert len(set(usage.table["sample_id"].to_pylist())) == usage.table.num_rows


def test_window_without_series_gives_no_rows(reader):
    before = T0 - timedelta(days=1)
    read = reader.read_usage(before, before + timedelta(minutes=10), STEP,
                             expected_devices=[T4_POD_GPU])
    assert read.table.num_rows == 0
    assert read.table.schema == LEDGER_SCHEMA
    assert read.missing_devices == (T4_POD_GPU,)
    requests_table = reader.request_rows(before, before + timedelta(minutes=10), STEP)
    assert requests_table.num_rows == 0
    assert requests_table.schema == REQUEST_WORK_SCHEMA


def _work(table: pa.Table) -> dict[tuple[str, str, int], dict]:
    return {(r["model"], r["tenant"], (r["window_start"] - T0).seconds // STEP): r
            for r in table.to_pylist()}


def test_gateway_work_per_team_with_counter_reset(reader):
    table = reader.request_rows(T0, END, STEP)
    assert table.schema == REQUEST_WORK_SCHEMA
    rows = _work(table)
    for row in rows.values():
        assert (row["namespace"], row["source"]) == (SHARED[0], "gateway")
    acme = [rows[SHARED[1], "acme", k] for k in range(10)]
    # +1.5 s and one request per sample; the first sample has no baseline (3 increases in
    # interval 0); at 300 s the counters restart, the latency sum at 0.5, which counts as 0.5.
    assert [r["request_seconds"] for r in acme] == pytest.approx([4.5, 6, 6, 6, 6, 5, 6, 6, 6, 6])
    assert [r["requests"] for r in acme] == [3] + [4] * 9
    # The token counters restart at 0 in interval 5: that sample adds nothing.
    assert [r["input_tokens"] for r in acme] == [300, 400, 400, 400, 400, 300, 400, 400, 400, 400]
    assert [r["output_tokens"] for r in acme] == [60, 80, 80, 80, 80, 60, 80, 80, 80, 80]
    # zen stops after 285 s: no rows once its series have no samples.
    zen = {k: r for (model, tenant, k), r in rows.items() if tenant == "zen"}
    assert sorted(zen) == [0, 1, 2, 3, 4]
    assert [zen[k]["request_seconds"] for k in range(5)] == pytest.approx([1.5, 2, 2, 2, 2])
    assert [zen[k]["input_tokens"] for k in range(5)] == [150, 200, 200, 200, 200]
    # A key of no team is work nobody can be charged for, kept visible, its tokens unknown.
    lost = [rows[SHARED[1], UNATTRIBUTED_TENANT, k] for k in (0, 1)]
    assert [r["request_seconds"] for r in lost] == [3.0, 4.0]
    assert {r["input_tokens"] for r in lost} == {None}
    assert (SHARED[1], UNATTRIBUTED_TENANT, 2) not in rows


def test_latency_histograms_per_tenant_and_interval(reader):
    rows = _work(reader.request_rows(T0, END, STEP))
    inf = float("inf")
    # zen's requests: one per sample, every other one within a second.
    assert rows[SHARED[1], "zen", 0]["latency_buckets"] == [
        {"le": 1.0, "count": 1}, {"le": inf, "count": 3}]
    assert rows[SHARED[1], "zen", 2]["latency_buckets"] == [
        {"le": 1.0, "count": 2}, {"le": inf, "count": 4}]
    assert rows[SHARED[1], "acme", 3]["latency_buckets"] == [{"le": inf, "count": 4}]
    # LiteLLM's time-to-first-token histogram has no series here: unknown, not zero.
    assert {r["ttft_buckets"] for r in rows.values()} == {None}


def test_server_phase_time_is_split_by_the_tenants_tokens(reader):
    rows = _work(reader.request_rows(T0, END, STEP))
    # vLLM: +0.8 s prefill and +2.4 s decode per sample, 4 samples an interval from 60 s.
    prefill, decode = 4 * 0.8, 4 * 2.4
    for k in (2, 3, 4):
        acme, zen = rows[SHARED[1], "acme", k], rows[SHARED[1], "zen", k]
        assert acme["prefill_seconds"] == pytest.approx(prefill * 400 / 600)
        assert zen["prefill_seconds"] == pytest.approx(prefill * 200 / 600)
        assert acme["decode_seconds"] == pytest.approx(decode * 80 / 200)
        assert zen["decode_seconds"] == pytest.approx(decode * 120 / 200)
    for k in range(5, 10):
        assert rows[SHARED[1], "acme", k]["prefill_seconds"] == pytest.approx(prefill)
        assert rows[SHARED[1], "acme", k]["decode_seconds"] == pytest.approx(decode)
    # In intervals 0 and 1 a tenant's tokens are unknown: nobody gets phase time there, so
    # the ledger apportions those intervals by request seconds instead of mixing measures.
    for (model, _, k), row in rows.items():
        if model == SHARED[1] and k < 2:
            assert (row["prefill_seconds"], row["decode_seconds"]) == (None, None)


def test_server_work_without_gateway_tenants_is_unattributed(reader):
    rows = _work(reader.request_rows(T0, END, STEP))
    served = [rows[SERVER_ONLY_MODEL, UNATTRIBUTED_TENANT, k] for k in range(10)]
    assert {r["tenant"] for r in served} == {UNATTRIBUTED_TENANT}
    assert [r["prefill_seconds"] for r in served] == pytest.approx([0.3] + [0.4] * 9)
    assert [r["decode_seconds"] for r in served] == pytest.approx([0.9] + [1.2] * 9)
    assert [r["requests"] for r in served] == [6] + [8] * 9
    assert [r["input_tokens"] for r in served] == [450] + [600] * 9
    assert [r["output_tokens"] for r in served] == [150] + [200] * 9
    assert served[1]["request_seconds"] == pytest.approx(4 * 0.4 * 1.1)


def test_vllm_scheduler_gauges_per_endpoint_and_interval(reader):
    table = reader.read_endpoint_load(T0, END, STEP)
    assert table.schema == ENDPOINT_LOAD_SCHEMA
    rows = {(r["model"], (r["window_start"] - T0).seconds // STEP): r for r in table.to_pylist()}
    assert sorted(rows) == sorted((m, k) for m in (SHARED[1], SERVER_ONLY_MODEL)
                                  for k in range(10))
    # Waiting cycles 0, 1, 2, 3 over each interval's four samples: a mean of 1.5.
    assert {(r["requests_running"], r["requests_waiting"]) for r in rows.values()} == {(2.0, 1.5)}


def test_vllm_alone_reads_every_endpoint_as_unattributed_work(prometheus_url):
    reader = PrometheusReader(prometheus_url, cluster="qa", staleness_s=STALENESS,
                              gateway=None, server=VLLM)
    try:
        rows = _work(reader.request_rows(T0, END, STEP))
    finally:
        reader.close()
    assert {(model, tenant) for model, tenant, _ in rows} == {
        (SHARED[1], UNATTRIBUTED_TENANT), (SERVER_ONLY_MODEL, UNATTRIBUTED_TENANT)}
    assert rows[SHARED[1], UNATTRIBUTED_TENANT, 3]["prefill_seconds"] == pytest.approx(3.2)


def test_a_yaml_mapping_reads_another_gateway(prometheus_url, tmp_path):
    # LiteLLM before its token counters were renamed (`litellm_input_tokens`), keyed by the
    # virtual key's hash, with the endpoint's namespace fixed and a label matcher per measure.
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "name: litellm-by-key\n"
        "model_label: model\n"
        "tenant_label: hashed_api_key\n"
        "namespace: llm-shared\n"
        "match: {requested_model: llama-3-70b}\n"
        "metrics:\n"
        "  request_seconds: litellm_request_total_latency_metric_sum{team=\"team-id-acme\"}\n"
    )
    mapping = load_request_metrics(path)
    reader = PrometheusReader(prometheus_url, cluster="qa", staleness_s=STALENESS,
                              gateway=mapping, server=None)
    try:
        rows = _work(reader.request_rows(T0, END, STEP))
    finally:
        reader.close()
    assert {tenant for _, tenant, _ in rows} == {"88dc284"}
    assert [rows[SHARED[1], "88dc284", k]["request_seconds"] for k in range(10)] == (
        pytest.approx([4.5, 6, 6, 6, 6, 5, 6, 6, 6, 6]))
    assert {r["input_tokens"] for r in rows.values()} == {None}


def test_a_bad_yaml_mapping_names_every_problem(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "name: broken\n"
        "model_label: 'model name'\n"
        "namespace_label: namespace\n"
        "namespace: llm-shared\n"
        "colour: blue\n"
        "metrics:\n"
        "  input_tokens: litellm_input_tokens_total\n"
        "  latency: x\n"
        "  request_seconds: 'bad{'\n"
    )
    with pytest.raises(UserError) as caught:
        load_request_metrics(path)
    lines = str(caught.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines)
    text = str(caught.value)
    for expected in ("colour: unknown field", "model_label: 'model name' is not a Prometheus",
                     "set exactly one", "metrics.latency: unknown measure",
                     "metrics.request_seconds: 'bad{' is not a Prometheus metric name",
                     "input_tokens and output_tokens go together"):
        assert expected in text
    assert len(lines) == 6


def test_prometheus_down_names_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    reader = PrometheusReader(url, cluster="qa", retries=0, timeout_s=2)
    with pytest.raises(PrometheusUnavailable, match=url.replace(".", r"\.")):
        reader.usage_rows(T0, END, STEP)
    with pytest.raises(PrometheusUnavailable, match="server is up"):
        reader.request_rows(T0, END, STEP)


def test_rejected_query_is_a_query_error(prometheus_url):
    reader = PrometheusReader(prometheus_url, cluster="qa", server=None, gateway=RequestMetrics(
        name="bad", model_label="model", counters={"request_seconds": "bad{"}))
    with pytest.raises(PrometheusQueryError, match=r"rejected query 'bad\{"):
        reader.request_rows(T0, END, STEP)


@pytest.mark.parametrize(
    ("start", "end", "step", "message"),
    [
        (T0.replace(tzinfo=None), END, STEP, "naive"),
        (T0, END, 0, "step_s"),
        (END, T0, STEP, "must be after"),
    ],
)
def test_bad_windows_are_refused(reader, start, end, step, message):
    with pytest.raises(ValueError, match=message):
        reader.usage_rows(start, end, step)


def test_namespace_map_attributes_pods_the_pod_lookup_does_not_know(reader):
    # `ml` is mapped: trainer-0/1 (pod-labelled, unknown to PODS) go to its tenant. The T4 pod
    # is known to PODS, whose resolution wins over the map; MIG series have no namespace.
    mapped = reader.read_usage(
        T0, END, STEP, pods=PODS, mig_allocations=MIG_ALLOCATIONS,
        namespace_tenants={"ml": "ml-team", "runai-reservation": "not-this-one"},
    ).table.to_pylist()
    trainers = [r for r in mapped if r["gpu_uuid"] == UTIL_GPU]
    assert len(trainers) == 15  # trainer-0 in 10 intervals, trainer-1 in 5
    for row in trainers:
        assert (row["tenant"], row["namespace"]) == ("ml-team", "ml")
        assert row["pod"] in {"trainer-0", "trainer-1"}
        assert (row["pod_uid"], row["workload_kind"], row["model"]) == (None, "unknown", None)
    assert {r["tenant"] for r in mapped if r["gpu_uuid"] == T4_POD_GPU} == {"team-a"}
    assert {r["tenant"] for r in mapped if r["gpu_uuid"] == T4_IDLE_GPU} == {IDLE_TENANT}
    for instance in ("7", "9"):
        assert {r["tenant"] for r in _rows_of(mapped, mig_device_id(MIG_GPU, instance))} == {
            UNATTRIBUTED_TENANT}
    assert validate_ledger(mapped) == []


def test_namespace_map_without_the_namespace_leaves_pods_unattributed(reader):
    table = reader.usage_rows(T0, END, STEP, namespace_tenants={"other": "x"})
    tenants = {r["tenant"] for r in table.to_pylist() if r["pod"] is not None}
    # Without PODS the T4 pod is unknown too: neither namespace is mapped.
    assert tenants == {UNATTRIBUTED_TENANT}


def _rows_of(rows: list[dict], gpu_uuid: str) -> list[dict]:
    return [r for r in rows if r["gpu_uuid"] == gpu_uuid]
