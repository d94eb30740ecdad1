"""Monthly budgets per tenant: spend against the budget, thresholds crossed, the day the budget
runs out, the alerts to raise and the Kueue queue holds that enforce it.

What a budget counts (docs/budgets.md):
- a money budget counts what the tenant is invoiced, accrued through the month
  (`pricing.spent_to_date`: on-demand charges of the usage so far, fixed charges and the
  minimum commitment evenly over the month's hours, credits applied); at the month's end that is
  the invoice total, so a budget and the invoice never disagree about a finished month;
- a GPU-hours budget counts GPU-hours under the tenant's metering basis, as billed.

The forecast is the `tenant_forecasts` analysis of the same day (models/planning/forecast.py):
its month-end point and 80%/95% intervals, in GPU-hours and priced. Along the rest of the month a
scenario's spend grows in step with its GPU-hours, from today's spend to its priced month end
(exact at both ends), which is what "at this rate the budget runs out on <day>" reads.

Enforcement is opt-in per tenant and dry-run by default. At 100% of actual spend the tenant's
queue stops admitting new work: Kueue `spec.stopPolicy: Hold` on its ClusterQueue or LocalQueues
(Hold, not HoldAndDrain: admitted workloads keep running). A hold is lifted when the period
changes, the budget is raised above the spend, or enforcement is switched off. Only holds this
module set are lifted: a stopPolicy someone else set is left as it is. Holds are applied by
server-side apply under their own field manager (`HOLD_MANAGER`), which owns `spec.stopPolicy`
alone, so quotas applied by the quota path (manager `gpu-chargeback`) and holds never contend
for a field. `action: no-borrowing` is decided here (`plan_no_borrowing`) but written by the quota
path, the one writer of a ClusterQueue's resourceGroups: it plans the queue with borrowingLimit 0
(models/planning/quotas.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from models.billing.pricing import HOUR, UsageHour, price_invoice, quantity, spent_to_date
from models.billing.rate_cards import (
    DEFAULT_LOCAL_QUEUE,
    Budget,
    BudgetUnit,
    HoldAction,
    QueueKind,
    RateCard,
    Tenant,
    month_bounds,
)
from models.errors import UserError
from models.files import atomic_write
from models.ledger import warehouse
from models.planning.kueue import KUEUE_API_VERSION
from models.planning.quotas import dns_name

SCENARIOS = ("point", "lo80", "hi80", "lo95", "hi95")
"""The forecast's scenarios (models/planning/forecast.py), point first."""
ACTUAL, FORECAST = "actual", "forecast"
"""What a threshold is compared with: month-to-date spend, or the month-end point forecast."""
HOLD_MANAGER = "gpu-chargeback-budgets"
"""Server-side apply field manager of budget holds: it owns `spec.stopPolicy` and nothing else."""
STOP_POLICY_FIELD = "spec.stopPolicy"
HOLD, NO_HOLD = "Hold", "None"
"""Kueue stopPolicy values (the CRD's enum is None, Hold, HoldAndDrain; default None)."""
HOLD_ACTION, RELEASE_ACTION = "hold", "release"
ALERT_NAME = "GPUBudgetThresholdCrossed"
MIN_ALERT_ACTIVE = timedelta(days=1)
"""An alert about a period already over (a backfill, the demo) stays active this long after it
is sent, so that every receiver is notified once; a current period's alert is active until the
period ends."""
HUNDRED = Decimal(100)


@dataclass(frozen=True)
class MonthForecast:
    """The month-end forecast a budget is compared with: one `tenant_forecasts` row and its
    `tenant_forecast_days`."""

    gpu_hours: Mapping[str, Decimal]
    """Scenario -> GPU-hours of the whole month."""
    amount: Mapping[str, Decimal]
    """Scenario -> invoice total of the whole month."""
    cumulative: Mapping[str, Sequence[tuple[date, Decimal]]]
    """Scenario -> (day, month-to-date GPU-hours by the day's end) for each remaining day."""


@dataclass(frozen=True)
class BudgetDay:
    """One day of the period in the budget's unit: spend by its end (days of data) or the
    forecast's scenarios by its end (the days after)."""

    day: date
    actual: Decimal | None
    forecast: Mapping[str, Decimal] | None


@dataclass(frozen=True)
class Crossing:
    """One threshold of a budget: `percent` of the limit against actual spend or the
    forecast, and whether (on which day's data) it was reached."""

    basis: str
    percent: Decimal
    threshold: Decimal
    """`percent` of the limit, in the budget's unit."""
    crossed_on: date | None
    value: Decimal | None
    """Spend by the end of `crossed_on` (actual), or the month-end point forecast."""


@dataclass(frozen=True)
class BudgetStatus:
    tenant: str
    period: str
    as_of: datetime
    """End of the data (exclusive): midnight after the analysis day."""
    budget: Budget
    currency: str
    spent_amount: Decimal
    spent_gpu_hours: Decimal
    forecast_amount: Mapping[str, Decimal] | None
    forecast_gpu_hours: Mapping[str, Decimal] | None
    days: tuple[BudgetDay, ...]
    crossings: tuple[Crossing, ...]
    runs_out_on: date | None
    """The first day whose spend (actual, else the point forecast) reaches the budget; None
    when it does not within the period."""

    @property
    def spent(self) -> Decimal:
        """Month-to-date spend in the budget's unit."""
        return (self.spent_amount if self.budget.unit is BudgetUnit.AMOUNT
                else self.spent_gpu_hours)

    @property
    def forecast(self) -> Mapping[str, Decimal] | None:
        """Month-end scenarios in the budget's unit."""
        return (self.forecast_amount if self.budget.unit is BudgetUnit.AMOUNT
                else self.forecast_gpu_hours)

    @property
    def used_pct(self) -> Decimal:
        return _pct(self.spent, self.budget.limit)

    @property
    def forecast_pct(self) -> Decimal | None:
        forecast = self.forecast
        return None if forecast is None else _pct(forecast["point"], self.budget.limit)

    @property
    def exhausted(self) -> bool:
        """100% of the budget spent: what enforcement acts on."""
        return self.spent >= self.budget.limit

    @property
    def limit_text(self) -> str:
        return _figure(self.budget.limit, self.budget.unit.value, self.currency)


def _pct(value: Decimal, limit: Decimal) -> Decimal:
    return (value * HUNDRED / limit).quantize(Decimal("0.01"))


def evaluate_budget(
    tenant: Tenant,
    card: RateCard,
    as_of: datetime,
    month_to_date: Sequence[UsageHour],
    forecast: MonthForecast | None,
) -> BudgetStatus:
    """The budget of `tenant` for the month holding the hour before `as_of` (a UTC midnight),
    from the period's usage before `as_of` (as billed) and that day's forecast (None when
    there is none: forecast thresholds are then not evaluated)."""
    budget = tenant.budget
    if budget is None:
        raise ValueError(f"tenant {tenant.name} has no budget")
    if as_of.hour or as_of.minute or as_of.second or as_of.microsecond:
        raise ValueError(f"as_of must be a UTC midnight, got {as_of.isoformat()}")
    if budget.unit is BudgetUnit.AMOUNT and budget.currency != card.currency:
        raise UserError(f"tenant {tenant.name}: budget.currency {budget.currency} is not the "
                        f"currency of rate card {card.version} ({card.currency})")
    period = f"{as_of - HOUR:%Y-%m}"
    start, end = month_bounds(period)
    period_hours = (end - start) // HOUR
    hours = sorted(month_to_date, key=lambda h: h.hour)
    if hours and (hours[0].hour < start or hours[-1].hour >= as_of):
        raise ValueError(f"tenant {tenant.name}: usage outside [{start}, {as_of})")

    def spent_by(moment: datetime) -> tuple[Decimal, Decimal]:
        used = [h for h in hours if h.hour < moment]
        gpu_hours = sum((h.gpu_hours for h in used), Decimal(0))
        invoice = price_invoice(tenant, card, period, used)
        return spent_to_date(invoice, period_hours, (moment - start) // HOUR), gpu_hours

    spent_amount, spent_gpu_hours = spent_by(as_of)
    money = budget.unit is BudgetUnit.AMOUNT
    actual_days: list[tuple[date, Decimal]] = []
    day_end = start + timedelta(days=1)
    while day_end <= as_of:
        if day_end == as_of:
            value = spent_amount if money else spent_gpu_hours
        elif money:
            # One invoice per day of data: the bands, netting and minimum are priced exactly.
            value = spent_by(day_end)[0]
        else:
            value = sum((h.gpu_hours for h in hours if h.hour < day_end), Decimal(0))
        actual_days.append(((day_end - timedelta(days=1)).date(), value))
        day_end += timedelta(days=1)

    forecast_days = _forecast_days(forecast, spent_amount if money else spent_gpu_hours,
                                   spent_gpu_hours, money)
    days = tuple([BudgetDay(d, v, None) for d, v in actual_days]
                 + [BudgetDay(d, None, f) for d, f in forecast_days])
    crossings = []
    for percent in budget.actual_thresholds:
        threshold = budget.limit * percent / HUNDRED
        hit = next(((d, v) for d, v in actual_days if v >= threshold), None)
        crossings.append(Crossing(ACTUAL, percent, threshold, *(hit or (None, None))))
    scenarios = None if forecast is None else (forecast.amount if money else forecast.gpu_hours)
    if scenarios is not None:
        analysis_day = (as_of - timedelta(days=1)).date()
        for percent in budget.forecast_thresholds:
            threshold = budget.limit * percent / HUNDRED
            reached = scenarios["point"] >= threshold
            crossings.append(Crossing(FORECAST, percent, threshold,
                                      analysis_day if reached else None, scenarios["point"]))
    runs_out = next((d.day for d in days
                     if (d.actual if d.actual is not None
                         else (d.forecast or {}).get("point", Decimal(-1))) >= budget.limit),
                    None)
    return BudgetStatus(
        tenant=tenant.name, period=period, as_of=as_of, budget=budget, currency=card.currency,
        spent_amount=spent_amount, spent_gpu_hours=spent_gpu_hours,
        forecast_amount=None if forecast is None else dict(forecast.amount),
        forecast_gpu_hours=None if forecast is None else dict(forecast.gpu_hours),
        days=days, crossings=tuple(crossings), runs_out_on=runs_out,
    )


def _forecast_days(forecast: MonthForecast | None, spent: Decimal, spent_gpu_hours: Decimal,
                   money: bool) -> list[tuple[date, dict[str, Decimal]]]:
    """Each remaining day's scenarios in the budget's unit. GPU-hours are the forecast's own
    cumulative paths; money grows along each scenario's path in step with its GPU-hours, from
    today's spend to the scenario's priced month end (evenly over the days when the scenario
    adds no GPU-hours, as its fixed charges accrue)."""
    if forecast is None or not forecast.cumulative.get("point"):
        return []
    days = [d for d, _ in forecast.cumulative["point"]]
    out: list[dict[str, Decimal]] = [{} for _ in days]
    for scenario in SCENARIOS:
        path = [v for _, v in forecast.cumulative[scenario]]
        if not money:
            for i, value in enumerate(path):
                out[i][scenario] = value
            continue
        # Spend never falls: a scenario priced below today's spend (a volume band's lower
        # price) stays at today's spend.
        end = max(forecast.amount[scenario], spent)
        added = path[-1] - spent_gpu_hours
        for i, value in enumerate(path):
            share = ((value - spent_gpu_hours) / added if added > 0
                     else Decimal(i + 1) / Decimal(len(path)))
            out[i][scenario] = quantity(spent + (end - spent) * share)
    return list(zip(days, out, strict=True))


# --- alerts ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PendingAlert:
    """A crossed threshold not yet delivered (a `budget_thresholds` row without a
    `budget_alerts` row): one alert per tenant, period, threshold and budget."""

    tenant: str
    period: str
    basis: str
    percent: Decimal
    unit: str
    """`amount` or `gpu_hours`."""
    currency: str | None
    limit: Decimal
    threshold: Decimal
    crossed_on: date
    value: Decimal
    runs_out_on: date | None

    @property
    def key(self) -> tuple[str, str, str, Decimal, str, Decimal]:
        """What makes an alert one alert: a raised budget is a new set of thresholds."""
        return (self.tenant, self.period, self.basis, self.percent, self.unit, self.limit)


def _figure(value: Decimal, unit: str, currency: str | None) -> str:
    return f"{value:,.2f} {currency}" if unit == BudgetUnit.AMOUNT.value else (
        f"{value:,.1f} GPU-hours")


def severity(percent: Decimal) -> str:
    return "critical" if percent >= HUNDRED else "warning" if percent >= 80 else "info"


def alertmanager_alert(alert: PendingAlert, sent_at: datetime) -> dict[str, Any]:
    """The alert as Alertmanager's v2 API takes it (a `postableAlert`). Its labels identify it
    (Alertmanager groups and deduplicates by them); startsAt is the end of the day whose data
    crossed the threshold."""
    _, period_end = month_bounds(alert.period)
    limit = _figure(alert.limit, alert.unit, alert.currency)
    percent = f"{alert.percent.normalize():f}"
    if alert.basis == ACTUAL:
        summary = (f"{alert.tenant} has spent {_figure(alert.value, alert.unit, alert.currency)}"
                   f" of its {limit} budget for {alert.period} "
                   f"({_pct(alert.value, alert.limit)}%, threshold {percent}%)")
    else:
        summary = (f"{alert.tenant} is forecast to spend "
                   f"{_figure(alert.value, alert.unit, alert.currency)} in {alert.period}, "
                   f"{_pct(alert.value, alert.limit)}% of its {limit} budget (threshold "
                   f"{percent}%)")
    runs_out = (f"at this rate the budget runs out on {alert.runs_out_on}"
                if alert.runs_out_on else "at this rate the budget lasts the month")
    starts = datetime.combine(alert.crossed_on + timedelta(days=1), datetime.min.time(),
                              sent_at.tzinfo)
    return {
        "labels": {
            "alertname": ALERT_NAME, "tenant": alert.tenant, "period": alert.period,
            "basis": alert.basis, "threshold_pct": percent,
            "severity": severity(alert.percent),
        },
        "annotations": {
            "summary": summary,
            "description": f"{summary}; {runs_out}. Data through {alert.crossed_on}.",
            "budget": limit,
        },
        "startsAt": min(starts, sent_at).isoformat(),
        "endsAt": max(period_end, sent_at + MIN_ALERT_ACTIVE).isoformat(),
    }


# --- holds -------------------------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class QueueRef:
    kind: QueueKind
    namespace: str | None
    """A LocalQueue's namespace; None for a ClusterQueue."""
    name: str

    @property
    def label(self) -> str:
        return f"{self.kind.value} {self.namespace}/{self.name}" if self.namespace else (
            f"{self.kind.value} {self.name}")


def enforced_queues(tenant: Tenant) -> list[QueueRef]:
    """The Kueue queues a tenant's budget holds: its ClusterQueue (named as the quota path names
    it unless the tenants file says otherwise) or its LocalQueue in each of its namespaces."""
    budget = tenant.budget
    if budget is None or budget.enforcement is None:
        return []
    enforcement = budget.enforcement
    if enforcement.queue is QueueKind.CLUSTER_QUEUE:
        return [QueueRef(QueueKind.CLUSTER_QUEUE, None,
                         enforcement.name or dns_name(tenant.name))]
    return [QueueRef(QueueKind.LOCAL_QUEUE, ns, enforcement.name or DEFAULT_LOCAL_QUEUE)
            for ns in tenant.namespaces]


@dataclass(frozen=True)
class HeldQueue:
    """A queue a budget hold of ours is in force on: the last hold recorded for it (applied, or
    written as a manifest without a cluster) and not released since."""

    queue: QueueRef
    tenant: str
    period: str


@dataclass(frozen=True)
class HoldChange:
    """One change of one queue's stopPolicy: what it is, what we set and why."""

    tenant: str
    period: str
    queue: QueueRef
    action: str
    """`hold` or `release`."""
    before: str | None
    """The live stopPolicy (None when unknown: no cluster)."""
    after: str
    reason: str
    dry_run: bool

    @property
    def manifest(self) -> dict[str, Any]:
        """The apply configuration: the queue's identity and `spec.stopPolicy`, nothing else
        (server-side apply leaves every other field to its own manager)."""
        metadata: dict[str, Any] = {"name": self.queue.name}
        if self.queue.namespace:
            metadata["namespace"] = self.queue.namespace
        return {"apiVersion": KUEUE_API_VERSION, "kind": self.queue.kind.value,
                "metadata": metadata, "spec": {"stopPolicy": self.after}}

    @property
    def file_stem(self) -> str:
        where = f"{self.queue.namespace}.{self.queue.name}" if self.queue.namespace else (
            self.queue.name)
        return f"{self.queue.kind.value.lower()}-{where}"


MISSING = "(not found)"
"""`live` value of a queue the cluster does not have."""


def plan_holds(
    statuses: Sequence[BudgetStatus],
    tenants: Mapping[str, Tenant],
    period: str,
    held: Sequence[HeldQueue],
    live: Mapping[QueueRef, str] | None = None,
) -> tuple[list[HoldChange], list[str]]:
    """The stopPolicy changes to make now, and notes on queues left alone.

    `statuses`: the budgets of the analysis of a day of `period`; `held`: the holds of ours in
    force; `live`: each enforced or held queue's stopPolicy read from the cluster (MISSING when
    it does not exist), or None without a cluster: then the recorded holds stand for what is in
    force. A tenant that has spent its whole budget gets a hold on each enforced queue not held
    for this period; a hold of ours is released when its tenant's budget is no longer exhausted
    in `period` (a new period, a raised budget) or no longer enforced on that queue. Releases
    are real even for a tenant now in dry-run: they undo what was really done. A stopPolicy
    someone else set is left as it is, and so is a queue that does not exist (a hold would
    create an empty one)."""
    held_by = {h.queue: h for h in held}
    by_tenant = {s.tenant: s for s in statuses}
    wanted: dict[QueueRef, BudgetStatus] = {}
    owner: dict[QueueRef, str] = {}
    for status in statuses:
        for queue in enforced_queues(tenants[status.tenant]):
            if owner.setdefault(queue, status.tenant) != status.tenant:
                raise UserError(f"tenants {owner[queue]} and {status.tenant} both enforce "
                                f"their budget on {queue.label}: give each its own queue "
                                "(budget.enforce.name)")
            if status.exhausted and hold_action(tenants[status.tenant]) is HoldAction.HOLD:
                wanted[queue] = status
    changes: list[HoldChange] = []
    notes: list[str] = []
    for queue, status in sorted(wanted.items()):
        ours = held_by.get(queue)
        current = None if live is None else live.get(queue, MISSING)
        if current == MISSING:
            notes.append(f"{queue.label}: not found; a budget hold applies to an existing queue "
                         f"only (tenant {status.tenant})")
            continue
        if ours is not None and ours.period == period and current in (None, HOLD):
            continue
        if current is not None and current not in (NO_HOLD, HOLD):
            notes.append(f"{queue.label}: stopPolicy {current} was set by someone else; left "
                         "as it is")
            continue
        if current == HOLD and ours is None:
            notes.append(f"{queue.label}: already held by someone else; left as it is")
            continue
        enforcement = status.budget.enforcement
        assert enforcement is not None
        changes.append(HoldChange(
            status.tenant, period, queue, HOLD_ACTION, current, HOLD,
            # The reason names no amount: operators see it, and they see no money.
            f"{status.used_pct}% of the {period} budget spent by "
            f"{(status.as_of - timedelta(days=1)).date()}", enforcement.dry_run))
    for queue, ours in sorted(held_by.items()):
        if queue in wanted:
            continue
        current = None if live is None else live.get(queue, MISSING)
        if current == MISSING:
            notes.append(f"{queue.label}: held for {ours.tenant}'s budget, and now gone")
            continue
        if current is not None and current != HOLD:
            continue  # lifted by someone else meanwhile: nothing of ours is left to release
        tenant = tenants.get(ours.tenant)
        evaluated = by_tenant.get(ours.tenant)
        if tenant is None or tenant.budget is None:
            reason = f"{ours.tenant} has no budget any more"
        elif queue not in enforced_queues(tenant) or hold_action(tenant) is not HoldAction.HOLD:
            reason = f"{ours.tenant}'s budget no longer holds {queue.label}"
        elif ours.period != period:
            reason = f"new period {period}"
        elif evaluated is not None:
            reason = f"budget changed: {evaluated.used_pct}% spent"
        else:
            reason = f"{ours.tenant} has no budget evaluation in {period}"
        changes.append(HoldChange(ours.tenant, period, queue, RELEASE_ACTION, current,
                                  NO_HOLD, reason, dry_run=False))
    return changes, notes


NO_BORROWING_ACTION, RESTORE_BORROWING_ACTION = "no-borrowing", "restore-borrowing"
NO_BORROWING, BORROWING = "borrowingLimit 0", "cohort limits"
"""budget_holds before/after of a ClusterQueue's borrowing: held at 0, or as the quota path
plans it (the tenant's SLA class and isolation, models/planning/kueue.py cohort_limits)."""


def plan_no_borrowing(
    budgets: Mapping[str, tuple[str, Decimal, bool]],
    tenants: Mapping[str, Tenant],
    period: str,
    held: Sequence[HeldQueue],
) -> tuple[set[str], list[HoldChange]]:
    """The ClusterQueues whose borrowing is held at zero in the quota plan of a day of
    `period`, and the changes to record (each set, lift, and dry-run check).

    `budgets`: tenant -> (period, used_pct, whole budget spent) of the day's analysis
    (`tenant_budgets`); `held`: the borrowing holds in force. A tenant with `action:
    no-borrowing` that has spent its whole budget has its ClusterQueue held (in dry-run: the
    change is checked, not made, and the plan keeps its borrowing); a hold is lifted when its
    tenant's budget is no longer spent in `period` (a new period, a raised budget) or the
    action is no longer no-borrowing. Exactly the rules of stopPolicy holds (`plan_holds`)."""
    held_by = {h.queue: h for h in held}
    real: set[str] = set()
    changes: list[HoldChange] = []
    for name, tenant in sorted(tenants.items()):
        if hold_action(tenant) is not HoldAction.NO_BORROWING or name not in budgets:
            continue
        budget_period, used_pct, exhausted = budgets[name]
        if not exhausted or budget_period != period:
            continue
        enforcement = tenant.budget.enforcement if tenant.budget else None
        assert enforcement is not None
        (queue,) = enforced_queues(tenant)
        dry_run = enforcement.dry_run
        ours = held_by.get(queue)
        if not dry_run:
            real.add(queue.name)
            if ours is not None and ours.period == period:
                continue
        changes.append(HoldChange(
            name, period, queue, NO_BORROWING_ACTION,
            BORROWING if ours is None else NO_BORROWING, NO_BORROWING,
            f"{used_pct}% of the {period} budget spent", dry_run))
    for queue, ours in sorted(held_by.items()):
        if queue.name in real:
            continue
        config = tenants.get(ours.tenant)
        if config is None or config.budget is None:
            reason = f"{ours.tenant} has no budget any more"
        elif hold_action(config) is not HoldAction.NO_BORROWING or (
                queue not in enforced_queues(config)):
            reason = f"{ours.tenant}'s budget no longer stops {queue.label} borrowing"
        elif ours.period != period:
            reason = f"new period {period}"
        elif ours.tenant in budgets:
            reason = f"budget changed: {budgets[ours.tenant][1]}% spent"
        else:
            reason = f"{ours.tenant} has no budget evaluation in {period}"
        changes.append(HoldChange(ours.tenant, period, queue, RESTORE_BORROWING_ACTION,
                                  NO_BORROWING, BORROWING, reason, dry_run=False))
    return real, changes


def hold_action(tenant: Tenant) -> HoldAction | None:
    budget = tenant.budget
    return None if budget is None or budget.enforcement is None else budget.enforcement.action


def hold_row(change: HoldChange, changed_at: datetime, outcome: str) -> tuple[Any, ...]:
    """`change` as a budget_holds row (its columns after `day`)."""
    queue = change.queue
    return (change.tenant, change.period, queue.kind.value, queue.namespace, queue.name,
            change.action, change.before, change.after, change.reason, changed_at, outcome)


# --- metrics -----------------------------------------------------------------------------------

ALL_RECORDED = datetime.max.replace(tzinfo=UTC)


def metrics_text(con: duckdb.DuckDBPyConnection) -> bytes:
    """The budgets of the latest analysed day and the holds in force, read from the warehouse,
    as Prometheus metrics (text exposition format): what Grafana and alerting rules read. The
    one renderer of both the textfile (node-exporter's textfile collector) and the HTTP
    `/metrics` of `chargeback metrics serve`, so the two never disagree. A threshold not
    crossed has no `chargeback_budget_threshold_crossed` series (the warehouse records crossed
    ones only)."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    figure = ["tenant", "period", "unit", "currency"]
    limit = Gauge("chargeback_budget_limit", "Monthly budget, in its unit (currency or "
                  "GPU-hours)", figure, registry=registry)
    spent = Gauge("chargeback_budget_spent", "Month-to-date spend in the budget's unit",
                  figure, registry=registry)
    ratio = Gauge("chargeback_budget_used_ratio", "Month-to-date spend over the budget",
                  ["tenant", "period"], registry=registry)
    forecast = Gauge("chargeback_budget_forecast", "Month-end forecast in the budget's unit",
                     [*figure, "scenario"], registry=registry)
    crossed = Gauge("chargeback_budget_threshold_crossed", "1: the threshold is crossed (a "
                    "threshold not crossed has no series)",
                    ["tenant", "period", "basis", "threshold_pct"], registry=registry)
    runs_out = Gauge("chargeback_budget_runs_out_timestamp_seconds", "Start of the day the "
                     "budget runs out at this rate (absent: it lasts the month)",
                     ["tenant", "period"], registry=registry)
    held_gauge = Gauge("chargeback_budget_queue_held", "1 while a budget hold of ours is on the "
                       "Kueue queue", ["tenant", "kind", "namespace", "name"], registry=registry)
    no_borrowing = Gauge("chargeback_budget_borrowing_stopped", "1 while a budget holds the "
                         "ClusterQueue's borrowing at zero", ["tenant", "name"], registry=registry)
    for (tenant, period, unit, currency, limit_value, spent_value, runs_out_on, scenarios,
         thresholds) in warehouse.latest_budgets(con):
        labels = [tenant, period, unit, (currency or "") if unit == BudgetUnit.AMOUNT else ""]
        limit.labels(*labels).set(float(limit_value))
        spent.labels(*labels).set(float(spent_value))
        ratio.labels(tenant, period).set(float(spent_value / limit_value))
        for scenario, value in sorted(scenarios.items()):
            forecast.labels(*labels, scenario).set(float(value))
        for basis, percent in thresholds:
            crossed.labels(tenant, period, basis, f"{percent.normalize():f}").set(1)
        if runs_out_on is not None:
            moment = datetime.combine(runs_out_on, datetime.min.time(), UTC)
            runs_out.labels(tenant, period).set(moment.timestamp())
    for kind, namespace, name, tenant, _ in warehouse.held_queues(con, ALL_RECORDED):
        held_gauge.labels(tenant, kind, namespace or "", name).set(1)
    for _, _, name, tenant, _ in warehouse.held_queues(con, ALL_RECORDED,
                                                       warehouse.BORROWING_ACTIONS):
        no_borrowing.labels(tenant, name).set(1)
    return generate_latest(registry)


METRICS_FILE = "budgets.prom"


def write_metrics_file(con: duckdb.DuckDBPyConnection, folder: Path) -> Path:
    """`metrics_text` as `folder/budgets.prom`, for node-exporter's textfile collector; written
    by each path that changes what it shows (the budgets, and the quota path's borrowing
    holds)."""
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write(folder / METRICS_FILE, metrics_text(con))
