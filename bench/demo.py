"""`make demo` end to end, timed: `.venv/bin/python -m bench.demo`.

Runs `chargeback demo` (simulate the 30-day month, ingest its 30 days in one Dagster run of
`daily_usage_job`, the month's billing, close and marts) in a fresh CHARGEBACK_HOME, as a
user's first `make demo` would, and prints its wall time with the machine's load average
before and after, and the CPU time and peak RSS of the demo's process (the CPU seconds move
less with other people's load)."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["CHARGEBACK_HOME"] = str(home)
    load_before = os.getloadavg()[0]
    try:
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run([str(Path(sys.executable).with_name("chargeback")), "demo"],
                              cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if done.returncode:
        sys.exit(f"chargeback demo failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    print("chargeback demo in a fresh CHARGEBACK_HOME (simulate, ingest, bill, close)")
    print(f"  load average before, after   {load_before:.2f}, {os.getloadavg()[0]:.2f}")
    print(f"  demo wall (s)                {wall:.1f}")
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    print(f"  demo CPU, user + system (s)  {cpu:.1f}")
    print(f"  peak RSS (GB)                {cpu1.ru_maxrss / 1e6:.2f}")


if __name__ == "__main__":
    main()
