"""Recommendations as advice a tenant reads in words: one `Advice` card per recommendation.

A card says what we saw, what we recommend, what it saves (or costs) a month under the tenant's
own rate card, how confident we are and since when, and what happens if the tenant does
nothing. The money is the figure the recommending model priced, never a new estimate:
- plan change: the pricing engine's projected invoice on the current plan less that on the
  recommended plan (models.planning.tier_changes.price_under_plans);
- reservation: the expected monthly cost with today's reservation less that with the
  recommended one (models.planning.reservations.expected_cost, at the tenant's marginal
  on-demand price from pricing.on_demand_price);
- dedicated capacity: the reservation's monthly cost (models.planning.latency, GPUs x 730 h
  at the tier's reserved price), as a cost: it buys the latency target, not a saving;
- off-peak: the invoice engine's charges as run less its charges with the work moved
  (models.planning.off_peak), for the analysed month up to the analysis day.
A recommendation that raises the bill is never shown as a saving: its card carries a negative
`monthly_saving` and must say why it is still advised (`why`), or it is not made.

Cards are built from the mart rows the analytics publish (dicts by column name), so the
dashboards and anything else that shows advice say the same thing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from models.planning.tier_changes import (
    GPU_HOURS_SERIES,
    LARGE_SHARE_SERIES,
    OUT_OF_RANGE,
    PEAK_SERIES,
)


class AdviceKind(StrEnum):
    PLAN = "plan"
    RESERVATION = "reservation"
    BUDGET = "budget"
    DEDICATED_CAPACITY = "dedicated capacity"
    OFF_PEAK = "off-peak"


@dataclass(frozen=True)
class Advice:
    kind: AdviceKind
    recommendation: str
    """What to do, one sentence."""
    saw: str
    """What we saw in the tenant's usage or spend."""
    monthly_saving: Decimal | None
    """Per month under the tenant's rate card: > 0 saves, < 0 costs more; None when the
    advice moves no price (a budget)."""
    currency: str
    if_nothing: str
    confidence: float | None
    """0..1 where the model states one (the shift detector's); None otherwise."""
    since: date | None
    """When what we saw began (a shift's change date), or the analysis date."""
    why: str | None = None
    """Required when the advice costs more: the reason it is advised anyway."""
    series_name: str | None = None
    """The usage series whose chart is the evidence (tier_changes' series names)."""

    def __post_init__(self) -> None:
        if self.monthly_saving is not None and self.monthly_saving < 0 and not self.why:
            raise ValueError(f"{self.kind} advice costs {-self.monthly_saving} {self.currency} "
                             "more a month and says no reason: it must not be shown")


def _dec(value: Any) -> Decimal:
    return Decimal(str(value))


def _amount(value: Decimal, currency: str) -> str:
    return f"{value:,.2f} {currency}"


def _day(value: Any) -> date:
    return value.date() if isinstance(value, datetime) else value


def describe_series(series_name: str) -> str:
    if series_name.startswith(f"{GPU_HOURS_SERIES}[") and series_name.endswith("]"):
        return f"{series_name[len(GPU_HOURS_SERIES) + 1:-1]} GPU-hours a day"
    if series_name == LARGE_SHARE_SERIES:
        return "share of GPU-hours on large models"
    if series_name == PEAK_SERIES:
        return "peak GPUs in use at once"
    return series_name


def _change(before: float, after: float) -> str:
    if before > 0:
        ratio = after / before
        if ratio >= 1.5:
            return f"rose {ratio:.1f}-fold, from {before:,.0f} to {after:,.0f}"
        if ratio <= 1 / 1.5:
            return f"fell to {ratio:.0%} of what it was, from {before:,.0f} to {after:,.0f}"
    return f"moved from {before:,.0f} to {after:,.0f}"


def describe_shift(row: Mapping[str, Any]) -> str:
    """A `usage_shifts` row in words: what changed, and when."""
    return (f"Your {describe_series(str(row['series_name']))} "
            f"{_change(float(row['level_before']), float(row['level_after']))} on "
            f"{_day(row['change_date']):%b %d}.")


def plan_advice(row: Mapping[str, Any]) -> Advice:
    """The card of a `tier_change_recommendations` row."""
    currency = str(row["currency"])
    current, recommended = str(row["current_plan"]), str(row["recommended_plan"])
    stay, move = _dec(row["current_plan_total"]), _dec(row["recommended_plan_total"])
    saving = stay - move
    projected = _dec(row["projected_gpu_hours"])
    since = _day(row["change_date"])
    saw = (f"{describe_shift(row)} At that level you will use about {projected:,.0f} "
           f"GPU-hours in {row['period']}.")
    why = None
    if saving < 0 and row["rule"] == OUT_OF_RANGE:
        why = (f"{projected:,.0f} GPU-hours a month is outside what the {current} plan is "
               f"for, and {recommended} is the plan made for it. It is not cheaper at this "
               f"usage: {recommended} would cost {_amount(move, currency)} against "
               f"{_amount(stay, currency)} on {current}. Move only if you need what "
               f"{recommended} includes; otherwise stay and see the other advice.")
    return Advice(
        kind=AdviceKind.PLAN,
        recommendation=(f"Switch from the {current} plan to {recommended}" if saving >= 0
                        else f"Consider the {recommended} plan (it costs more)"),
        saw=saw,
        monthly_saving=saving,
        currency=currency,
        if_nothing=f"{row['period']} is billed on {current}: about "
                   f"{_amount(stay, currency)}.",
        confidence=float(row["confidence"]),
        since=since,
        why=why,
        series_name=str(row["series_name"]),
    )


def reservation_advice(row: Mapping[str, Any]) -> Advice | None:
    """The card of a `reservation_recommendations` row; None when the recommendation is to keep
    what is reserved (nothing to do)."""
    current, recommended = int(row["current_reserved_gpus"]), int(row["recommended_gpus"])
    if current == recommended:
        return None
    currency = str(row["currency"])
    tier = str(row["hardware_tier"])
    unit = f"{row['mig_profile']} instances" if row.get("mig_profile") else "GPUs"
    keep, change = (_dec(row["expected_monthly_cost_current"]),
                    _dec(row["expected_monthly_cost_recommended"]))
    saving = keep - change
    why = None
    if saving < 0:
        # Only a latency-sensitive tenant is advised more than the cost-optimal reservation.
        why = (f"Your workloads are latency-sensitive: {recommended} reserved {unit} cover "
               f"95% of your hours ({float(row['p95_demand_gpus']):.1f} {unit} or fewer), so "
               "they never wait for on-demand capacity.")
    hours = int(row["hours_observed"])
    return Advice(
        kind=AdviceKind.RESERVATION,
        recommendation=(f"Reserve {recommended} {tier} {unit}"
                        + (f" (now {current})" if current else "")),
        saw=(f"Over the last {hours // 24} days your {tier} use needed "
             f"{float(row['p95_demand_gpus']):.1f} {unit} or fewer in 95% of hours (recent "
             "days count most). A reserved unit pays off when it is busy at least "
             f"{float(row['break_even_utilization']):.0%} of the time."),
        monthly_saving=saving,
        currency=currency,
        if_nothing=(f"Your {tier} use costs about {_amount(keep, currency)} a month "
                    + (f"with {current} reserved." if current else "all on demand.")),
        confidence=None,
        since=_day(row["as_of"]),
        why=why,
        series_name=f"{GPU_HOURS_SERIES}[{tier}]",
    )


def budget_advice(row: Mapping[str, Any]) -> Advice | None:
    """The card of the latest `tenant_budgets` row; None while the forecast stays within it."""
    runs_out = row.get("runs_out_on")
    if runs_out is None or runs_out != runs_out:  # None or NaT: not this month
        return None
    money = row["unit"] == "amount"
    unit = str(row["currency"]) if money else "GPU-hours"
    limit = _dec(row["limit_value"])
    forecast = row.get("forecast")
    holds = row.get("enforcement") not in (None, "off")
    return Advice(
        kind=AdviceKind.BUDGET,
        recommendation=(f"Raise the {row['period']} budget to at least "
                        f"{_amount(_dec(forecast), unit)} or slow down"
                        if forecast is not None and forecast == forecast
                        else f"Raise the {row['period']} budget or slow down"),
        saw=(f"You have used {float(row['used_pct']):.0f}% of your "
             f"{_amount(limit, unit)} budget; at this rate it runs out on "
             f"{_day(runs_out):%b %d}."),
        monthly_saving=None,
        currency=unit,
        if_nothing=("New work on your queue waits from that day until the next month."
                    if holds else "You go over budget; nothing is held."),
        confidence=None,
        since=_day(row["day"]),
    )


def dedicated_capacity_advice(row: Mapping[str, Any]) -> Advice:
    """The card of a `dedicated_reservation_recommendations` row: the SLA rule's reservation,
    at its cost, with the breach that calls for it."""
    currency = str(row["currency"])
    cost = _dec(row["monthly_cost"])
    gpus, tier, model = int(row["recommended_gpus"]), str(row["hardware_tier"]), str(row["model"])
    target = _dec(row["target_p95_s"]).normalize()
    late = int(row["late_requests_per_month"])
    outside = row.get("p95_out_of_bursts_s")
    per_request = row.get("cost_per_late_request")
    return Advice(
        kind=AdviceKind.DEDICATED_CAPACITY,
        recommendation=f"Reserve {gpus} dedicated {tier} GPU{'s' if gpus > 1 else ''} for "
                       f"{model}",
        saw=(f"In your bursts, 95% of your {model} requests took up to "
             f"{float(row['p95_in_bursts_s']):.1f} s against your {target:f} s target "
             "(more than 20% over)"
             + (f"; outside bursts {float(outside):.1f} s." if outside is not None
                and outside == outside else ".")
             + f" In 95% of your burst intervals you used {float(row['burst_demand_gpus']):.1f}"
             " GPUs or fewer."),
        monthly_saving=-cost,
        currency=currency,
        if_nothing=(f"About {late:,} requests a month in your bursts stay slower than "
                    f"{target:f} s: a faster queue does not help when the endpoint itself "
                    "is saturated."),
        confidence=None,
        since=_day(row["day"]),
        why=(f"It buys your latency target, not a lower bill: {gpus} {tier} GPU"
             f"{'s' if gpus > 1 else ''} held for you alone serve your bursts"
             + (f", {_amount(_dec(per_request), currency)} per request that now misses it."
                if per_request is not None and per_request == per_request else ".")),
    )


def off_peak_advice(rows: Sequence[Mapping[str, Any]]) -> Advice | None:
    """The card of a tenant's `off_peak_recommendations` rows (one per tier, of one day's
    analysis); None without rows."""
    if not rows:
        return None
    first = rows[0]
    currency = str(first["currency"])
    moved = {str(r["hardware_tier"]): _dec(r["moved_gpu_hours"]) for r in rows}
    freed = {str(r["hardware_tier"]): _dec(r["freed_peak_gpus"]) for r in rows}
    kinds = str(first["kinds"]).replace(",", " and ")
    day = _day(first["day"])
    where = ", ".join(f"{hours:,.0f} {tier} GPU-hours" for tier, hours in sorted(moved.items()))
    return Advice(
        kind=AdviceKind.OFF_PEAK,
        recommendation=f"Run your {kinds} work off peak: {where}",
        saw=(f"In {first['period']} up to {day:%b %d}, {where} of your {kinds} work ran in "
             "peak hours, when off-peak hours of the same GPUs cost less. Moved, it frees "
             + ", ".join(f"{gpus:,.0f} {tier} GPUs" for tier, gpus in sorted(freed.items()))
             + " at peak for inference."),
        monthly_saving=_dec(first["saving"]),
        currency=currency,
        if_nothing=(f"{first['period']} is billed as run: "
                    f"{_amount(_dec(first['charges_as_run']), currency)} of charges up to "
                    f"{day:%b %d} instead of {_amount(_dec(first['charges_moved']), currency)}."),
        confidence=None,
        since=day,
        series_name=f"{GPU_HOURS_SERIES}[{sorted(moved)[0]}]",
    )


def describe_forecast(row: Mapping[str, Any]) -> str:
    """The latest `tenant_forecasts` row in words: month-end spend with its 95% range."""
    return (f"About {_amount(_dec(row['amount']), str(row['currency']))} by the end of "
            f"{row['period']} (95% range {_dec(row['amount_lo95']):,.2f} to "
            f"{_dec(row['amount_hi95']):,.2f}), from your usage through "
            f"{_day(row['day']):%b %d}.")


def describe_budget(row: Mapping[str, Any]) -> str:
    """The latest `tenant_budgets` row in words: what is used, and whether it lasts."""
    card = budget_advice(row)
    if card is not None:
        return card.saw
    unit = str(row["currency"]) if row["unit"] == "amount" else "GPU-hours"
    forecast = row.get("forecast")
    lasts = ("at this rate it lasts the month" if forecast is None or forecast != forecast
             else f"at this rate it lasts the month (forecast {_amount(_dec(forecast), unit)})")
    return (f"You have used {float(row['used_pct']):.0f}% of your "
            f"{_amount(_dec(row['limit_value']), unit)} budget for {row['period']}; {lasts}.")


def order(cards: list[Advice]) -> list[Advice]:
    """Savings first, largest first; then advice without a price; advice that costs more
    last."""
    def key(card: Advice) -> tuple[int, Decimal]:
        if card.monthly_saving is None:
            return (1, Decimal(0))
        return (0, -card.monthly_saving) if card.monthly_saving >= 0 else (2, -card.monthly_saving)
    return sorted(cards, key=key)
