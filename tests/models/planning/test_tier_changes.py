"""Tier-change recommendations: projections priced by the real engine, rules, no shift -> none.

Expected bills are worked out by hand from the demo rate card (DESIGN.md's worked example
prices) for October 2026 (31 days, 744 hours), the month after the 2026-09-30 analysis day."""

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from models.billing.pricing import price_invoice
from models.billing.rate_cards import (
    Basis,
    Isolation,
    Reservation,
    SlaClass,
    Tenant,
    load_rate_cards,
)
from models.planning.tier_changes import (
    CHEAPER,
    OUT_OF_RANGE,
    daily_series,
    detect_usage_shifts,
    gpu_hours_series,
    next_period,
    project_usage,
    recommend_tier_change,
    recommend_tier_changes,
)

ROOT = Path(__file__).resolve().parents[3]
CARD = load_rate_cards(ROOT / "examples" / "demo" / "rate-card.yaml")[0]
START = date(2026, 9, 1)
AS_OF = date(2026, 9, 30)


def tenant(name: str, plan: str = "growth", reserved_premium: int = 0) -> Tenant:
    reservations = (
        (Reservation("premium", Decimal(reserved_premium), datetime(2026, 1, 1, tzinfo=UTC),
                     None),) if reserved_premium else ()
    )
    return Tenant(name, plan, Basis.ALLOCATION, Isolation.POOL, SlaClass.STANDARD,
                  datetime(2026, 1, 1, tzinfo=UTC), None, (f"team-{name}",), reservations)


def usage_frame(name: str, tier: str, size: str, gpus_by_day: list[float], seed: int = 1
                ) -> pl.DataFrame:
    """Daily GPU-hours of `gpus_by_day` GPUs, with 1% noise so the detector sees real data."""
    rng = np.random.default_rng(seed)
    hours = [g * 24 * (1 + 0.01 * rng.standard_normal()) for g in gpus_by_day]
    return pl.DataFrame({
        "tenant": name,
        "day": [START + timedelta(days=i) for i in range(len(hours))],
        "hardware_tier": tier,
        "size_class": size,
        "gpu_hours": hours,
    })


def shifts_of(usage: pl.DataFrame, as_of: date = AS_OF) -> pl.DataFrame:
    peaks = usage.group_by("tenant", "day").agg((pl.col("gpu_hours").sum() / 24)
                                                .alias("peak_gpus"))
    return detect_usage_shifts(daily_series(usage, peaks, as_of))


def step(days: int, at: int, before: float, after: float) -> list[float]:
    return [before if i < at else after for i in range(days)]


def test_next_period_is_the_month_after_the_analysis_day():
    assert next_period(date(2026, 9, 30)) == "2026-10"
    assert next_period(date(2026, 12, 1)) == "2027-01"


def test_shift_out_of_the_plans_range_recommends_the_plan_whose_range_fits():
    # quanta-like: 2 -> 6 premium GPUs of a 70B model on day 12, 2 GPUs reserved all along.
    usage = usage_frame("quanta", "premium", "large", step(30, 12, 2, 6))
    shifts = shifts_of(usage)
    confirmed = shifts.filter(pl.col("confirmed") & (pl.col("series_name")
                                                     == gpu_hours_series("premium")))
    assert confirmed["change_date"].to_list() == [date(2026, 9, 13)]

    t = tenant("quanta", reserved_premium=2)
    change = recommend_tier_change(t, CARD, usage, shifts, AS_OF)
    assert change is not None
    assert (change.rule, change.current_plan, change.recommended_plan) == (
        OUT_OF_RANGE, "growth", "enterprise")
    assert change.change_date == date(2026, 9, 13)
    assert change.level_before == pytest.approx(48, rel=0.03)
    assert change.level_after == pytest.approx(144, rel=0.03)
    # The level after is a median of noisy days: about 6 GPUs x 744 h = 4,464 GPU-hours.
    assert change.projected_gpu_hours == pytest.approx(Decimal(4464), rel=Decimal("0.03"))
    assert change.period == "2026-10"

    # Every plan's projected bill is what the pricing engine bills for that projection.
    projection = project_usage(usage, shifts, AS_OF)
    bills = json.loads(change.projected_bills)
    assert set(bills) == set(CARD.plans)
    for plan in CARD.plans:
        invoice = price_invoice(replace(t, plan=plan), CARD, "2026-10", projection.usage(),
                                credit_available=Decimal(0))
        assert Decimal(bills[plan]) == invoice.total
    assert change.current_plan_total == Decimal(bills["growth"])
    assert change.recommended_plan_total == Decimal(bills["enterprise"]) == Decimal("25000.00")


def test_projected_bills_by_hand_for_a_noise_free_shift():
    # Exactly 6 GPUs after the shift: 4,464 GPU-hours in October, 1,488 of them reserved.
    # overflow 2,976 x 1.25 = 3,720 units: 500 x 4.00 + 3,220 x 3.50 = 13,270.00;
    # reservation 2 x 744 x 2.60 = 3,868.80.
    # growth: 13,270.00 - 663.50 (5%) + 3,868.80 + 500.00 base = 16,975.30
    # enterprise: 13,270.00 - 1,592.40 (12%) + 3,868.80 = 15,546.40 < 25,000 -> 25,000.00
    # starter: 13,270.00 + 3,868.80 + 50.00 base = 17,188.80
    gpus = step(30, 12, 2, 6)
    usage = pl.DataFrame({
        "tenant": "quanta", "day": [START + timedelta(days=i) for i in range(30)],
        "hardware_tier": "premium", "size_class": "large",
        "gpu_hours": [g * 24 for g in gpus],
    })
    shifts = pl.DataFrame({
        "tenant": ["quanta"], "series_name": [gpu_hours_series("premium")],
        "change_date": [date(2026, 9, 13)], "level_before": [48.0], "level_after": [144.0],
        "relative_change": [2.0], "confidence": [0.99], "confirmed": [True],
        "days_at_new_level": [18],
    })
    change = recommend_tier_change(tenant("quanta", reserved_premium=2), CARD, usage, shifts,
                                   AS_OF)
    assert change is not None
    assert change.projected_gpu_hours == Decimal(4464)
    assert json.loads(change.projected_usage) == {"premium/large": "4464.000000"}
    assert {k: Decimal(v) for k, v in json.loads(change.projected_bills).items()} == {
        "growth": Decimal("16975.30"),
        "enterprise": Decimal("25000.00"),
        "starter": Decimal("17188.80"),
    }


def test_a_shift_that_makes_another_plan_cheaper_recommends_it():
    # lumen-like: 6 -> 2 standard GPUs of a 13B model on day 18. Projected October:
    # 2 x 744 = 1,488 GPU-hours, inside growth's [500, 3000), x 1.10 = 1,636.8 units in the
    # 1.90 volume band = 3,109.92. growth: - 155.50 + 500.00 = 3,454.42;
    # starter: + 50.00 = 3,159.92 (cheaper); enterprise: true-up to 25,000.00.
    gpus = step(30, 18, 6, 2)
    usage = pl.DataFrame({
        "tenant": "lumen", "day": [START + timedelta(days=i) for i in range(30)],
        "hardware_tier": "standard", "size_class": "medium",
        "gpu_hours": [g * 24 for g in gpus],
    })
    shifts = shifts_of(usage)
    change = recommend_tier_change(tenant("lumen"), CARD, usage, shifts, AS_OF)
    assert change is not None
    assert (change.rule, change.current_plan, change.recommended_plan) == (
        CHEAPER, "growth", "starter")
    assert change.change_date == date(2026, 9, 19)
    assert change.projected_gpu_hours == Decimal(1488)
    assert change.current_plan_total == Decimal("3454.42")
    assert change.recommended_plan_total == Decimal("3159.92")
    assert Decimal(json.loads(change.projected_bills)["enterprise"]) == Decimal("25000.00")


def test_no_confirmed_shift_means_no_recommendation():
    # Steady 2 standard GPUs (starter would be cheaper, as above): still nothing, since the
    # tenant's usage has not moved since its plan was chosen.
    steady = usage_frame("kite", "standard", "medium", [2.0] * 30, seed=3)
    shifts = shifts_of(steady)
    assert shifts.filter(pl.col("confirmed")).is_empty()
    assert recommend_tier_change(tenant("kite"), CARD, steady, shifts, AS_OF) is None

    # A step one day old is not confirmed yet (3 days at the new level are needed).
    young = usage_frame("lumen", "standard", "medium", step(30, 29, 6, 2))
    early = shifts_of(young)
    assert early.filter(pl.col("confirmed")).is_empty()
    assert recommend_tier_change(tenant("lumen"), CARD, young, early, AS_OF) is None


def test_frame_of_recommendations_has_one_row_per_tenant_with_a_change():
    usage = pl.concat([
        usage_frame("quanta", "premium", "large", step(30, 12, 2, 6)),
        usage_frame("kite", "standard", "medium", [2.0] * 30, seed=3),
    ])
    shifts = shifts_of(usage)
    tenants = {"quanta": tenant("quanta"), "kite": tenant("kite")}
    frame = recommend_tier_changes(tenants, CARD, usage, shifts, AS_OF)
    assert frame["tenant"].to_list() == ["quanta"]
    assert frame["rule"].to_list() == [OUT_OF_RANGE]
    assert frame.schema["current_plan_total"] == pl.Decimal(18, 2)


def test_unknown_plan_is_reported_with_what_to_fix():
    usage = usage_frame("quanta", "premium", "large", step(30, 12, 2, 6))
    with pytest.raises(ValueError, match="plan 'platinum' is not in rate card"):
        recommend_tier_change(tenant("quanta", plan="platinum"), CARD, usage, shifts_of(usage),
                              AS_OF)
