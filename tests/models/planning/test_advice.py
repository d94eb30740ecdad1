"""Advice cards (models.planning.advice): every card's monthly saving is the pricing engine's
projection for its recommendation, advice that costs more says why, words name the change.

Figures are worked out by hand from the demo rate card (examples/demo/rate-card.yaml)."""

from dataclasses import asdict, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import polars as pl
import pytest

from models.billing.pricing import price_invoice
from models.planning.advice import (
    Advice,
    AdviceKind,
    budget_advice,
    describe_budget,
    describe_forecast,
    order,
    plan_advice,
    reservation_advice,
)
from models.planning.reservations import recommend_for_tenants
from models.planning.tier_changes import project_usage, recommend_tier_change
from tests.models.planning.test_tier_changes import (
    AS_OF,
    CARD,
    START,
    shifts_of,
    step,
    tenant,
    usage_frame,
)


def engine_saving(t, usage, shifts, current: str, recommended: str) -> Decimal:  # type: ignore[no-untyped-def]
    """Next month's invoice on the current plan less that on the recommended one, priced here
    by price_invoice on the projection, independently of the recommendation's stored totals."""
    projection = project_usage(usage, shifts, AS_OF)
    bills = {plan: price_invoice(replace(t, plan=plan), CARD, projection.period,
                                 projection.usage(), credit_available=Decimal(0)).total
             for plan in (current, recommended)}
    return bills[current] - bills[recommended]


def test_plan_card_that_costs_more_says_so_and_why():
    # quanta: premium 2 -> 6 GPUs on Sep 13; growth's range ends at 3,000 GPU-hours, so
    # enterprise is advised, and its 25,000.00 minimum makes it dearer than growth.
    usage = usage_frame("quanta", "premium", "large", step(30, 12, 2, 6))
    shifts = shifts_of(usage)
    t = tenant("quanta", reserved_premium=2)
    change = recommend_tier_change(t, CARD, usage, shifts, AS_OF)
    assert change is not None
    card = plan_advice(asdict(change))
    assert card.monthly_saving == engine_saving(t, usage, shifts, "growth", "enterprise")
    assert card.monthly_saving is not None
    assert card.monthly_saving < 0
    assert card.recommendation == "Consider the enterprise plan (it costs more)"
    assert "is not cheaper at this usage" in (card.why or "")
    assert card.saw.startswith("Your premium GPU-hours a day rose 3.0-fold, from 48 to 14")
    assert "on Sep 13" in card.saw
    assert card.since == date(2026, 9, 13)
    assert card.if_nothing.startswith("2026-10 is billed on growth: about 1")


def test_plan_card_that_saves_equals_the_engine():
    # lumen: standard 6 -> 2 GPUs; starter bills 3,159.92 against growth's 3,454.42.
    usage = pl.DataFrame({
        "tenant": "lumen", "day": [START + timedelta(days=i) for i in range(30)],
        "hardware_tier": "standard", "size_class": "medium",
        "gpu_hours": [g * 24 for g in step(30, 18, 6, 2)],
    })
    shifts = shifts_of(usage)
    t = tenant("lumen")
    change = recommend_tier_change(t, CARD, usage, shifts, AS_OF)
    assert change is not None
    card = plan_advice(asdict(change))
    assert card.monthly_saving == engine_saving(t, usage, shifts, "growth", "starter") \
        == Decimal("294.50")
    assert card.why is None
    assert card.recommendation == "Switch from the growth plan to starter"


def test_reservation_card_saving_is_the_expected_cost_at_the_tenants_own_price():
    # 6 premium GPUs of a 70B model every hour for 28 days, 2 reserved, plan growth.
    # A month is 6 x 730 = 4,380 GPU-hours x 1.25 = 5,475 units: the next unit is in the 3.00
    # band, so an on-demand GPU-hour costs 3.00 x 1.25 x 0.95 = 3.5625; reserved 2.60.
    # Keep 2: 2 x 730 x 2.60 = 3,796.00 + 4 x 730 x 3.5625 = 10,402.50 -> 14,198.50.
    # Reserve 6: 6 x 730 x 2.60 = 11,388.00. Saving 2,810.50.
    as_of = datetime(2026, 9, 29, tzinfo=UTC)
    hours = [as_of - timedelta(hours=h + 1) for h in range(672)]
    demand = pl.DataFrame({"tenant": "quanta", "hardware_tier": "premium",
                           "mig_profile": None, "hour": hours, "demand_gpus": 6.0},
                          schema_overrides={"mig_profile": pl.String})
    result = recommend_for_tenants(
        demand, [("quanta", "premium", "large", Decimal(6 * 672))],
        {("quanta", "premium"): 672}, {"quanta": tenant("quanta", reserved_premium=2)}, CARD,
        as_of=as_of)
    [row] = result.recommendations.to_dicts()
    card = reservation_advice(row)
    assert card is not None
    assert card.monthly_saving == Decimal("2810.50")
    assert card.recommendation == "Reserve 6 premium GPUs (now 2)"
    assert card.if_nothing == "Your premium use costs about 14,198.50 USD a month with 2 reserved."
    assert reservation_advice({**row, "recommended_gpus": 2}) is None  # nothing to change


def test_advice_that_costs_more_without_a_reason_is_refused():
    with pytest.raises(ValueError, match="costs 10 USD more a month and says no reason"):
        Advice(AdviceKind.RESERVATION, "Reserve 9", "saw", Decimal(-10), "USD", "nothing",
               None, None)


def test_budget_card_only_when_the_budget_runs_out():
    row = {"day": date(2026, 10, 20), "period": "2026-10", "unit": "amount", "currency": "USD",
           "limit_value": Decimal(10000), "used_pct": 80.0, "forecast": Decimal(12400),
           "runs_out_on": date(2026, 10, 25), "enforcement": "hold"}
    card = budget_advice(row)
    assert card is not None
    assert card.monthly_saving is None
    assert card.saw == ("You have used 80% of your 10,000.00 USD budget; at this rate it runs "
                        "out on Oct 25.")
    assert card.if_nothing.startswith("New work on your queue waits")
    assert budget_advice({**row, "runs_out_on": None}) is None


def test_budget_and_forecast_in_words_for_the_first_screen():
    row = {"day": date(2026, 10, 20), "period": "2026-10", "unit": "amount", "currency": "USD",
           "limit_value": Decimal(10000), "used_pct": 80.0, "forecast": Decimal(12400),
           "runs_out_on": date(2026, 10, 25), "enforcement": "hold"}
    # Running out: the budget card's own words.
    assert describe_budget(row) == ("You have used 80% of your 10,000.00 USD budget; at this "
                                    "rate it runs out on Oct 25.")
    lasting = {**row, "used_pct": 45.5, "forecast": Decimal("8750.5"), "runs_out_on": None}
    assert describe_budget(lasting) == (
        "You have used 46% of your 10,000.00 USD budget for 2026-10; at this rate it lasts the "
        "month (forecast 8,750.50 USD).")
    hours = {**lasting, "unit": "gpu_hours", "currency": None, "limit_value": Decimal(1500),
             "forecast": None}
    assert describe_budget(hours) == ("You have used 46% of your 1,500.00 GPU-hours budget "
                                      "for 2026-10; at this rate it lasts the month.")
    forecast = {"day": date(2026, 10, 20), "period": "2026-10", "currency": "USD",
                "amount": Decimal("12400.0000"), "amount_lo95": Decimal("11600.0000"),
                "amount_hi95": Decimal("13200.0000")}
    assert describe_forecast(forecast) == (
        "About 12,400.00 USD by the end of 2026-10 (95% range 11,600.00 to 13,200.00), from "
        "your usage through Oct 20.")


def test_savings_first_then_unpriced_then_dearer():
    def card(saving: str | None) -> Advice:
        return Advice(AdviceKind.PLAN, saving or "none", "", None if saving is None
                      else Decimal(saving), "USD", "", None, None, why="because")
    ordered = order([card("-5"), card(None), card("10"), card("300")])
    assert [c.recommendation for c in ordered] == ["300", "10", "none", "-5"]
