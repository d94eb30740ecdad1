"""The spool: Parquet files written atomically, one per (kind, hour, source, node, batch).

Layout (Hive-style, so DuckDB and object stores read it as partitions):
    <root>/<kind>/date=YYYY-MM-DD/hour=HH/source=<source>/node=<node>/<batch>.parquet
`kind` is `usage` (LEDGER_SCHEMA), `requests` (REQUEST_WORK_SCHEMA) or `gaps` (GAP_SCHEMA: what
a collector could not read, models/ledger/gaps.py). A file's name is
derived from what it holds, so writing the same batch again replaces the file rather than
adding a second copy.

`root` is a local folder (a path, or a `file:///...` URI) or an object-store prefix
(`s3://bucket/prefix`, through pyarrow.fs: credentials, region and endpoint from the standard
AWS variables such as AWS_ACCESS_KEY_ID, AWS_DEFAULT_REGION and AWS_ENDPOINT_URL, or in the URI's
query: `s3://bucket/prefix?endpoint_override=minio:9000&scheme=http` for MinIO or Ceph).
Readers only ever see complete files: a local file is written under a temporary name,
fsynced, then renamed into place; an object is written in one PUT, which the store makes
visible all at once or not at all, so no temporary keys exist to be listed."""

from __future__ import annotations

import functools
import os
import re
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from models.errors import UserError
from models.files import fsync_dir
from models.ledger.gaps import GAP_SCHEMA
from models.ledger.usage import LEDGER_SCHEMA, REQUEST_WORK_SCHEMA

SCHEMAS = {"usage": LEDGER_SCHEMA, "requests": REQUEST_WORK_SCHEMA, "gaps": GAP_SCHEMA}
TEMP_PREFIX = ".tmp-"
REMOTE_SCHEMES = ("s3",)
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_LOCAL = pafs.LocalFileSystem()

SpoolLocation = str | Path
"""A spool root or file: a local path, a `file://` URI or an `s3://` URI."""


class SpoolLocationError(UserError):
    """A spool location this code cannot open (unknown scheme, malformed URI)."""


def _safe(part: str) -> str:
    return _SAFE.sub("_", part) or "_"


def local_path(location: SpoolLocation) -> Path | None:
    """The local path of `location`, or None when it is in an object store."""
    if isinstance(location, Path):
        return location
    if "://" not in location:
        return Path(location)
    parts = urlsplit(location)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise SpoolLocationError(f"spool location {location!r}: a file:// URI names no "
                                     "host; write file:///absolute/path")
        return Path(unquote(parts.path))
    if parts.scheme not in REMOTE_SCHEMES:
        raise SpoolLocationError(
            f"spool location {location!r}: scheme {parts.scheme!r} is not supported; use a "
            "local path, file:///path or s3://bucket/prefix")
    if not parts.netloc:
        raise SpoolLocationError(f"spool location {location!r}: no bucket; write "
                                 "s3://bucket/prefix")
    return None


def is_remote(location: SpoolLocation) -> bool:
    return local_path(location) is None


@dataclass(frozen=True)
class _Remote:
    """An object-store location split into the filesystem and the path inside it."""

    fs: pafs.FileSystem
    path: str
    uri_prefix: str
    """`s3://` (the bucket is part of `path`)."""
    query: str
    """The root URI's options (`?endpoint_override=...`), kept on every file URI so that a
    file's URI alone opens it."""

    def uri(self, path: str) -> str:
        return f"{self.uri_prefix}{path}" + (f"?{self.query}" if self.query else "")


@functools.cache
def _filesystem(scheme: str, bucket: str, query: str) -> pafs.FileSystem:
    # One client per store: from_uri looks the bucket's region up with a request when the
    # region is not given, which must not happen once per file.
    uri = f"{scheme}://{bucket}" + (f"?{query}" if query else "")
    try:
        fs, _ = pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as error:
        raise SpoolLocationError(f"spool location {uri}: {error}") from error
    return fs


def _remote(location: str) -> _Remote:
    local_path(location)  # validates the scheme and bucket
    parts = urlsplit(location)
    fs = _filesystem(parts.scheme, parts.netloc, parts.query)
    path = (parts.netloc + unquote(parts.path)).rstrip("/")
    return _Remote(fs, path, f"{parts.scheme}://", parts.query)


@dataclass(frozen=True)
class Batch:
    """The rows of one collection batch and where they go in the spool."""

    kind: str
    """`usage`, `requests` or `gaps` (SCHEMAS)."""
    node: str
    batch: str
    """Names the batch (e.g. the collection window's start): the same batch written twice
    lands on the same paths."""
    table: pa.Table


def write_batch(
    root: SpoolLocation, table: pa.Table, *, kind: str, source: str, node: str, batch: str
) -> list[SpoolLocation]:
    """Write `table` split by UTC hour of `window_start`; returns the files written (local
    paths, or URIs for an object store).

    `batch` names the batch (e.g. the collection window's start); the same batch written
    twice lands on the same paths."""
    return write_batches(root, [Batch(kind, node, batch, table)], source=source)


def write_batches(root: SpoolLocation, batches: Iterable[Batch], *,
                  source: str) -> list[SpoolLocation]:
    """Write several batches of one source (each as `write_batch` would) and return their
    files. On a local spool the crash safety is paid once for them all: every file is on
    disk before any is renamed into place, and once this returns every file and folder entry
    is durable; a failure or a crash leaves each file whole (the new version or the old) and
    the temporary files that listings skip."""
    parts = ((f"{b.kind}/date={hour:%Y-%m-%d}/hour={hour:%H}/source={_safe(source)}"
              f"/node={_safe(b.node)}/{_safe(b.batch)}.parquet", part)
             for b in batches for hour, part in _by_hour(b.table, SCHEMAS[b.kind]))
    local = local_path(root)
    if local is not None:
        return list(_write_local(local, parts))
    written: list[SpoolLocation] = []
    for relative, part in parts:  # no store client is made for batches without rows
        remote = _remote(str(root))
        written.append(_put(remote, f"{remote.path}/{relative}", part))
    return written


def _by_hour(table: pa.Table, schema: pa.Schema) -> list[tuple[datetime, pa.Table]]:
    table = table.select(schema.names)
    if table.schema != schema:
        table = table.cast(schema)
    if table.num_rows == 0:
        return []
    first, last = (v.value // 3_600_000_000  # every schema's window_start is in µs (UTC_TIMESTAMP)
                   for v in pc.min_max(table["window_start"]).values())
    if first == last:
        # A collector's batch is one hour's window nearly always: it is written as it is,
        # without flooring every row and filtering a copy of it per hour.
        return [(datetime.fromtimestamp(first * 3600, UTC), table)]
    hours = pc.floor_temporal(table["window_start"], unit="hour")
    return [(hour, table.filter(pc.equal(hours, pa.scalar(hour, type=hours.type))))
            for hour in pc.unique(hours).to_pylist()]


_SYNC_THREADS = 16
"""fsyncs in flight at once: a journaling filesystem commits concurrent fsyncs together (one
journal commit and one cache flush for many files), and the next file is encoded meanwhile."""


def _write_local(root: Path, parts: Iterable[tuple[str, pa.Table]]) -> list[Path]:
    # Order: each file is written under a temporary name and fsynced; only when all are on
    # disk are they renamed into place; then every folder that got a new entry (a file, or a
    # folder made here) is fsynced, once however many files it got.
    renames: list[tuple[str, Path]] = []
    changed: set[Path] = set()
    placed = 0
    try:
        with ThreadPoolExecutor(_SYNC_THREADS) as pool:
            in_flight: deque[Future[None]] = deque()
            for relative, table in parts:
                path = root / relative
                if path.parent not in changed:
                    changed |= _make_folder(path.parent)
                sink = pa.BufferOutputStream()
                pq.write_table(table, sink, compression="zstd")
                fd, tmp = tempfile.mkstemp(dir=path.parent,
                                           prefix=f"{TEMP_PREFIX}{path.name[:40]}-")
                renames.append((tmp, path))
                handle = os.fdopen(fd, "wb")
                try:
                    handle.write(sink.getvalue())
                    handle.flush()
                    os.fchmod(fd, 0o644)
                except BaseException:
                    handle.close()
                    raise
                in_flight.append(pool.submit(_sync_and_close, handle))
                while len(in_flight) > 4 * _SYNC_THREADS:  # bounds the open files
                    in_flight.popleft().result()
            for future in in_flight:
                future.result()
            for tmp, path in renames:
                os.replace(tmp, path)
                placed += 1
            list(pool.map(fsync_dir, changed))
    except BaseException:
        for tmp, _ in renames[placed:]:
            Path(tmp).unlink(missing_ok=True)
        raise
    return [path for _, path in renames]


def _sync_and_close(handle: IO[bytes]) -> None:
    with handle:
        os.fsync(handle.fileno())


def _make_folder(folder: Path) -> set[Path]:
    """Make `folder` and its missing parents; returns the folders whose entries change:
    `folder` (a file is renamed into it) and the parent of each folder made."""
    changed = {folder}
    missing = folder
    while not missing.is_dir():
        changed.add(missing.parent)
        missing = missing.parent
    folder.mkdir(parents=True, exist_ok=True)
    return changed


def _put(remote: _Remote, path: str, table: pa.Table) -> str:
    # Encode fully in memory first, so a failure while encoding never starts an upload, and
    # the object is sent as one body: stores publish an object only when its PUT (or a
    # multipart upload's completion) succeeds, and a failed stream is aborted on close.
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    with remote.fs.open_output_stream(path) as out:
        out.write(sink.getvalue())
    return remote.uri(path)


@dataclass(frozen=True)
class SpoolFile:
    location: SpoolLocation
    """A local Path, or the file's URI in an object store."""
    mtime_s: float
    """When the file (object) was last written, seconds since the epoch."""
    size_bytes: int


def list_day(root: SpoolLocation, kind: str, day: date) -> list[SpoolFile]:
    """The complete files of one UTC day with their times and sizes, in a stable order."""
    local = local_path(root)
    if local is not None:
        folder = local / kind / f"date={day:%Y-%m-%d}"
        found = []
        for p in sorted(folder.rglob("*.parquet")):
            if p.name.startswith(TEMP_PREFIX):
                continue
            try:
                stat = p.stat()
            except FileNotFoundError:  # replaced between listing and stat: never half a file
                continue
            found.append(SpoolFile(p, stat.st_mtime, stat.st_size))
        return found
    remote = _remote(str(root))
    selector = pafs.FileSelector(f"{remote.path}/{kind}/date={day:%Y-%m-%d}", recursive=True,
                                 allow_not_found=True)
    infos = sorted(
        (i for i in remote.fs.get_file_info(selector)
         if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
         and not i.base_name.startswith(TEMP_PREFIX)),
        key=lambda i: i.path,
    )
    return [SpoolFile(remote.uri(i.path), i.mtime.timestamp() if i.mtime else 0.0,
                      i.size or 0) for i in infos]


def day_files(root: SpoolLocation, kind: str, day: date) -> list[SpoolLocation]:
    """The complete files of one UTC day, in a stable order (temporary files excluded)."""
    return [f.location for f in list_day(root, kind, day)]


def days(root: SpoolLocation, kind: str = "usage") -> Iterator[date]:
    """The UTC days that have spool files."""
    local = local_path(root)
    if local is not None:
        names = [folder.name for folder in (local / kind).glob("date=*")]
    else:
        remote = _remote(str(root))
        selector = pafs.FileSelector(f"{remote.path}/{kind}", allow_not_found=True)
        names = [i.base_name for i in remote.fs.get_file_info(selector)
                 if i.type == pafs.FileType.Directory and i.base_name.startswith("date=")]
    for name in sorted(names):
        yield date.fromisoformat(name.removeprefix("date="))


def read_batches(files: Sequence[SpoolLocation], schema: pa.Schema) -> pa.RecordBatchReader:
    """Stream the rows of spool files in `schema` (missing columns as nulls), a few batches
    in memory at a time; for object stores, where DuckDB cannot read without its httpfs
    extension."""
    groups: dict[int, tuple[pafs.FileSystem, list[str]]] = {}
    for f in files:
        local = local_path(f)
        if local is not None:
            fs, path = _LOCAL, str(local)
        else:
            remote = _remote(str(f))
            fs, path = remote.fs, remote.path
        groups.setdefault(id(fs), (fs, []))[1].append(path)
    datasets = [ds.dataset(paths, schema=schema, format="parquet", filesystem=fs)
                for fs, paths in groups.values()]
    dataset = datasets[0] if len(datasets) == 1 else ds.dataset(datasets)
    return dataset.scanner(columns=schema.names).to_reader()


def scan(files: Sequence[SpoolLocation], kind: str) -> list[Path] | pa.RecordBatchReader:
    """The rows of spool files as the warehouse loads them (models.ledger.warehouse.Rows):
    local files as paths, which DuckDB reads itself; object-store files as one Arrow stream
    (DuckDB would need its httpfs extension, downloaded at run time), so memory holds a few
    record batches at a time."""
    local = [local_path(f) for f in files]
    if all(p is not None for p in local):
        return [p for p in local if p is not None]
    return read_batches(files, SCHEMAS[kind])


QUARANTINE = "quarantine"
"""Folder (prefix) under the spool root that holds files the ingest could not read, at their
spool path: `<root>/quarantine/usage/date=.../...parquet`. Outside every `<root>/<kind>/`, so
no listing of the spool meets them again."""


def _filesystem_path(location: SpoolLocation) -> tuple[pafs.FileSystem, str]:
    local = local_path(location)
    if local is not None:
        return _LOCAL, str(local)
    remote = _remote(str(location))
    return remote.fs, remote.path


def check_file(location: SpoolLocation, kind: str) -> str | None:
    """Why the warehouse cannot load this spool file as it is, or None when it can: not a
    Parquet file, truncated, a column missing or of a type that does not convert, or a
    required value empty. Reads the whole file: for finding the culprit after a load failed,
    not for every file of every run."""
    schema = SCHEMAS[kind]
    fs, path = _filesystem_path(location)
    try:
        # Read apart from decoding: failing to reach the file (a network error, a permission)
        # is the storage's fault, raised as it is, never a reason to set a file aside.
        with fs.open_input_stream(path) as handle:
            data = handle.read()
    except FileNotFoundError:
        return None  # replaced or removed since it was listed: not this file's fault
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as error:
        return f"not a readable Parquet file: {error}"
    missing = [f.name for f in schema if not f.nullable and f.name not in table.column_names]
    if missing:
        return f"required column(s) missing: {', '.join(missing)}"
    for field in schema:
        if field.name not in table.column_names:
            continue
        column = table[field.name]
        try:
            column = column.cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
            return f"column {field.name}: {column.type} does not convert to {field.type}: {error}"
        if not field.nullable and column.null_count:
            return f"column {field.name}: {column.null_count} row(s) empty; a value is required"
    return None


def quarantine(root: SpoolLocation, location: SpoolLocation) -> SpoolLocation:
    """Move a file of the spool at `root` to the same path under `<root>/quarantine/`, and
    return where it is now. Kept, never overwritten: a second file of the same name goes
    beside the first with a numbered suffix. Local spools rename (atomic, same filesystem);
    object stores copy, then delete the original."""
    local_root, local_file = local_path(root), local_path(location)
    if local_root is not None and local_file is not None:
        if not local_file.is_relative_to(local_root):
            raise SpoolLocationError(f"{location} is not a file of the spool {root}")
        target = local_root / QUARANTINE / local_file.relative_to(local_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target = Path(_free_name(str(target), lambda p: Path(p).exists()))
        os.replace(local_file, target)
        fsync_dir(target.parent)
        fsync_dir(local_file.parent)
        return target
    spool, remote = _remote(str(root)), _remote(str(location))
    relative = remote.path.removeprefix(spool.path + "/")
    if relative == remote.path:
        raise SpoolLocationError(f"{location} is not a file of the spool {root}")
    target_path = _free_name(
        f"{spool.path}/{QUARANTINE}/{relative}",
        lambda p: spool.fs.get_file_info(p).type != pafs.FileType.NotFound)
    spool.fs.copy_file(remote.path, target_path)
    spool.fs.delete_file(remote.path)
    return spool.uri(target_path)


def _free_name(path: str, exists: Callable[[str], bool]) -> str:
    candidate, n = path, 0
    while exists(candidate):
        n += 1
        candidate = f"{path}.{n}"
    return candidate
