"""Checks on each day's analytics: each tests one property."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from pipelines.analytics.assets import (
    MANIFEST_OUTCOME,
    scheduler_quotas,
    tier_change_recommendations,
)
from pipelines.partitions import partition_day
from pipelines.resources import WarehouseResource


@dg.asset_check(asset=tier_change_recommendations)
def every_tier_change_has_a_confirmed_shift(
    context: dg.AssetCheckExecutionContext, warehouse_db: WarehouseResource
) -> dg.AssetCheckResult:
    """Each recommendation's evidence is a confirmed shift of the same day's usage_shifts."""
    day = partition_day(context)
    with warehouse_db.connect() as con:
        orphans = con.execute(
            "SELECT r.tenant, r.series_name, r.change_date FROM tier_change_recommendations r "
            "WHERE r.day = ? AND NOT EXISTS (SELECT 1 FROM usage_shifts s WHERE s.day = r.day "
            "AND s.tenant = r.tenant AND s.series_name = r.series_name "
            "AND s.change_date = r.change_date AND s.confirmed)", [day]).fetchall()
    return dg.AssetCheckResult(
        passed=not orphans,
        metadata={"without_shift": "\n".join(f"{t} {s} {d}" for t, s, d in orphans) or "none"},
    )


@dg.asset_check(asset=scheduler_quotas)
def quotas_never_drop_below_use(
    context: dg.AssetCheckExecutionContext, warehouse_db: WarehouseResource
) -> dg.AssetCheckResult:
    """No written quota is lowered below what the tenant uses now."""
    day = partition_day(context)
    as_of = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    with warehouse_db.connect() as con:
        bad = con.execute(
            "SELECT kind, namespace, name, field, before_gpus, after_gpus, in_use_gpus "
            "FROM scheduler_quota_changes WHERE outcome = ? AND changed_at = ? "
            "AND after_gpus < in_use_gpus AND (before_gpus IS NULL OR after_gpus < before_gpus)",
            [MANIFEST_OUTCOME, as_of]).fetchall()
    return dg.AssetCheckResult(
        passed=not bad,
        metadata={"below_use": "\n".join(map(str, bad)) or "none"},
    )
