"""Collection gaps: what a collector could not read, recorded instead of a value.

A collector that cannot read its source (the Kubernetes API answers garbage, Prometheus could
not scrape a dcgm-exporter, a GPU fell off the bus) writes no ledger rows for what it could not
read, and one gap record instead: source, cluster, node, device, window and why. "Could not
read" is never idle and never zero: a tenant's missing usage shows up as a gap finance can see,
not as capacity nobody used.

`node` None means every node of the cluster (the source as a whole was unreadable); `gpu_uuid`
None means every device of the node. The ledger step loads the day's gaps into
`collection_gaps`; the conservation check lets a device-interval that overlaps a gap of its
own source hold less than its capacity (the rest is the gap's, not idle) but never more, and
the finance mart lists the gaps as time ranges."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

import pyarrow as pa

from models.ledger.usage import UTC_TIMESTAMP, make_sample_id

if TYPE_CHECKING:  # the collectors write gaps without the warehouse's engine
    import duckdb


class GapReason(StrEnum):
    SOURCE_UNREADABLE = "source_unreadable"
    """The source's answer could not be read at all: not JSON, a wrong kind, missing fields,
    an HTTP error, a timeout, a refused connection."""
    MALFORMED_OBJECT = "malformed_object"
    """One Kubernetes object (a pod, a node) has a field that cannot be read; it is
    quarantined alone, the rest of the list is kept."""
    MALFORMED_SERIES = "malformed_series"
    """One dcgm-exporter series lacks what the ledger needs (a UUID, modelName, a node
    label, a valid MIG profile); it is quarantined alone, the other devices are kept."""
    SCRAPE_FAILED = "scrape_failed"
    """Prometheus could not scrape the exporter (`up == 0`: down, refused, garbage)."""
    NO_SERIES = "no_series"
    """The exporter was scraped but served no series for the node or device."""
    DEVICE_LOST = "device_lost"
    """NVML could not read the device (fell off the bus, reset required)."""
    DRIVER_UNAVAILABLE = "driver_unavailable"
    """NVML as a whole stopped answering (driver unloaded, restarted or upgraded)."""
    PROCESS_EXITED = "process_exited"
    """A process on the device exited before its pod could be read: its share is unknown."""
    NOT_SAMPLED = "not_sampled"
    """No sample of the device fell in the window (sampling failed or stalled)."""
    COLLECTOR_FAILED = "collector_failed"
    """The collector raised: nothing of the window was read."""


REASON_TEXT = {
    GapReason.SOURCE_UNREADABLE: "source unreadable",
    GapReason.MALFORMED_OBJECT: "object with unreadable fields (quarantined)",
    GapReason.MALFORMED_SERIES: "series with missing labels (quarantined)",
    GapReason.SCRAPE_FAILED: "exporter scrape failed",
    GapReason.NO_SERIES: "exporter served no GPU series",
    GapReason.DEVICE_LOST: "GPU lost",
    GapReason.DRIVER_UNAVAILABLE: "NVIDIA driver unavailable",
    GapReason.PROCESS_EXITED: "process exited before its pod was read",
    GapReason.NOT_SAMPLED: "not sampled",
    GapReason.COLLECTOR_FAILED: "collector failed",
}
"""What finance reads for each reason."""

GAP_SCHEMA = pa.schema(
    [
        pa.field("gap_id", pa.string(), nullable=False),
        pa.field("window_start", UTC_TIMESTAMP, nullable=False),
        pa.field("window_end", UTC_TIMESTAMP, nullable=False),
        pa.field("cluster", pa.string(), nullable=False),
        pa.field("node", pa.string()),
        pa.field("gpu_uuid", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
    ]
)


@dataclass(frozen=True)
class Gap:
    """[window_start, window_end) of `source` on `node`/`gpu_uuid` could not be read."""

    source: str
    """The `source` of the ledger rows that are missing (pods, dcgm, nvml, ...)."""
    cluster: str
    node: str | None
    gpu_uuid: str | None
    window_start: datetime
    window_end: datetime
    reason: GapReason
    detail: str
    """What could not be read and why, naming the object, series, target or device."""

    def __post_init__(self) -> None:
        for name in ("window_start", "window_end"):
            value: datetime = getattr(self, name)
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(f"gap {name} {value.isoformat()} is naive: pass a UTC time")
        if self.window_end <= self.window_start:
            raise ValueError(f"gap window ends ({self.window_end.isoformat()}) before it "
                             f"starts ({self.window_start.isoformat()})")

    @property
    def gap_id(self) -> str:
        """Deterministic, so that a gap recorded twice (a rerun) is loaded once."""
        return make_sample_id("gap", self.source, self.cluster, self.node, self.gpu_uuid,
                              self.window_start.isoformat(), self.window_end.isoformat(),
                              self.reason.value)

    def describe(self) -> str:
        """One line: `pods, node gpu-a, 10:00:00-10:01:00 UTC: source unreadable: ...`."""
        where = f"node {self.node}" if self.node else f"every node of cluster {self.cluster}"
        if self.gpu_uuid:
            where += f" device {self.gpu_uuid}"
        span = (f"{self.window_start:%Y-%m-%d %H:%M:%S}-{self.window_end:%H:%M:%S} UTC"
                if self.window_end - self.window_start < timedelta(days=1)
                else f"{self.window_start.isoformat()} to {self.window_end.isoformat()}")
        return f"{self.source}, {where}, {span}: {REASON_TEXT[self.reason]}: {self.detail}"


def gap_table(gaps: Iterable[Gap]) -> pa.Table:
    return pa.Table.from_pylist([
        {"gap_id": g.gap_id, "window_start": g.window_start, "window_end": g.window_end,
         "cluster": g.cluster, "node": g.node, "gpu_uuid": g.gpu_uuid, "source": g.source,
         "reason": g.reason.value, "detail": g.detail}
        for g in gaps
    ], schema=GAP_SCHEMA)


# -- the warehouse ------------------------------------------------------------------------------


def replace_day(con: duckdb.DuckDBPyConnection, day: date,
                records: pa.RecordBatchReader | None) -> int:
    """Replace the gaps of one UTC day (by window start) with `records` (GAP_SCHEMA, e.g. the
    day's spool files through `collectors.spool.read_batches`); returns how many the day
    holds."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM collection_gaps WHERE day = ?", [day])
        if records is not None:
            con.register("spool_gaps", records)
            try:
                con.execute(
                    "INSERT INTO collection_gaps BY NAME SELECT *, ?::DATE AS day "
                    "FROM spool_gaps WHERE window_start::DATE = ? "
                    "QUALIFY row_number() OVER (PARTITION BY gap_id) = 1", [day, day])
            finally:
                con.unregister("spool_gaps")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    row = con.execute("SELECT count(*) FROM collection_gaps WHERE day = ?", [day]).fetchone()
    return int(row[0]) if row else 0


GAP_RANGES = """
    -- Consecutive windows with the same source, place and reason make one range, so finance
    -- reads "node X, 10:00-10:05" rather than five one-minute records.
    WITH marked AS (
        SELECT *, coalesce(window_start > lag(window_end) OVER place, true) AS opens
        FROM collection_gaps
        WHERE {where}
        WINDOW place AS (PARTITION BY cluster, node, gpu_uuid, source, reason
                         ORDER BY window_start, window_end)),
    numbered AS (
        SELECT *, sum(opens::INTEGER) OVER (PARTITION BY cluster, node, gpu_uuid, source, reason
                                            ORDER BY window_start, window_end) AS range_no
        FROM marked)
    SELECT cluster, node, gpu_uuid, source, reason, min(window_start) AS gap_start,
           max(window_end) AS gap_end,
           epoch(max(window_end) - min(window_start))::DOUBLE AS gap_seconds,
           count(*) AS records, arg_min(detail, window_start) AS first_detail
    FROM numbered
    GROUP BY cluster, node, gpu_uuid, source, reason, range_no
    ORDER BY gap_start, cluster, node NULLS FIRST, gpu_uuid NULLS FIRST, source, reason"""
"""Gap records merged into time ranges; `{where}` filters the records first."""


@dataclass(frozen=True)
class GapRange:
    cluster: str
    node: str | None
    gpu_uuid: str | None
    source: str
    reason: str
    start: datetime
    end: datetime
    records: int
    detail: str
    """The first record's detail."""

    def describe(self) -> str:
        gap = Gap(self.source, self.cluster, self.node, self.gpu_uuid, self.start, self.end,
                  GapReason(self.reason), self.detail)
        return gap.describe() + (f" ({self.records} records)" if self.records > 1 else "")


def day_ranges(con: duckdb.DuckDBPyConnection, day: date) -> list[GapRange]:
    """The day's gaps as ranges of consecutive windows."""
    rows = con.execute(GAP_RANGES.format(where="day = $1"), [day]).fetchall()
    return [GapRange(cluster, node, gpu, source, reason, start, end, int(records), detail)
            for cluster, node, gpu, source, reason, start, end, _seconds, records, detail
            in rows]
