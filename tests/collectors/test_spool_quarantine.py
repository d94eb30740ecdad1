"""Finding the spool file a load cannot read, and moving it to the quarantine folder."""

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from collectors import spool
from models.ledger.usage import LEDGER_SCHEMA

T0 = datetime(2026, 9, 1, 5, tzinfo=UTC)


def _usage(tmp_path):
    table = pa.Table.from_pylist(
        [{"sample_id": "a", "window_start": T0, "duration_s": 60.0, "cluster": "c",
          "node": "n", "gpu_uuid": "GPU-1", "gpu_product": "NVIDIA L4",
          "gpu_equivalents": 1.0, "tenant": "t", "workload_kind": "batch",
          "allocated_gpu_seconds": 60.0, "source": "s"}], schema=LEDGER_SCHEMA)
    (path,) = spool.write_batch(tmp_path, table, kind="usage", source="s", node="n", batch="b")
    return path, table


def test_check_file_says_what_is_wrong(tmp_path):
    path, table = _usage(tmp_path)
    assert spool.check_file(path, "usage") is None
    # Written by an older collector without the optional columns: still loadable.
    pq.write_table(table.drop_columns(["pod", "model", "memory_used_bytes"]), path)
    assert spool.check_file(path, "usage") is None
    pq.write_table(table.drop_columns(["tenant", "source"]), path)
    assert spool.check_file(path, "usage") == "required column(s) missing: tenant, source"
    pq.write_table(table.set_column(9, "tenant", pa.array([None], pa.string())), path)
    assert spool.check_file(path, "usage") == (
        "column tenant: 1 row(s) empty; a value is required")
    pq.write_table(table.set_column(1, "window_start", pa.array(["noon"])), path)
    assert spool.check_file(path, "usage").startswith(
        "column window_start: string does not convert to timestamp[us, tz=UTC]")
    pq.write_table(table, path)
    path.write_bytes(path.read_bytes()[:-10])
    assert spool.check_file(path, "usage").startswith("not a readable Parquet file")
    path.write_bytes(b"")
    assert spool.check_file(path, "usage").startswith("not a readable Parquet file")
    # A usage file is not a request-work file.
    pq.write_table(table, path)
    # (every measure of request work is nullable; a usage row names no endpoint namespace)
    assert spool.check_file(path, "requests") == (
        "column namespace: 1 row(s) empty; a value is required")


def test_quarantine_moves_and_never_overwrites(tmp_path):
    root = tmp_path / "spool"
    path, _ = _usage(root)
    first = path.read_bytes()
    moved = spool.quarantine(root, path)
    assert moved == root / "quarantine" / path.relative_to(root)
    assert not path.exists()
    assert moved.read_bytes() == first
    # The collector writes the same batch again, and it is unreadable again: both are kept.
    path.write_bytes(b"garbage")
    again = spool.quarantine(root, path)
    assert again == moved.with_name(moved.name + ".1")
    assert (moved.read_bytes(), again.read_bytes()) == (first, b"garbage")
    assert spool.day_files(root, "usage", T0.date()) == []
    assert list(spool.days(root)) == [T0.date()]


def test_quarantine_refuses_a_file_outside_the_spool(tmp_path):
    path, _ = _usage(tmp_path / "spool")
    with pytest.raises(spool.SpoolLocationError, match="is not a file of the spool"):
        spool.quarantine(tmp_path / "other", path)
    assert path.exists()
