"""Checks on each ingested day: each tests one property, on every day of the run (one, or a
backfill's range)."""


import dagster as dg

from models.ledger import gaps, warehouse
from pipelines.ingest.assets import gpu_usage_hourly, gpu_usage_ledger
from pipelines.partitions import partition_days
from pipelines.resources import WarehouseResource

UNATTRIBUTED_WARNING_SHARE = 0.05
"""Above this share of allocated GPU-seconds without a tenant, operators are warned."""


@dg.asset_check(asset=gpu_usage_ledger, blocking=True)
def gpu_seconds_conserved(
    context: dg.AssetCheckExecutionContext, warehouse_db: WarehouseResource
) -> dg.AssetCheckResult:
    """Per device and interval, allocated + idle GPU-seconds equal duration x GPU-equivalents.
    A day that passes is recorded as checked (the close re-checks only days changed since)."""
    with warehouse_db.connect() as con:
        violations = [v for day in partition_days(context)
                      for v in warehouse.check_conservation(con, day)]
    return dg.AssetCheckResult(
        passed=not violations,
        metadata={
            "violations_shown": len(violations),
            "first_violations": "\n".join(
                f"{c}/{n} {g} at {w} ({d}s): capacity {cap:.6f}, allocated {a:.6f}, "
                f"{s} sources" for c, n, g, w, d, cap, a, s in violations[:10]
            ) or "none",
        },
    )


@dg.asset_check(asset=gpu_usage_ledger)
def every_row_has_a_tenant(
    context: dg.AssetCheckExecutionContext, warehouse_db: WarehouseResource
) -> dg.AssetCheckResult:
    """Share of allocated GPU-seconds that could not be attributed to a tenant."""
    with warehouse_db.connect() as con:
        per_day = [warehouse.unattributed_gpu_seconds(con, day) for day in partition_days(context)]
    unattributed = sum(u for u, _ in per_day)
    allocated = sum(a for _, a in per_day)
    share = unattributed / allocated if allocated else 0.0
    return dg.AssetCheckResult(
        passed=share <= UNATTRIBUTED_WARNING_SHARE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"unattributed_share": share, "unattributed_gpu_seconds": unattributed},
    )


@dg.asset_check(asset=gpu_usage_ledger)
def no_collection_gaps(
    context: dg.AssetCheckExecutionContext, warehouse_db: WarehouseResource
) -> dg.AssetCheckResult:
    """Every collector read its whole source all day; else the gaps, which have no rows."""
    with warehouse_db.connect() as con:
        ranges = [r for day in partition_days(context) for r in gaps.day_ranges(con, day)]
    return dg.AssetCheckResult(
        passed=not ranges,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "gaps": len(ranges),
            "gap_records": sum(r.records for r in ranges),
            "first_gaps": "\n".join(r.describe() for r in ranges[:20]) or "none",
        },
    )


@dg.asset_check(asset=gpu_usage_hourly, blocking=True)
def hourly_totals_equal_ledger(
    context: dg.AssetCheckExecutionContext, warehouse_db: WarehouseResource
) -> dg.AssetCheckResult:
    """The hourly rollup holds exactly the ledger's GPU-seconds, tenant by tenant."""
    with warehouse_db.connect() as con:
        differences = [(day, *d) for day in partition_days(context)
                       for d in warehouse.hourly_differences(con, day)]
    return dg.AssetCheckResult(
        passed=not differences,
        metadata={"differences": "\n".join(f"{day} {t}: ledger {a}, hourly {b}"
                                           for day, t, a, b in differences) or "none"},
    )
