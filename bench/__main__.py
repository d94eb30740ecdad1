"""The benchmark suite, one command: `.venv/bin/python -m bench` (`make bench`).

Runs the pipeline bench (bench/pipeline.py: ingest, aggregation, month close and mart
publishing at 1x, 4x, 16x and a 30-day month, each against raw DuckDB), then every other bench
module present (NVML collector, spool, pricing, dashboard rendering), and writes all their
tables into docs/benchmarks.md with the machine's details."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import pipeline, targets

ROOT = Path(__file__).resolve().parents[1]
OTHERS = {
    "nvml_collector": "CPU time of the NVML collector per device sample (zero-latency fake)",
    "spool": "Spool writes: atomic write_batches, a day a call, against plain Parquet writes",
    "pricing": "Pricing a month of hourly usage for 10,000 tenants against a Decimal floor",
    "dashboard_render": "Dashboard page rendering",
    "marts": "Mart publishing with 4,000 tenants against the per-tenant-query baseline",
    "demo": "`make demo` end to end",
}
OTHER_TIMEOUT_S = 600


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--skip", default="", help="comma-separated benches to leave out, "
                        "e.g. pricing,spool (pipeline always runs)")
    args, rest = parser.parse_known_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    command = " ".join([".venv/bin/python -m bench", *sys.argv[1:]])
    runs = pipeline.main(rest, out=args.out, command=command)

    sections = []
    outputs: dict[str, str] = {}
    for name, title in OTHERS.items():
        if name in skip or not (ROOT / "bench" / f"{name}.py").exists():
            continue
        print(f"bench.{name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=ROOT,
                                  capture_output=True, text=True, timeout=OTHER_TIMEOUT_S,
                                  check=False)
            output = done.stdout.rstrip() or done.stderr.rstrip()
            status = "" if done.returncode == 0 else f" (exit code {done.returncode})"
        except subprocess.TimeoutExpired:
            output, status = "", f" (stopped after {OTHER_TIMEOUT_S} s)"
        print(output, flush=True)
        outputs[name] = output if not status else ""
        sections += [f"## {title}", "",
                     f"Command: `.venv/bin/python -m bench.{name}`, "
                     f"{time.perf_counter() - t0:,.0f} s{status}", "", "```", output, "```", ""]
    verdicts = targets.table(runs, outputs)
    print("\n".join(verdicts), flush=True)
    sections += ["## Targets (issue 18)", "",
                 "Each figure as measured above in this run; load average (1, 5, 15 min) at "
                 "the end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + ".", "",
                 *verdicts, ""]
    if sections:
        # Before the kept section of profiles, which stays last.
        head, marker, kept = args.out.read_text().partition(pipeline.KEPT)
        args.out.write_text(head + "\n".join(sections) + marker + kept)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
