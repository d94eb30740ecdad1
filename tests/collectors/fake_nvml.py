"""A fake NVML backend with pynvml's own function names, signatures, return types and errors.

It answers from GPUs described by real `nvidia-smi -q -x` files (`FakeNvml.from_xml`), read in
place from ../shared/data/telemetry/nvidia_smi (GPL: never copy them into the project), or
from GPUs built in code (`FakeGpu`, for benchmarks). Return values are pynvml's own ctypes
structures (c_nvmlMemory_t, c_nvmlUtilization_t, c_nvmlProcessUtilizationSample_t,
c_nvmlDeviceAttributes) or the friendly objects pynvml makes of c_nvmlProcessInfo_t, and errors
are pynvml's own NVMLError subclasses, so `except pynvml.NVMLError_NotFound` means the same
here as on a GPU node. What the real library does that the fake copies:

- every call before nvmlInit raises NVMLError_Uninitialized;
- nvmlDeviceGetMigMode raises NVMLError_NotSupported on GPUs without MIG;
- nvmlDeviceGetMigDeviceHandleByIndex raises NVMLError_NotFound for an empty slot;
- MIG instances answer no utilization queries (NVMLError_NotSupported), as nvidia-smi's N/A;
- nvmlDeviceGetProcessUtilization returns the samples newer than the timestamp given, and
  raises NVMLError_NotFound when there are none;
- compute process lists leave out graphics-only (`G`) processes; memory N/A (Windows WDDM)
  becomes usedGpuMemory None, as pynvml does;
- a GPU that fell off the bus (`FakeGpu.lost`) answers every call on it, and the handle lookup
  by index, with NVMLError_GpuIsLost;
- while the driver is unloaded (`unload_driver`, e.g. during a driver restart or upgrade)
  every call, nvmlInit included, raises NVMLError_DriverNotLoaded; once it is loaded again
  (`load_driver`) the old session is gone (NVMLError_Uninitialized until nvmlInit) and old
  handles are invalid (NVMLError_InvalidArgument);
- a process that exited after the device's process list was read (`exited`) is still in that
  list, but nvmlSystemGetProcessName raises NVMLError_NotFound for it.
"""

from __future__ import annotations

import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from math import ceil
from pathlib import Path
from typing import Any

import pynvml

MIB = 1024 * 1024
# Streaming multiprocessors per MIG compute slice (NVIDIA's MIG user guide: an A100 1g
# instance has 14 SMs, an H100 1g instance 16).
SMS_PER_SLICE = {"A100": 14, "A30": 14, "H100": 16, "H200": 16}
MAX_MIG_DEVICES = 7
NOT_AVAILABLE_UINT = 0xFFFFFFFF


@dataclass
class FakeProcess:
    pid: int
    used_memory_bytes: int | None
    type: str = "C"
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    name: str = ""


@dataclass
class FakeMig:
    uuid: str
    gpu_instance_id: int
    compute_instance_id: int
    sm_count: int
    memory_total_bytes: int
    memory_used_bytes: int
    gpu_slices: int
    compute_slices: int


@dataclass
class FakeGpu:
    uuid: str
    name: str
    memory_total_bytes: int
    memory_used_bytes: int
    gpu_util: int | None
    memory_util: int | None
    mig_mode: int | None
    """None when the GPU has no MIG (NotSupported), else NVML_DEVICE_MIG_ENABLE/DISABLE."""
    migs: list[FakeMig] = field(default_factory=list)
    processes: list[FakeProcess] = field(default_factory=list)
    lost: bool = False


@dataclass(frozen=True)
class _Handle:
    uuid: str
    generation: int


def _number(text: str | None) -> int | None:
    """`19968 MiB` -> 19968, `2 %` -> 2, `N/A` -> None."""
    if text is None:
        return None
    word = text.strip().split(" ")[0]
    return None if word in ("N/A", "") else int(float(word))


def _mig_uuid(parent: str, gpu_instance: int, compute_instance: int) -> str:
    return "MIG-" + str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"{parent}/{gpu_instance}/"
                                      f"{compute_instance}"))


def gpus_from_xml(path: Path) -> list[FakeGpu]:
    """The GPUs of one real `nvidia-smi -q -x` file."""
    root = ET.parse(path).getroot()
    gpus = []
    for gpu in root.iter("gpu"):
        name = gpu.findtext("product_name", "").strip()
        uuid = gpu.findtext("uuid", "").strip()
        mode = gpu.findtext("mig_mode/current_mig", "N/A").strip()
        mig_mode = {"Enabled": pynvml.NVML_DEVICE_MIG_ENABLE,
                    "Disabled": pynvml.NVML_DEVICE_MIG_DISABLE}.get(mode)
        migs = []
        family = next((f for f in SMS_PER_SLICE if f in name), None)
        for mig in gpu.iterfind("mig_devices/mig_device"):
            if family is None:
                raise ValueError(f"{path}: MIG on {name!r}, whose SMs per slice are unknown")
            gi = int(mig.findtext("gpu_instance_id", "0"))
            ci = int(mig.findtext("compute_instance_id", "0"))
            sms = int(mig.findtext("device_attributes/shared/multiprocessor_count", "0"))
            migs.append(FakeMig(
                uuid=_mig_uuid(uuid, gi, ci),
                gpu_instance_id=gi,
                compute_instance_id=ci,
                sm_count=sms,
                memory_total_bytes=(_number(mig.findtext("fb_memory_usage/total")) or 0) * MIB,
                memory_used_bytes=(_number(mig.findtext("fb_memory_usage/used")) or 0) * MIB,
                gpu_slices=sms // SMS_PER_SLICE[family],
                compute_slices=sms // SMS_PER_SLICE[family],
            ))
        processes = []
        for info in gpu.iterfind("processes/process_info"):
            memory = _number(info.findtext("used_memory"))
            processes.append(FakeProcess(
                pid=int(info.findtext("pid", "0")),
                used_memory_bytes=None if memory is None else memory * MIB,
                type=info.findtext("type", "C").strip(),
                gpu_instance_id=_number(info.findtext("gpu_instance_id")),
                compute_instance_id=_number(info.findtext("compute_instance_id")),
                name=info.findtext("process_name", "").strip(),
            ))
        gpus.append(FakeGpu(
            uuid=uuid,
            name=name,
            memory_total_bytes=(_number(gpu.findtext("fb_memory_usage/total")) or 0) * MIB,
            memory_used_bytes=(_number(gpu.findtext("fb_memory_usage/used")) or 0) * MIB,
            gpu_util=_number(gpu.findtext("utilization/gpu_util")),
            memory_util=_number(gpu.findtext("utilization/memory_util")),
            mig_mode=mig_mode,
            migs=migs,
            processes=processes,
        ))
    return gpus


class FakeNvml:
    """Module-like: pass an instance as `backend=` where `pynvml` would go."""

    NVML_DEVICE_MIG_ENABLE = pynvml.NVML_DEVICE_MIG_ENABLE
    NVML_DEVICE_MIG_DISABLE = pynvml.NVML_DEVICE_MIG_DISABLE
    NVMLError = pynvml.NVMLError

    def __init__(
        self,
        gpus: Iterable[FakeGpu],
        *,
        driver: bool = True,
        driver_version: str = "535.86.05",
        mig_names_profile: bool = True,
    ) -> None:
        self.gpus = list(gpus)
        self.driver = driver
        self.driver_loaded = True
        self.driver_version = driver_version
        # Drivers before R470 named a MIG device like its parent GPU; newer ones append
        # `MIG 3g.20gb`. False exercises the collector's fallback on slice counts.
        self.mig_names_profile = mig_names_profile
        self.initialized = 0
        self.generation = 0
        self.calls = 0
        self.samples: dict[str, list[Any]] = {}
        self.injected: dict[str, list[type[pynvml.NVMLError]]] = {}
        self.exited: set[int] = set()
        """PIDs still in the device's process list (read just before they exited) but gone
        for per-process queries."""

    def __getattr__(self, name: str) -> Any:
        # pynvml's error classes and constants, so code written against the module works.
        if name.startswith(("NVMLError", "NVML_")):
            return getattr(pynvml, name)
        raise AttributeError(name)

    @classmethod
    def from_xml(cls, paths: Iterable[Path], **kwargs: Any) -> FakeNvml:
        """One node with the GPUs of every file, in the order given (NVML index order)."""
        return cls([gpu for path in paths for gpu in gpus_from_xml(path)], **kwargs)

    # -- scenario controls ---------------------------------------------------------------
    def gpu(self, uuid: str) -> FakeGpu:
        return next(g for g in self.gpus if g.uuid == uuid or any(m.uuid == uuid for m in g.migs))

    def add_process(
        self, uuid: str, pid: int, used_memory_bytes: int | None = None
    ) -> FakeProcess:
        """A compute process on a GPU, or on the MIG instance `uuid`."""
        gpu = self.gpu(uuid)
        mig = next((m for m in gpu.migs if m.uuid == uuid), None)
        process = FakeProcess(
            pid, used_memory_bytes, "C",
            None if mig is None else mig.gpu_instance_id,
            None if mig is None else mig.compute_instance_id,
        )
        gpu.processes.append(process)
        return process

    def remove_process(self, pid: int) -> None:
        for gpu in self.gpus:
            gpu.processes = [p for p in gpu.processes if p.pid != pid]

    def add_utilization(
        self, uuid: str, pid: int, sm_util: int, timestamp_us: int, mem_util: int = 0
    ) -> None:
        """One per-process sample, as the driver buffers them."""
        self.samples.setdefault(uuid, []).append(pynvml.c_nvmlProcessUtilizationSample_t(
            pid=pid, timeStamp=timestamp_us, smUtil=sm_util, memUtil=mem_util,
            encUtil=0, decUtil=0,
        ))

    def inject(self, function: str, error: type[pynvml.NVMLError], times: int = 1) -> None:
        """Make the next `times` calls of `function` raise `error`."""
        self.injected.setdefault(function, []).extend([error] * times)

    def unload_driver(self) -> None:
        """The kernel module is removed (a driver restart or upgrade begins)."""
        self.driver_loaded = False

    def load_driver(self) -> None:
        """The module is back: the session ended with it and every old handle is invalid."""
        self.driver_loaded = True
        self.initialized = 0
        self.generation += 1

    def restart_driver(self) -> None:
        """Unloaded and loaded again between two calls."""
        self.unload_driver()
        self.load_driver()

    # -- helpers -------------------------------------------------------------------------
    def _enter(self, function: str) -> None:
        self.calls += 1
        pending = self.injected.get(function)
        if pending:
            raise pending.pop(0)()
        if not self.driver_loaded:
            raise pynvml.NVMLError_DriverNotLoaded()
        if not self.initialized:
            raise pynvml.NVMLError_Uninitialized()

    def _resolve(self, function: str, handle: _Handle) -> tuple[FakeGpu, FakeMig | None]:
        self._enter(function)
        if not isinstance(handle, _Handle) or handle.generation != self.generation:
            raise pynvml.NVMLError_InvalidArgument()
        gpu = self.gpu(handle.uuid)
        if gpu.lost:
            raise pynvml.NVMLError_GpuIsLost()
        return gpu, next((m for m in gpu.migs if m.uuid == handle.uuid), None)

    # -- pynvml's API --------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self.calls += 1
        pending = self.injected.get("nvmlInit")
        if pending:
            raise pending.pop(0)()
        if not self.driver:
            # What pynvml raises when CDLL("libnvidia-ml.so.1") fails.
            raise pynvml.NVMLError_LibraryNotFound()
        if not self.driver_loaded:
            raise pynvml.NVMLError_DriverNotLoaded()
        self.initialized += 1

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.initialized -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        self._enter("nvmlSystemGetProcessName")
        for gpu in self.gpus:
            for p in gpu.processes:
                if p.pid == pid and pid not in self.exited:
                    return p.name
        raise pynvml.NVMLError_NotFound()

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError_InvalidArgument()
        if self.gpus[index].lost:
            raise pynvml.NVMLError_GpuIsLost()
        return _Handle(self.gpus[index].uuid, self.generation)

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        self._resolve("nvmlDeviceGetUUID", handle)
        return handle.uuid

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        gpu, mig = self._resolve("nvmlDeviceGetName", handle)
        if mig is None or not self.mig_names_profile:
            return gpu.name
        gb = ceil(mig.memory_total_bytes / MIB / 1024)
        return f"{gpu.name} MIG {mig.gpu_slices}g.{gb}gb"

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: int | None = None) -> Any:
        gpu, mig = self._resolve("nvmlDeviceGetMemoryInfo", handle)
        total, used = ((gpu.memory_total_bytes, gpu.memory_used_bytes) if mig is None
                       else (mig.memory_total_bytes, mig.memory_used_bytes))
        return pynvml.c_nvmlMemory_t(total=total, free=total - used, used=used)

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> Any:
        gpu, mig = self._resolve("nvmlDeviceGetUtilizationRates", handle)
        if mig is not None or gpu.gpu_util is None:
            raise pynvml.NVMLError_NotSupported()
        return pynvml.c_nvmlUtilization_t(gpu=gpu.gpu_util, memory=gpu.memory_util or 0)

    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        gpu, mig = self._resolve("nvmlDeviceGetMigMode", handle)
        if mig is not None or gpu.mig_mode is None:
            raise pynvml.NVMLError_NotSupported()
        return [gpu.mig_mode, gpu.mig_mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: _Handle) -> int:
        gpu, _ = self._resolve("nvmlDeviceGetMaxMigDeviceCount", handle)
        if gpu.mig_mode is None:
            raise pynvml.NVMLError_NotSupported()
        return MAX_MIG_DEVICES

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Handle, index: int) -> _Handle:
        gpu, _ = self._resolve("nvmlDeviceGetMigDeviceHandleByIndex", handle)
        if gpu.mig_mode != pynvml.NVML_DEVICE_MIG_ENABLE or not 0 <= index < MAX_MIG_DEVICES:
            raise pynvml.NVMLError_InvalidArgument()
        if index >= len(gpu.migs):
            raise pynvml.NVMLError_NotFound()
        return _Handle(gpu.migs[index].uuid, self.generation)

    def nvmlDeviceIsMigDeviceHandle(self, handle: _Handle) -> int:
        _, mig = self._resolve("nvmlDeviceIsMigDeviceHandle", handle)
        return int(mig is not None)

    def nvmlDeviceGetGpuInstanceId(self, handle: _Handle) -> int:
        _, mig = self._resolve("nvmlDeviceGetGpuInstanceId", handle)
        if mig is None:
            raise pynvml.NVMLError_InvalidArgument()
        return mig.gpu_instance_id

    def nvmlDeviceGetComputeInstanceId(self, handle: _Handle) -> int:
        _, mig = self._resolve("nvmlDeviceGetComputeInstanceId", handle)
        if mig is None:
            raise pynvml.NVMLError_InvalidArgument()
        return mig.compute_instance_id

    def nvmlDeviceGetAttributes(self, handle: _Handle) -> Any:
        _gpu, mig = self._resolve("nvmlDeviceGetAttributes", handle)
        if mig is None:
            raise pynvml.NVMLError_NotSupported()
        return pynvml.c_nvmlDeviceAttributes(
            multiprocessorCount=mig.sm_count,
            gpuInstanceSliceCount=mig.gpu_slices,
            computeInstanceSliceCount=mig.compute_slices,
            memorySizeMB=mig.memory_total_bytes // MIB,
        )

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[Any]:
        gpu, mig = self._resolve("nvmlDeviceGetComputeRunningProcesses", handle)
        result = []
        for p in gpu.processes:
            if "C" not in p.type:
                continue
            if mig is not None and (p.gpu_instance_id, p.compute_instance_id) != (
                mig.gpu_instance_id, mig.compute_instance_id
            ):
                continue
            info = pynvml.nvmlStructToFriendlyObject(pynvml.c_nvmlProcessInfo_t(
                pid=p.pid,
                usedGpuMemory=p.used_memory_bytes or 0,
                gpuInstanceId=NOT_AVAILABLE_UINT if p.gpu_instance_id is None
                else p.gpu_instance_id,
                computeInstanceId=NOT_AVAILABLE_UINT if p.compute_instance_id is None
                else p.compute_instance_id,
            ))
            if p.used_memory_bytes is None:
                info.usedGpuMemory = None
            result.append(info)
        return result

    def nvmlDeviceGetProcessUtilization(self, handle: _Handle, timeStamp: int) -> list[Any]:
        _, mig = self._resolve("nvmlDeviceGetProcessUtilization", handle)
        if mig is not None:
            raise pynvml.NVMLError_NotSupported()
        newer = [s for s in self.samples.get(handle.uuid, []) if s.timeStamp > timeStamp]
        if not newer:
            raise pynvml.NVMLError_NotFound()
        return newer
