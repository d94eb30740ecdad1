"""Analytics for one UTC day: usage shifts, tier-change and reservation recommendations, quotas.

Each asset analyses a look-back window ending with its partition day and rewrites exactly that
day's rows (column `day`) of its tables, so reruns and backfills replace rather than duplicate;
the latest analysis is `WHERE day = (SELECT max(day) FROM <table>)`."""

import math
import os
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl
import yaml

from models.billing.pricing import on_demand_price
from models.billing.rate_cards import ConfigError, Tenant, month_bounds, rate_card_for
from models.ledger.usage import RESERVED_TENANTS
from models.planning.quotas import (
    DEFAULT_MAX_STEP,
    Recommendation,
    cluster_queue_manifests,
    dns_name,
    kueue_admission_problems,
    plan_cluster_queues,
    plan_resource_quotas,
    resource_quota_manifests,
)
from models.planning.reservations import (
    DEFAULT_HALF_LIFE_HOURS,
    DEFAULT_LOOKBACK_HOURS,
    MONTH_HOURS,
    RECOMMENDATION_SCHEMA,
    ReservationKey,
    TierPrices,
    overflow_pools,
    recommend_reservations,
)
from models.planning.shifts import DEFAULT_CONFIRM_DAYS, SHIFTS_SCHEMA
from models.planning.tier_changes import (
    daily_series,
    detect_usage_shifts,
    next_period,
    recommend_tier_changes,
)
from pipelines.ingest.assets import gpu_usage_hourly, tenant_usage_daily
from pipelines.partitions import DAILY, partition_day
from pipelines.resources import (
    BillingConfigResource,
    KubernetesResource,
    OutputsResource,
    WarehouseResource,
)

GROUP = "analytics"
DEFAULT_LOOKBACK_DAYS = 60
"""Two months of days: enough for the level before a shift and a shift's confirmation."""
MANIFEST_OUTCOME = "manifest"
"""scheduler_quota_changes.outcome of a quota written as a manifest only (no cluster)."""

_RESERVED = ", ".join(f"'{t}'" for t in sorted(RESERVED_TENANTS))


def _frame(con: duckdb.DuckDBPyConnection, query: str, params: list[Any]) -> pl.DataFrame:
    frame = pl.from_arrow(con.sql(query, params=params).to_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def _replace_day(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, day: date
                 ) -> int:
    """Delete the day's rows of `table` and insert `frame`'s with column `day` first."""
    rows = frame.select(pl.lit(day).alias("day"), pl.all()).to_arrow()
    con.register("analytics_rows", rows)
    try:
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM analytics_rows LIMIT 0")
        con.execute(f"DELETE FROM {table} WHERE day = ?", [day])
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM analytics_rows")
    finally:
        con.unregister("analytics_rows")
    return frame.height


def _daily_usage(con: duckdb.DuckDBPyConnection, tenants: dict[str, Tenant], first: date,
                 last: date) -> pl.DataFrame:
    """Daily GPU-hours per tenant, tier and size class under each tenant's metering basis
    (tenants missing from the tenants file: allocation, as billing would refuse them anyway)."""
    usage_basis = [name for name, t in tenants.items() if t.basis.value == "usage"]
    return _frame(
        con,
        "SELECT tenant, day, hardware_tier, size_class, "
        "CASE WHEN list_contains(?, tenant) THEN used_gpu_hours ELSE allocated_gpu_hours END "
        "AS gpu_hours FROM tenant_usage_daily "
        f"WHERE day BETWEEN ? AND ? AND tenant NOT IN ({_RESERVED}) ORDER BY ALL",
        [usage_basis, first, last],
    )


def _daily_peaks(con: duckdb.DuckDBPyConnection, first: date, last: date) -> pl.DataFrame:
    """Peak concurrent GPUs per tenant and day, all tiers together (as tenant_usage_daily sums
    them per tier: per hour over nodes, then the day's maximum)."""
    return _frame(
        con,
        "SELECT tenant, day, max(gpus) AS peak_gpus FROM ("
        "  SELECT day, hour, tenant, sum(peak_gpus) AS gpus FROM usage_hourly"
        f"  WHERE day BETWEEN ? AND ? AND tenant NOT IN ({_RESERVED}) GROUP BY ALL"
        ") GROUP BY ALL ORDER BY ALL",
        [first, last],
    )


class ShiftsConfig(dg.Config):
    lookback_days: int = DEFAULT_LOOKBACK_DAYS
    """Days of daily series up to and including the partition day."""
    confirm_days: int = DEFAULT_CONFIRM_DAYS
    """Days at the new level before a shift is confirmed."""


@dg.asset(partitions_def=DAILY, group_name=GROUP, deps=[tenant_usage_daily])
def usage_shifts(
    context: dg.AssetExecutionContext,
    config: ShiftsConfig,
    warehouse_db: WarehouseResource,
    billing: BillingConfigResource,
) -> dg.MaterializeResult:
    """Sustained shifts in each tenant's daily GPU-hours per tier, peak GPUs and size mix."""
    day = partition_day(context)
    first = day - timedelta(days=config.lookback_days - 1)
    tenants = billing.tenants()
    with warehouse_db.connect() as con:
        usage = _daily_usage(con, tenants, first, day)
        peaks = _daily_peaks(con, first, day)
        series = daily_series(usage, peaks, day)
        shifts = detect_usage_shifts(series, confirm_days=config.confirm_days)
        rows = _replace_day(con, "usage_shifts", shifts, day)
    confirmed = shifts.filter(pl.col("confirmed"))
    return dg.MaterializeResult(metadata={
        "rows": rows,
        "series": series.select("tenant", "series_name").n_unique() if series.height else 0,
        "confirmed": confirmed.height,
        "confirmed_shifts": "\n".join(
            f"{r['tenant']} {r['series_name']} {r['change_date']}: {r['level_before']:.1f} -> "
            f"{r['level_after']:.1f}" for r in confirmed.iter_rows(named=True)) or "none",
        "window": f"{first} .. {day}",
    })


@dg.asset(partitions_def=DAILY, group_name=GROUP, deps=[usage_shifts])
def tier_change_recommendations(
    context: dg.AssetExecutionContext,
    config: ShiftsConfig,
    warehouse_db: WarehouseResource,
    billing: BillingConfigResource,
) -> dg.MaterializeResult:
    """Plan changes for tenants whose confirmed shift moves next month's projected bill."""
    day = partition_day(context)
    first = day - timedelta(days=config.lookback_days - 1)
    tenants = billing.tenants()
    cards = billing.rate_cards()
    period = next_period(day)
    try:
        card = rate_card_for(cards, month_bounds(period)[0].date())
    except ConfigError:
        # Next month's card is not published yet: today's prices are the best projection.
        card = rate_card_for(cards, day)
        context.log.warning(f"no rate card for {period} yet; projecting with {card.version}")
    with warehouse_db.connect() as con:
        usage = _daily_usage(con, tenants, first, day)
        shifts = _frame(con, "SELECT * EXCLUDE (day) FROM usage_shifts WHERE day = ?", [day])
        if shifts.is_empty():
            shifts = pl.DataFrame(schema=SHIFTS_SCHEMA)
        changes = recommend_tier_changes(tenants, card, usage, shifts, day)
        rows = _replace_day(con, "tier_change_recommendations", changes, day)
    return dg.MaterializeResult(metadata={
        "rows": rows,
        "period": period,
        "rate_card_version": card.version,
        "recommendations": "\n".join(
            f"{r['tenant']}: {r['current_plan']} -> {r['recommended_plan']} ({r['rule']}, "
            f"{r['current_plan_total']} -> {r['recommended_plan_total']} {r['currency']})"
            for r in changes.iter_rows(named=True)) or "none",
    })


class ReservationsConfig(dg.Config):
    lookback_hours: int = DEFAULT_LOOKBACK_HOURS
    half_life_hours: float = DEFAULT_HALF_LIFE_HOURS


@dg.asset(partitions_def=DAILY, group_name=GROUP, deps=[gpu_usage_hourly])
def reservation_recommendations(
    context: dg.AssetExecutionContext,
    config: ReservationsConfig,
    warehouse_db: WarehouseResource,
    billing: BillingConfigResource,
) -> dg.MaterializeResult:
    """Cost-optimal reserved GPUs per tenant, tier and MIG profile, and shared overflow pools."""
    day = partition_day(context)
    as_of = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    start = as_of - timedelta(hours=config.lookback_hours)
    tenants = billing.tenants()
    card = billing.rate_card(day)
    with warehouse_db.connect() as con:
        demand = _frame(
            con,
            "SELECT tenant, hardware_tier, mig_profile, hour, "
            # At the ledger's 6 decimals of a GPU-hour: one 2g.20gb instance for an hour is
            # 0.285714 GPU-hours, not 0.2857143 (a sum of rounded seconds), which the
            # recommender would read as a hair over one instance and round up to two.
            "round(sum(allocated_gpu_seconds) / 3600, 6)::DOUBLE AS demand_gpus "
            "FROM usage_hourly "
            f"WHERE hour >= ? AND hour < ? AND tenant NOT IN ({_RESERVED}) "
            "GROUP BY ALL ORDER BY ALL",
            [start, as_of],
        )
        mix = con.execute(
            "SELECT tenant, hardware_tier, size_class, "
            "(sum(allocated_gpu_seconds) / 3600)::DECIMAL(38, 6) "
            f"FROM usage_hourly WHERE hour >= ? AND hour < ? AND tenant NOT IN ({_RESERVED}) "
            "GROUP BY ALL", [start, as_of]).fetchall()
        hours_seen = {
            (t, h): int(n) for t, h, n in con.execute(
                "SELECT tenant, hardware_tier, date_diff('hour', min(hour), ?::TIMESTAMPTZ) "
                f"FROM usage_hourly WHERE hour >= ? AND hour < ? AND tenant NOT IN ({_RESERVED})"
                " GROUP BY ALL", [as_of, start, as_of]).fetchall()
        }
        unpriced = sorted({t.name for t in card.tiers if t.reserved_price is None})
        unknown = sorted(set(demand["tenant"].unique().to_list()) - set(tenants))
        demand = demand.filter(~pl.col("hardware_tier").is_in(unpriced)
                               & ~pl.col("tenant").is_in(unknown))

        # Each tenant's own prices (band reached, size mix, plan discount): one call per tenant.
        hours_by_key: dict[tuple[str, str], Decimal] = {}
        weighted: dict[tuple[str, str], Decimal] = {}
        for tenant, tier, size, gpu_hours in mix:
            key = (tenant, tier)
            hours_by_key[key] = hours_by_key.get(key, Decimal(0)) + gpu_hours
            weighted[key] = weighted.get(key, Decimal(0)) + gpu_hours * card.multiplier(size)
        recommendations, pools_input = [], []
        for (name,), rows in demand.group_by("tenant", maintain_order=True):
            tenant = tenants[str(name)]
            discount = card.plans[tenant.plan].discount_pct if tenant.plan in card.plans else 0
            prices = {}
            for tier in rows["hardware_tier"].unique().to_list():
                key = (tenant.name, tier)
                total = hours_by_key.get(key, Decimal(0))
                multiplier = weighted[key] / total if total else Decimal(1)
                monthly = total * MONTH_HOURS / max(hours_seen.get(key, 1), 1)
                reserved_price = card.tier(tier).reserved_price
                assert reserved_price is not None
                prices[tier] = TierPrices(
                    on_demand_price(card, tier, monthly, multiplier, Decimal(discount)),
                    reserved_price)
            current: dict[ReservationKey, int] = {
                (tenant.name, r.tier, None): math.ceil(r.gpus)
                for r in tenant.reservations
                if r.start <= as_of and (r.end is None or r.end > as_of)
            }
            recommendations.append(recommend_reservations(
                rows, prices, current_reserved=current,
                sla_classes={tenant.name: tenant.sla_class.value}, as_of=as_of,
                half_life_hours=config.half_life_hours, lookback_hours=config.lookback_hours,
                currency=card.currency,
            ))
            pools_input.append(rows)
        recs = (pl.concat(recommendations) if recommendations
                else pl.DataFrame(schema=RECOMMENDATION_SCHEMA))
        pools = overflow_pools(
            pl.concat(pools_input), recs, as_of=as_of, half_life_hours=config.half_life_hours,
            lookback_hours=config.lookback_hours,
        ) if pools_input else None
        rows_written = _replace_day(con, "reservation_recommendations", recs, day)
        if pools is not None:
            _replace_day(con, "reservation_overflow_pools", pools, day)
    return dg.MaterializeResult(metadata={
        "rows": rows_written,
        "pools": pools.height if pools is not None else 0,
        "skipped_tiers_without_reserved_price": ", ".join(unpriced) or "none",
        "skipped_tenants_not_in_tenants_file": ", ".join(unknown) or "none",
        "window": f"{start:%Y-%m-%dT%H}Z .. {as_of:%Y-%m-%dT%H}Z",
        "rate_card_version": card.version,
    })


class QuotasConfig(dg.Config):
    max_step: int = DEFAULT_MAX_STEP
    """Largest change of one quota per run, in GPUs (or MIG instances)."""
    kueue: bool = True
    """Also write Kueue ClusterQueues (nominalQuota per hardware tier)."""


def _cluster_config(kubernetes: KubernetesResource) -> str | None:
    """Why no cluster can be reached, or None when a kubeconfig or in-cluster config exists."""
    if kubernetes.kubeconfig:
        return None if Path(kubernetes.kubeconfig).is_file() else (
            f"kubeconfig {kubernetes.kubeconfig} does not exist")
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    return "no kubeconfig configured (CHARGEBACK_KUBECONFIG) and not running in a cluster"


@dg.asset(partitions_def=DAILY, group_name=GROUP, deps=[reservation_recommendations])
def scheduler_quotas(
    context: dg.AssetExecutionContext,
    config: QuotasConfig,
    warehouse_db: WarehouseResource,
    billing: BillingConfigResource,
    outputs: OutputsResource,
    kubernetes: KubernetesResource,
) -> dg.MaterializeResult:
    """ResourceQuota and Kueue ClusterQueue manifests from the reservation recommendations."""
    from collectors.kube_apply import CHANGES_TABLE, ChangeRecord, record_changes

    day = partition_day(context)
    as_of = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    tenants = billing.tenants()
    folder = Path(outputs.exports_path) / "quotas" / f"{day}"
    with warehouse_db.connect() as con:
        recs = con.execute(
            "SELECT tenant, hardware_tier, mig_profile, recommended_gpus, unit_gpu_equivalents "
            "FROM reservation_recommendations WHERE day = ? ORDER BY ALL", [day]).fetchall()
        # In use now: the GPUs (MIG instances) each key held in the day's last hour.
        in_use = {
            (t, h, m): n for t, h, m, n in con.execute(
                "SELECT tenant, hardware_tier, mig_profile, sum(peak_gpus) FROM usage_hourly "
                "WHERE hour = (SELECT max(hour) FROM usage_hourly WHERE day = ?) GROUP BY ALL",
                [day]).fetchall()
        }
        no_namespace = sorted({t for t, *_ in recs if t not in tenants
                               or not tenants[t].namespaces})
        recommendations = [
            Recommendation(
                tenant, tenants[tenant].namespaces[0], tier, mig, int(gpus),
                in_use_gpus=math.ceil(round(in_use.get((tenant, tier, mig), 0.0) / unit, 6)),
            )
            for tenant, tier, mig, gpus, unit in recs if tenant not in no_namespace
        ]
        reason = _cluster_config(kubernetes)
        if kubernetes.apply and reason is None:
            from collectors.kube_apply import ApplyError, api_client, apply_quotas

            api = api_client(kubernetes.kubeconfig or None)
            try:
                records = apply_quotas(api, recommendations, max_step=config.max_step,
                                       dry_run=False, kueue=config.kueue)
            except ApplyError as error:
                record_changes(con, error.records)
                raise dg.Failure(description=str(error)) from error
            finally:
                api.close()  # type: ignore[no-untyped-call]
            mode = "applied"
        else:
            records = []
            mode = "manifests only: " + (reason or "apply is off (CHARGEBACK_QUOTAS_APPLY=1)")
        # Manifests always go to GitOps; without a cluster the last written targets stand for
        # what is in force, so max-step limits the move from one run to the next.
        previous = _last_targets(con, CHANGES_TABLE, as_of)
        changes = plan_resource_quotas(
            recommendations, max_step=config.max_step, in_use={},
            current_hard={(ns, f[len("spec.hard["):-1]): v
                          for (kind, ns, _, f), v in previous.items()
                          if kind == "ResourceQuota" and ns is not None},
        )
        manifests = resource_quota_manifests(changes, {r.namespace: r.tenant
                                                       for r in recommendations})
        if config.kueue and recommendations:
            cq = plan_cluster_queues(
                recommendations, in_use={}, max_step=config.max_step,
                current_nominal=_nominal(previous),
            )
            namespaces: dict[str, list[str]] = {}
            for r in recommendations:
                namespaces.setdefault(dns_name(r.tenant), []).append(r.namespace)
            queues = cluster_queue_manifests(cq, namespaces)
            for manifest in queues:
                problems = kueue_admission_problems(manifest)
                if problems:
                    raise dg.Failure(description=f"ClusterQueue {manifest['metadata']['name']}: "
                                     "Kueue would reject it: " + "; ".join(problems))
            changes += cq
            manifests += queues
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.yaml"):
            stale.unlink()
        for manifest in manifests:
            meta = manifest["metadata"]
            stem = f"{meta['namespace']}.{meta['name']}" if "namespace" in meta else meta["name"]
            (folder / f"{manifest['kind'].lower()}-{stem}.yaml").write_text(
                yaml.safe_dump(manifest, sort_keys=False))
        if not records:
            records = [
                ChangeRecord(as_of, c.kind, c.namespace, c.name, c.field, c.current, c.target,
                             c.in_use, c.recommended, c.rule, True, MANIFEST_OUTCOME)
                for c in changes
            ]
            record_changes(con, [])  # creates the table on a first run
            con.execute(f"DELETE FROM {CHANGES_TABLE} WHERE outcome = ? AND changed_at = ?",
                        [MANIFEST_OUTCOME, as_of])
        record_changes(con, records)
    return dg.MaterializeResult(metadata={
        "mode": mode,
        "manifests": len(manifests),
        "folder": str(folder),
        "changes": sum(1 for c in changes if c.changes),
        "records": len(records),
        "skipped_tenants_without_namespace": ", ".join(no_namespace) or "none",
    })


def _last_targets(con: duckdb.DuckDBPyConnection, table: str, before: datetime
                  ) -> dict[tuple[str, str | None, str, str], int]:
    """(kind, namespace, name, field) -> the last target written or applied before `before`."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
    ).fetchone()
    if not exists or not exists[0]:
        return {}
    rows = con.execute(
        f"SELECT kind, namespace, name, field, arg_max(after_gpus, changed_at) FROM {table} "
        "WHERE changed_at < ? AND outcome IN ('applied', ?) GROUP BY ALL",
        [before, MANIFEST_OUTCOME]).fetchall()
    return {(k, ns, n, f): int(v) for k, ns, n, f, v in rows}


def _nominal(previous: dict[tuple[str, str | None, str, str], int]
             ) -> dict[tuple[str, str, str], int]:
    out = {}
    for (kind, _, name, field), value in previous.items():
        if kind != "ClusterQueue":
            continue
        resource, flavor = field.split("].flavors[")
        out[(name, flavor.removesuffix("].nominalQuota"),
             resource.removeprefix("spec.resourceGroups["))] = value
    return out

