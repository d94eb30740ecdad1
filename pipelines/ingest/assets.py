"""Ingest: the day's spool files into the ledger, then hourly and daily usage."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import dagster as dg
import duckdb
import pyarrow as pa

from collectors import spool as spool_files
from models.billing.rate_cards import RateCard
from models.ledger import gaps, warehouse
from pipelines.partitions import DAILY, partition_day
from pipelines.resources import BillingConfigResource, SpoolResource, WarehouseResource

KINDS = ("usage", "requests", "gaps")


@dataclass(frozen=True)
class SpoolDay:
    load: warehouse.Load
    files: dict[str, int]
    """Files loaded, per kind."""
    quarantined: list[warehouse.QuarantinedFile]
    gaps: int
    """Collection gaps of the day (what collectors could not read)."""


def load_spool_day(
    con: duckdb.DuckDBPyConnection, root: spool_files.SpoolLocation, day: date, card: RateCard,
    *, on_quarantine: Callable[[warehouse.QuarantinedFile], None] = lambda entry: None,
) -> SpoolDay:
    """Load one UTC day of the spool into the ledger. A file the load cannot read is moved to
    the spool's quarantine, recorded in `spool_quarantine` (and passed to `on_quarantine`), and
    the rest of the day is loaded without it.

    The spool lists, reads and moves files; the warehouse loads rows: this is where the two
    meet. Files are checked one by one only after a load has failed, so a clean day is read
    once."""
    found: list[warehouse.QuarantinedFile] = []
    while True:
        files = {kind: spool_files.list_day(root, kind, day) for kind in KINDS}
        try:
            loaded = warehouse.load_day(
                con, day, card,
                usage=spool_files.scan([f.location for f in files["usage"]], "usage"),
                requests=spool_files.scan([f.location for f in files["requests"]], "requests"))
            gap_files = [f.location for f in files["gaps"]]
            gap_count = gaps.replace_day(con, day, spool_files.read_batches(
                gap_files, gaps.GAP_SCHEMA) if gap_files else None)
        except (warehouse.UnreadableRows, pa.ArrowException):
            culprits = [(kind, f, reason) for kind in KINDS for f in files[kind]
                        if (reason := spool_files.check_file(f.location, kind)) is not None]
            if not culprits:
                raise
            for kind, f, reason in culprits:
                moved = spool_files.quarantine(root, f.location)
                entry = warehouse.QuarantinedFile(day, kind, str(f.location), str(moved),
                                                  f.size_bytes, reason, datetime.now(UTC))
                warehouse.record_quarantine(con, entry)
                found.append(entry)
                on_quarantine(entry)
            continue
        return SpoolDay(loaded, {kind: len(files[kind]) for kind in KINDS}, found, gap_count)


@dg.asset(partitions_def=DAILY, group_name="ingest")
def gpu_usage_ledger(
    context: dg.AssetExecutionContext,
    warehouse_db: WarehouseResource,
    spool: SpoolResource,
    billing: BillingConfigResource,
) -> dg.MaterializeResult:
    """One UTC day of GPU usage rows, shared endpoints apportioned, tier and size attached;
    spool files that cannot be read are quarantined and listed; and the day's collection gaps
    (what collectors could not read, so has no rows)."""
    day = partition_day(context)
    card = billing.rate_card(day)

    def warn(entry: warehouse.QuarantinedFile) -> None:
        context.log.warning(f"quarantined {entry.file} -> {entry.quarantined_as}: "
                            f"{entry.reason}")

    with warehouse_db.connect() as con:
        loaded = load_spool_day(con, spool.path, day, card, on_quarantine=warn)
    return dg.MaterializeResult(metadata={
        "spool_files": loaded.files["usage"],
        "request_files": loaded.files["requests"],
        "staged_rows": loaded.load.staged_rows,
        "request_rows": loaded.load.request_rows,
        "ledger_rows": loaded.load.ledger_rows,
        "collection_gaps": loaded.gaps,
        "tenants": loaded.load.tenants,
        "rate_card_version": card.version,
        "quarantined_files": len(loaded.quarantined),
        "quarantined": "\n".join(f"{q.file}: {q.reason}" for q in loaded.quarantined)
        or "none",
    })


@dg.asset(partitions_def=DAILY, group_name="ingest", deps=[gpu_usage_ledger])
def gpu_usage_hourly(
    context: dg.AssetExecutionContext, warehouse_db: WarehouseResource
) -> dg.MaterializeResult:
    """GPU-seconds per hour, node, tenant, hardware tier, size class and model."""
    day = partition_day(context)
    with warehouse_db.connect() as con:
        rows = warehouse.rollup_hourly(con, day)
    return dg.MaterializeResult(metadata={"rows": rows})


@dg.asset(partitions_def=DAILY, group_name="ingest", deps=[gpu_usage_hourly])
def tenant_usage_daily(
    context: dg.AssetExecutionContext, warehouse_db: WarehouseResource
) -> dg.MaterializeResult:
    """GPU-hours and peak concurrent GPUs per tenant, tier and size class, per day."""
    day = partition_day(context)
    with warehouse_db.connect() as con:
        rows = warehouse.rollup_daily(con, day)
    return dg.MaterializeResult(metadata={"rows": rows})
