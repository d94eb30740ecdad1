"""Checks on each day's analytics: each tests one property."""

import dagster as dg

from models.ledger import warehouse
from pipelines.analytics.assets import scheduler_quotas, tier_change_recommendations
from pipelines.partitions import partition_day
from pipelines.resources import WarehouseResource


@dg.asset_check(asset=tier_change_recommendations)
def every_tier_change_has_a_confirmed_shift(
    context: dg.AssetCheckExecutionContext, warehouse_db: WarehouseResource
) -> dg.AssetCheckResult:
    """Each recommendation's evidence is a confirmed shift of the same day's usage_shifts."""
    with warehouse_db.connect() as con:
        orphans = warehouse.tier_changes_without_shift(con, partition_day(context))
    return dg.AssetCheckResult(
        passed=not orphans,
        metadata={"without_shift": "\n".join(f"{t} {s} {d}" for t, s, d in orphans) or "none"},
    )


@dg.asset_check(asset=scheduler_quotas)
def quotas_never_drop_below_use(
    context: dg.AssetCheckExecutionContext, warehouse_db: WarehouseResource
) -> dg.AssetCheckResult:
    """No quota written or applied for the day is lowered below what the tenant uses now."""
    with warehouse_db.connect() as con:
        bad = warehouse.quota_changes_below_use(con, partition_day(context))
    return dg.AssetCheckResult(
        passed=not bad,
        metadata={"below_use": "\n".join(map(str, bad)) or "none"},
    )
