"""Spool write throughput on simulator output: `.venv/bin/python -m bench.spool`.

For each cluster scale, one simulated day at 60 s is generated (timed apart), then written
three times: through `collectors.spool.write_batches` a day's batches a call, as the simulator
writes (temporary files, fsyncs, renames, one fsync per folder); through
`collectors.spool.write_batch` a batch a call, as a collector writes (one file: its fsync and
its folder's); and with plain `pyarrow.parquet.write_table`, the raw engine. The ratio (last
column, the target's figure) is the price of crash safety on the bulk path; `batch s` shows
what a file costs when each is made durable on its own."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from collectors.simulate import SOURCE, simulate
from collectors.spool import Batch, write_batch, write_batches


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,4,16", help="cluster copies, comma-separated")
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--interval", type=int, default=60)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    args = parser.parse_args()
    start = datetime(2026, 10, 1, tzinfo=UTC)

    header = (f"{'scale':>5} {'GPUs':>5} {'rows':>11} {'files':>6} {'MB':>7} "
              f"{'gen s':>6} {'gen rows/s':>11} {'batch s':>8} {'spool s':>8} "
              f"{'spool rows/s':>13} {'raw s':>6} {'raw rows/s':>11} {'spool/raw':>9}")
    print(f"{args.days} simulated day(s) per scale at {args.interval} s intervals")
    print(header)
    print("-" * len(header))
    for scale in (int(s) for s in args.scales.split(",")):
        t0 = time.perf_counter()
        batches = list(simulate(start, args.days, args.interval, scale=scale))
        generate_s = time.perf_counter() - t0
        rows = sum(b.table.num_rows for b in batches)
        days = sorted({b.batch[:12] for b in batches})
        root = Path(tempfile.mkdtemp(prefix="bench-spool-", dir=args.dir))
        try:
            t0 = time.perf_counter()
            files = 0
            for day in days:
                files += len(write_batches(root / "spool", [
                    Batch(b.kind, b.node, b.batch, b.table) for b in batches
                    if b.batch.startswith(day)], source=SOURCE))
            spool_s = time.perf_counter() - t0
            size = folder_bytes(root / "spool")

            t0 = time.perf_counter()
            for b in batches:
                write_batch(root / "batch", b.table, kind=b.kind, source=SOURCE, node=b.node,
                            batch=b.batch)
            batch_s = time.perf_counter() - t0

            t0 = time.perf_counter()
            for i, b in enumerate(batches):
                path = root / "raw" / b.kind / b.node / f"{i}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(b.table, path, compression="zstd")
            raw_s = time.perf_counter() - t0
        finally:
            shutil.rmtree(root)
        print(f"{scale:>5} {64 * scale:>5} {rows:>11,} {files:>6} {size / 1e6:>7.1f} "
              f"{generate_s:>6.2f} {rows / generate_s:>11,.0f} {batch_s:>8.2f} "
              f"{spool_s:>8.2f} {rows / spool_s:>13,.0f} {raw_s:>6.2f} {rows / raw_s:>11,.0f} "
              f"{spool_s / raw_s:>9.2f}")

if __name__ == "__main__":
    main()
