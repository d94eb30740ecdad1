"""Budgets: the tenants-file block, spend against the budget (as the invoice counts it), the
thresholds crossed and when, the day the budget runs out, alerts as Alertmanager takes them, and
the queue holds planned from them (hold at 100%, lifted at the next period or a raised budget,
someone else's stopPolicy left alone).

Figures use the demo rate card (growth: 500.00 base fee, 5% discount; premium 4.00 per GPU-hour
up to 500) for November 2026: 30 days, 720 hours."""

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from models.billing.pricing import HOUR, UsageHour, price_invoice
from models.billing.rate_cards import (
    Budget,
    BudgetUnit,
    ConfigError,
    Enforcement,
    HoldAction,
    QueueKind,
    Tenant,
    load_rate_cards,
    load_tenants,
)
from models.planning.budgets import (
    ACTUAL,
    FORECAST,
    HOLD,
    MISSING,
    NO_HOLD,
    HeldQueue,
    MonthForecast,
    PendingAlert,
    QueueRef,
    alertmanager_alert,
    evaluate_budget,
    plan_holds,
    plan_no_borrowing,
)

ROOT = Path(__file__).resolve().parents[3]
CARD_FILE = ROOT / "examples" / "demo" / "rate-card.yaml"
CARD = load_rate_cards(CARD_FILE)[0]
NOV = datetime(2026, 11, 1, tzinfo=UTC)


def tenants_file(tmp_path: Path, budget: str) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  acme:\n    plan: growth\n    namespaces: [team-acme]\n"
                    "    start: 2026-01-01\n" + "".join(f"    {line}\n"
                                                    for line in budget.splitlines()))
    return path


# --- the tenants file --------------------------------------------------------------------------

def test_budget_block_defaults_to_50_80_100_of_actual_and_100_of_forecast(tmp_path):
    acme = load_tenants(tenants_file(tmp_path, "budget: {gpu_hours: 400}"), [CARD])["acme"]
    assert acme.budget == Budget(BudgetUnit.GPU_HOURS, Decimal(400), None,
                                 (Decimal(50), Decimal(80), Decimal(100)), (Decimal(100),), None)
    money = load_tenants(tenants_file(tmp_path, """budget:
  amount: "2500.00"
  currency: USD
  thresholds: {actual: [90, 75], forecast: [110]}
  enforce: {queue: LocalQueue}"""), [CARD])["acme"].budget
    assert money is not None
    assert money.limit == Decimal("2500.00")
    assert money.currency == "USD"
    assert money.actual_thresholds == (Decimal(75), Decimal(90))
    assert money.forecast_thresholds == (Decimal(110),)
    assert money.enforcement == Enforcement(HoldAction.HOLD, QueueKind.LOCAL_QUEUE, None,
                                            dry_run=True)


@pytest.mark.parametrize(("block", "key", "expected"), [
    ("budget: {amount: '10', gpu_hours: 4, currency: USD}", "acme.budget", "either `amount`"),
    ("budget: {amount: '10'}", "acme.budget.currency", "missing"),
    ("budget: {amount: '10', currency: EUR}", "acme.budget.currency", "not the rate cards'"),
    ("budget: {amount: 10.5, currency: USD}", "acme.budget.amount", "decimal number"),
    ("budget: {gpu_hours: 0}", "acme.budget.gpu_hours", "above 0"),
    ("budget: {gpu_hours: 4, currency: USD}", "acme.budget.currency", "no currency"),
    ("budget: {gpu_hours: 4, thresholds: {actual: [80, 80]}}", "acme.budget.thresholds.actual",
     "listed twice"),
    ("budget: {gpu_hours: 4, thresholds: {actual: 80}}", "acme.budget.thresholds.actual",
     "list of percentages"),
    ("budget: {gpu_hours: 4, enforce: {action: drain}}", "acme.budget.enforce.action",
     "one of hold"),
    ("budget: {gpu_hours: 4, enforce: {action: no-borrowing, queue: LocalQueue}}",
     "acme.budget.enforce.queue", "a LocalQueue does not borrow"),
    ("budget: {gpu_hours: 4, enforce: {action: no-borrowing, name: other}}",
     "acme.budget.enforce.name", "the ClusterQueue the quota path writes"),
    ("budget: {gpu_hours: 4, enforce: {dry_run: 'no'}}", "acme.budget.enforce.dry_run",
     "true or false"),
    ("budget: {gpu_hours: 4, enforce: {name: Team_A}}", "acme.budget.enforce.name",
     "DNS-1123"),
    ("budget: {gpu_hours: 4, limit: 5}", "acme.budget.limit", "unknown key"),
])
def test_a_bad_budget_names_file_key_and_what_was_expected(tmp_path, block, key, expected):
    path = tenants_file(tmp_path, block)
    with pytest.raises(ConfigError) as caught:
        load_tenants(path, [CARD])
    assert any(p.startswith(f"{path}: tenants.{key}: ") and expected in p
               for p in caught.value.problems), caught.value.problems


# --- evaluation --------------------------------------------------------------------------------

def acme(budget: Budget) -> Tenant:
    tenants = load_tenants(ROOT / "examples" / "demo" / "tenants.yaml", [CARD])
    return replace(tenants["acme"], reservations=(), budget=budget)


def gpu_hours_budget(limit: int, enforce: bool = False) -> Budget:
    return Budget(BudgetUnit.GPU_HOURS, Decimal(limit), None,
                  (Decimal(50), Decimal(80), Decimal(100)), (Decimal(100),),
                  Enforcement(HoldAction.HOLD, QueueKind.CLUSTER_QUEUE, None, False)
                  if enforce else None)


def usage(days: int, gpus: int) -> list[UsageHour]:
    """`gpus` premium GPUs busy every hour of the first `days` days of November."""
    return [UsageHour(NOV + i * HOUR, "premium", "small", Decimal(gpus))
            for i in range(days * 24)]


def test_gpu_hours_thresholds_cross_on_the_day_the_spend_reaches_them():
    # 10 GPUs = 240 GPU-hours a day: 50% of 1000 (500) on day 3, 80% (800) on day 4.
    status = evaluate_budget(acme(gpu_hours_budget(1000)), CARD, NOV + timedelta(days=4),
                             usage(4, 10), None)
    assert status.period == "2026-11"
    assert status.spent == Decimal(960)
    crossed = {(c.basis, c.percent): c.crossed_on for c in status.crossings}
    assert crossed == {(ACTUAL, Decimal(50)): date(2026, 11, 3),
                       (ACTUAL, Decimal(80)): date(2026, 11, 4),
                       (ACTUAL, Decimal(100)): None}
    assert status.used_pct == Decimal("96.00")
    assert not status.exhausted
    assert [d.actual for d in status.days] == [240, 480, 720, 960]
    assert status.runs_out_on is None  # no forecast: nothing is said about the days to come


def forecast_from(day_after: date, per_day: Decimal, spent: Decimal, days: int,
                  amount: Decimal) -> MonthForecast:
    cumulative = [(day_after + timedelta(days=i), spent + per_day * (i + 1))
                  for i in range(days)]
    scale = {"point": 1, "lo80": Decimal("0.9"), "hi80": Decimal("1.1"),
             "lo95": Decimal("0.8"), "hi95": Decimal("1.2")}
    return MonthForecast(
        gpu_hours={s: spent + per_day * days * k for s, k in scale.items()},
        amount={s: amount * k for s, k in scale.items()},
        cumulative={s: [(d, spent + (v - spent) * k) for d, v in cumulative]
                    for s, k in scale.items()},
    )


def test_the_budget_runs_out_on_the_first_day_the_point_forecast_reaches_it():
    # 480 spent by Nov 2; the forecast adds 240 a day: 1000 is reached by the end of Nov 5.
    fc = forecast_from(date(2026, 11, 3), Decimal(240), Decimal(480), 28, Decimal("20000"))
    status = evaluate_budget(acme(gpu_hours_budget(1000)), CARD, NOV + timedelta(days=2),
                             usage(2, 10), fc)
    assert status.runs_out_on == date(2026, 11, 5)
    forecast = {(c.basis, c.percent): (c.crossed_on, c.value) for c in status.crossings
                if c.basis == FORECAST}
    assert forecast == {(FORECAST, Decimal(100)): (date(2026, 11, 2), Decimal(480 + 240 * 28))}
    after = [d for d in status.days if d.forecast is not None]
    assert after[0].day == date(2026, 11, 3)
    assert after[0].forecast["point"] == 720
    assert after[0].forecast["lo95"] < after[0].forecast["point"] < after[0].forecast["hi95"]


def test_a_money_budget_counts_what_the_invoice_counts_and_equals_it_at_month_end():
    budget = Budget(BudgetUnit.AMOUNT, Decimal("5000"), "USD", (Decimal(80), Decimal(100)),
                    (Decimal(100),), None)
    tenant = acme(budget)
    month = usage(30, 1)
    whole = evaluate_budget(tenant, CARD, NOV + timedelta(days=30), month, None)
    invoice = price_invoice(tenant, CARD, "2026-11", month)
    assert whole.spent_amount == invoice.total
    # 720 GPU-hours: 500 x 4.00 + 220 x 3.50 = 2770, less 5% = 2631.50, + 500.00 base fee.
    assert invoice.total == Decimal("3131.50")
    # After 10 days: 240 GPU-hours x 4.00 less 5% = 912.00, and a third of the base fee
    # (166.67); after the first, 91.20 and 16.67.
    ten = evaluate_budget(tenant, CARD, NOV + timedelta(days=10), usage(10, 1), None)
    assert ten.spent_amount == Decimal("1078.67")
    assert ten.days[0].actual == Decimal("107.87")


def test_a_budget_in_another_currency_than_the_rate_card_is_refused():
    budget = Budget(BudgetUnit.AMOUNT, Decimal(1), "EUR", (Decimal(100),), (), None)
    with pytest.raises(Exception, match="EUR is not the currency of rate card"):
        evaluate_budget(acme(budget), CARD, NOV + timedelta(days=1), usage(1, 1), None)


# --- alerts ------------------------------------------------------------------------------------

def test_an_alert_carries_the_labels_that_deduplicate_it_and_says_when_the_budget_runs_out():
    alert = PendingAlert("acme", "2026-11", ACTUAL, Decimal(80), "amount", "USD",
                         Decimal("2500"), Decimal("2000"), date(2026, 11, 20), Decimal("2100.5"),
                         date(2026, 11, 24))
    body = alertmanager_alert(alert, datetime(2026, 11, 21, 1, 30, tzinfo=UTC))
    assert body["labels"] == {"alertname": "GPUBudgetThresholdCrossed", "tenant": "acme",
                              "period": "2026-11", "basis": "actual", "threshold_pct": "80",
                              "severity": "warning"}
    assert "2,100.50 USD of its 2,500.00 USD budget" in body["annotations"]["summary"]
    assert "runs out on 2026-11-24" in body["annotations"]["description"]
    assert body["startsAt"] == "2026-11-21T00:00:00+00:00"
    assert body["endsAt"] == "2026-12-01T00:00:00+00:00"


# --- holds -------------------------------------------------------------------------------------

CQ = QueueRef(QueueKind.CLUSTER_QUEUE, None, "acme")


def exhausted(limit: int = 1000, as_of_day: int = 5) -> tuple[list, dict[str, Tenant]]:
    tenant = acme(gpu_hours_budget(limit, enforce=True))
    status = evaluate_budget(tenant, CARD, NOV + timedelta(days=as_of_day),
                             usage(as_of_day, 10), None)
    return [status], {"acme": tenant}


def test_an_exhausted_budget_holds_its_queue_once_and_the_hold_is_lifted_next_period():
    statuses, tenants = exhausted()
    changes, _notes = plan_holds(statuses, tenants, "2026-11", [], {CQ: NO_HOLD})
    (hold,) = changes
    assert (hold.queue, hold.action, hold.before, hold.after, hold.dry_run) == (
        CQ, "hold", NO_HOLD, HOLD, False)
    assert hold.reason == "120.00% of the 2026-11 budget spent by 2026-11-05"
    assert hold.manifest == {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
                             "metadata": {"name": "acme"}, "spec": {"stopPolicy": "Hold"}}
    held = [HeldQueue(CQ, "acme", "2026-11")]
    assert plan_holds(statuses, tenants, "2026-11", held, {CQ: HOLD}) == ([], [])
    # December: nothing spent yet, so the November hold is released.
    december = [evaluate_budget(tenants["acme"], CARD, datetime(2026, 12, 2, tzinfo=UTC),
                                [], None)]
    (release,) = plan_holds(december, tenants, "2026-12", held, {CQ: HOLD})[0]
    assert (release.action, release.after, release.reason) == ("release", NO_HOLD,
                                                               "new period 2026-12")


def test_a_raised_budget_lifts_the_hold_within_the_period():
    statuses, tenants = exhausted(limit=2000)
    held = [HeldQueue(CQ, "acme", "2026-11")]
    (release,) = plan_holds(statuses, tenants, "2026-11", held, {CQ: HOLD})[0]
    assert release.action == "release"
    assert release.reason == "budget changed: 60.00% spent"


def test_someone_elses_stop_policy_and_a_missing_queue_are_left_alone_with_a_note():
    statuses, tenants = exhausted()
    changes, notes = plan_holds(statuses, tenants, "2026-11", [], {CQ: "HoldAndDrain"})
    assert changes == []
    assert notes == [
        "ClusterQueue acme: stopPolicy HoldAndDrain was set by someone else; left as it is"]
    changes, notes = plan_holds(statuses, tenants, "2026-11", [], {CQ: HOLD})
    assert changes == []
    assert "already held by someone else" in notes[0]
    changes, notes = plan_holds(statuses, tenants, "2026-11", [], {CQ: MISSING})
    assert changes == []
    assert "not found" in notes[0]
    # Released by someone else meanwhile: nothing of ours is left to release.
    under, _ = exhausted(limit=5000)
    assert plan_holds(under, tenants, "2026-11", [HeldQueue(CQ, "acme", "2026-11")],
                      {CQ: NO_HOLD}) == ([], [])


def test_without_a_cluster_the_recorded_holds_stand_for_what_is_in_force():
    statuses, tenants = exhausted()
    (hold,) = plan_holds(statuses, tenants, "2026-11", [], None)[0]
    assert hold.before is None
    assert hold.after == HOLD
    assert plan_holds(statuses, tenants, "2026-11", [HeldQueue(CQ, "acme", "2026-11")],
                      None) == ([], [])


def no_borrowing_tenant(dry_run: bool = False) -> dict[str, Tenant]:
    budget = replace(gpu_hours_budget(1000), enforcement=Enforcement(
        HoldAction.NO_BORROWING, QueueKind.CLUSTER_QUEUE, None, dry_run))
    return {"acme": acme(budget)}


def test_no_borrowing_holds_the_spent_tenants_queue_and_lifts_it_as_hold_does():
    tenants = no_borrowing_tenant()
    spent = {"acme": ("2026-11", Decimal("120.00"), True)}
    queues, (change,) = plan_no_borrowing(spent, tenants, "2026-11", [])
    assert queues == {"acme"}
    assert (change.queue, change.action, change.before, change.after, change.reason,
            change.dry_run) == (CQ, "no-borrowing", "cohort limits", "borrowingLimit 0",
                                "120.00% of the 2026-11 budget spent", False)
    # In force: planned again every day, recorded once.
    held = [HeldQueue(CQ, "acme", "2026-11")]
    assert plan_no_borrowing(spent, tenants, "2026-11", held) == ({"acme"}, [])
    # A raised budget, then a new period, lift it.
    raised = {"acme": ("2026-11", Decimal("60.00"), False)}
    queues, (lift,) = plan_no_borrowing(raised, tenants, "2026-11", held)
    assert (queues, lift.action, lift.after, lift.reason) == (
        set(), "restore-borrowing", "cohort limits", "budget changed: 60.00% spent")
    december = {"acme": ("2026-12", Decimal("0.00"), False)}
    assert plan_no_borrowing(december, tenants, "2026-12", held)[1][0].reason == (
        "new period 2026-12")
    # A stopPolicy hold is not this path's: plan_holds leaves a no-borrowing tenant alone.
    statuses, _ = exhausted()
    assert plan_holds(statuses, tenants, "2026-11", [], {CQ: NO_HOLD}) == ([], [])


def test_no_borrowing_in_dry_run_is_checked_every_day_and_never_planned():
    tenants = no_borrowing_tenant(dry_run=True)
    spent = {"acme": ("2026-11", Decimal("120.00"), True)}
    queues, (check,) = plan_no_borrowing(spent, tenants, "2026-11", [])
    assert queues == set()
    assert check.dry_run
