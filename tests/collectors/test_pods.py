"""Pod collector: parsing real Kubernetes objects, and the real kubernetes client against a
loopback API server (tests/kube_api.py) for list, chunked list, watch, bookmarks, 410 Gone and
dropped connections. Expected GPU-seconds are worked out by hand from the fixture cluster
(tests/fixtures/k8s/cluster.json), not copied from the collector's output."""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from collectors.pods import (
    CollectorState,
    GpuRequest,
    KubeConfigError,
    PodCollector,
    PodSpecError,
    allocation_from_pod,
    api_client_from_environment,
    gpu_request,
    node_gpus,
    resolve_tenant,
)
from models.ledger.usage import (
    GPU_SECONDS_TOLERANCE,
    IDLE_TENANT,
    SHARED_TENANT,
    UNATTRIBUTED_TENANT,
    validate_ledger,
)
from tests.kube_api import serve

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "k8s"
WINDOW = datetime(2026, 11, 1, 1, 0, tzinfo=UTC)
NAMESPACE_TENANTS = {"research": "research-bu", "runai-pa": "pa", "conflict": "epsilon"}


def cluster_objects() -> list[dict[str, Any]]:
    return json.loads((FIXTURES / "cluster.json").read_text())["items"]


def by_name(name: str) -> dict[str, Any]:
    return copy.deepcopy(next(o for o in cluster_objects() if o["metadata"]["name"] == name))


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def kube():
    with serve(idle_close_s=0.15) as api:
        for obj in cluster_objects():
            api.put(obj)
        yield api


def make_collector(kube, **kwargs) -> PodCollector:
    configuration = k8s.Configuration(host=kube.url)
    kwargs.setdefault("clock", Clock(datetime(2026, 11, 1, 0, 30, tzinfo=UTC)))
    return PodCollector(
        k8s.ApiClient(configuration), cluster="test", namespace_tenants=NAMESPACE_TENANTS,
        watch_timeout_s=5, request_timeout_s=10, **kwargs,
    )


def assert_conserved(rows: list[dict[str, Any]], state: CollectorState) -> None:
    """Per device of every node: allocated + idle = duration x the device's GPU-equivalents."""
    capacity = {d.device_id: float(d.gpu_equivalents)
                for node in state.nodes.values() for d in node.devices()}
    (duration,) = {r["duration_s"] for r in rows}
    totals: dict[str, float] = dict.fromkeys(capacity, 0.0)
    for row in rows:
        assert row["gpu_uuid"] in capacity, f"row on a device the node does not have: {row}"
        totals[row["gpu_uuid"]] += row["allocated_gpu_seconds"]
    for device, total in totals.items():
        assert abs(total - duration * capacity[device]) < GPU_SECONDS_TOLERANCE, device


def pod_seconds(rows: list[dict[str, Any]]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for row in rows:
        totals[row["pod"] or f"idle:{row['gpu_uuid']}"] += row["allocated_gpu_seconds"]
    return dict(totals)


# ---------------------------------------------------------------------------------------------
# Parsing


def test_every_real_k8s_object_in_shared_data_parses(shared_data: Path) -> None:
    folder = shared_data / "telemetry" / "k8s"
    seen = {"Node": 0, "Pod": 0, "labels": 0}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("kind") == "Node":
            node = node_gpus(data)
            assert node.product in {"A100-SXM4-40GB", "T4"}, path.name
            assert node.devices(), path.name
            seen["Node"] += 1
        elif data.get("kind") == "Pod":
            assert gpu_request(data), path.name
            seen["Pod"] += 1
        else:
            # A bare label dump of a real H100 node: read it as a node with those labels.
            node = node_gpus({"metadata": {"name": path.stem, "labels": data}, "status": {}})
            assert node.product == "H100-80GB-HBM3"
            seen["labels"] += 1
    assert seen == {"Node": 4, "Pod": 4, "labels": 2}


def test_real_mig_nodes_use_allocatable_not_stale_capacity(shared_data: Path) -> None:
    folder = shared_data / "telemetry" / "k8s"
    total, free = {}, {}
    for name in ("node_a100_mig_3_instances", "node_a100_mig_4_instances",
                 "node_a100_mig_7g40gb", "node_t4_fractional_1_workload"):
        node = node_gpus(json.loads((folder / f"{name}.json").read_text()))
        total[name] = sum((d.gpu_equivalents for d in node.devices()), Fraction(0))
        free[name] = {d.device_id: d.gpu_equivalents for d in node.devices()
                      if d.device_id.endswith("-unpartitioned")}
    # Every node's devices add up to its physical GPUs (gpu.count: 1 A100, 2 T4s).
    assert total == {
        "node_a100_mig_3_instances": 1,
        "node_a100_mig_4_instances": 1,
        "node_a100_mig_7g40gb": 1,
        "node_t4_fractional_1_workload": 2,
    }
    # 2 x 1g.5gb + 2g.10gb = 4 of 7 slices partitioned (its run.ai/mig.config annotation puts
    # them at positions 0, 4 and 6: slices 2, 3 and 5 are free); 3 x 1g.5gb + 2g.10gb = 5 of 7
    # (capacity also lists a 3g.20gb that would make 8 of 7 slices; allocatable says 0); one
    # 7g.40gb covers the GPU; the T4s are not in MIG mode.
    assert free == {
        "node_a100_mig_3_instances": {"qa-mig-worker-gpu-a100/gpu0-unpartitioned": Fraction(3, 7)},
        "node_a100_mig_4_instances": {"qa-mig-worker-gpu-a100/gpu0-unpartitioned": Fraction(2, 7)},
        "node_a100_mig_7g40gb": {},
        "node_t4_fractional_1_workload": {},
    }


def test_real_runai_pods_request_gpus_by_annotation(shared_data: Path) -> None:
    folder = shared_data / "telemetry" / "k8s"
    load = lambda name: json.loads((folder / f"{name}.json").read_text())  # noqa: E731
    assert gpu_request(load("pod_mig_1g5gb")) == GpuRequest(mig=(("1g.5gb", 1),))
    assert gpu_request(load("pod_mig_7g5gb")) == GpuRequest(mig=(("7g.40gb", 1),))
    assert gpu_request(load("pod_runai_2.17_fractional")) == GpuRequest(fraction=Fraction(1, 2))
    reservation = load("pod_runai_2.17_fractional_reservation")
    assert gpu_request(reservation) == GpuRequest(whole=1)
    # The reservation pod only holds the GPU for the fractional pods: not an allocation.
    assert allocation_from_pod(reservation, observed_at=WINDOW) is None
    fractional = allocation_from_pod(load("pod_runai_2.17_fractional"), observed_at=WINDOW)
    assert fractional is not None
    assert fractional.start == datetime(2024, 3, 31, 9, 3, 27, tzinfo=UTC)  # PodScheduled
    assert fractional.end is None


def test_single_strategy_mig_and_time_slicing_labels() -> None:
    single = node_gpus({
        "metadata": {"name": "a100-single", "labels": {
            "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb",
            "nvidia.com/mig.strategy": "single", "nvidia.com/gpu.count": "7"}},
        "status": {"allocatable": {"nvidia.com/gpu": "7"}},
    })
    assert single.product == "A100-SXM4-40GB"
    assert [d.mig_profile for d in single.devices()] == ["1g.5gb"] * 7
    assert sum(d.gpu_equivalents for d in single.devices()) == 1
    shared = node_gpus(by_name("gpu-l4-ts"))
    assert (shared.product, shared.whole_gpus, shared.replicas) == ("L4", 1, 4)


@pytest.mark.parametrize(
    ("resources", "annotations", "expected"),
    [
        ({"limits": {"nvidia.com/gpu": "2"}}, {}, GpuRequest(whole=2)),
        ({"requests": {"nvidia.com/mig-3g.40gb": 1}}, {}, GpuRequest(mig=(("3g.40gb", 1),))),
        ({}, {"gpu-fraction": "0.25"}, GpuRequest(fraction=Fraction(1, 4))),
        ({}, {"gpu_milli": "300"}, GpuRequest(fraction=Fraction(3, 10))),
        ({}, {}, GpuRequest()),
    ],
)
def test_gpu_request_sources(resources, annotations, expected) -> None:
    pod = {"kind": "Pod", "metadata": {"name": "p", "namespace": "n", "annotations": annotations},
           "spec": {"containers": [{"name": "c", "resources": resources}]}}
    assert gpu_request(pod) == expected


def test_init_container_request_counts_as_the_scheduler_does() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {
        "initContainers": [{"name": "warm", "resources": {"limits": {"nvidia.com/gpu": "4"}}}],
        "containers": [{"name": "a", "resources": {"limits": {"nvidia.com/gpu": "1"}}},
                       {"name": "b", "resources": {"limits": {"nvidia.com/gpu": "2"}}}],
    }}
    assert gpu_request(pod).whole == 4


@pytest.mark.parametrize(
    ("resources", "annotations", "message"),
    [
        ({"limits": {"nvidia.com/gpu": "1.5"}}, {}, "whole number"),
        ({"limits": {"nvidia.com/mig-9g.80gb": "1"}}, {}, "compute slices"),
        ({}, {"gpu-fraction": "1.5"}, "(0, 1]"),
        ({}, {"gpu-fraction": "half"}, "not a number"),
    ],
)
def test_bad_gpu_requests_name_the_pod_and_field(resources, annotations, message) -> None:
    pod = {"kind": "Pod", "metadata": {"name": "p", "namespace": "n", "annotations": annotations},
           "spec": {"containers": [{"name": "c", "resources": resources}]}}
    with pytest.raises(PodSpecError, match="Pod n/p") as error:
        gpu_request(pod)
    assert message in str(error.value)


def test_tenant_resolution_order() -> None:
    namespace_map = {"ns": "from-map"}
    assert resolve_tenant("ns", {"chargeback/tenant": "ns-label"},
                          {"chargeback/tenant": "pod-label"}, namespace_map) == "ns-label"
    assert resolve_tenant("ns", {}, {"chargeback/tenant": "pod-label"},
                          namespace_map) == "pod-label"
    assert resolve_tenant("ns", {}, {}, namespace_map) == "from-map"
    assert resolve_tenant("other", {}, {}, namespace_map) == UNATTRIBUTED_TENANT
    assert resolve_tenant("ns", {"chargeback/tenant": "  "}, {}, namespace_map) == "from-map"


def test_allocation_ends_at_last_container_finish() -> None:
    pod = by_name("train-0")
    pod["status"]["phase"] = "Succeeded"
    pod["status"]["containerStatuses"][0]["state"] = {"terminated": {
        "exitCode": 0, "reason": "Completed", "startedAt": "2026-10-31T22:00:05Z",
        "finishedAt": "2026-11-01T01:00:20Z"}}
    allocation = allocation_from_pod(pod, observed_at=datetime(2026, 11, 2, tzinfo=UTC))
    assert allocation is not None
    assert allocation.start == datetime(2026, 10, 31, 22, tzinfo=UTC)
    assert allocation.end == datetime(2026, 11, 1, 1, 0, 20, tzinfo=UTC)
    assert not allocation.end_is_observed


# ---------------------------------------------------------------------------------------------
# Rows from state (no server): packing and conservation


def test_real_mig_pods_on_real_a100_nodes() -> None:
    state = CollectorState()
    pod = fixture("pod_mig_1g5gb.json")
    state.nodes["qa-mig-worker-gpu-a100"] = node_gpus(fixture("node_a100_mig_4_instances.json"))
    state.upsert_pod(pod, observed_at=WINDOW)
    start = datetime(2023, 1, 19, 8, tzinfo=UTC)
    rows = state.rows(start, 60, cluster="qa")
    assert not validate_ledger(rows)
    mine = [r for r in rows if r["pod"] == "job-2-0-0"]
    assert len(mine) == 1
    assert mine[0]["allocated_gpu_seconds"] == pytest.approx(60 / 7)
    assert mine[0]["gpu_product"] == "A100-SXM4-40GB"
    # The node's one A100 for 60 s: 3 x 1g.5gb + 2g.10gb = 5/7 partitioned, one 1g.5gb of it
    # held by the pod; the other 4/7 of the instances and the 2/7 no instance covers are idle.
    assert sum(r["allocated_gpu_seconds"] for r in rows) == pytest.approx(60)
    assert sum(r["allocated_gpu_seconds"] for r in rows if r["tenant"] == IDLE_TENANT) == (
        pytest.approx(60 * 6 / 7))
    (free,) = [r for r in rows if r["gpu_uuid"].endswith("-unpartitioned")]
    assert free["gpu_uuid"] == "qa-mig-worker-gpu-a100/gpu0-unpartitioned"
    assert (free["tenant"], free["workload_kind"], free["pod"]) == (IDLE_TENANT, "idle", None)
    assert free["gpu_equivalents"] == pytest.approx(2 / 7)
    assert free["allocated_gpu_seconds"] == pytest.approx(60 * 2 / 7)
    assert (free["gpu_product"], free["mig_profile"]) == ("A100-SXM4-40GB", None)
    assert_conserved(rows, state)

    # The 7g.40gb pod on the node as it was later reconfigured: it holds the whole GPU.
    state = CollectorState()
    state.nodes["qa-mig-worker-gpu-a100"] = node_gpus(fixture("node_a100_mig_7g40gb.json"))
    state.upsert_pod(fixture("pod_mig_7g5gb.json"), observed_at=WINDOW)
    rows = state.rows(datetime(2023, 1, 19, 12, tzinfo=UTC), 60, cluster="qa")
    assert [(r["pod"], r["allocated_gpu_seconds"], r["mig_profile"]) for r in rows] == [
        ("job-969475a25a51-0-0", 60.0, "7g.40gb")]


def test_pods_that_exceed_node_capacity_are_kept_on_their_own_device() -> None:
    state = CollectorState()
    state.nodes["gpu-h100-a"] = node_gpus(by_name("gpu-h100-a"))
    for i in range(3):
        pod = by_name("llm-0")
        pod["metadata"]["uid"] = f"uid-{i}"
        pod["metadata"]["name"] = f"llm-{i}"
        state.upsert_pod(pod, observed_at=WINDOW)
    rows = state.rows(WINDOW, 60, cluster="c")
    assert not validate_ledger(rows)
    devices = {r["pod"]: r["gpu_uuid"] for r in rows}
    assert devices["llm-0"] == "gpu-h100-a/gpu0"
    assert devices["llm-1"] == "gpu-h100-a/gpu1"
    assert devices["llm-2"].startswith("gpu-h100-a/unplaced-uid-2")
    assert sum(r["allocated_gpu_seconds"] for r in rows) == 180


def test_pods_that_follow_each_other_share_a_device_within_a_window() -> None:
    state = CollectorState()
    state.nodes["gpu-h100-a"] = node_gpus(by_name("gpu-h100-a"))
    first, second = by_name("llm-0"), by_name("train-0")
    first["status"]["phase"] = "Succeeded"
    first["status"]["containerStatuses"][0]["state"] = {"terminated": {
        "exitCode": 0, "startedAt": "2026-10-31T20:00:00Z", "finishedAt": "2026-11-01T01:00:20Z"}}
    second["status"]["conditions"][0]["lastTransitionTime"] = "2026-11-01T01:00:30Z"
    for pod in (first, second):
        state.upsert_pod(pod, observed_at=WINDOW + timedelta(minutes=5))
    rows = state.rows(WINDOW, 60, cluster="c")
    assert not validate_ledger(rows)
    # llm-0 holds gpu0 for 20 s, train-0 arrives at 30 s and fits on gpu0 too: 10 s idle there,
    # gpu1 idle all minute.
    by_device = defaultdict(list)
    for row in rows:
        by_device[row["gpu_uuid"]].append((row["pod"], row["allocated_gpu_seconds"]))
    assert sorted(by_device["gpu-h100-a/gpu0"], key=str) == sorted(
        [("llm-0", 20.0), ("train-0", 30.0), (None, 10.0)], key=str)
    assert by_device["gpu-h100-a/gpu1"] == [(None, 60.0)]


# ---------------------------------------------------------------------------------------------
# The real kubernetes client against the loopback API server


EXPECTED_SECONDS = {
    # gpu-h100-a: two whole H100s, one pod each.
    "llm-0": 60.0,
    "train-0": 60.0,
    # gpu-h100-mig (3g.40gb + 2g.20gb + 2 x 1g.10gb = one H100): x/7 of 60 s each.
    "notebook-0": 60 / 7,
    "vllm-70b-0": 120 / 7,
    "ft-0": 180 / 7,
    "idle:gpu-h100-mig/mig-1g.10gb-1": 60 / 7,
    # gpu-l4-ts: one L4 in 4 time-slicing replicas; two pods hold one replica each and one
    # pod holds gpu_milli 250: a quarter each, one quarter idle.
    "job-0": 15.0,
    "svc-0": 15.0,
    "milli-0": 15.0,
    "idle:gpu-l4-ts/gpu0": 15.0,
    # i-0b498db53280b86a6: the Run:ai 0.5 fraction of a T4 (its reservation pod is not billed).
    "frac-1-0-0": 30.0,
    "idle:i-0b498db53280b86a6/gpu0": 30.0,
}


def test_list_through_real_client_gives_hand_computed_rows(kube) -> None:
    collector = make_collector(kube)
    assert collector.server_version() == "v1.31.4"
    collector.sync()
    table = collector.rows(WINDOW, 60)
    rows = table.to_pylist()
    assert not validate_ledger(rows)
    assert set(table.column("source").to_pylist()) == {"pods"}
    assert pod_seconds(rows) == pytest.approx(EXPECTED_SECONDS)
    assert_conserved(rows, collector.state)
    tenants = {r["pod"]: r["tenant"] for r in rows if r["pod"]}
    assert tenants == {
        "llm-0": "acme", "train-0": "acme",        # namespace label
        "notebook-0": "beta",                       # pod label
        "ft-0": "research-bu",                      # namespace map
        "vllm-70b-0": SHARED_TENANT,                # shared endpoint
        "job-0": UNATTRIBUTED_TENANT, "milli-0": UNATTRIBUTED_TENANT,
        "svc-0": "gamma",                           # namespace label beats pod label and map
        "frac-1-0-0": "pa",
    }
    row = {r["pod"]: r for r in rows}
    assert (row["vllm-70b-0"]["namespace"], row["vllm-70b-0"]["model"],
            row["vllm-70b-0"]["model_params_b"]) == ("serving", "llama-3.1-70b", 70.0)
    assert row["llm-0"]["workload_kind"] == "inference"
    assert row["milli-0"]["workload_kind"] == "unknown"
    assert row["ft-0"]["mig_profile"] == "3g.40gb"
    assert row["ft-0"]["gpu_product"] == "H100-80GB-HBM3"
    assert row["svc-0"]["gpu_product"] == "L4"
    assert row["llm-0"]["used_gpu_seconds"] is None
    # Same state, same window: same sample ids (a rerun replaces rather than adds).
    assert collector.rows(WINDOW, 60).column("sample_id").to_pylist() == (
        table.column("sample_id").to_pylist())


def test_rows_carry_their_devices_gpu_equivalents_as_the_warehouse_reads_them(kube) -> None:
    # Conservation reads a device's capacity from its rows: duration x gpu_equivalents. A pod
    # holding a time-slicing replica or a fraction holds a share of the seconds, not of that.
    collector = make_collector(kube)
    collector.sync()
    rows = collector.rows(WINDOW, 60).to_pylist()
    devices = {d.device_id: float(d.gpu_equivalents)
               for node in collector.state.nodes.values() for d in node.devices()}
    assert {r["gpu_uuid"]: r["gpu_equivalents"] for r in rows} == devices
    held: dict[str, float] = defaultdict(float)
    for row in rows:
        held[row["gpu_uuid"]] += row["allocated_gpu_seconds"]
    assert held == pytest.approx({g: 60 * e for g, e in devices.items()})
    svc = next(r for r in rows if r["pod"] == "svc-0")
    assert (svc["gpu_equivalents"], svc["allocated_gpu_seconds"]) == (1.0, 15.0)


def test_chunked_list_follows_continue_tokens(kube) -> None:
    collector = make_collector(kube, page_size=3)
    collector.relist()
    pod_lists = kube.requests_to("pods")
    assert len(pod_lists) == 4  # 12 pods in pages of 3
    assert all(q["limit"] == "3" for q in pod_lists)
    assert [("continue" in q) for q in pod_lists] == [False, True, True, True]
    assert pod_seconds(collector.rows(WINDOW, 60).to_pylist()) == pytest.approx(EXPECTED_SECONDS)


def test_watch_added_modified_deleted(kube) -> None:
    clock = Clock(datetime(2026, 11, 1, 0, 30, tzinfo=UTC))
    collector = make_collector(kube, clock=clock)
    collector.sync()
    listed = collector.pods.resource_version

    new = by_name("llm-0")
    new["metadata"].update(name="llm-1", uid="uid-acme-llm-1")
    new["spec"]["nodeName"] = "gpu-l4-ts"
    new["status"]["conditions"][0]["lastTransitionTime"] = "2026-11-01T01:00:00Z"
    kube.put(new)
    clock.now = datetime(2026, 11, 1, 1, 0, 5, tzinfo=UTC)
    assert collector.sync() == 1
    watch = kube.requests_to("pods")[-1]
    assert watch["watch"] == "true"
    assert watch["resourceVersion"] == listed
    assert watch["allowWatchBookmarks"] == "true"
    assert "timeoutSeconds" in watch
    seconds = pod_seconds(collector.rows(WINDOW, 60).to_pylist())
    assert seconds["llm-1"] == 15.0  # one time-slicing replica of the L4, now fully held
    assert "idle:gpu-l4-ts/gpu0" not in seconds

    new["status"]["phase"] = "Failed"
    new["status"]["containerStatuses"][0]["state"] = {"terminated": {
        "exitCode": 137, "reason": "OOMKilled", "startedAt": "2026-11-01T01:00:01Z",
        "finishedAt": "2026-11-01T01:00:40Z"}}
    kube.put(new)
    clock.now = datetime(2026, 11, 1, 1, 2, tzinfo=UTC)
    assert collector.sync() == 1
    kube.delete(new)
    clock.now = datetime(2026, 11, 1, 1, 5, tzinfo=UTC)
    assert collector.sync() == 1
    allocation = collector.state.allocations["uid-acme-llm-1"]
    assert allocation.end == datetime(2026, 11, 1, 1, 0, 40, tzinfo=UTC)
    rows = collector.rows(WINDOW, 60).to_pylist()
    assert not validate_ledger(rows)
    seconds = pod_seconds(rows)
    assert seconds["llm-1"] == 10.0  # 40 s x 1/4
    assert seconds["idle:gpu-l4-ts/gpu0"] == 5.0
    assert sum(1 for r in rows if r["pod"] == "llm-1") == 1


def test_deleted_pod_without_finish_time_ends_when_deletion_was_seen(kube) -> None:
    clock = Clock(datetime(2026, 11, 1, 0, 30, tzinfo=UTC))
    collector = make_collector(kube, clock=clock)
    collector.sync()
    clock.now = datetime(2026, 11, 1, 1, 0, 45, tzinfo=UTC)
    kube.delete(by_name("train-0"))
    collector.sync()
    assert pod_seconds(collector.rows(WINDOW, 60).to_pylist())["train-0"] == 45.0


def test_bookmark_advances_resource_version(kube) -> None:
    collector = make_collector(kube)
    collector.sync()
    kube.put(by_name("acme-prod"))  # a namespace change: no pod event, but the clock moves
    assert collector.sync() == 0
    assert collector.pods.resource_version == str(kube.cluster.resource_version)
    collector.sync()
    assert kube.requests_to("pods")[-1]["resourceVersion"] == str(kube.cluster.resource_version)


def test_410_gone_relists_without_double_counting(kube) -> None:
    clock = Clock(datetime(2026, 11, 1, 0, 30, tzinfo=UTC))
    collector = make_collector(kube, clock=clock)
    collector.sync()
    before = collector.rows(WINDOW, 60).to_pylist()

    # While the collector was away: history compacted, one pod deleted, one added.
    kube.compact()
    kube.delete(by_name("job-0"))
    added = by_name("train-0")
    added["metadata"].update(name="train-1", uid="uid-acme-train-1")
    added["spec"]["nodeName"] = "gpu-l4-ts"
    kube.put(added)
    kube.compact()
    clock.now = datetime(2026, 11, 1, 1, 0, 30, tzinfo=UTC)
    collector.sync()
    assert collector.relists == 2
    rows = collector.rows(WINDOW, 60).to_pylist()
    assert not validate_ledger(rows)
    seconds = pod_seconds(rows)
    # Every pod still running has exactly one row, with the same id as before the relist.
    ids_before = {r["pod"]: r["sample_id"] for r in before if r["pod"]}
    ids_after = {r["pod"]: r["sample_id"] for r in rows if r["pod"]}
    assert len(ids_after) == len([r for r in rows if r["pod"]])
    for pod, sample_id in ids_before.items():
        if pod != "job-0":
            assert ids_after[pod] == sample_id
    # job-0's deletion was missed: it ends when the relist no longer showed it.
    assert seconds["job-0"] == 30 * 0.25
    assert seconds["train-1"] == 15.0
    assert seconds["llm-0"] == 60.0
    assert_conserved(rows, collector.state)


def test_resume_after_dropped_connection(kube) -> None:
    collector = make_collector(kube)
    collector.sync()
    names = []
    for i in range(3):
        pod = by_name("train-0")
        pod["metadata"].update(name=f"batch-{i}", uid=f"uid-batch-{i}")
        pod["spec"]["nodeName"] = "gpu-l4-ts"
        kube.put(pod)
        names.append(pod["metadata"]["name"])
    first_version = kube.cluster.resource_version - 2
    kube.drop_next_watch_after("pods", 1)
    collector.sync()
    assert collector.resumes == 1
    assert set(collector.state.allocations) >= {"uid-batch-0"}
    assert "uid-batch-1" not in collector.state.allocations
    assert collector.pods.resource_version == str(first_version)
    collector.sync()
    assert kube.requests_to("pods")[-1]["resourceVersion"] == str(first_version)
    assert {"uid-batch-0", "uid-batch-1", "uid-batch-2"} <= set(collector.state.allocations)
    assert collector.relists == 1


def test_forget_ended_before_keeps_running_pods(kube) -> None:
    clock = Clock(datetime(2026, 11, 1, 0, 30, tzinfo=UTC))
    collector = make_collector(kube, clock=clock)
    collector.sync()
    kube.delete(by_name("job-0"))
    clock.now = datetime(2026, 11, 1, 0, 40, tzinfo=UTC)
    collector.sync()
    assert collector.state.forget_ended_before(datetime(2026, 11, 1, 1, tzinfo=UTC)) == 1
    assert "uid-stray-job-0" not in collector.state.allocations
    assert "uid-acme-llm-0" in collector.state.allocations


def test_client_from_kubeconfig_reaches_the_server(kube, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "loop",
        "clusters": [{"name": "loop", "cluster": {"server": kube.url}}],
        "users": [{"name": "me", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "loop", "context": {"cluster": "loop", "user": "me"}}],
    }))
    collector = PodCollector(api_client_from_environment(str(kubeconfig)), cluster="loop")
    assert collector.server_version() == "v1.31.4"
    with pytest.raises(KubeConfigError, match="kubeconfig"):
        api_client_from_environment(str(tmp_path / "missing"))


def test_pod_on_a_node_without_gpu_inventory_is_kept_with_unknown_product() -> None:
    state = CollectorState()
    state.upsert_pod(by_name("llm-0"), observed_at=WINDOW)  # its node was never listed
    rows = state.rows(WINDOW, 60, cluster="c")
    assert not validate_ledger(rows)
    assert [(r["pod"], r["gpu_product"], r["allocated_gpu_seconds"]) for r in rows] == [
        ("llm-0", "UNKNOWN", 60.0)]


def _mig_node(labels: dict[str, str], allocatable: dict[str, str]) -> dict[str, Any]:
    return {"kind": "Node", "metadata": {"name": "n", "labels": {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB", **labels}},
        "status": {"allocatable": allocatable}}


@pytest.mark.parametrize(
    ("labels", "allocatable", "free", "gpus"),
    [
        # Mixed: 2 GPUs, one whole (not MIG) and one with a 3g.20gb: 4 of its 7 slices free.
        ({"nvidia.com/gpu.count": "2"},
         {"nvidia.com/gpu": "1", "nvidia.com/mig-3g.20gb": "1"},
         {"n/gpu1-unpartitioned": Fraction(4, 7)}, 2),
        # Mixed: 3 MIG GPUs holding 7 x 1g.5gb + 3g.20gb = 10/7: the instances fill GPU 0 and
        # 3/7 of GPU 1, so 4/7 of GPU 1 and all of GPU 2 are unpartitioned.
        ({"nvidia.com/gpu.count": "3"},
         {"nvidia.com/gpu": "0", "nvidia.com/mig-1g.5gb": "7", "nvidia.com/mig-3g.20gb": "1"},
         {"n/gpu1-unpartitioned": Fraction(4, 7), "n/gpu2-unpartitioned": Fraction(1)}, 3),
        # No gpu.count label: as many GPUs as the instances need at least (one), 1/7 free.
        ({}, {"nvidia.com/mig-2g.10gb": "3"}, {"n/gpu0-unpartitioned": Fraction(1, 7)}, 1),
        # Single strategy: gpu.count counts the 3 instances, not GPUs; 3 x 2g.10gb = 6/7.
        ({"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-2g.10gb",
          "nvidia.com/mig.strategy": "single", "nvidia.com/gpu.count": "3"},
         {"nvidia.com/gpu": "3"}, {"n/gpu0-unpartitioned": Fraction(1, 7)}, 1),
        # No MIG at all: nothing unpartitioned.
        ({"nvidia.com/gpu.count": "2"}, {"nvidia.com/gpu": "2"}, {}, 2),
    ],
)
def test_unpartitioned_mig_slices_per_gpu(labels, allocatable, free, gpus) -> None:
    node = node_gpus(_mig_node(labels, allocatable))
    devices = node.devices()
    assert {d.device_id: d.gpu_equivalents for d in devices
            if d.device_id.endswith("-unpartitioned")} == free
    assert sum(d.gpu_equivalents for d in devices) == gpus


def test_unpartitioned_slices_are_idle_and_never_hold_a_pod() -> None:
    # One A100 with a single 3g.20gb instance: two pods ask for one each. The first gets the
    # instance; the second cannot run in the free slices (they are no instance), so it is kept
    # on a device of its own, and the 4/7 stays idle.
    state = CollectorState()
    state.nodes["n"] = node_gpus(_mig_node({"nvidia.com/gpu.count": "1"},
                                           {"nvidia.com/mig-3g.20gb": "1"}))
    for i in range(2):
        pod = by_name("llm-0")
        pod["metadata"].update(name=f"mig-{i}", uid=f"uid-mig-{i}")
        pod["spec"]["nodeName"] = "n"
        pod["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/mig-3g.20gb": "1"}}
        state.upsert_pod(pod, observed_at=WINDOW)
    rows = state.rows(WINDOW, 60, cluster="c")
    assert not validate_ledger(rows)
    where = {r["pod"]: r["gpu_uuid"] for r in rows if r["pod"]}
    assert where["mig-0"] == "n/mig-3g.20gb-0"
    assert where["mig-1"].startswith("n/unplaced-uid-mig-1")
    idle = [(r["gpu_uuid"], r["allocated_gpu_seconds"]) for r in rows
            if r["tenant"] == IDLE_TENANT]
    assert idle == [("n/gpu0-unpartitioned", pytest.approx(60 * 4 / 7))]


def test_bad_gpu_count_label_names_the_node() -> None:
    with pytest.raises(PodSpecError, match=r"Node n: label nvidia.com/gpu.count: 'two'"):
        node_gpus(_mig_node({"nvidia.com/gpu.count": "two"}, {"nvidia.com/mig-1g.5gb": "1"}))
