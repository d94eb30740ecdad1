"""Analytics for one UTC day: usage shifts, tier-change and reservation recommendations, quotas.

Each asset analyses a look-back window ending with its partition day and rewrites exactly that
day's rows (column `day`) of its tables, so reruns and backfills replace rather than duplicate;
the latest analysis is `WHERE day = (SELECT max(day) FROM <table>)`."""

import contextlib
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path

import dagster as dg
import polars as pl

from models.billing.rate_cards import ConfigError, QueueKind, month_bounds, rate_card_for
from models.ledger import warehouse
from models.planning import quotas
from models.planning.budgets import (
    NO_BORROWING_ACTION,
    HeldQueue,
    QueueRef,
    hold_row,
    plan_no_borrowing,
    write_metrics_file,
)
from models.planning.quotas import DEFAULT_MAX_STEP
from models.planning.reservations import (
    DEFAULT_HALF_LIFE_HOURS,
    DEFAULT_LOOKBACK_HOURS,
    recommend_for_tenants,
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


def end_of(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)


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
    usage_basis = [name for name, t in billing.tenants().items() if t.basis.value == "usage"]
    with warehouse_db.connect() as con:
        series = daily_series(warehouse.daily_usage(con, usage_basis, first, day),
                              warehouse.daily_peaks(con, first, day), day)
        shifts = detect_usage_shifts(series, confirm_days=config.confirm_days)
        rows = warehouse.replace_analysis(con, "usage_shifts", shifts, day)
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
    usage_basis = [name for name, t in tenants.items() if t.basis.value == "usage"]
    cards = billing.rate_cards()
    period = next_period(day)
    try:
        card = rate_card_for(cards, month_bounds(period)[0].date())
    except ConfigError:
        # Next month's card is not published yet: today's prices are the best projection.
        card = rate_card_for(cards, day)
        context.log.warning(f"no rate card for {period} yet; projecting with {card.version}")
    with warehouse_db.connect() as con:
        usage = warehouse.daily_usage(con, usage_basis, first, day)
        shifts = warehouse.shifts_of(con, day)
        if shifts.is_empty():
            shifts = pl.DataFrame(schema=SHIFTS_SCHEMA)
        changes = recommend_tier_changes(tenants, card, usage, shifts, day)
        rows = warehouse.replace_analysis(con, "tier_change_recommendations", changes, day)
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
    as_of = end_of(day)
    start = as_of - timedelta(hours=config.lookback_hours)
    card = billing.rate_card(day)
    with warehouse_db.connect() as con:
        result = recommend_for_tenants(
            warehouse.hourly_demand(con, start, as_of), warehouse.size_mix(con, start, as_of),
            warehouse.hours_observed(con, start, as_of), billing.tenants(), card,
            as_of=as_of, half_life_hours=config.half_life_hours,
            lookback_hours=config.lookback_hours)
        rows = warehouse.replace_analysis(con, "reservation_recommendations",
                                          result.recommendations, day)
        if result.pools is not None:
            warehouse.replace_analysis(con, "reservation_overflow_pools", result.pools, day)
    return dg.MaterializeResult(metadata={
        "rows": rows,
        "pools": result.pools.height if result.pools is not None else 0,
        "skipped_tiers_without_reserved_price": ", ".join(result.unpriced_tiers) or "none",
        "skipped_tenants_not_in_tenants_file": ", ".join(result.unknown_tenants) or "none",
        "window": f"{start:%Y-%m-%dT%H}Z .. {as_of:%Y-%m-%dT%H}Z",
        "rate_card_version": card.version,
    })


class QuotasConfig(dg.Config):
    max_step: int = DEFAULT_MAX_STEP
    """Largest change of one quota per run, in GPUs (or MIG instances)."""
    kueue: bool = True
    """Also write the Kueue set: ResourceFlavors, the cohort (overflow pool), ClusterQueues,
    LocalQueues."""
    generate_flavors: bool = True
    """Write a ResourceFlavor per tier from its GPU products; off when the operator manages
    them (then checked to exist before apply)."""


@dg.asset(partitions_def=DAILY, group_name=GROUP,
          deps=[reservation_recommendations, dg.AssetKey("tenant_budgets")])
def scheduler_quotas(
    context: dg.AssetExecutionContext,
    config: QuotasConfig,
    warehouse_db: WarehouseResource,
    billing: BillingConfigResource,
    outputs: OutputsResource,
    kubernetes: KubernetesResource,
) -> dg.MaterializeResult:
    """ResourceQuotas and the Kueue set (flavors, cohort with the overflow pool, queues) from
    the reservation recommendations, applied to the cluster when enabled
    (CHARGEBACK_QUOTAS_APPLY=1). After the day's budgets: a tenant with `action: no-borrowing`
    that has spent its budget gets borrowingLimit 0 in its ClusterQueue (budget_holds)."""
    from collectors import kube_apply

    day = partition_day(context)
    folder = Path(outputs.exports_path) / "quotas" / f"{day}"
    reason = (kube_apply.why_no_cluster(kubernetes.kubeconfig) if kubernetes.apply
              else "apply is off (CHARGEBACK_QUOTAS_APPLY=1)")
    tenants = billing.tenants()
    with warehouse_db.connect() as con, contextlib.ExitStack() as stack:
        inputs = quotas.warehouse_inputs(
            con, day, tenants, generate_flavors=config.kueue and config.generate_flavors)
        recommendations, setup = inputs.recommendations, inputs.setup
        if reason is None:
            api = stack.enter_context(kube_apply.api_client(kubernetes.kubeconfig or None))
            state = kube_apply.read_cluster_state(api, recommendations, kueue=config.kueue,
                                                  cohort=setup.cohort)
            apply = partial(kube_apply.apply_plan, api, dry_run=False)
            now = datetime.now(UTC)
        else:
            # Without a cluster the last written figures stand for what is in force, so
            # max-step limits the move from one run to the next; recorded at the day's end,
            # so that a rerun writes the same rows.
            now = end_of(day)
            state, apply = quotas.last_written_state(con, now), None
        held = [HeldQueue(QueueRef(QueueKind(kind), ns, name), tenant, period)
                for kind, ns, name, tenant, period
                in warehouse.held_queues(con, now, warehouse.BORROWING_ACTIONS)]
        state = replace(state, no_borrowing=frozenset(h.queue.name for h in held))
        no_borrowing, borrowing = plan_no_borrowing(
            warehouse.budget_exhaustion(con, day), tenants, f"{day:%Y-%m}", held)
        if config.kueue:
            planned = quotas.plan_quotas(recommendations, state, max_step=config.max_step,
                                         setup=setup, no_borrowing=no_borrowing | {
                                             c.queue.name for c in borrowing if c.dry_run})
            pooled = {o.name: o for o in planned.objects
                      if o.kind is quotas.QuotaKind.CLUSTER_QUEUE and o.manifest["spec"].get(
                          "cohortName")}
        else:
            pooled = {}
        # A queue outside the plan or its cohort borrows nothing already: nothing to hold.
        notes = [f"{c.queue.label}: not a ClusterQueue of the quota plan in its cohort; "
                 f"{c.tenant}'s no-borrowing has nothing to hold" for c in borrowing
                 if c.action == NO_BORROWING_ACTION and c.queue.name not in pooled]
        borrowing = [c for c in borrowing
                     if c.action != NO_BORROWING_ACTION or c.queue.name in pooled]
        no_borrowing &= set(pooled)
        real = [c for c in borrowing if not c.dry_run]
        try:
            run = quotas.run_quotas(recommendations, state, now=now, max_step=config.max_step,
                                    kueue=config.kueue, folder=folder, apply=apply, con=con,
                                    day=day, setup=setup, no_borrowing=no_borrowing)
        except quotas.ApplyRefused as error:
            outcome = "conflict" if isinstance(error, quotas.ApplyConflict) else "refused"
            warehouse.record_budget_holds(con, [hold_row(c, now, outcome) for c in real],
                                          day=day, actions=warehouse.BORROWING_ACTIONS)
            raise
        outcome = "applied" if apply is not None else warehouse.MANIFEST_OUTCOME
        rows = [hold_row(c, now, outcome) for c in real]
        checks = [c for c in borrowing if c.dry_run]
        if checks:
            # Dry-run: the queue as the quota plan would write it held, checked by the API
            # server (dryRun=All) or written for reading; the applied plan keeps its borrowing.
            objects = tuple(pooled[c.queue.name] for c in checks)
            quotas.write_manifests(quotas.QuotaPlan((), objects),
                                   Path(outputs.exports_path) / "budget-holds" / f"{day}"
                                   / "dry-run" / "borrowing")
            checked = "dry-run manifest"
            if reason is None:
                try:
                    kube_apply.apply_plan(api, quotas.QuotaPlan((), objects), dry_run=True,
                                          now=now)
                    checked = "dry-run"
                except quotas.ApplyRefused as error:
                    checked = "conflict" if isinstance(error, quotas.ApplyConflict) else "refused"
                    notes.append(str(error))
            rows += [hold_row(c, now, checked) for c in checks]
        warehouse.record_budget_holds(con, rows, day=day, actions=warehouse.BORROWING_ACTIONS)
        if rows:
            write_metrics_file(con, Path(outputs.exports_path) / "metrics")
    return dg.MaterializeResult(metadata={
        "mode": "applied" if reason is None else f"manifests only: {reason}",
        "manifests": len(run.files),
        "folder": str(folder),
        "changes": sum(1 for c in run.plan.changes if c.changes),
        "records": len(run.records),
        "skipped_tenants_without_namespace": ", ".join(inputs.skipped_tenants) or "none",
        "objects": ", ".join(f"{o.kind.value} {o.where}" for o in run.plan.objects) or "none",
        "operator_notes": "\n".join(run.plan.notes) or "none",
        "borrowing_holds": "\n".join(f"{c.action} {c.queue.label} ({c.tenant}): {c.reason}"
                                     for c in borrowing) or "none",
        "borrowing_notes": "\n".join(notes) or "none",
    })
