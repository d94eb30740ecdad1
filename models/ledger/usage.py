"""The ledger: one usage row per (interval, device, pod), as DESIGN.md defines it."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeGuard

import pyarrow as pa

IDLE_TENANT = "__idle__"
UNATTRIBUTED_TENANT = "__unattributed__"
SHARED_TENANT = "__shared__"
"""Rows of a shared (pooled) endpoint before the ledger step apportions them to tenants."""
SHARED_IDLE_TENANT = "__shared_idle__"
RESERVED_TENANTS = frozenset({IDLE_TENANT, UNATTRIBUTED_TENANT, SHARED_TENANT, SHARED_IDLE_TENANT})

MAX_ROW_DURATION_S = 31 * 86400
"""No collector writes a row longer than its window (seconds to an hour); a month is plenty."""
NUMBER_BOUNDS: Mapping[str, float] = {
    "duration_s": MAX_ROW_DURATION_S,
    "gpu_equivalents": math.inf,  # (0, 1], checked below
    "allocated_gpu_seconds": MAX_ROW_DURATION_S,
    "used_gpu_seconds": MAX_ROW_DURATION_S,
    "model_params_b": 1e6,
    "memory_used_bytes": 2.0**60,
}
"""Upper bounds of the ledger's numeric columns (all are at least 0): a row beyond them is
corrupt, never billed."""

# Conservation is checked on floats summed in different orders; a microsecond of a GPU-second
# per row is far below anything billed (quantities are kept at 6 decimals of a GPU-hour).
GPU_SECONDS_TOLERANCE = 1e-6


class WorkloadKind(StrEnum):
    INFERENCE = "inference"
    FINE_TUNING = "fine-tuning"
    TRAINING = "training"
    BATCH = "batch"
    NOTEBOOK = "notebook"
    UNKNOWN = "unknown"
    IDLE = "idle"
    """Unallocated capacity (tenant `__idle__`, `__shared_idle__`)."""


@dataclass(frozen=True)
class PodInfo:
    """Who pays for a pod and what it runs, as the pod collector (which owns the Kubernetes
    API) or a configured namespace map knows it; the other collectors attribute rows by it."""

    tenant: str
    namespace: str | None = None
    pod: str | None = None
    workload_kind: str = WorkloadKind.UNKNOWN.value
    model: str | None = None
    model_params_b: float | None = None
    pod_uid: str | None = None


UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")

LEDGER_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("window_start", UTC_TIMESTAMP, nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("cluster", pa.string(), nullable=False),
        pa.field("node", pa.string(), nullable=False),
        pa.field("gpu_uuid", pa.string(), nullable=False),
        pa.field("gpu_product", pa.string(), nullable=False),
        pa.field("mig_profile", pa.string()),
        pa.field("gpu_equivalents", pa.float64(), nullable=False),
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("namespace", pa.string()),
        pa.field("pod", pa.string()),
        pa.field("pod_uid", pa.string()),
        pa.field("workload_kind", pa.string(), nullable=False),
        pa.field("model", pa.string()),
        pa.field("model_params_b", pa.float64()),
        pa.field("allocated_gpu_seconds", pa.float64(), nullable=False),
        pa.field("used_gpu_seconds", pa.float64()),
        pa.field("memory_used_bytes", pa.int64()),
        pa.field("source", pa.string(), nullable=False),
    ]
)
LEDGER_COLUMNS = tuple(LEDGER_SCHEMA.names)

LATENCY_BUCKETS = pa.list_(pa.struct([pa.field("le", pa.float64(), nullable=False),
                                      pa.field("count", pa.int64(), nullable=False)]))
"""A latency histogram of one interval: requests finished within `le` seconds (cumulative, as
Prometheus buckets are; the last `le` is +Inf), counted over the interval only."""

REQUEST_WORK_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("window_start", UTC_TIMESTAMP, nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("cluster", pa.string(), nullable=False),
        pa.field("namespace", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("requests", pa.int64()),
        pa.field("request_seconds", pa.float64()),
        pa.field("prefill_seconds", pa.float64()),
        pa.field("decode_seconds", pa.float64()),
        pa.field("input_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("latency_buckets", LATENCY_BUCKETS),
        pa.field("ttft_buckets", LATENCY_BUCKETS),
        pa.field("source", pa.string(), nullable=False),
    ]
)
"""Measured request work of a shared endpoint (namespace + model) per tenant and interval.

Every measure is nullable: null means the source does not report it, never zero.
`latency_buckets` (end-to-end) and `ttft_buckets` (time to first token) are the interval's
latency histograms, from which percentiles per tenant and model are read. The ledger
step (models/ledger/sql/apportion.sql) apportions each `__shared__` usage row of an endpoint to
the tenants of the same interval by the best measure all of them have: prefill + decode
seconds, else request seconds, else tokens weighted by the cost model below
(prefill and decode GPU-seconds per token)."""

ENDPOINT_LOAD_SCHEMA = pa.schema(
    [
        pa.field("window_start", UTC_TIMESTAMP, nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("cluster", pa.string(), nullable=False),
        pa.field("namespace", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("requests_running", pa.float64()),
        pa.field("requests_waiting", pa.float64()),
        pa.field("source", pa.string(), nullable=False),
    ]
)
"""An inference server's load per endpoint and interval: the mean number of requests running
on its GPUs and waiting in its queue (vLLM's scheduler gauges); null where not reported."""

PREFILL_GPU_SECONDS_PER_TOKEN = 0.0003
"""GPU-seconds one prompt token costs in prefill: compute-bound, 2 x 70e9 FLOP per token for a
70B model at half of 8 H100s' 989 dense BF16 TFLOPS each takes 35 us, 8 x 35 us = 0.28 ms of
GPU time (the Splitwise setup: Llama-2-70B on an 8 x H100 DGX; docs/pipeline.md)."""
DECODE_GPU_SECONDS_PER_TOKEN = 0.0013
"""GPU-seconds one generated token costs in decode: memory-bound, every step reads the 140 GB
of weights at 8 x 3.35 TB/s (5.2 ms on 8 GPUs) for a batch of about 32 requests, so
8 x 5.2 ms / 32 = 1.3 ms per token. Output:input = 4.3, within list prices' 3 to 5."""


def make_sample_id(*parts: object) -> str:
    """Deterministic id, so that a row ingested twice counts once."""
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def ledger_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts with the ledger's columns) as a table of LEDGER_SCHEMA."""
    return pa.Table.from_pylist(list(rows), schema=LEDGER_SCHEMA)


@dataclass(frozen=True)
class RowProblem:
    row: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.field}: {self.message}"


def validate_ledger(
    rows: Iterable[Mapping[str, Any]], *, now: datetime | None = None
) -> list[RowProblem]:
    """Every problem of every row (rows numbered from 0), not only the first."""
    now = now or datetime.now(UTC)
    kinds = {k.value for k in WorkloadKind}
    problems: list[RowProblem] = []
    seen: dict[str, tuple[int, tuple[Any, ...]]] = {}
    for i, row in enumerate(rows):
        def bad(field: str, message: str, i: int = i) -> None:
            problems.append(RowProblem(i, field, message))

        for name in LEDGER_COLUMNS:
            if name not in row:
                bad(name, "missing")
            elif row[name] is None and not LEDGER_SCHEMA.field(name).nullable:
                bad(name, "must not be empty")
        start = row.get("window_start")
        if isinstance(start, datetime):
            if start.tzinfo is None or start.utcoffset() is None:
                bad("window_start", f"naive timestamp {start.isoformat()}: times must be UTC")
            elif start > now:
                bad("window_start", f"in the future: {start.isoformat()}")
        elif start is not None:
            bad("window_start", f"not a timestamp: {start!r}")
        for name, most in NUMBER_BOUNDS.items():
            value = row.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                bad(name, f"not a number: {value!r}")
            elif not math.isfinite(value):
                bad(name, f"not a number: {value!r}; expected a finite value")
            elif value < 0:
                bad(name, f"negative: {value}")
            elif value > most:
                bad(name, f"must be at most {most:g}, got {value}")
        tenant = row.get("tenant")
        if tenant is not None and (not isinstance(tenant, str) or not tenant.strip()):
            bad("tenant", f"must be a tenant name, got {tenant!r}")
        duration, equivalents = row.get("duration_s"), row.get("gpu_equivalents")
        allocated, used = row.get("allocated_gpu_seconds"), row.get("used_gpu_seconds")
        if _finite(duration) and _finite(equivalents) and _finite(allocated):
            capacity = duration * equivalents
            if allocated > capacity + GPU_SECONDS_TOLERANCE:
                bad("allocated_gpu_seconds",
                    f"{allocated} exceeds duration_s x gpu_equivalents = {capacity}")
            if _finite(used) and used > allocated + GPU_SECONDS_TOLERANCE:
                bad("used_gpu_seconds", f"{used} exceeds allocated_gpu_seconds {allocated}")
        if _finite(equivalents) and not 0 < equivalents <= 1:
            bad("gpu_equivalents", f"must be in (0, 1], got {equivalents}")
        kind = row.get("workload_kind")
        if kind is not None and kind not in kinds:
            bad("workload_kind", f"unknown {kind!r}; one of {', '.join(sorted(kinds))}")
        sample_id = row.get("sample_id")
        if isinstance(sample_id, str):
            content = tuple(row.get(name) for name in LEDGER_COLUMNS)
            if sample_id in seen and seen[sample_id][1] != content:
                bad("sample_id", f"duplicate of row {seen[sample_id][0]} with different content")
            seen.setdefault(sample_id, (i, content))
    return problems


def _finite(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and math.isfinite(value)


def hour_floor(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def split_by_hour(start: datetime, end: datetime) -> list[tuple[datetime, float]]:
    """[start, end) cut at hour boundaries, as (piece start, seconds)."""
    pieces: list[tuple[datetime, float]] = []
    cursor = start
    while cursor < end:
        boundary = min(hour_floor(cursor) + timedelta(hours=1), end)
        pieces.append((cursor, (boundary - cursor).total_seconds()))
        cursor = boundary
    return pieces
