"""CPU time of the NVML collector per device sample, with a zero-latency fake NVML.

    .venv/bin/python -m bench.nvml_collector [--rounds 300]

The fake answers instantly, so the figures are the collector's own cost (Python, /proc reads,
grouping, row building), not the driver's. Processes live in pods through cgroup files under
a temporary /proc, one file read per process per sample, as on a node."""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from collectors.nvml import NvmlCollector
from tests.collectors.fake_nvml import FakeGpu, FakeMig, FakeNvml

T0 = datetime(2026, 11, 2, tzinfo=UTC)
GIB = 2**30


def node(gpus: int, processes: int, mig: bool, proc: Path) -> FakeNvml:
    fakes = []
    for g in range(gpus):
        uuid = f"GPU-{g:08x}-0000-4000-8000-000000000000"
        migs = [
            FakeMig(f"MIG-{g:08x}-{i:04x}-4000-8000-000000000000", i + 1, 0, 16, 10 * GIB, 0, 1, 1)
            for i in range(7 if mig else 0)
        ]
        fakes.append(FakeGpu(uuid, "NVIDIA H100 80GB HBM3", 80 * GIB, 0, 50, 10,
                             1 if mig else None, migs=migs))
    fake = FakeNvml(fakes)
    devices = [m.uuid for f in fakes for m in f.migs] if mig else [f.uuid for f in fakes]
    for p in range(processes):
        pid = 10_000 + p
        fake.add_process(devices[p % len(devices)], pid, used_memory_bytes=GIB)
        pod = f"{p % 20:08x}-1111-4222-8333-444444444444".replace("-", "_")
        (proc / str(pid)).mkdir()
        (proc / str(pid) / "cgroup").write_text(
            f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod}.slice/"
            f"cri-containerd-{pid:064x}.scope\n"
        )
    return fake


def measure(gpus: int, processes: int, mig: bool, rounds: int, per_window: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        proc = Path(tmp)
        fake = node(gpus, processes, mig, proc)
        collector = NvmlCollector(node="bench", cluster="bench", backend=fake, proc_root=proc)
        devices = len(collector.inventory.devices)
        sample_cpu = rows_cpu = 0.0
        calls = rows_out = 0
        for r in range(rounds):
            window = T0 + timedelta(seconds=10 * r)
            for k in range(per_window):
                now = window + timedelta(seconds=10 * (k + 1) / per_window)
                # Fresh per-process samples each round, as the driver buffers them (setup,
                # not timed): one sample per process since the last call.
                fake.samples.clear()
                stamp = int(now.timestamp() * 1e6)
                for gpu in fake.gpus:
                    for p in gpu.processes:
                        fake.add_utilization(gpu.uuid, p.pid, 10 + p.pid % 50, stamp)
                before_calls = fake.calls
                start = time.process_time()
                collector.sample(now)
                sample_cpu += time.process_time() - start
                calls += fake.calls - before_calls
            start = time.process_time()
            rows_out += collector.rows(window, 10.0).num_rows
            rows_cpu += time.process_time() - start
        samples = rounds * per_window
        return [
            f"{gpus} x H100{' MIG 7x1g' if mig else ''}",
            str(devices),
            str(processes),
            str(per_window),
            f"{sample_cpu / samples * 1e3:.3f}",
            f"{sample_cpu / (samples * devices) * 1e6:.1f}",
            f"{calls / samples:.0f}",
            f"{rows_cpu / rounds * 1e3:.3f}",
            f"{rows_out / rounds:.0f}",
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="windows per configuration")
    args = parser.parse_args()
    header = ["node", "devices", "processes", "samples/window", "CPU ms/node sample",
              "CPU us/device sample", "NVML calls/sample", "CPU ms/rows()", "rows/window"]
    measure(1, 1, False, 20, 1)  # warm-up: first pyarrow table, first imports
    table = [
        measure(1, 1, False, args.rounds, 1),
        measure(8, 0, False, args.rounds, 1),
        measure(8, 50, False, args.rounds, 1),
        measure(8, 50, False, args.rounds, 10),
        measure(8, 50, True, args.rounds, 1),
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in table:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    print(f"\nrounds={args.rounds}; fake NVML with zero latency; CPU = time.process_time()")


if __name__ == "__main__":
    main()
