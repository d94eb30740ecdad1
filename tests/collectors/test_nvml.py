"""NVML collector against a fake NVML built from real `nvidia-smi -q -x` outputs.

The node: the five real files in ../shared/data/telemetry/nvidia_smi as one machine, in name
order: an A100-SXM4-40GB in MIG mode with two 3g.20gb instances (index 0), an RTX 2080 with 26
compute+graphics processes (Windows, memory N/A) at 2 % utilization, an RTX 3060 Laptop whose
only process is Xorg (graphics, so no compute process), an RTX 4090 and a Tesla P100, idle.
Pods come from cgroup files written under a temporary /proc."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pynvml
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.nvml import (
    Device,
    DeviceSample,
    NodeSample,
    NoNvidiaDriver,
    NvmlCollector,
    NvmlUnavailable,
    PodInfo,
    ProcessSample,
    collect_interval,
)
from models.ledger.gaps import Gap, GapReason
from models.ledger.usage import (
    GPU_SECONDS_TOLERANCE,
    IDLE_TENANT,
    UNATTRIBUTED_TENANT,
    validate_ledger,
)
from tests.collectors.fake_nvml import FakeGpu, FakeMig, FakeNvml

A100 = "GPU-27b94a00-ed54-5c24-b1fd-1054085de32a"
RTX2080 = "GPU-fbd55ed4-1eec-4423-0a47-ad594b4333e3"
RTX3060 = "GPU-473d8d0f-d462-185c-6b36-6fc23e23e571"
RTX4090 = "GPU-71d1acc2-662d-2166-bf9f-65272d2fc437"
P100 = "GPU-d3da8716-eaab-75db-efc1-60e88e1cd55e"
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
D = 10.0

POD_A = "aaaaaaaa-0000-4000-8000-00000000000a"
POD_B = "bbbbbbbb-0000-4000-8000-00000000000b"
POD_C = "cccccccc-0000-4000-8000-00000000000c"
LOOKUP = {
    POD_A: PodInfo("acme", "acme-prod", "llm-0", "inference", "llama-3-70b", 70.0),
    POD_B: PodInfo("zen", "zen-batch", "embed-7", "batch", "bge-large", 0.335),
}


@pytest.fixture
def fake(shared_data: Path) -> FakeNvml:
    return FakeNvml.from_xml(sorted((shared_data / "telemetry" / "nvidia_smi").glob("*.xml")))


def in_pod(proc: Path, pid: int, pod_uid: str | None) -> None:
    """Give `pid` a cgroup file: in a burstable pod (systemd driver, containerd), or on the host."""
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    if pod_uid is None:
        path = "/system.slice/sshd.service"
    else:
        uid = pod_uid.replace("-", "_")
        path = (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/"
                f"cri-containerd-{pid:064x}.scope")
    (proc / str(pid) / "cgroup").write_text(f"0::{path}\n")


def rtx2080_pids(fake: FakeNvml) -> list[int]:
    return [p.pid for p in fake.gpu(RTX2080).processes]


def collector(fake: FakeNvml, proc: Path) -> NvmlCollector:
    return NvmlCollector(node="gpu-node-1", cluster="lab", backend=fake, pod_lookup=LOOKUP,
                         proc_root=proc)


def by_device(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        out[row["gpu_uuid"]].append(row)
    return out


def assert_conserved(rows: list[dict]) -> None:
    for uuid, device_rows in by_device(rows).items():
        capacity = device_rows[0]["duration_s"] * device_rows[0]["gpu_equivalents"]
        total = sum(r["allocated_gpu_seconds"] for r in device_rows)
        assert math.isclose(total, capacity, abs_tol=GPU_SECONDS_TOLERANCE), uuid


def one_window(c: NvmlCollector) -> list[dict]:
    c.sample(T0 + timedelta(seconds=D))
    rows = c.rows(T0, D).to_pylist()
    assert validate_ledger(rows) == []
    assert_conserved(rows)
    assert c.gaps(T0, D) == []
    return rows


def gap_spans(gaps: list[Gap]) -> list[tuple[str | None, float, float, str]]:
    """(device, start, end in seconds after T0, reason) of each gap."""
    return [(g.gpu_uuid, (g.window_start - T0).total_seconds(),
             (g.window_end - T0).total_seconds(), g.reason.value) for g in gaps]


def test_inventory_from_real_nvidia_smi(fake: FakeNvml, tmp_path: Path) -> None:
    c = collector(fake, tmp_path)
    devices = {d.uuid: d for d in c.inventory.devices}
    assert c.inventory.mig_enabled == (A100,)
    migs = [d for d in devices.values() if d.parent_uuid == A100]
    # The file's two instances have 42 SMs (3 of 7 A100 slices) and 19968 MiB each.
    assert [(d.mig_profile, d.product) for d in migs] == [("3g.20gb", "NVIDIA A100-SXM4-40GB")] * 2
    assert all(math.isclose(d.gpu_equivalents, 3 / 7) for d in migs)
    assert all(d.uuid.startswith("MIG-") and d.memory_total_bytes == 19968 * 2**20 for d in migs)
    assert A100 not in devices  # a MIG-mode GPU is metered through its instances only
    assert {u: devices[u].product for u in (RTX2080, RTX3060, RTX4090, P100)} == {
        RTX2080: "NVIDIA GeForce RTX 2080",
        RTX3060: "NVIDIA GeForce RTX 3060 Laptop GPU",
        RTX4090: "NVIDIA GeForce RTX 4090",
        P100: "Tesla P100-PCIE-16GB",
    }
    assert all(devices[u].gpu_equivalents == 1.0 and devices[u].mig_profile is None
               for u in (RTX2080, RTX3060, RTX4090, P100))
    assert devices[P100].memory_total_bytes == 16384 * 2**20


def test_mig_profile_from_slice_counts_when_the_name_lacks_it(shared_data: Path,
                                                              tmp_path: Path) -> None:
    fake = FakeNvml.from_xml(
        [shared_data / "telemetry" / "nvidia_smi" / "a100-sxm4-mig.xml"], mig_names_profile=False
    )
    c = collector(fake, tmp_path)
    assert [d.mig_profile for d in c.inventory.devices] == ["3g.20gb", "3g.20gb"]


def test_idle_node_is_all_idle_and_conserved(fake: FakeNvml, tmp_path: Path) -> None:
    fake.gpu(RTX2080).processes = []  # the only GPU with compute processes in the files
    rows = one_window(collector(fake, tmp_path))
    assert len(rows) == 6
    assert {r["tenant"] for r in rows} == {IDLE_TENANT}
    assert {r["workload_kind"] for r in rows} == {"idle"}
    assert {r["source"] for r in rows} == {"nvml"}
    mig_rows = [r for r in rows if r["mig_profile"]]
    assert [r["allocated_gpu_seconds"] for r in mig_rows] == pytest.approx([D * 3 / 7] * 2)


def test_one_pod_holds_the_whole_gpu(fake: FakeNvml, tmp_path: Path) -> None:
    for pid in rtx2080_pids(fake):
        in_pod(tmp_path, pid, POD_A)
    rows = by_device(one_window(collector(fake, tmp_path)))[RTX2080]
    [row] = rows
    assert row["tenant"] == "acme"
    assert row["pod_uid"] == POD_A
    assert row["pod"] == "llm-0"
    assert (row["namespace"], row["model"], row["model_params_b"]) == (
        "acme-prod", "llama-3-70b", 70.0)
    assert row["allocated_gpu_seconds"] == pytest.approx(D)
    # No per-process samples: activity is the device's 2 % utilization in the XML.
    assert row["used_gpu_seconds"] == pytest.approx(0.02 * D)
    # Windows WDDM reports no per-process memory.
    assert row["memory_used_bytes"] is None


def test_time_shared_gpu_splits_by_sm_share(fake: FakeNvml, tmp_path: Path) -> None:
    pids = rtx2080_pids(fake)
    a, b = pids[:10], pids[10:]
    for pid in a:
        in_pod(tmp_path, pid, POD_A)
    for pid in b:
        in_pod(tmp_path, pid, POD_B)
    us = int((T0 + timedelta(seconds=5)).timestamp() * 1e6)
    # Pod A: one process at 30 % (two samples averaging 30); pod B: two processes at 5 % each.
    fake.add_utilization(RTX2080, a[0], 20, us)
    fake.add_utilization(RTX2080, a[0], 40, us + 1000)
    fake.add_utilization(RTX2080, b[0], 5, us)
    fake.add_utilization(RTX2080, b[1], 5, us)
    rows = {r["tenant"]: r for r in by_device(one_window(collector(fake, tmp_path)))[RTX2080]}
    assert set(rows) == {"acme", "zen"}
    # Shares 30 : 10 -> 3/4 and 1/4 of 10 s; the device ran 40 % -> used = share x 0.4.
    assert rows["acme"]["allocated_gpu_seconds"] == pytest.approx(7.5)
    assert rows["zen"]["allocated_gpu_seconds"] == pytest.approx(2.5)
    assert rows["acme"]["used_gpu_seconds"] == pytest.approx(3.0)
    assert rows["zen"]["used_gpu_seconds"] == pytest.approx(1.0)


def test_time_shared_idle_gpu_splits_equally(fake: FakeNvml, tmp_path: Path) -> None:
    pids = rtx2080_pids(fake)
    for i, pid in enumerate(pids):
        in_pod(tmp_path, pid, [POD_A, POD_B, POD_C][i % 3])
    us = int(T0.timestamp() * 1e6) + 1
    for pid in pids:
        fake.add_utilization(RTX2080, pid, 0, us)
    rows = by_device(one_window(collector(fake, tmp_path)))[RTX2080]
    assert sorted(r["pod_uid"] for r in rows) == sorted([POD_A, POD_B, POD_C])
    assert [r["allocated_gpu_seconds"] for r in rows] == pytest.approx([D / 3] * 3)
    assert [r["used_gpu_seconds"] for r in rows] == [0.0, 0.0, 0.0]


def test_unknown_pods_and_host_processes_are_unattributed(fake: FakeNvml, tmp_path: Path) -> None:
    pids = rtx2080_pids(fake)
    in_pod(tmp_path, pids[0], POD_C)  # a pod the pod collector does not know
    for pid in pids[1:]:
        in_pod(tmp_path, pid, None)  # host processes, no kubepods cgroup
    rows = by_device(one_window(collector(fake, tmp_path)))[RTX2080]
    assert {(r["tenant"], r["pod_uid"], r["workload_kind"]) for r in rows} == {
        (UNATTRIBUTED_TENANT, POD_C, "unknown"),
        (UNATTRIBUTED_TENANT, None, "unknown"),
    }
    assert len({r["sample_id"] for r in rows}) == 2


def test_lookup_may_be_a_callable(fake: FakeNvml, tmp_path: Path) -> None:
    for pid in rtx2080_pids(fake):
        in_pod(tmp_path, pid, POD_B)
    asked: list[str] = []

    def lookup(uid: str) -> PodInfo | None:
        asked.append(uid)
        return LOOKUP.get(uid)

    c = NvmlCollector(node="n", cluster="c", backend=fake, pod_lookup=lookup, proc_root=tmp_path)
    rows = by_device(one_window(c))[RTX2080]
    assert asked == [POD_B]
    assert rows[0]["tenant"] == "zen"


def test_mig_instances_are_devices_with_their_own_rows(fake: FakeNvml, tmp_path: Path) -> None:
    c = collector(fake, tmp_path)
    first, second = (d for d in c.inventory.devices if d.parent_uuid == A100)
    fake.add_process(first.uuid, 5001, used_memory_bytes=3 * 2**30)
    fake.add_process(first.uuid, 5002, used_memory_bytes=1 * 2**30)
    in_pod(tmp_path, 5001, POD_A)
    in_pod(tmp_path, 5002, POD_A)
    rows = by_device(one_window(c))
    [pod_row] = rows[first.uuid]
    assert pod_row["tenant"] == "acme"
    assert pod_row["mig_profile"] == "3g.20gb"
    assert pod_row["allocated_gpu_seconds"] == pytest.approx(D * 3 / 7)
    # MIG instances answer no utilization query: NVML cannot say how busy they were.
    assert pod_row["used_gpu_seconds"] is None
    assert pod_row["memory_used_bytes"] == 4 * 2**30
    [idle_row] = rows[second.uuid]
    assert idle_row["tenant"] == IDLE_TENANT
    assert idle_row["allocated_gpu_seconds"] == pytest.approx(D * 3 / 7)


def test_snapshots_within_a_window_are_time_weighted(fake: FakeNvml, tmp_path: Path) -> None:
    c = collector(fake, tmp_path)
    fake.add_process(RTX4090, 6001, used_memory_bytes=2**30)
    in_pod(tmp_path, 6001, POD_A)
    c.sample(T0 + timedelta(seconds=2))  # covers [0, 2): pod A
    fake.remove_process(6001)
    fake.add_process(RTX4090, 6002, used_memory_bytes=2**31)
    in_pod(tmp_path, 6002, POD_B)
    c.sample(T0 + timedelta(seconds=6))  # covers [2, 6): pod B
    fake.remove_process(6002)
    c.sample(T0 + timedelta(seconds=9))  # covers [6, 10): nobody
    rows = c.rows(T0, D).to_pylist()
    assert validate_ledger(rows) == []
    assert_conserved(rows)
    got = {r["tenant"]: r for r in by_device(rows)[RTX4090]}
    assert got["acme"]["allocated_gpu_seconds"] == pytest.approx(2.0)
    assert got["zen"]["allocated_gpu_seconds"] == pytest.approx(4.0)
    assert got[IDLE_TENANT]["allocated_gpu_seconds"] == pytest.approx(4.0)
    assert got["zen"]["memory_used_bytes"] == 2**31


def test_process_exiting_between_calls_is_a_gap_not_its_neighbours_time(
    fake: FakeNvml, tmp_path: Path
) -> None:
    fake.add_process(RTX4090, 7001)
    fake.add_process(RTX4090, 7002)
    in_pod(tmp_path, 7001, POD_A)
    # 7002 was listed by NVML, then exited: no /proc entry and NVML no longer knows it, and
    # no earlier snapshot saw it. Half the GPU (no SM samples: equal shares) is nobody's known.
    fake.exited.add(7002)
    c = collector(fake, tmp_path)
    c.sample(T0 + timedelta(seconds=D))
    rows = c.rows(T0, D).to_pylist()
    assert validate_ledger(rows) == []
    assert [(r["tenant"], r["allocated_gpu_seconds"]) for r in by_device(rows)[RTX4090]] == [
        ("acme", D / 2)]
    [gap] = c.gaps(T0, D)
    assert gap_spans([gap]) == [(RTX4090, 0.0, D, "process_exited")]
    assert "process 7002 exited before its pod could be read" in gap.detail
    assert (gap.source, gap.node, gap.cluster) == ("nvml", "gpu-node-1", "lab")


def test_process_seen_before_it_exited_keeps_its_pod(fake: FakeNvml, tmp_path: Path) -> None:
    fake.add_process(RTX4090, 7101)
    fake.add_process(RTX4090, 7102)
    in_pod(tmp_path, 7101, POD_A)
    in_pod(tmp_path, 7102, POD_B)
    c = collector(fake, tmp_path)
    c.sample(T0 + timedelta(seconds=4))
    # 7102 exits between the next listing and the read of its cgroup: the previous snapshot
    # read its pod, so its share stays zen's.
    (tmp_path / "7102" / "cgroup").unlink()
    (tmp_path / "7102").rmdir()
    fake.exited.add(7102)
    c.sample(T0 + timedelta(seconds=D))
    rows = c.rows(T0, D).to_pylist()
    assert_conserved(rows)
    assert {r["tenant"]: r["allocated_gpu_seconds"] for r in by_device(rows)[RTX4090]} == (
        pytest.approx({"acme": D / 2, "zen": D / 2}))
    assert c.gaps(T0, D) == []


def test_process_invisible_to_an_agent_without_host_pids_is_unattributed(
    fake: FakeNvml, tmp_path: Path
) -> None:
    # NVML knows the process but /proc does not (agent deployed without hostPID).
    fake.add_process(RTX4090, 7101)
    rows = by_device(one_window(collector(fake, tmp_path)))[RTX4090]
    assert [(r["tenant"], r["pod_uid"]) for r in rows] == [(UNATTRIBUTED_TENANT, None)]


def test_no_samples_yet_falls_back_to_device_utilization(fake: FakeNvml, tmp_path: Path) -> None:
    for pid in rtx2080_pids(fake):
        in_pod(tmp_path, pid, POD_A)
    c = collector(fake, tmp_path)
    snapshot = c.sample(T0 + timedelta(seconds=D))  # the fake has no samples: NOT_FOUND
    sample = next(d for d in snapshot.devices if d.uuid == RTX2080)
    assert sample.lost is None
    assert len(sample.processes) == 26
    assert all(p.sm_util_pct is None for p in sample.processes)
    assert sample.gpu_util_pct == 2.0


def test_samples_are_not_counted_twice(fake: FakeNvml, tmp_path: Path) -> None:
    fake.add_process(RTX4090, 8001)
    in_pod(tmp_path, 8001, POD_A)
    fake.add_utilization(RTX4090, 8001, 80, int(T0.timestamp() * 1e6) + 5)
    c = collector(fake, tmp_path)
    first = c.sample(T0 + timedelta(seconds=5))
    second = c.sample(T0 + timedelta(seconds=10))
    util = [next(d for d in s.devices if d.uuid == RTX4090).processes[0].sm_util_pct
            for s in (first, second)]
    assert util == [80.0, None]


def test_permission_denied_on_process_utilization_is_not_fatal(fake: FakeNvml,
                                                                tmp_path: Path) -> None:
    fake.add_process(RTX4090, 8101)
    in_pod(tmp_path, 8101, POD_A)
    fake.inject("nvmlDeviceGetProcessUtilization", pynvml.NVMLError_NoPermission, times=10)
    rows = by_device(one_window(collector(fake, tmp_path)))[RTX4090]
    assert [(r["tenant"], r["used_gpu_seconds"]) for r in rows] == [("acme", 0.0)]


def test_lost_gpu_is_reported_and_the_node_continues(fake: FakeNvml, tmp_path: Path) -> None:
    fake.add_process(RTX4090, 9001)
    in_pod(tmp_path, 9001, POD_A)
    fake.add_process(P100, 9002)
    in_pod(tmp_path, 9002, POD_B)
    c = collector(fake, tmp_path)
    c.sample(T0 + timedelta(seconds=5))
    fake.gpu(RTX4090).lost = True
    snapshot = c.sample(T0 + timedelta(seconds=10))
    assert snapshot.lost == {RTX4090: "GPU is lost"}
    rows = c.rows(T0, D).to_pylist()
    assert validate_ledger(rows) == []
    devices = by_device(rows)
    # [0, 5) pod A held the 4090; [5, 10) it could not be read: a gap, not idle capacity.
    assert {r["tenant"]: r["allocated_gpu_seconds"] for r in devices[RTX4090]} == pytest.approx(
        {"acme": 5.0})
    assert [(r["tenant"], r["allocated_gpu_seconds"]) for r in devices[P100]] == [("zen", D)]
    assert_conserved([r for r in rows if r["gpu_uuid"] != RTX4090])
    [gap] = c.gaps(T0, D)
    assert gap_spans([gap]) == [(RTX4090, 5.0, D, "device_lost")]
    assert gap.detail == f"NVIDIA GeForce RTX 4090 {RTX4090}: GPU is lost"
    # Next round the lost GPU cannot even be enumerated; it stays in the report as lost.
    later = c.sample(T0 + timedelta(seconds=15))
    assert later.lost == {RTX4090: "GPU is lost"}
    assert any("GPU index 3" in m for m in c.inventory.unreachable)
    fake.gpu(RTX4090).lost = False
    c.sample(T0 + timedelta(seconds=20))
    back = c.sample(T0 + timedelta(seconds=25))
    assert back.lost == {}


def test_driver_restart_is_survived(fake: FakeNvml, tmp_path: Path) -> None:
    fake.add_process(RTX4090, 9101)
    in_pod(tmp_path, 9101, POD_A)
    c = collector(fake, tmp_path)
    devices = {d.uuid for d in c.inventory.devices}
    fake.restart_driver()
    during = c.sample(T0 + timedelta(seconds=5))
    assert set(during.lost) == devices
    after = c.sample(T0 + timedelta(seconds=10))
    assert after.lost == {}
    rows = c.rows(T0, D).to_pylist()
    # [0, 5): nothing could be read, on any GPU; [5, 10) as usual.
    assert {r["tenant"]: r["allocated_gpu_seconds"] for r in by_device(rows)[RTX4090]} == (
        pytest.approx({"acme": 5.0}))
    assert sum(r["allocated_gpu_seconds"] for r in rows) == pytest.approx(
        5.0 * sum(d.gpu_equivalents for d in c.inventory.devices))
    gaps = c.gaps(T0, D)
    assert sorted(gap_spans(gaps), key=str) == sorted(
        [(uuid, 0.0, 5.0, "driver_unavailable") for uuid in devices], key=str)


def test_driver_unloaded_across_samples_is_one_gap_per_device(fake: FakeNvml,
                                                               tmp_path: Path) -> None:
    fake.add_process(P100, 9201)
    in_pod(tmp_path, 9201, POD_B)
    c = collector(fake, tmp_path)
    c.sample(T0 + timedelta(seconds=2))
    fake.unload_driver()  # calls now raise NVMLError_DriverNotLoaded, nvmlInit too
    first = c.sample(T0 + timedelta(seconds=4))
    second = c.sample(T0 + timedelta(seconds=6))
    assert set(first.lost) == set(second.lost) == {d.uuid for d in c.inventory.devices}
    assert "Driver Not Loaded" in second.lost[P100]
    fake.load_driver()
    c.sample(T0 + timedelta(seconds=8))
    c.sample(T0 + timedelta(seconds=D))
    rows = c.rows(T0, D).to_pylist()
    assert validate_ledger(rows) == []
    # zen held the P100 while it could be read: [0, 2) and [6, 10).
    assert [(r["tenant"], r["allocated_gpu_seconds"]) for r in by_device(rows)[P100]] == [
        ("zen", pytest.approx(6.0))]
    assert gap_spans([g for g in c.gaps(T0, D) if g.gpu_uuid == P100]) == [
        (P100, 2.0, 6.0, "driver_unavailable")]


def test_a_window_without_any_sample_is_a_gap_per_device(fake: FakeNvml,
                                                         tmp_path: Path) -> None:
    c = collector(fake, tmp_path)
    c.sample(T0 + timedelta(seconds=D))
    assert c.rows(T0 + timedelta(seconds=D), D).num_rows == 0  # sampling stalled
    gaps = c.gaps(T0 + timedelta(seconds=D), D)
    assert sorted(gap_spans(gaps), key=str) == sorted(
        [(d.uuid, D, 2 * D, "not_sampled") for d in c.inventory.devices], key=str)


def test_no_driver_raises_a_clear_error(fake: FakeNvml) -> None:
    fake.driver = False
    with pytest.raises(NoNvidiaDriver, match="no NVIDIA driver on this node") as info:
        NvmlCollector(node="n", cluster="c", backend=fake)
    assert isinstance(info.value.__cause__, pynvml.NVMLError_LibraryNotFound)


def test_other_init_failures_are_not_called_a_missing_driver(fake: FakeNvml) -> None:
    fake.inject("nvmlInit", pynvml.NVMLError_NoPermission)
    with pytest.raises(NvmlUnavailable, match="NVML could not start") as info:
        NvmlCollector(node="n", cluster="c", backend=fake)
    assert not isinstance(info.value, NoNvidiaDriver)


def test_rows_are_idempotent_and_old_snapshots_dropped(fake: FakeNvml, tmp_path: Path) -> None:
    c = collector(fake, tmp_path)
    c.sample(T0 + timedelta(seconds=10))
    first = c.rows(T0, D).to_pylist()
    again = c.rows(T0, D).to_pylist()
    assert first == again
    c.sample(T0 + timedelta(seconds=20))
    c.rows(T0 + timedelta(seconds=10), D)
    # The window [0, 10) is behind us: its snapshot was dropped.
    assert c.rows(T0, D).num_rows == 0


def test_naive_times_are_refused(fake: FakeNvml, tmp_path: Path) -> None:
    c = collector(fake, tmp_path)
    with pytest.raises(ValueError, match="naive"):
        c.sample(datetime(2026, 11, 2, 10, 0))  # noqa: DTZ001 - the mistake under test
    with pytest.raises(ValueError, match="naive"):
        c.rows(datetime(2026, 11, 2, 10, 0), D)  # noqa: DTZ001


# -- conservation over arbitrary snapshots (no shared data needed) ------------------------

WHOLE = FakeGpu("GPU-00000000-0000-4000-8000-000000000001", "NVIDIA H100 80GB HBM3",
                80 * 2**30, 0, 0, 0, None)


@settings(max_examples=200, deadline=None)
@given(
    equivalents=st.sampled_from([1.0, 1 / 7, 3 / 7, 2 / 7]),
    snapshots=st.lists(
        st.tuples(
            st.integers(1, 60_000),  # ms into a 60 s window
            st.booleans(),  # device lost
            st.lists(st.tuples(st.sampled_from([POD_A, POD_B, POD_C, None]),
                               st.one_of(st.none(), st.floats(0, 100)),
                               st.booleans()),  # exited before its pod was read
                     max_size=6),
            st.one_of(st.none(), st.floats(0, 100)),
        ),
        min_size=1, max_size=8,
    ),
)
def test_conservation_for_any_snapshots(equivalents: float, snapshots: list) -> None:
    device = Device("MIG-x", "NVIDIA H100 80GB HBM3", 0, None, equivalents, None, None)
    samples = [
        NodeSample(
            T0 + timedelta(milliseconds=ms),
            (DeviceSample(
                "MIG-x",
                tuple(ProcessSample(i, pod, None, None, sm, exited)
                      for i, (pod, sm, exited) in enumerate(procs)),
                gpu_util, None, "GPU is lost" if lost else None),),
        )
        for ms, lost, procs, gpu_util in snapshots
    ]
    rows, gaps = collect_interval([device], samples, T0, 60.0, node="n", cluster="c",
                                  pod_lookup=LOOKUP)
    assert validate_ledger(rows, now=T0 + timedelta(days=1)) == []
    total = sum(r["allocated_gpu_seconds"] for r in rows)
    capacity = 60.0 * equivalents
    lost_s = sum((g.window_end - g.window_start).total_seconds() for g in gaps
                 if g.reason is GapReason.DEVICE_LOST)
    # Rows never exceed what the device could hold; lost time is a gap, never a row; and
    # only a process that exited unread leaves capacity to a gap while the device was read.
    assert total <= capacity - lost_s * equivalents + GPU_SECONDS_TOLERANCE
    if not any(g.reason is GapReason.PROCESS_EXITED for g in gaps):
        assert math.isclose(total + lost_s * equivalents, capacity,
                            abs_tol=GPU_SECONDS_TOLERANCE)
    assert all(g.gpu_uuid == "MIG-x" and g.window_start < g.window_end for g in gaps)
    assert len({r["sample_id"] for r in rows}) == len(rows)


def test_built_in_code_gpus_work_without_shared_data(tmp_path: Path) -> None:
    gpu = FakeGpu(WHOLE.uuid, WHOLE.name, WHOLE.memory_total_bytes, 0, 50, 0,
                  pynvml.NVML_DEVICE_MIG_ENABLE,
                  migs=[FakeMig("MIG-11111111-2222-4333-8444-555555555555", 1, 0, 16,
                                10 * 2**30, 0, 1, 1)])
    fake = FakeNvml([gpu])
    c = collector(fake, tmp_path)
    [device] = c.inventory.devices
    # 16 SMs = 1 H100 slice; 10 GiB -> the 1g.10gb profile, 1/7 of the GPU.
    assert (device.mig_profile, device.gpu_equivalents) == ("1g.10gb", pytest.approx(1 / 7))
