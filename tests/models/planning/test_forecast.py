"""Month-end forecasts: calibrated intervals on series with a known weekly season, every
scenario priced by the real engine (reservations netted hour by hour, minimums trued up), and
history cut at a confirmed shift.

Hand-computed bills use the demo rate card (DESIGN.md's worked example prices) for October
2026: 31 days, 744 hours; the forecast is made at the end of October 14 (336 hours known)."""

from dataclasses import replace
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
    TenantForecast,
    forecast_daily,
    forecast_tenants,
    hour_profile,
    pool_intervals,
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


def history(gpus_per_hour: np.ndarray, size: str = "large") -> list[UsageHour]:
    """28 days of premium usage to AS_OF, as billed."""
    assert gpus_per_hour.size == 28 * 24
    return [UsageHour(FIRST + i * HOUR, "premium", size, Decimal(repr(round(float(g), 6))))
            for i, g in enumerate(gpus_per_hour) if g > 0]


def month_to_date(usage: list[UsageHour]) -> list[UsageHour]:
    return [h for h in usage if h.hour >= MONTH]


def forecast_one(who: Tenant, usage: list[UsageHour], as_of: datetime = AS_OF,
                 **kwargs) -> TenantForecast:
    """forecast_tenants for `who` alone (its intervals pooled over its own history only)."""
    (fc,) = forecast_tenants({who.name: who}, CARD, as_of, {who.name: usage}, data_start=FIRST,
                             **kwargs)
    return fc


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


@pytest.mark.slow
def test_pooled_calibration_covers_held_out_sums_with_level_jumps_near_nominal():
    """40 tenants whose level steps up or down at random (4% of days, log-size sd 0.4), with a
    weekly season and 2% noise: 28 days known, the next 14 days' sum held out. A tenant's own
    history rarely shows a step, so its own intervals miss more than they say (77.5% / 87.5%
    on this set); pooled over all 40 tenants' rolling-origin errors they cover at least as
    often as they say (87.5% / 97.5%: conservative, the refits at earlier origins see one or
    two weeks of a strong weekly season and miss more than the forecast itself will). Their
    price is width, bounded here (median 95% interval 1.8 times the held-out sum)."""
    rng = np.random.default_rng(11)
    week = np.array([1.0, 1.1, 1.2, 1.15, 1.05, 0.6, 0.5])
    series = []
    for _ in range(40):
        steps = np.where(rng.random(42) < 0.04, np.exp(rng.normal(0, 0.4, 42)), 1.0)
        level = rng.uniform(50, 500) * np.cumprod(steps)
        noise = rng.normal(0, 0.02 * level[0], 42)
        series.append(np.maximum(level * week[np.arange(42) % 7] + noise, 0.0))
    own = [forecast_daily(y[:28], 14) for y in series]
    pooled = pool_intervals(own)
    actual = np.array([y[28:].sum() for y in series])

    def cover(forecasts: list, level: int) -> float:
        return float(np.mean([f.totals[f"lo{level}"] <= a <= f.totals[f"hi{level}"]
                              for f, a in zip(forecasts, actual, strict=True)]))

    assert 0.72 <= cover(pooled, 80) <= 0.95
    assert cover(pooled, 95) >= 0.88
    assert cover(own, 95) < cover(pooled, 95)
    widths = [(f.totals["hi95"] - f.totals["lo95"]) / a for f, a in zip(pooled, actual,
                                                                         strict=True)]
    assert np.median(widths) < 2.5


def test_pooled_errors_widen_a_flat_tenant_and_never_narrow_an_interval():
    """A constant tenant's own interval has no width; the platform's errors give it one of
    point + q x level x j^1.5 on day j. A tenant with no usage has no unit and keeps its
    zero interval; a wide own interval stays as wide."""
    flat = forecast_daily(np.full(10, 24.0), 4)
    idle = forecast_daily(np.zeros(10), 4)
    wide = replace(flat, cumulative={**flat.cumulative, "hi95": flat.cumulative["point"] * 10},
                   errors=np.zeros(0))
    moving = replace(flat, errors=np.linspace(-0.2, 0.2, 41))
    out = pool_intervals([flat, idle, wide, moving])
    days = np.arange(1, 5) ** 1.5
    # The flat history's one rolling origin (7 days back: 0) and -0.20, -0.19, ..., 0.20
    # pooled: 42 errors. The 95% upper bound is rank ceil(43 x 0.975) = 42, the largest, 0.20;
    # the 80% lower bound rank floor(43 x 0.1) = 4, -0.17; the 80% upper rank 39, 0.17.
    assert flat.errors.tolist() == [0.0]
    point = 24.0 * np.arange(1, 5)
    assert np.allclose(out[0].cumulative["hi95"], point + 0.20 * 24.0 * days)
    assert np.allclose(out[0].cumulative["lo80"], point - 0.17 * 24.0 * days)
    assert np.allclose(out[0].cumulative["hi80"], point + 0.17 * 24.0 * days)
    for scenario in ("lo95", "hi95"):
        assert out[1].cumulative[scenario].tolist() == [0.0] * 4
    assert out[2].cumulative["hi95"].tolist() == wide.cumulative["hi95"].tolist()


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
    fc = forecast_one(tenant("growth", reserved_premium=2), history(np.full(28 * 24, 3.0)))
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
    usage = history(gpus)
    fc = forecast_one(tenant("enterprise", reserved_premium=3), usage)
    assert fc.gpu_hours["hi95"] - fc.gpu_hours["lo95"] > 10
    assert set(fc.amount.values()) == {Decimal("25000.00")}
    invoice = price_invoice(tenant("enterprise", reserved_premium=3), CARD, "2026-10",
                            month_to_date(usage))
    assert invoice.total == Decimal("25000.00")  # the same engine, month to date alone


def test_spend_scenarios_are_the_engine_prices_of_the_usage_scenarios():
    """With overflow on graduated bands, the spend interval follows the usage interval, and
    the point equals price_invoice over month to date plus the forecast hours at that level."""
    rng = np.random.default_rng(5)
    gpus = 4.0 + rng.normal(0, 0.8, 28 * 24).clip(-3, 3)
    usage = history(gpus)
    fc = forecast_one(tenant("growth", reserved_premium=1), usage)
    # One tenant alone pools four rolling-origin errors: the 80% and 95% bounds of a side
    # may both be the extreme error (conformal ranks past the sample).
    assert fc.gpu_hours["lo95"] <= fc.gpu_hours["lo80"] < fc.gpu_hours["point"] \
        < fc.gpu_hours["hi80"] <= fc.gpu_hours["hi95"]
    assert fc.amount["lo95"] < fc.amount["point"] < fc.amount["hi95"]
    # Month to date alone is a lower bound of every scenario.
    floor = price_invoice(tenant("growth", reserved_premium=1), CARD, "2026-10",
                          month_to_date(usage)).total
    assert fc.amount["lo95"] > floor


def test_a_confirmed_shift_starts_the_history_at_the_new_level():
    """2 GPUs for 20 days, then 6: with the shift confirmed, only the 6-GPU days are history,
    a constant, so the rest of the month is 6 x 24 x 17 GPU-hours exactly."""
    gpus = np.r_[np.full(20 * 24, 2.0), np.full(8 * 24, 6.0)]
    usage = history(gpus)
    change = (FIRST + timedelta(days=20)).date()
    fc = forecast_one(tenant("growth"), usage, shifts={"zen": {"gpu_hours[premium]": [change]}})
    assert fc.history_start == change
    assert fc.models == {"premium": "constant"}
    assert fc.gpu_hours["point"] == fc.actual_gpu_hours + 6 * REMAINING_HOURS
    assert fc.gpu_hours["lo95"] == fc.gpu_hours["hi95"] == fc.gpu_hours["point"]
    without = forecast_one(tenant("growth"), usage)
    assert without.history_start == FIRST.date()
    assert without.gpu_hours["hi95"] > without.gpu_hours["lo95"]


def test_as_of_must_be_midnight_and_usage_must_end_before_it():
    usage = history(np.full(28 * 24, 1.0))
    with pytest.raises(ForecastInputError, match="midnight"):
        forecast_one(tenant("growth"), usage, AS_OF + HOUR)
    with pytest.raises(ForecastInputError, match="not before as_of"):
        forecast_one(tenant("growth"), usage, AS_OF - timedelta(days=1))
