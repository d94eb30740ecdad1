"""Budgets per tenant (models/planning/budgets.py): evaluated daily after the forecast, holds
on the tenants' Kueue queues where enforcement is on, and the alerts for thresholds crossed.

`tenant_budgets` rewrites its partition day's rows of `tenant_budgets`, `tenant_budget_days` and
`budget_thresholds`, writes the metrics file and the hold manifests, and appends every hold or
release to `budget_holds`. `budget_alerts` (run by the `raise_budget_alerts` sensor after each
analytics run) posts the crossed thresholds not yet alerted to Alertmanager and appends each
sent one to `budget_alerts`, so an alert goes out once however often a day is rerun."""

import contextlib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import yaml

from models.billing.rate_cards import QueueKind, month_bounds, rate_card_for
from models.errors import UserError
from models.files import atomic_write, safe_path
from models.ledger import warehouse
from models.planning.budgets import (
    SCENARIOS,
    BudgetStatus,
    HeldQueue,
    HoldChange,
    MonthForecast,
    PendingAlert,
    QueueRef,
    alertmanager_alert,
    enforced_queues,
    evaluate_budget,
    hold_row,
    plan_holds,
    write_metrics_file,
)
from models.planning.quotas import ApplyConflict, ApplyRefused
from pipelines.analytics.forecast import tenant_forecasts
from pipelines.jobs import budget_alerts_job, daily_analytics_job
from pipelines.partitions import DAILY, partition_day
from pipelines.resources import (
    AlertmanagerResource,
    BillingConfigResource,
    KubernetesResource,
    OutputsResource,
    WarehouseResource,
)

GROUP = "analytics"
ALERTS_GROUP = "alerts"

DEC = pl.Decimal(18, 6)
BUDGETS_SCHEMA: dict[str, pl.DataType] = {
    "tenant": pl.String(), "period": pl.String(), "as_of": pl.Datetime("us", "UTC"),
    "unit": pl.String(), "currency": pl.String(), "limit_value": DEC, "spent": DEC,
    "spent_amount": pl.Decimal(18, 4), "spent_gpu_hours": DEC, "used_pct": pl.Decimal(12, 2),
    "forecast": DEC, "forecast_lo95": DEC, "forecast_hi95": DEC,
    "forecast_pct": pl.Decimal(12, 2), "runs_out_on": pl.Date(), "enforcement": pl.String(),
}
BUDGET_DAYS_SCHEMA: dict[str, pl.DataType] = {
    "tenant": pl.String(), "period": pl.String(), "budget_day": pl.Date(), "actual": DEC,
    **{("forecast" if s == "point" else f"forecast_{s}"): DEC for s in SCENARIOS},
}
THRESHOLDS_SCHEMA: dict[str, pl.DataType] = {
    "tenant": pl.String(), "period": pl.String(), "basis": pl.String(),
    "percent": pl.Decimal(12, 2), "unit": pl.String(), "currency": pl.String(),
    "limit_value": DEC, "threshold": DEC, "crossed_on": pl.Date(), "value": DEC,
    "runs_out_on": pl.Date(),
}


def _enforcement(status: BudgetStatus) -> str:
    enforcement = status.budget.enforcement
    return "off" if enforcement is None else "dry-run" if enforcement.dry_run else "on"


def _frames(statuses: list[BudgetStatus]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    budgets = [{
        "tenant": s.tenant, "period": s.period, "as_of": s.as_of, "unit": s.budget.unit.value,
        "currency": s.currency, "limit_value": s.budget.limit, "spent": s.spent,
        "spent_amount": s.spent_amount, "spent_gpu_hours": s.spent_gpu_hours,
        "used_pct": s.used_pct,
        "forecast": None if s.forecast is None else s.forecast["point"],
        "forecast_lo95": None if s.forecast is None else s.forecast["lo95"],
        "forecast_hi95": None if s.forecast is None else s.forecast["hi95"],
        "forecast_pct": s.forecast_pct, "runs_out_on": s.runs_out_on,
        "enforcement": _enforcement(s),
    } for s in statuses]
    days = [{
        "tenant": s.tenant, "period": s.period, "budget_day": d.day, "actual": d.actual,
        **{("forecast" if k == "point" else f"forecast_{k}"): (d.forecast or {}).get(k)
           for k in SCENARIOS},
    } for s in statuses for d in s.days]
    crossed = [{
        "tenant": s.tenant, "period": s.period, "basis": c.basis, "percent": c.percent,
        "unit": s.budget.unit.value, "currency": s.currency, "limit_value": s.budget.limit,
        "threshold": c.threshold, "crossed_on": c.crossed_on, "value": c.value,
        "runs_out_on": s.runs_out_on,
    } for s in statuses for c in s.crossings if c.crossed_on is not None]
    return (pl.DataFrame(budgets, schema=BUDGETS_SCHEMA),
            pl.DataFrame(days, schema=BUDGET_DAYS_SCHEMA),
            pl.DataFrame(crossed, schema=THRESHOLDS_SCHEMA))


def _end_of(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)


def write_hold_manifests(changes: list[HoldChange], folder: Path) -> list[Path]:
    """One YAML apply configuration per change (for GitOps, or to read what dry-run checked);
    a tenant in dry-run gets its files under `dry-run/`."""
    written = []
    for change in changes:
        where = folder / "dry-run" if change.dry_run else folder
        where.mkdir(parents=True, exist_ok=True)
        written.append(atomic_write(safe_path(where, change.file_stem, ".yaml"),
                                    yaml.safe_dump(change.manifest, sort_keys=False)))
    return written


@dg.asset(partitions_def=DAILY, group_name=GROUP, deps=[tenant_forecasts])
def tenant_budgets(
    context: dg.AssetExecutionContext,
    warehouse_db: WarehouseResource,
    billing: BillingConfigResource,
    outputs: OutputsResource,
    kubernetes: KubernetesResource,
) -> dg.MaterializeResult:
    """Each budget's month-to-date spend, forecast and thresholds crossed; Kueue holds where a
    tenant's enforcement is on (applied when CHARGEBACK_QUOTAS_APPLY=1 and a cluster is
    configured, else written as manifests)."""
    from collectors import kube_apply

    day = partition_day(context)
    as_of = _end_of(day)
    period = f"{day:%Y-%m}"
    start, _ = month_bounds(period)
    card = rate_card_for(billing.rate_cards(), start.date())
    tenants = billing.tenants()
    budgeted = {name: t for name, t in sorted(tenants.items()) if t.budget is not None}
    folder = Path(outputs.exports_path) / "budget-holds" / f"{day}"
    reason = (kube_apply.why_no_cluster(kubernetes.kubeconfig) if kubernetes.apply
              else "apply is off (CHARGEBACK_QUOTAS_APPLY=1)")
    with warehouse_db.connect() as con, contextlib.ExitStack() as stack:
        forecasts = warehouse.month_forecasts(con, day)
        hours = warehouse.usage_hours(con, budgeted, start, as_of)
        statuses = [evaluate_budget(
            tenant, card, as_of, hours[name],
            MonthForecast(*forecasts[name]) if name in forecasts else None)
            for name, tenant in budgeted.items()]
        # A backfill of a day before the latest analysed one rewrites its figures only: holds
        # follow the latest analysis (an old period's would hold or lift a queue today).
        ((later,),) = con.execute("SELECT count(*) FROM tenant_budgets WHERE day > ?",
                                  [day]).fetchall()
        frames = _frames(statuses)
        for table, frame in zip(("tenant_budgets", "tenant_budget_days", "budget_thresholds"),
                                frames, strict=True):
            warehouse.replace_analysis(con, table, frame, day)
        # Without a cluster the recorded holds stand for what is in force; recorded at the
        # day's end, so that a rerun writes the same rows.
        now = datetime.now(UTC) if reason is None else as_of
        held = [HeldQueue(QueueRef(QueueKind(kind), ns, name), tenant, held_period)
                for kind, ns, name, tenant, held_period in warehouse.held_queues(con, now)]
        live = None
        if reason is None and not later:
            api = stack.enter_context(kube_apply.api_client(kubernetes.kubeconfig or None))
            queues = [q for t in budgeted.values() for q in enforced_queues(t)]
            live = kube_apply.read_stop_policies(api, queues + [h.queue for h in held])
        changes, notes = plan_holds(statuses, tenants, period, held, live)
        if later:
            changes, notes = [], [f"{day} is not the latest analysed day: holds left as they "
                                  "are (they follow the latest analysis)"]
        files = write_hold_manifests(changes, folder)
        problems: list[str] = []
        if reason is None and not later:
            done, problems = kube_apply.apply_holds(api, changes, now=now)
        else:
            done = [(c, "dry-run manifest" if c.dry_run else warehouse.MANIFEST_OUTCOME)
                    for c in changes]
        warehouse.record_budget_holds(con, [hold_row(c, now, outcome) for c, outcome in done],
                                      day=day)
        in_force = [HeldQueue(QueueRef(QueueKind(kind), ns, name), tenant, held_period)
                    for kind, ns, name, tenant, held_period
                    in warehouse.held_queues(con, now + timedelta(microseconds=1))]
        if not later:  # the metrics are the latest analysis's
            write_metrics_file(con, Path(outputs.exports_path) / "metrics")
    if problems:
        cls = ApplyConflict if any(o == "conflict" for _, o in done) else ApplyRefused
        raise cls("budget holds refused (recorded in budget_holds):\n" + "\n".join(problems))
    return dg.MaterializeResult(metadata={
        "period": period,
        "budgets": "\n".join(
            f"{s.tenant}: {s.used_pct}% of {s.limit_text} spent"
            + (f", forecast {s.forecast_pct}%" if s.forecast_pct is not None else "")
            + (f", runs out on {s.runs_out_on}" if s.runs_out_on else "")
            for s in statuses) or "no tenant has a budget",
        "hold_mode": "applied" if reason is None else f"manifests only: {reason}",
        "hold_changes": "\n".join(f"{c.action} {c.queue.label} ({c.tenant}): {c.reason}: "
                                  f"{outcome}" for c, outcome in done) or "none",
        "hold_manifests": len(files),
        "notes": "\n".join(notes) or "none",
        "queues_held": ", ".join(h.queue.label for h in in_force) or "none",
    })


def _pending(row: tuple[Any, ...]) -> PendingAlert:
    return PendingAlert(*row)


@dg.asset(partitions_def=DAILY, group_name=ALERTS_GROUP, deps=[tenant_budgets])
def budget_alerts(
    context: dg.AssetExecutionContext,
    warehouse_db: WarehouseResource,
    alertmanager: AlertmanagerResource,
) -> dg.MaterializeResult:
    """Post the thresholds the day's budgets crossed, not alerted before, to Alertmanager."""
    from collectors.alertmanager import AlertmanagerUnavailable, post_alerts

    if not alertmanager.url:
        raise UserError("no Alertmanager configured (CHARGEBACK_ALERTMANAGER_URL): budget "
                        "alerts cannot be sent")
    day = partition_day(context)
    sent_at = datetime.now(UTC)
    with warehouse_db.connect() as con:
        pending = [_pending(r) for r in warehouse.pending_budget_alerts(con, day)]
        if pending:
            try:
                post_alerts(alertmanager.url, [alertmanager_alert(a, sent_at) for a in pending])
            except AlertmanagerUnavailable as exc:
                # Retried a few times; what is still unsent goes with any later day's run of
                # the month (each day's analysis holds every crossing so far).
                raise dg.RetryRequested(max_retries=3, seconds_to_wait=60) from exc
            for a in pending:
                warehouse.record_budget_alert(con, (
                    a.tenant, a.period, a.basis, a.percent, a.unit, a.limit, a.crossed_on,
                    a.value, sent_at, alertmanager.url))
    return dg.MaterializeResult(metadata={
        "sent": len(pending),
        "alerts": "\n".join(f"{a.tenant} {a.period} {a.basis} {a.percent}%" for a in pending)
        or "none new",
    })


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[daily_analytics_job],
    request_job=budget_alerts_job,
)
def raise_budget_alerts(context: dg.RunStatusSensorContext,
                        alertmanager: AlertmanagerResource) -> dg.RunRequest | dg.SkipReason:
    """After a day's analytics (budgets included) succeed, send its new budget alerts."""
    day = context.dagster_run.tags.get("dagster/partition")
    if not day:
        return dg.SkipReason("the analytics run had no partition")
    if not alertmanager.url:
        return dg.SkipReason("no Alertmanager configured (CHARGEBACK_ALERTMANAGER_URL)")
    return dg.RunRequest(partition_key=day, run_key=f"budget-alerts-{context.dagster_run.run_id}")
