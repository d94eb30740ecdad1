"""The Prometheus reader against a real Prometheus holding history made from real DCGM scrapes.

History (10 minutes from T0, a sample every 15 s, read with 60 s steps and a 90 s staleness
window), built from the real dcgm-exporter scrapes in tests/fixtures/dcgm/:
- T4 GPU 0, pod-labelled by dcgm-exporter (runai-reservation pod): GR_ENGINE_ACTIVE stepping
  up by interval, and no samples from 240 s to 480 s (a scrape gap).
- T4 GPU 1, no pod: idle.
- A100 with MIG (3 x 1g.5gb + 2g.10gb), empty pod labels as real dcgm-exporter writes them.
- A100 without MIG whose GR_ENGINE_ACTIVE is dropped (GPU_UTIL fallback), relabelled to pods
  the pod lookup does not know, a second one sharing it (time-slicing) from 300 s.
- Inference-gateway counters for a shared endpoint, one of which restarts.
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
from models.ledger.gaps import GapReason
from models.ledger.usage import (
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

    def counter(name, tenant, values, **extra):
        labels = {"namespace": SHARED[0], "model": SHARED[1], **extra}
        if tenant is not None:
            labels["tenant"] = tenant
        series.append(Series(name, labels, [
            (times[i], v) for i, v in enumerate(values) if v is not None
        ]))

    execution = "gateway_request_execution_seconds_total"
    # acme's gateway restarts at sample 20: its counter starts again from zero.
    counter(execution, "acme", [1.5 * i if i < 20 else 0.5 + 1.5 * (i - 20) for i in range(40)])
    counter(execution, "zen", [0.5 * i if i < 20 else None for i in range(40)])
    counter(execution, None, [1.0 * i if i < 8 else None for i in range(40)])
    counter("gateway_tokens_total", "acme", [100.0 * i for i in range(40)], kind="input")
    counter("gateway_tokens_total", "acme", [20.0 * i for i in range(40)], kind="output")
    return to_openmetrics(series, {
        "gateway_request_execution_seconds": "counter", "gateway_tokens": "counter",
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


def test_request_work_per_tenant_with_counter_reset(reader):
    table = reader.request_rows(T0, END, STEP)
    assert table.schema == REQUEST_WORK_SCHEMA
    rows = {(r["tenant"], (r["window_start"] - T0).seconds // STEP): r for r in table.to_pylist()}
    for row in rows.values():
        assert (row["namespace"], row["model"], row["source"]) == (*SHARED, "gateway")
    # acme: +1.5 s per sample; the first sample has no baseline (3 increases in interval 0);
    # at 300 s the counter restarts at 0.5, which counts as 0.5, not as a negative step.
    acme = [rows["acme", k]["request_seconds"] for k in range(10)]
    assert acme == pytest.approx([4.5, 6, 6, 6, 6, 5.0, 6, 6, 6, 6])
    assert sum(acme) == pytest.approx(57.5)
    # tokens: input +100 and output +20 per sample, summed over the `kind` label.
    assert [rows["acme", k]["tokens"] for k in range(10)] == pytest.approx(
        [360.0] + [480.0] * 9
    )
    # zen stops after 285 s: no rows once its series has no samples; no token counter.
    zen = {k: r for (tenant, k), r in rows.items() if tenant == "zen"}
    assert sorted(zen) == [0, 1, 2, 3, 4]
    assert [zen[k]["request_seconds"] for k in range(5)] == pytest.approx([1.5, 2, 2, 2, 2])
    assert {r["tokens"] for r in zen.values()} == {None}
    # A series without a tenant label is work nobody can be charged for, kept visible.
    assert [rows[UNATTRIBUTED_TENANT, k]["request_seconds"] for k in (0, 1)] == [3.0, 4.0]
    assert (UNATTRIBUTED_TENANT, 2) not in rows


def test_prometheus_down_names_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    reader = PrometheusReader(url, cluster="qa", retries=0, timeout_s=2)
    with pytest.raises(PrometheusUnavailable, match=url.replace(".", r"\.")):
        reader.usage_rows(T0, END, STEP)
    with pytest.raises(PrometheusUnavailable, match="server is up"):
        reader.request_rows(T0, END, STEP)


def test_rejected_query_is_a_query_error(prometheus_url):
    reader = PrometheusReader(prometheus_url, cluster="qa", execution_seconds_counter="bad{")
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
