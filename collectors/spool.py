"""The spool: Parquet files written atomically, one per (kind, hour, source, node, batch).

Layout (Hive-style, so DuckDB and object stores read it as partitions):
    <root>/<kind>/date=YYYY-MM-DD/hour=HH/source=<source>/node=<node>/<batch>.parquet
`kind` is `usage` (LEDGER_SCHEMA) or `requests` (REQUEST_WORK_SCHEMA). A file's name is
derived from what it holds, so writing the same batch again replaces the file rather than
adding a second copy; readers only ever see complete files, because a file is written under a
temporary name, fsynced, then renamed into place."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.usage import LEDGER_SCHEMA, REQUEST_WORK_SCHEMA

SCHEMAS = {"usage": LEDGER_SCHEMA, "requests": REQUEST_WORK_SCHEMA}
TEMP_PREFIX = ".tmp-"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(part: str) -> str:
    return _SAFE.sub("_", part) or "_"


def write_batch(
    root: Path, table: pa.Table, *, kind: str, source: str, node: str, batch: str
) -> list[Path]:
    """Write `table` split by UTC hour of `window_start`; returns the files written.

    `batch` names the batch (e.g. the collection window's start); the same batch written
    twice lands on the same paths."""
    schema = SCHEMAS[kind]
    table = table.select(schema.names).cast(schema)
    if table.num_rows == 0:
        return []
    hours = pc.floor_temporal(table["window_start"], unit="hour")
    written = []
    for hour in pc.unique(hours).to_pylist():
        part = table.filter(pc.equal(hours, pa.scalar(hour, type=hours.type)))
        folder = (
            Path(root) / kind / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}"
            / f"source={_safe(source)}" / f"node={_safe(node)}"
        )
        written.append(write_atomic(folder / f"{_safe(batch)}.parquet", part))
    return written


def write_atomic(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".parquet", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def day_files(root: Path, kind: str, day: date) -> list[Path]:
    """The complete files of one UTC day, in a stable order (temporary files excluded)."""
    folder = Path(root) / kind / f"date={day:%Y-%m-%d}"
    return sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith(TEMP_PREFIX))


def days(root: Path, kind: str = "usage") -> Iterator[date]:
    """The UTC days that have spool files."""
    for folder in sorted((Path(root) / kind).glob("date=*")):
        yield date.fromisoformat(folder.name.removeprefix("date="))
