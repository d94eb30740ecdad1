"""Month-end forecasts: calibrated intervals on series with a known weekly season, every
scenario priced by the real engine (reservations netted hour by hour, minimums trued up), and
history cut at a confirmed shift.

Hand-computed bills use the demo rate card (DESIGN.md's worked example prices) for October
2026: 31 days, 744 hours; the forecast is made at the end of October 14 (336 hours known)."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from models.billing.pricing import HOUR, UsageHour, price_invoice
from models.billing.rate_cards import (
    Basis,
    Isolation,
    Reservation,
    SlaClass,
    Tenant,
    load_rate_cards,
)
from models.planning.forecast import (
    LEVELS,
    ForecastInputError,
    SeriesHistory,
    forecast_daily,
    forecast_tenant,
    hour_profile,
)

ROOT = Path(__file__).resolve().parents[3]
CARD = load_rate_cards(ROOT / "examples" / "demo" / "rate-card.yaml")[0]
MONTH = datetime(2026, 10, 1, tzinfo=UTC)
AS_OF = datetime(2026, 10, 15, tzinfo=UTC)
FIRST = AS_OF - timedelta(days=28)
REMAINING_HOURS = 17 * 24


def tenant(plan: str, reserved_premium: int = 0) -> Tenant:
    reservations = ((Reservation("premium", Decimal(reserved_premium), MONTH, None),)
                    if reserved_premium else ())
    return Tenant("zen", plan, Basis.ALLOCATION, Isolation.POOL, SlaClass.STANDARD,
                  datetime(2026, 1, 1, tzinfo=UTC), None, ("team-zen",), reservations)


def history(gpus_per_hour: np.ndarray, size: str = "large") -> tuple[SeriesHistory,
                                                                    list[UsageHour]]:
    """28 days of premium usage to AS_OF, and its October hours as billed."""
    assert gpus_per_hour.size == 28 * 24
    month_to_date = [
        UsageHour(FIRST + i * HOUR, "premium", size, Decimal(repr(round(float(g), 6))))
        for i, g in enumerate(gpus_per_hour) if FIRST + i * HOUR >= MONTH and g > 0
    ]
    return SeriesHistory("premium", FIRST, gpus_per_hour, {size: 1.0}), month_to_date


@pytest.mark.slow
def test_intervals_cover_a_seasonal_series_at_about_the_nominal_rate():
    """Level + weekly season + Gaussian noise, 28 days known, 14 forecast: the model finds
    the season, the point is close, and the intervals of the 14-day sum hold it about as
    often as they say (a little more: history may widen them, never narrow them)."""
    rng = np.random.default_rng(7)
    week = np.array([1.0, 1.1, 1.2, 1.15, 1.05, 0.6, 0.5])
    inside = {level: 0 for level in LEVELS}
    errors, seasonal = [], 0
    runs = 24
    for _ in range(runs):
        level = rng.uniform(50, 500)
        days = np.arange(42)
        y = level * week[days % 7] + rng.normal(0, 0.06 * level, days.size)
        fc = forecast_daily(y[:28], 14)
        actual = y[28:].sum()
        totals = fc.totals
        errors.append(abs(totals["point"] - actual) / actual)
        seasonal += fc.model.endswith(",A)")
        for lv in LEVELS:
            inside[lv] += totals[f"lo{lv}"] <= actual <= totals[f"hi{lv}"]
        assert totals["lo95"] <= totals["lo80"] <= totals["point"] <= totals["hi80"] \
            <= totals["hi95"]
    assert seasonal >= runs * 0.9
    assert np.mean(errors) < 0.05
    # 60 runs of this set-up give 75% and 93%; 24 runs keep the test to half a minute.
    assert 0.6 <= inside[80] / runs <= 0.95
    assert inside[95] / runs >= 0.8


def test_a_constant_history_is_forecast_exactly_with_no_spread():
    fc = forecast_daily(np.full(10, 72.0), 5)
    assert fc.model == "constant"
    for path in fc.cumulative.values():
        assert path.tolist() == [72.0, 144.0, 216.0, 288.0, 360.0]


def test_a_short_history_gives_its_mean_and_its_range():
    fc = forecast_daily([40.0, 60.0], 3)
    assert fc.model == "range of a short history"
    assert fc.totals == {"point": 150.0, "lo80": 120.0, "hi80": 180.0, "lo95": 120.0,
                         "hi95": 180.0}


@pytest.mark.parametrize("bad", [[1.0, float("nan")], [3.0, -1.0], []])
def test_unusable_history_is_refused_with_the_day(bad):
    with pytest.raises(ForecastInputError, match="history"):
        forecast_daily(bad, 3)


def test_daily_shape_spreads_a_day_over_its_hours():
    hourly = np.tile(np.r_[np.full(12, 1.0), np.full(12, 3.0)], 3)
    profile = hour_profile(hourly, FIRST)
    assert profile.size == 168
    assert np.allclose(profile[:12], 1 / 48)
    assert np.allclose(profile[12:24], 3 / 48)


def test_reservation_is_netted_hour_by_hour_in_every_scenario():
    """3 premium GPUs (70B, large) every hour with 2 reserved, plan growth: the forecast of a
    constant history is exact, so every scenario is DESIGN.md's acme premium line: 2,232
    GPU-hours, 744 overflow x 1.25 = 930 units -> 2,000.00 + 1,505.00; discount -175.25;
    reservation 2 x 744 x 2.60 = 3,868.80; base fee 500.00; total 7,698.55."""
    series, mtd = history(np.full(28 * 24, 3.0))
    fc = forecast_tenant(tenant("growth", reserved_premium=2), CARD, AS_OF, [series], mtd)
    assert fc.period == "2026-10"
    assert fc.actual_gpu_hours == Decimal(3 * 14 * 24)
    assert set(fc.gpu_hours.values()) == {Decimal(2232)}
    assert set(fc.amount.values()) == {Decimal("7698.55")}
    days = fc.cumulative["point"]
    assert days[0] == (date(2026, 10, 15), Decimal(3 * 15 * 24))
    assert days[-1] == (date(2026, 10, 31), Decimal(2232))


def test_usage_inside_the_reservation_and_below_the_minimum_costs_the_same_in_every_scenario():
    """1 to 2 premium GPUs an hour with 3 reserved on plan enterprise (minimum 25,000.00): the
    GPU-hours have a real interval, but every scenario is all covered by the reservation and
    trued up to the minimum, so the spend interval is the minimum exactly. A forecast that
    priced GPU-hours at list price would show a range of thousands."""
    rng = np.random.default_rng(3)
    gpus = np.clip(1.5 + 0.3 * rng.standard_normal(28 * 24), 1.0, 2.0)
    series, mtd = history(gpus)
    fc = forecast_tenant(tenant("enterprise", reserved_premium=3), CARD, AS_OF, [series], mtd)
    assert fc.gpu_hours["hi95"] - fc.gpu_hours["lo95"] > 10
    assert set(fc.amount.values()) == {Decimal("25000.00")}
    invoice = price_invoice(tenant("enterprise", reserved_premium=3), CARD, "2026-10", mtd)
    assert invoice.total == Decimal("25000.00")  # the same engine, month to date alone


def test_spend_scenarios_are_the_engine_prices_of_the_usage_scenarios():
    """With overflow on graduated bands, the spend interval follows the usage interval, and
    the point equals price_invoice over month to date plus the forecast hours at that level."""
    rng = np.random.default_rng(5)
    gpus = 4.0 + rng.normal(0, 0.8, 28 * 24).clip(-3, 3)
    series, mtd = history(gpus)
    fc = forecast_tenant(tenant("growth", reserved_premium=1), CARD, AS_OF, [series], mtd)
    assert fc.gpu_hours["lo95"] < fc.gpu_hours["lo80"] < fc.gpu_hours["point"] \
        < fc.gpu_hours["hi80"] < fc.gpu_hours["hi95"]
    assert fc.amount["lo95"] < fc.amount["point"] < fc.amount["hi95"]
    # Month to date alone is a lower bound of every scenario.
    floor = price_invoice(tenant("growth", reserved_premium=1), CARD, "2026-10", mtd).total
    assert fc.amount["lo95"] > floor


def test_a_confirmed_shift_starts_the_history_at_the_new_level():
    """2 GPUs for 20 days, then 6: with the shift confirmed, only the 6-GPU days are history,
    a constant, so the rest of the month is 6 x 24 x 17 GPU-hours exactly."""
    gpus = np.r_[np.full(20 * 24, 2.0), np.full(8 * 24, 6.0)]
    series, mtd = history(gpus)
    change = (FIRST + timedelta(days=20)).date()
    fc = forecast_tenant(tenant("growth"), CARD, AS_OF, [series], mtd,
                         shifts={"premium": [change]})
    assert fc.history_start == change
    assert fc.models == {"premium": "constant"}
    assert fc.gpu_hours["point"] == fc.actual_gpu_hours + 6 * REMAINING_HOURS
    assert fc.gpu_hours["lo95"] == fc.gpu_hours["hi95"] == fc.gpu_hours["point"]
    without = forecast_tenant(tenant("growth"), CARD, AS_OF, [series], mtd)
    assert without.history_start == FIRST.date()
    assert without.gpu_hours["hi95"] > without.gpu_hours["lo95"]


def test_as_of_must_be_midnight_and_history_must_end_there():
    series, mtd = history(np.full(28 * 24, 1.0))
    with pytest.raises(ForecastInputError, match="midnight"):
        forecast_tenant(tenant("growth"), CARD, AS_OF + HOUR, [series], mtd)
    with pytest.raises(ForecastInputError, match="history ends"):
        forecast_tenant(tenant("growth"), CARD, AS_OF + timedelta(days=1), [series], mtd)
