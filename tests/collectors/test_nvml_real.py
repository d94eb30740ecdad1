"""The NVML collector against the real NVIDIA library (pynvml) on this machine.

On a GPU host: the inventory must match what NVML itself reports, and real rows must pass
ledger validation and conserve GPU-seconds per device. Without a driver, these tests skip,
and only then (NoNvidiaDriver is raised solely for NVMLError_LibraryNotFound /
NVMLError_DriverNotLoaded from nvmlInit); the driverless case is then checked instead."""

from __future__ import annotations

import math
import socket
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pynvml
import pytest

from collectors.nvml import NoNvidiaDriver, NvmlCollector
from models.ledger.tiers import mig_gpu_equivalents
from models.ledger.usage import GPU_SECONDS_TOLERANCE, validate_ledger


def _no_driver() -> NoNvidiaDriver | None:
    try:
        NvmlCollector(node="probe", cluster="probe").close()
    except NoNvidiaDriver as exc:
        return exc
    return None


NO_DRIVER = _no_driver()
needs_gpu = pytest.mark.skipif(
    NO_DRIVER is not None,
    reason="no NVIDIA driver on this machine (nvmlInit raised "
    f"{NO_DRIVER and NO_DRIVER.__cause__!r}): the real-NVML checks need a GPU node",
)


@pytest.fixture
def real() -> Iterator[NvmlCollector]:
    with NvmlCollector(node=socket.gethostname(), cluster="real") as collector:
        yield collector


@pytest.mark.skipif(NO_DRIVER is None, reason="this machine has an NVIDIA driver")
def test_driverless_machine_raises_no_nvidia_driver() -> None:
    assert NO_DRIVER is not None
    assert str(NO_DRIVER).startswith("no NVIDIA driver on this node: ")
    assert isinstance(NO_DRIVER.__cause__, pynvml.NVMLError_LibraryNotFound
                      | pynvml.NVMLError_DriverNotLoaded)


@needs_gpu
def test_inventory_matches_nvml(real: NvmlCollector) -> None:
    pynvml.nvmlInit()
    try:
        expected: dict[str, str | None] = {}
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            try:
                mig = pynvml.nvmlDeviceGetMigMode(handle)[0] == pynvml.NVML_DEVICE_MIG_ENABLE
            except pynvml.NVMLError_NotSupported:
                mig = False
            if not mig:
                expected[pynvml.nvmlDeviceGetUUID(handle)] = None
                continue
            for slot in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
                try:
                    instance = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                except pynvml.NVMLError_NotFound:
                    continue
                expected[pynvml.nvmlDeviceGetUUID(instance)] = pynvml.nvmlDeviceGetUUID(handle)
    finally:
        pynvml.nvmlShutdown()
    devices = {d.uuid: d for d in real.inventory.devices}
    assert devices, "NVML reports GPUs' driver but the collector found no device"
    assert {u: d.parent_uuid for u, d in devices.items()} == expected
    for device in devices.values():
        assert device.product
        assert device.uuid.startswith("MIG-" if device.parent_uuid else "GPU-")
        if device.mig_profile is None:
            assert device.gpu_equivalents == 1.0
        else:
            assert device.gpu_equivalents == float(
                mig_gpu_equivalents(device.mig_profile, device.product))
        assert device.memory_total_bytes is None or device.memory_total_bytes > 0


@needs_gpu
def test_real_rows_are_valid_and_conserved(real: NvmlCollector) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=3)
    for _ in range(3):
        real.sample(datetime.now(UTC))
        time.sleep(0.2)
    duration = (datetime.now(UTC) - start).total_seconds()
    rows = real.rows(start, duration).to_pylist()
    assert validate_ledger(rows) == []
    assert real.gaps(start, duration) == []  # a healthy node reads whole: no gap
    totals: dict[str, float] = defaultdict(float)
    for row in rows:
        totals[row["gpu_uuid"]] += row["allocated_gpu_seconds"]
        assert row["source"] == "nvml"
    devices = {d.uuid: d for d in real.inventory.devices}
    assert set(totals) == set(devices)
    for uuid, total in totals.items():
        assert math.isclose(total, duration * devices[uuid].gpu_equivalents,
                            abs_tol=GPU_SECONDS_TOLERANCE), uuid
