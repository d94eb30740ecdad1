import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from collectors import spool
from models.ledger.usage import LEDGER_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 10, 1, 22, tzinfo=UTC)
ROWS_PER_BATCH = 4000

# A collector in a loop: batch i holds rows `i-0` .. `i-(ROWS-1)` of the window START + 2i min,
# and "ack i" is printed only after write_batch has returned (written, fsynced, renamed).
BATCH_SOURCE = f"""
from datetime import datetime, timedelta, UTC
import pyarrow as pa
from models.ledger.usage import LEDGER_SCHEMA

START = datetime.fromisoformat({START.isoformat()!r})
ROWS = {ROWS_PER_BATCH}

def batch_table(i):
    n = ROWS
    return pa.table({{
        "sample_id": [f"{{i}}-{{r}}" for r in range(n)],
        "window_start": [START + timedelta(minutes=2 * i)] * n,
        "duration_s": [120.0] * n, "cluster": ["c"] * n, "node": ["n"] * n,
        "gpu_uuid": [f"GPU-{{r}}" for r in range(n)], "gpu_product": ["NVIDIA L4"] * n,
        "mig_profile": [None] * n, "gpu_equivalents": [1.0] * n, "tenant": ["t"] * n,
        "namespace": ["ns"] * n, "pod": [f"p{{i}}"] * n, "pod_uid": [None] * n,
        "workload_kind": ["batch"] * n, "model": [None] * n, "model_params_b": [None] * n,
        "allocated_gpu_seconds": [120.0] * n, "used_gpu_seconds": [float(i % 120)] * n,
        "memory_used_bytes": [r for r in range(n)], "source": ["crash-test"] * n,
    }}, schema=LEDGER_SCHEMA)
"""

WORKER = BATCH_SOURCE + """
import sys
from collectors.spool import write_batch

root, i = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
while True:
    write_batch(root, batch_table(i), kind="usage", source="crash", node="n", batch=f"b{i:06d}")
    print(f"ack {i}", flush=True)
    i += 1
"""


def batch_table(i: int) -> pa.Table:
    namespace: dict[str, object] = {}
    exec(BATCH_SOURCE, namespace)
    return namespace["batch_table"](i)  # type: ignore[operator]


def all_files(root: Path) -> list[Path]:
    return [f for day in spool.days(root) for f in spool.day_files(root, "usage", day)]


def table(ids: list[str], start: datetime = START) -> pa.Table:
    rows = [
        {"sample_id": s, "window_start": start + timedelta(minutes=k), "duration_s": 60.0,
         "cluster": "c", "node": "n", "gpu_uuid": "GPU-1", "gpu_product": "NVIDIA L4",
         "gpu_equivalents": 1.0, "tenant": "t", "workload_kind": "batch",
         "allocated_gpu_seconds": 60.0, "source": "test"}
        for k, s in enumerate(ids)
    ]
    return pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA)


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    rng = random.Random(20261123)
    root = tmp_path / "spool"
    acknowledged: set[int] = set()
    next_batch, kills = 0, 30
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(kills):
        worker = subprocess.Popen([sys.executable, "-c", WORKER, str(root), str(next_batch)],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
        acks: list[int] = []
        try:
            # Each round waits for one batch not acknowledged before, so the run makes progress
            # however loaded the machine is; then the worker, writing back to back, is killed
            # anywhere in that loop.
            while not acks or acks[-1] in acknowledged:
                acks.append(int(worker.stdout.readline().split()[1]))
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
        assert worker.returncode == -signal.SIGKILL
        acks += [int(line.split()[1]) for line in worker.stdout.read().splitlines()
                 if line.startswith("ack ")]
        acknowledged.update(acks)
        last = acks[-1] if acks else next_batch - 1
        # Restart a little before the last acknowledged batch, as a collector that lost its
        # position would: acknowledged batches are written again and must replace themselves.
        next_batch = max(0, last + 1 - rng.randint(0, 2))

    assert len(acknowledged) >= kills
    files = all_files(root)
    assert files
    assert not any(f.name.startswith(spool.TEMP_PREFIX) for f in files)
    tables = [pq.read_table(f, schema=LEDGER_SCHEMA) for f in files]  # every one is complete
    everything = pa.concat_tables(tables)
    ids = everything["sample_id"].to_pylist()
    assert len(ids) == len(set(ids)), "a sample is in the spool twice"
    present = set(ids)
    for i in sorted(acknowledged):
        expected = batch_table(i)
        assert set(expected["sample_id"].to_pylist()) <= present, f"batch {i} was lost"
    # Whatever was written is exactly what the collector produced, batch by batch.
    for f, t in zip(files, tables, strict=True):
        i = int(f.stem.removeprefix("b"))
        assert t.equals(batch_table(i)), f"{f} differs from batch {i}"
    # Batches span several hours, so files sit in several hour partitions.
    assert len({f.parent.parent.parent for f in files}) > 1
    leftovers = list(root.rglob(f"{spool.TEMP_PREFIX}*"))
    print(f"{kills} kills, {len(leftovers)} left a temporary file, "
          f"{len(acknowledged)} batches acknowledged, {len(files)} files")


def test_same_batch_lands_on_the_same_path_and_replaces(tmp_path):
    first = spool.write_batch(tmp_path, table(["a", "b"]), kind="usage", source="s",
                              node="n", batch="w1")
    again = spool.write_batch(tmp_path, table(["a", "c", "d"]), kind="usage", source="s",
                              node="n", batch="w1")
    assert first == again
    assert all_files(tmp_path) == first
    assert pq.read_table(first[0])["sample_id"].to_pylist() == ["a", "c", "d"]
    rel = first[0].relative_to(tmp_path).as_posix()
    assert rel == "usage/date=2026-10-01/hour=22/source=s/node=n/w1.parquet"


def test_a_batch_across_an_hour_is_split_by_hour(tmp_path):
    ids = [f"x{k}" for k in range(120)]  # one row a minute from 22:00 for two hours
    written = spool.write_batch(tmp_path, table(ids), kind="usage", source="s", node="n",
                                batch="w")
    assert [p.parent.parent.parent.name for p in written] == ["hour=22", "hour=23"]
    assert [pq.read_metadata(p).num_rows for p in written] == [60, 60]


def test_names_are_made_safe(tmp_path):
    [path] = spool.write_batch(tmp_path, table(["a"]), kind="usage", source="a/b",
                               node="../etc", batch="x y")
    assert path.resolve().is_relative_to(tmp_path.resolve())
    assert path.name == "x_y.parquet"


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    [path] = spool.write_batch(tmp_path, table(["old"]), kind="usage", source="s", node="n",
                               batch="w")

    def crash(table, where, **kwargs):
        where.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(spool.pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        spool.write_batch(tmp_path, table(["new"]), kind="usage", source="s", node="n",
                          batch="w")
    assert list(path.parent.iterdir()) == [path]
    assert pq.read_table(path)["sample_id"].to_pylist() == ["old"]


def test_readers_never_see_temporary_files(tmp_path):
    [path] = spool.write_batch(tmp_path, table(["a"]), kind="usage", source="s", node="n",
                               batch="w")
    # What a SIGKILL between create and rename leaves behind: a truncated temporary file.
    (path.parent / f"{spool.TEMP_PREFIX}abc.parquet").write_bytes(b"PAR1 trunc")
    assert spool.day_files(tmp_path, "usage", date(2026, 10, 1)) == [path]
    assert list(spool.days(tmp_path)) == [date(2026, 10, 1)]


def test_empty_tables_write_nothing(tmp_path):
    assert spool.write_batch(tmp_path, table([]), kind="usage", source="s", node="n",
                             batch="w") == []
    assert not list(tmp_path.rglob("*"))
