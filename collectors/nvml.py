"""NVML collector: GPU devices, MIG instances and their processes -> ledger rows (source `nvml`).

The only module that imports `pynvml`. The library is injected as a module-like `backend`
(the real `pynvml` by default) so tests can pass a fake with the same calls and errors.

How a window becomes rows. `NvmlCollector.sample(now)` takes a snapshot of every device: its
compute processes (PID -> pod through `/proc/<pid>/cgroup`), the processes' SM utilization
samples NVML buffered since the previous snapshot, device utilization and memory. A snapshot
at time `s` stands for the time since the snapshot before it, so a window `[t, t + d)` is made
of the snapshots with `t < s <= t + d`: the first covers from `t`, each next one from its
predecessor, and the last also holds until `t + d`. Within each piece of time:

- no process on the device: the piece is `__idle__`;
- the device could not be read (fell off the bus, the driver restarting): the piece has no
  rows but a gap (models/ledger/gaps.py): could not read is never idle;
- one pod: it holds the whole device (`allocated = piece x gpu_equivalents`);
- several pods (time-slicing): each holds a share equal to its processes' share of the summed
  SM utilization, or an equal share when none of them ran a kernel;
- used = allocated x the device's measured activity (summed SM utilization of its processes,
  else NVML's device utilization). MIG instances report neither, so there `used` is None and
  DCGM (collectors/prometheus.py) is the source of activity.

- a process NVML listed but that exited before its pod could be read, and that no earlier
  snapshot had seen: its share of the piece is a gap, the other processes keep theirs.

Per device and window the rows and the gaps therefore cover `d x gpu_equivalents`
(conservation): rows alone, whenever the device could be read all window.
"""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from math import ceil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pynvml

from collectors.cgroups import PodCgroup, ProcessGone, pod_of_pid
from models.errors import UserError
from models.ledger.gaps import Gap, GapReason
from models.ledger.tiers import UnknownMigProfile, mig_gpu_equivalents
from models.ledger.usage import (
    IDLE_TENANT,
    UNATTRIBUTED_TENANT,
    PodInfo,
    WorkloadKind,
    ledger_table,
    make_sample_id,
)

SOURCE = "nvml"

# nvmlInit's answer on a node without the NVIDIA driver (no libnvidia-ml.so, or no kernel
# module); any other init failure is a broken driver, which the operator fixes differently.
_NO_DRIVER = (pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded)
# The whole library stopped answering (driver unloaded or upgraded under us): re-initialize.
_DRIVER_GONE = (
    pynvml.NVMLError_Uninitialized,
    pynvml.NVMLError_DriverNotLoaded,
    pynvml.NVMLError_LibRmVersionMismatch,
)
# A query this device or this handle does not answer (MIG instances have no utilization,
# unprivileged containers see no per-process data): the value is unknown, the device is fine.
_UNANSWERED = (
    pynvml.NVMLError_NotSupported,
    pynvml.NVMLError_NotFound,
    pynvml.NVMLError_NoPermission,
)
_MIG_NAME = re.compile(r"\bMIG[\s-]+(?P<profile>(?:\d+c\.)?\d+g\.\d+gb(?:\+[a-z]+)*)", re.I)


class NvmlUnavailable(UserError):
    """NVML cannot be used on this node; the agent reports it and exits non-zero."""


class NoNvidiaDriver(NvmlUnavailable):
    """This node has no NVIDIA driver (or no NVML library): there is nothing to collect."""


PodLookup = Callable[[str], PodInfo | None] | Mapping[str, PodInfo]
"""pod UID -> PodInfo, or None / absent when unknown (the row goes to `__unattributed__`)."""


@dataclass(frozen=True)
class Device:
    """A metered device: a whole GPU not in MIG mode, or one MIG instance."""

    uuid: str
    """`GPU-...` for a whole GPU, `MIG-...` for a MIG instance."""
    product: str
    """The physical GPU's NVML name, e.g. `NVIDIA A100-SXM4-40GB` (also for its instances)."""
    index: int
    """NVML index of the physical GPU."""
    mig_profile: str | None
    gpu_equivalents: float
    parent_uuid: str | None
    """The physical GPU's UUID for a MIG instance, else None."""
    memory_total_bytes: int | None


@dataclass(frozen=True)
class Inventory:
    devices: tuple[Device, ...]
    mig_enabled: tuple[str, ...]
    """UUIDs of physical GPUs in MIG mode (metered through their instances)."""
    unreachable: tuple[str, ...]
    """One message per GPU index that could not be enumerated (e.g. fell off the bus)."""


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    pod_uid: str | None
    """None for a process outside any Kubernetes pod (or whose cgroup could not be read)."""
    container_id: str | None
    memory_used_bytes: int | None
    sm_util_pct: float | None
    """Mean SM utilization over NVML's samples since the previous snapshot; None if none."""
    exited: bool = False
    """Listed by NVML, but gone before its pod could be read, and never seen before: whose
    it was is unknown."""


@dataclass(frozen=True)
class DeviceSample:
    uuid: str
    processes: tuple[ProcessSample, ...]
    gpu_util_pct: float | None
    memory_used_bytes: int | None
    lost: str | None = None
    """Why the device could not be read (e.g. `GPU is lost`); None when it was read."""
    lost_reason: GapReason = GapReason.DEVICE_LOST
    """DRIVER_UNAVAILABLE when NVML as a whole stopped answering."""


@dataclass(frozen=True)
class NodeSample:
    time: datetime
    devices: tuple[DeviceSample, ...]

    @property
    def lost(self) -> dict[str, str]:
        """UUID -> reason, for every device that could not be read in this snapshot."""
        return {d.uuid: d.lost for d in self.devices if d.lost is not None}


def collect_interval(
    devices: Iterable[Device] | Mapping[str, Device],
    samples: Iterable[NodeSample],
    window_start: datetime,
    duration_s: float,
    *,
    node: str,
    cluster: str,
    pod_lookup: PodLookup | None = None,
) -> tuple[list[dict[str, Any]], list[Gap]]:
    """Ledger rows (dicts of LEDGER_SCHEMA's columns) for `[window_start, +duration_s)`, and
    the gaps: the pieces of time a device could not be read, or held by a process whose pod
    could not be read.

    Uses the snapshots with `window_start < time <= window_start + duration_s`; a device that
    appears in none of them gets no rows (no data is not idleness)."""
    if window_start.tzinfo is None or window_start.utcoffset() is None:
        raise ValueError(f"window_start {window_start.isoformat()} is naive: pass a UTC time")
    if not duration_s > 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    by_uuid = dict(devices) if isinstance(devices, Mapping) else {d.uuid: d for d in devices}
    end = window_start + timedelta(seconds=duration_s)
    per_device: dict[str, list[tuple[datetime, DeviceSample]]] = defaultdict(list)
    for snapshot in sorted(samples, key=lambda s: s.time):
        if window_start < snapshot.time <= end:
            for sample in snapshot.devices:
                per_device[sample.uuid].append((snapshot.time, sample))
    lookup = _as_lookup(pod_lookup)
    rows: list[dict[str, Any]] = []
    gaps: list[Gap] = []
    for uuid, entries in per_device.items():
        device = by_uuid.get(uuid)
        if device is None:
            raise ValueError(f"snapshot names device {uuid}, which is not in the inventory")
        device_rows, unread = _device_rows(device, entries, window_start, end, node, cluster,
                                           lookup)
        rows += device_rows
        # Consecutive pieces unread for the same reason make one gap (saying the first why).
        for piece_start, piece_end, reason, problem in unread:
            last = gaps[-1] if gaps else None
            if (last is not None and last.gpu_uuid == uuid and last.reason == reason
                    and last.window_end == piece_start):
                gaps[-1] = replace(last, window_end=piece_end)
            else:
                gaps.append(Gap(SOURCE, cluster, node, uuid, piece_start, piece_end, reason,
                                problem))
    return rows, gaps


@dataclass
class _Holding:
    allocated: float = 0.0
    used: float | None = 0.0
    memory: int | None = None


def _device_rows(
    device: Device,
    entries: list[tuple[datetime, DeviceSample]],
    start: datetime,
    end: datetime,
    node: str,
    cluster: str,
    lookup: Callable[[str], PodInfo | None],
) -> tuple[list[dict[str, Any]], list[tuple[datetime, datetime, GapReason, str]]]:
    capacity = device.gpu_equivalents
    holdings: dict[str | None, _Holding] = {}
    idle = 0.0
    unread: list[tuple[datetime, datetime, GapReason, str]] = []
    previous = start
    for i, (time, sample) in enumerate(entries):
        piece_start, piece_end = previous, end if i == len(entries) - 1 else time
        seconds = (piece_end - piece_start).total_seconds()
        previous = time
        if sample.lost is not None:
            if seconds > 0:
                unread.append((piece_start, piece_end, sample.lost_reason,
                               f"{device.product} {device.uuid}: {sample.lost}"))
            continue
        if not sample.processes:
            idle += seconds * capacity
            continue
        by_pod: dict[str, list[ProcessSample]] = defaultdict(list)
        for process in sample.processes:
            # None (no pod) is its own key: all pod-less processes make one unattributed row.
            # Each exited process is its own key too: its share is left to the gap.
            key = f"exited:{process.pid}" if process.exited else process.pod_uid or ""
            by_pod[key].append(process)
        exited = sorted(p.pid for p in sample.processes if p.exited)
        if exited and seconds > 0:
            unread.append((piece_start, piece_end, GapReason.PROCESS_EXITED,
                           f"{device.uuid}: process {', '.join(map(str, exited))} exited "
                           "before its pod could be read"))
        measured = any(p.sm_util_pct is not None for p in sample.processes)
        util = {k: sum(p.sm_util_pct or 0.0 for p in ps) for k, ps in by_pod.items()}
        total = sum(util.values())
        activity: float | None
        if measured:
            # Per-process samples can add up past 100 % (overlapping sample periods).
            activity = min(1.0, total / 100)
        elif sample.gpu_util_pct is not None:
            activity = sample.gpu_util_pct / 100
        else:
            activity = None
        for key, processes in by_pod.items():
            if key.startswith("exited:"):
                continue
            share = util[key] / total if measured and total > 0 else 1 / len(by_pod)
            allocated = seconds * capacity * share
            holding = holdings.setdefault(key or None, _Holding())
            holding.allocated += allocated
            if holding.used is not None:
                holding.used = None if activity is None else holding.used + allocated * activity
            memory = [p.memory_used_bytes for p in processes if p.memory_used_bytes is not None]
            if memory:
                holding.memory = max(holding.memory or 0, sum(memory))
    rows = []
    for pod_uid, holding in holdings.items():
        info = lookup(pod_uid) if pod_uid else None
        rows.append(
            _row(device, start, end, node, cluster, pod_uid, info, holding.allocated,
                 holding.used, holding.memory)
        )
    if idle > 0 or not (rows or unread):
        rows.append(
            _row(device, start, end, node, cluster, None,
                 PodInfo(IDLE_TENANT, workload_kind=WorkloadKind.IDLE.value), idle, 0.0, None)
        )
    return rows, unread


def _row(
    device: Device,
    start: datetime,
    end: datetime,
    node: str,
    cluster: str,
    pod_uid: str | None,
    info: PodInfo | None,
    allocated: float,
    used: float | None,
    memory: int | None,
) -> dict[str, Any]:
    info = info or PodInfo(UNATTRIBUTED_TENANT)
    return {
        "sample_id": make_sample_id(
            SOURCE, node, device.uuid, pod_uid or info.tenant, start.isoformat()
        ),
        "window_start": start,
        "duration_s": (end - start).total_seconds(),
        "cluster": cluster,
        "node": node,
        "gpu_uuid": device.uuid,
        "gpu_product": device.product,
        "mig_profile": device.mig_profile,
        "gpu_equivalents": device.gpu_equivalents,
        "tenant": info.tenant,
        "namespace": info.namespace,
        "pod": info.pod,
        "pod_uid": pod_uid,
        "workload_kind": info.workload_kind,
        "model": info.model,
        "model_params_b": info.model_params_b,
        "allocated_gpu_seconds": allocated,
        "used_gpu_seconds": used,
        "memory_used_bytes": memory,
        "source": SOURCE,
    }


def _as_lookup(pod_lookup: PodLookup | None) -> Callable[[str], PodInfo | None]:
    if pod_lookup is None:
        return lambda _uid: None
    if isinstance(pod_lookup, Mapping):
        return pod_lookup.get
    return pod_lookup


class NvmlCollector:
    """Samples this node's GPUs through NVML and turns snapshots into ledger rows.

    `NvmlCollector(node=..., cluster=...)` initializes NVML and enumerates the devices; it
    raises NoNvidiaDriver when the node has no driver and NvmlUnavailable when NVML fails
    otherwise. Call `sample(now)` every sampling interval and `rows(window_start,
    duration_s)` once per window; `close()` (or a `with` block) shuts NVML down."""

    def __init__(
        self,
        *,
        node: str,
        cluster: str,
        backend: Any = None,
        pod_lookup: PodLookup | None = None,
        proc_root: Path = Path("/proc"),
    ) -> None:
        self.node = node
        self.cluster = cluster
        self.pod_lookup = pod_lookup
        self.proc_root = proc_root
        self._nvml: Any = pynvml if backend is None else backend
        try:
            self._nvml.nvmlInit()
        except _NO_DRIVER as exc:
            raise NoNvidiaDriver(
                f"no NVIDIA driver on this node: nvmlInit failed with {exc!s}; run the NVML "
                "collector only on GPU nodes (DaemonSet nodeSelector), with the driver "
                "and /dev/nvidia* mounted"
            ) from exc
        except pynvml.NVMLError as exc:
            raise NvmlUnavailable(
                f"NVML could not start on this node: nvmlInit failed with {exc!s}; check the "
                "driver with nvidia-smi on the node"
            ) from exc
        self._handles: dict[str, Any] = {}
        self._known: dict[str, Device] = {}
        self._last_seen_us: dict[str, int] = {}
        self._samples: list[NodeSample] = []
        self._gaps: dict[datetime, list[Gap]] = {}
        self._pods_seen: dict[int, PodCgroup] = {}
        """PID -> pod of the processes the previous snapshot read."""
        self._stale = False
        self._enumeration_lost: dict[str, str] = {}
        self.inventory = self.refresh_inventory()

    def __enter__(self) -> NvmlCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        # Already shut down, or the driver left: there is nothing to release.
        with contextlib.suppress(pynvml.NVMLError):
            self._nvml.nvmlShutdown()

    @property
    def devices(self) -> dict[str, Device]:
        """Every device seen since start (lost ones included), by UUID."""
        return dict(self._known)

    def refresh_inventory(self) -> Inventory:
        """Enumerate GPUs and MIG instances again (after a GPU loss or a MIG change)."""
        try:
            inventory, handles = self._enumerate()
        except _DRIVER_GONE:
            self.close()
            self._nvml.nvmlInit()
            inventory, handles = self._enumerate()
        self.inventory, self._handles, self._stale = inventory, handles, False
        self._known.update((d.uuid, d) for d in inventory.devices)
        return inventory

    def _enumerate(self) -> tuple[Inventory, dict[str, Any]]:
        nvml = self._nvml
        devices: list[Device] = []
        handles: dict[str, Any] = {}
        mig_enabled: list[str] = []
        unreachable: list[str] = []
        lost: dict[str, str] = {}
        for index in range(nvml.nvmlDeviceGetCount()):
            found: list[tuple[Device, Any]] = []
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = nvml.nvmlDeviceGetUUID(handle)
                name = nvml.nvmlDeviceGetName(handle)
                info = _optional(nvml.nvmlDeviceGetMemoryInfo, handle)
                memory = None if info is None else int(info.total)
                mig = _optional(nvml.nvmlDeviceGetMigMode, handle)
                if mig is None or mig[0] != pynvml.NVML_DEVICE_MIG_ENABLE:
                    found.append((Device(uuid, name, index, None, 1.0, None, memory), handle))
                else:
                    mig_enabled.append(uuid)
                    for slot in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
                        try:
                            instance = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                        except pynvml.NVMLError_NotFound:
                            continue  # an empty slot: fewer instances than the maximum
                        found.append((self._mig_device(instance, name, index, uuid), instance))
            except _DRIVER_GONE:
                raise
            except pynvml.NVMLError as exc:
                unreachable.append(f"GPU index {index} on node {self.node}: {exc!s}")
                # Keep metering what we knew of it, as lost, rather than let it vanish.
                for known in self._known.values():
                    if known.index == index:
                        devices.append(known)
                        lost[known.uuid] = str(exc)
                continue
            for device, device_handle in found:
                devices.append(device)
                handles[device.uuid] = device_handle
        inventory = Inventory(tuple(devices), tuple(mig_enabled), tuple(unreachable))
        self._enumeration_lost = lost
        return inventory, handles

    def _mig_device(self, handle: Any, product: str, index: int, parent: str) -> Device:
        nvml = self._nvml
        uuid = nvml.nvmlDeviceGetUUID(handle)
        match = _MIG_NAME.search(nvml.nvmlDeviceGetName(handle))
        if match:
            profile = match["profile"].lower()
        else:
            # Older drivers name instances like their parent; the slice counts still say it.
            attributes = nvml.nvmlDeviceGetAttributes(handle)
            gpu_slices = attributes.gpuInstanceSliceCount
            compute_slices = attributes.computeInstanceSliceCount
            memory_gb = ceil(attributes.memorySizeMB / 1024)
            profile = f"{gpu_slices}g.{memory_gb}gb"
            if compute_slices < gpu_slices:
                profile = f"{compute_slices}c.{profile}"
        try:
            equivalents = float(mig_gpu_equivalents(profile, product))
        except UnknownMigProfile as exc:
            raise NvmlUnavailable(
                f"MIG instance {uuid} of {product} (GPU index {index}) on node {self.node}: "
                f"{exc}; report this layout so the profile table can learn it"
            ) from exc
        info = _optional(nvml.nvmlDeviceGetMemoryInfo, handle)
        memory = None if info is None else int(info.total)
        return Device(uuid, product, index, profile, equivalents, parent, memory)

    def sample(self, now: datetime) -> NodeSample:
        """Snapshot every device; lost devices are reported in the result, not raised."""
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"sample time {now.isoformat()} is naive: pass a UTC time")
        if self._stale:
            try:
                self.refresh_inventory()
            except pynvml.NVMLError as exc:
                return self._keep(NodeSample(now, self._all_lost(f"NVML unavailable: {exc!s}")))
        samples: list[DeviceSample] = []
        seen: dict[int, PodCgroup] = {}
        for device in self.inventory.devices:
            handle = self._handles.get(device.uuid)
            if handle is None:
                reason = self._enumeration_lost.get(device.uuid, "no NVML handle")
                samples.append(DeviceSample(device.uuid, (), None, None, reason))
                self._stale = True
                continue
            try:
                samples.append(self._sample_device(device.uuid, handle, seen))
            except _DRIVER_GONE as exc:
                self._stale = True
                done = {s.uuid for s in samples}
                samples += [s for s in self._all_lost(str(exc)) if s.uuid not in done]
                break
            except pynvml.NVMLError as exc:
                # GPU is lost / reset required / unknown: report it, go on with the others,
                # and enumerate again next time in case it came back.
                samples.append(DeviceSample(device.uuid, (), None, None, str(exc)))
                self._stale = True
        self._pods_seen = seen
        return self._keep(NodeSample(now, tuple(samples)))

    def _all_lost(self, reason: str) -> tuple[DeviceSample, ...]:
        return tuple(DeviceSample(d.uuid, (), None, None, reason, GapReason.DRIVER_UNAVAILABLE)
                     for d in self.inventory.devices)

    def _keep(self, snapshot: NodeSample) -> NodeSample:
        self._samples.append(snapshot)
        return snapshot

    def _sample_device(self, uuid: str, handle: Any, seen: dict[int, PodCgroup]
                       ) -> DeviceSample:
        nvml = self._nvml
        listed = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        since = self._last_seen_us.get(uuid, 0)
        util_samples = _optional(nvml.nvmlDeviceGetProcessUtilization, handle, since)
        sm: dict[int, list[int]] = defaultdict(list)
        for s in util_samples or ():
            if s.timeStamp > since:
                sm[s.pid].append(s.smUtil)
                self._last_seen_us[uuid] = max(self._last_seen_us.get(uuid, 0), s.timeStamp)
        processes = []
        for process in listed:
            exited = False
            try:
                pod = pod_of_pid(process.pid, self.proc_root)
            except ProcessGone:
                # Either it exited since NVML listed it, or this agent cannot see the host's
                # PIDs (no hostPID): ask NVML, so that a misdeployed agent shows its GPUs as
                # unattributed instead of idle.
                pod = None
                try:
                    nvml.nvmlSystemGetProcessName(process.pid)
                except pynvml.NVMLError_NotFound:
                    # Exited: the previous snapshot may have read its pod; if not, whose it
                    # was is unknown, and its share is a gap, not its neighbours' or idle.
                    pod = self._pods_seen.get(process.pid)
                    exited = pod is None
                except pynvml.NVMLError_NoPermission:
                    pass  # alive as far as anyone can tell: unattributed, never dropped
            except OSError:
                pod = None  # unreadable cgroup: count it, unattributed, rather than drop it
            if pod is not None:
                seen[process.pid] = pod
            utils = sm.get(process.pid)
            processes.append(
                ProcessSample(
                    pid=process.pid,
                    pod_uid=pod.pod_uid if pod else None,
                    container_id=pod.container_id if pod else None,
                    memory_used_bytes=process.usedGpuMemory,
                    sm_util_pct=sum(utils) / len(utils) if utils else None,
                    exited=exited,
                )
            )
        rates = _optional(nvml.nvmlDeviceGetUtilizationRates, handle)
        memory = _optional(nvml.nvmlDeviceGetMemoryInfo, handle)
        return DeviceSample(
            uuid,
            tuple(processes),
            gpu_util_pct=None if rates is None else float(rates.gpu),
            memory_used_bytes=None if memory is None else int(memory.used),
        )

    def rows(self, window_start: datetime, duration_s: float) -> pa.Table:
        """Ledger rows of `[window_start, +duration_s)` as a LEDGER_SCHEMA table.

        Snapshots at or before `window_start` are dropped afterwards; calling again for the
        same window gives the same rows (same sample_ids). What could not be read of the
        window is kept for `gaps`."""
        rows, gaps = collect_interval(
            self._known, self._samples, window_start, duration_s,
            node=self.node, cluster=self.cluster, pod_lookup=self.pod_lookup,
        )
        end = window_start + timedelta(seconds=duration_s)
        sampled = {d.uuid for s in self._samples if window_start < s.time <= end
                   for d in s.devices}
        gaps += [Gap(SOURCE, self.cluster, self.node, device.uuid, window_start, end,
                     GapReason.NOT_SAMPLED, f"{device.product} {device.uuid}: no NVML "
                     "snapshot in the window (sampling failed or stalled)")
                 for device in self.inventory.devices if device.uuid not in sampled]
        self._gaps = {window_start: gaps}  # only the window just read waits for `gaps`
        self._samples = [s for s in self._samples if s.time > window_start]
        return ledger_table(rows)

    def gaps(self, window_start: datetime, _duration_s: float) -> list[Gap]:
        """What `rows` could not read of the same window (per device and piece of time)."""
        return self._gaps.pop(window_start, [])


def _optional(call: Callable[..., Any], *args: Any) -> Any:
    """`call(*args)`, or None when NVML does not answer that query for this device."""
    try:
        return call(*args)
    except _UNANSWERED:
        return None
