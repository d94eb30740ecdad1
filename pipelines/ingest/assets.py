"""Ingest: the day's spool files into the ledger, then hourly and daily usage."""

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import dagster as dg
import duckdb
import pyarrow as pa

from collectors import spool as spool_files
from models.billing.rate_cards import RateCard, rate_card_for
from models.ledger import gaps, warehouse
from pipelines.partitions import DAILY, INGEST_BACKFILL, partition_days
from pipelines.resources import BillingConfigResource, SpoolResource, WarehouseResource

KINDS = ("usage", "requests", "gaps")

# `backfill_policy` is a beta parameter in Dagster 1.13: its warning would print on every
# `chargeback` command and every Dagster process that loads the code location.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)


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


@dg.asset(partitions_def=DAILY, group_name="ingest", backfill_policy=INGEST_BACKFILL)
def gpu_usage_ledger(
    context: dg.AssetExecutionContext,
    warehouse_db: WarehouseResource,
    spool: SpoolResource,
    billing: BillingConfigResource,
) -> dg.MaterializeResult:
    """One UTC day of GPU usage rows, shared endpoints apportioned, tier and size attached;
    spool files that cannot be read are quarantined and listed; and the day's collection gaps
    (what collectors could not read, so has no rows). A backfill run loads its days one by
    one, each replaced as a daily run would, and each partition gets its own figures."""

    def warn(entry: warehouse.QuarantinedFile) -> None:
        context.log.warning(f"quarantined {entry.file} -> {entry.quarantined_as}: "
                            f"{entry.reason}")

    cards = billing.rate_cards()
    # Every day's card is found before anything is loaded: a day no card covers stops the run
    # before its first day is written.
    days = {day: rate_card_for(cards, day) for day in partition_days(context)}
    for day, card in days.items():
        # A connection a day, as a daily run has: DuckDB's buffers of one day go with it
        # (one connection for a month held 1.7 GB at its end, against 0.75 GB).
        with warehouse_db.connect() as con:
            loaded = load_spool_day(con, spool.path, day, card, on_quarantine=warn)
            context.add_asset_metadata(partition_key=f"{day}", metadata={
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
    return dg.MaterializeResult()


@dg.asset(partitions_def=DAILY, group_name="ingest", deps=[gpu_usage_ledger],
          backfill_policy=INGEST_BACKFILL)
def gpu_usage_hourly(context: dg.AssetExecutionContext, warehouse_db: WarehouseResource
                     ) -> dg.MaterializeResult:
    """GPU-seconds per hour, node, tenant, hardware tier, size class and model."""
    with warehouse_db.connect() as con:
        for day in partition_days(context):
            context.add_asset_metadata(partition_key=f"{day}",
                                       metadata={"rows": warehouse.rollup_hourly(con, day)})
    return dg.MaterializeResult()


@dg.asset(partitions_def=DAILY, group_name="ingest", deps=[gpu_usage_hourly],
          backfill_policy=INGEST_BACKFILL)
def tenant_usage_daily(context: dg.AssetExecutionContext, warehouse_db: WarehouseResource
                       ) -> dg.MaterializeResult:
    """GPU-hours and peak concurrent GPUs per tenant, tier and size class, per day."""
    with warehouse_db.connect() as con:
        for day in partition_days(context):
            context.add_asset_metadata(partition_key=f"{day}",
                                       metadata={"rows": warehouse.rollup_daily(con, day)})
    return dg.MaterializeResult()
