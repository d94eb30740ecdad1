"""Ingest: the day's spool files into the ledger, then hourly and daily usage."""


import dagster as dg

from collectors.spool import day_files, read_batches
from models.ledger import gaps, warehouse
from pipelines.partitions import DAILY, partition_day
from pipelines.resources import BillingConfigResource, SpoolResource, WarehouseResource


@dg.asset(partitions_def=DAILY, group_name="ingest")
def gpu_usage_ledger(
    context: dg.AssetExecutionContext,
    warehouse_db: WarehouseResource,
    spool: SpoolResource,
    billing: BillingConfigResource,
) -> dg.MaterializeResult:
    """One UTC day of GPU usage rows, shared endpoints apportioned, tier and size attached, and
    the day's collection gaps (what collectors could not read, so has no rows)."""
    day = partition_day(context)
    usage_files = day_files(spool.path, "usage", day)
    request_files = day_files(spool.path, "requests", day)
    gap_files = day_files(spool.path, "gaps", day)
    card = billing.rate_card(day)
    with warehouse_db.connect() as con:
        staged = warehouse.stage_usage(con, usage_files)
        warehouse.stage_requests(con, request_files)
        unknown = warehouse.classify(con, card)
        if unknown:
            raise dg.Failure(
                description="GPU products missing from the rate card's tier map",
                metadata={"unknown": "\n".join(unknown)},
            )
        warehouse.build_ledger(con)
        rows = warehouse.replace_day(con, day)
        gap_records = gaps.replace_day(
            con, day, read_batches(gap_files, gaps.GAP_SCHEMA) if gap_files else None)
        tenants = con.execute(
            "SELECT count(DISTINCT tenant) FROM ledger WHERE day = ?", [day]).fetchone()
    return dg.MaterializeResult(metadata={
        "spool_files": len(usage_files),
        "request_files": len(request_files),
        "staged_rows": staged,
        "ledger_rows": rows,
        "collection_gaps": gap_records,
        "tenants": tenants[0] if tenants else 0,
        "rate_card_version": card.version,
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
