"""Month-end forecasts of GPU-hours and spend per tenant, with 80% and 95% prediction intervals.

The model: each tenant's GPU-hours per hardware tier, summed per UTC day, are forecast by an
exponential-smoothing model (statsmodels' Holt-Winters `ExponentialSmoothing`, additive
errors), chosen by AICc among: level only, damped trend, and a weekly season once two weeks of
history exist. The intervals are quantiles of the month's total over `SIMULATIONS` sample paths
simulated from the fitted model's state-space form (`HoltWintersResults.simulate`), each day
floored at zero: an interval of a *sum* of days, which per-day intervals (added up) or
per-step conformal intervals are not. The model's interval is then widened, never narrowed,
where the tenant's own recent days fell further from the model than it expected
(`_calibration`: normalised split conformal prediction over in-sample origins).

Daily seasonality: a forecast day is spread over its hours by the tenant's own hour-of-week
profile (hour-of-day before two weeks of history), so the hourly quantities that the pricing
engine nets against reservations hour by hour keep the day's shape.

Spend: every scenario (the point forecast and each interval bound) is month-to-date usage plus
that scenario's hourly path, priced by `models.billing.pricing.price_invoice`, so reservations,
bands, discounts, base fees and minimums are in the forecast exactly as on the invoice.

Change points: after a confirmed usage shift (models/planning/shifts.py, the `usage_shifts`
table) only the days from the change date on are history, so the forecast starts from the new
level rather than averaging across the step.

Backtested on real traces against seasonal-naive and linear-trend (Koku) baselines:
evaluation/forecast.py, docs/forecasting.md."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

import numpy as np
import numpy.typing as npt
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from statsmodels.tsa.holtwinters import ExponentialSmoothing, HoltWintersResults
from threadpoolctl import threadpool_limits

from models.billing.pricing import HOUR, UsageHour, price_invoice, quantity
from models.billing.rate_cards import RateCard, Tenant, month_bounds

Floats = npt.NDArray[np.float64]

LEVELS = (80, 95)
"""Prediction-interval levels, percent."""
SIMULATIONS = 2000
"""Sample paths per forecast: the 2.5% quantile then rests on 50 paths."""
SEED = 20261122
"""Forecasts are reproducible: the same history gives the same intervals on every rerun."""
WEEK = 7
MIN_SEASONAL_DAYS = 2 * WEEK
"""A weekly season needs two weeks to be told from a level (ETS initialises it from them)."""
MIN_TREND_DAYS = 4
MIN_MODEL_DAYS = 4
"""Fewer days than this are not fitted (a level and its noise from 2 or 3 points give NaN or
nonsense): the forecast is the mean day and the range of the days seen."""
DEFAULT_LOOKBACK_DAYS = 56
"""Eight weeks: enough to estimate a weekly season, short enough to follow a tenant's change."""
SCENARIOS = ("point", "lo80", "hi80", "lo95", "hi95")


class ForecastInputError(ValueError):
    """History that cannot be forecast as given; the message says which and why."""


@dataclass(frozen=True)
class DailyForecast:
    """A forecast of one daily series for the next `days` days."""

    model: str
    """The selected model, ETS(error, trend, season) in Hyndman's notation, or `zero`."""
    history_days: int
    """Days of history the model was fitted on (after any confirmed shift)."""
    point: Floats
    """Expected GPU-hours of each future day (floored at zero)."""
    cumulative: Mapping[str, Floats]
    """Scenario -> cumulative GPU-hours by the end of each future day: `point` is the point
    forecast, `lo80`/`hi80`/`lo95`/`hi95` quantiles of the simulated cumulative sums."""

    @property
    def totals(self) -> dict[str, float]:
        """Scenario -> GPU-hours over the whole horizon."""
        return {s: float(c[-1]) if c.size else 0.0 for s, c in self.cumulative.items()}


def _quantile_name(level: int, upper: bool) -> str:
    return f"{'hi' if upper else 'lo'}{level}"


def _candidates(days: int) -> list[tuple[str | None, str | None]]:
    """(trend, season) pairs the data can support. Trend and season together are left out:
    on a few weeks of days they overfit, and the fit costs as much as the other three."""
    out: list[tuple[str | None, str | None]] = [(None, None)]
    if days >= MIN_TREND_DAYS:
        out.append(("add", None))
    if days >= MIN_SEASONAL_DAYS:
        out.append((None, "add"))
    return out


def _fit(y: Floats) -> tuple[str, HoltWintersResults]:
    fits: list[tuple[float, str, HoltWintersResults]] = []
    for trend, season in _candidates(y.size):
        model = ExponentialSmoothing(
            y, trend=trend, damped_trend=trend is not None, seasonal=season,
            seasonal_periods=WEEK if season else None, initialization_method="estimated",
        )
        with warnings.catch_warnings():
            # Short series often end the optimiser at its iteration limit with a usable fit;
            # AICc still ranks it.
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            result = model.fit()
        name = f"ETS(A,{'Ad' if trend else 'N'},{'A' if season else 'N'})"
        fits.append((result.aicc if math.isfinite(result.aicc) else math.inf, name, result))
    # The level-only model comes first: it wins ties and stands when no AICc is finite.
    _, name, best = min(fits, key=lambda f: f[0])
    return name, best


def _range_forecast(y: Floats, days: int, name: str) -> DailyForecast:
    """Too little history for a model: the mean day, and every interval the range between the
    lowest and the highest day seen, repeated."""
    mean, low, high = float(np.mean(y)), float(np.min(y)), float(np.max(y))
    steps = np.arange(1, days + 1, dtype=float)
    cumulative = {"point": mean * steps}
    for level in LEVELS:
        cumulative[_quantile_name(level, False)] = low * steps
        cumulative[_quantile_name(level, True)] = high * steps
    return DailyForecast(name, int(y.size), np.full(days, mean), cumulative)


def forecast_daily(history: Sequence[float] | Floats, days: int, *,
                   simulations: int = SIMULATIONS, seed: int = SEED) -> DailyForecast:
    """Forecast the next `days` days of a daily GPU-hours series (oldest first, no gaps).

    A history of zeros only (or a constant) has no variation to model: its forecast is that
    constant with an interval of zero width, and the model says so. Fewer than
    `MIN_MODEL_DAYS` days, or a fit whose simulation is not finite, give `_range_forecast`."""
    y = np.asarray(history, dtype=float)
    if y.ndim != 1 or y.size == 0:
        raise ForecastInputError(f"history must be a non-empty daily series, got shape {y.shape}")
    if not np.isfinite(y).all() or (y < 0).any():
        bad = int(np.flatnonzero(~np.isfinite(y) | (y < 0))[0])
        raise ForecastInputError(f"history day {bad}: GPU-hours must be finite and >= 0, got "
                                 f"{y[bad]}")
    if days < 0:
        raise ForecastInputError(f"days must be >= 0, got {days}")
    if days == 0 or np.ptp(y) == 0:
        flat = np.full(days, y[-1])
        path = np.cumsum(flat)
        return DailyForecast("constant", int(y.size), flat, {s: path for s in SCENARIOS})
    if y.size < MIN_MODEL_DAYS:
        return _range_forecast(y, days, "range of a short history")
    # The fits are many tiny optimisations: BLAS threads only contend for the cores (on a
    # busy 2-core machine a forecast took 1.2 s with them, 0.33 s without).
    with threadpool_limits(limits=1, user_api="blas"):
        name, fitted = _fit(y)
        point = np.maximum(np.asarray(fitted.forecast(days), dtype=float), 0.0)
        rng = np.random.default_rng(seed)
        paths = np.asarray(fitted.simulate(days, anchor="end", repetitions=simulations,
                                           rng=rng), dtype=float).reshape(days, simulations)
        scale = _calibration(fitted, y, days, rng)
    if not (np.isfinite(paths).all() and np.isfinite(point).all()):
        return _range_forecast(y, days, f"range of the history ({name} did not simulate)")
    sums = np.cumsum(np.maximum(paths, 0.0), axis=0)
    point_sums = np.cumsum(point)
    cumulative: dict[str, Floats] = {"point": point_sums}
    for level in LEVELS:
        tail = (1 - level / 100) / 2
        below = np.maximum(point_sums - np.quantile(sums, tail, axis=1), 0.0)
        above = np.maximum(np.quantile(sums, 1 - tail, axis=1) - point_sums, 0.0)
        cumulative[_quantile_name(level, False)] = np.maximum(point_sums - scale[level] * below,
                                                              0.0)
        cumulative[_quantile_name(level, True)] = point_sums + scale[level] * above
    return DailyForecast(name, int(y.size), point, cumulative)


CALIBRATION_SIMULATIONS = 200
MIN_CALIBRATION_DAYS = 3


def _calibration(fitted: HoltWintersResults, y: Floats, days: int,
                 rng: np.random.Generator) -> dict[int, float]:
    """Level -> how much to widen the model's interval so that it would have held the
    history's own sums: normalised split conformal prediction over in-sample origins.

    From each day t of the history with at least `MIN_CALIBRATION_DAYS` before it (the
    look-back bounds how many), the fitted model simulates the next k = min(days, n - t) days
    given the history before t; the score is the actual k-day sum's distance from the model's
    median over the model's own half-interval on that side. The factor is the conformal
    quantile of the scores (the largest when too few), never below 1: history can widen the
    model's interval, not narrow it. Origins in the history share the fitted parameters (not
    refitted per origin): cheap, and a little optimistic, which the floor of 1 bounds."""
    n = y.size
    scores: dict[int, list[float]] = {level: [] for level in LEVELS}
    for t in range(MIN_CALIBRATION_DAYS, n):
        k = min(days, n - t)
        sims = np.asarray(fitted.simulate(k, anchor=t, repetitions=CALIBRATION_SIMULATIONS,
                                          rng=rng), dtype=float).reshape(k, -1)
        totals = np.maximum(sims, 0.0).sum(axis=0)
        actual = float(y[t:t + k].sum())
        middle = float(np.median(totals))
        for level in LEVELS:
            tail = (1 - level / 100) / 2
            bound = float(np.quantile(totals, tail if actual < middle else 1 - tail))
            spread = abs(bound - middle)
            scores[level].append(abs(actual - middle) / spread if spread > 0 else
                                 (0.0 if actual == middle else math.inf))
    out = {}
    for level, values in scores.items():
        finite = sorted(v for v in values if math.isfinite(v))
        if not finite:
            out[level] = 1.0
            continue
        rank = min(math.ceil((len(finite) + 1) * level / 100), len(finite))
        out[level] = max(1.0, finite[rank - 1])
    return out


def history_start(days: Sequence[date], confirmed_shifts: Sequence[date]) -> int:
    """Index of the first history day to fit on: the latest confirmed change date inside the
    history, else 0. Fewer than two days after it still start there (a level, no trend)."""
    starts = [d for d in confirmed_shifts if days and days[0] < d <= days[-1]]
    if not starts:
        return 0
    return days.index(max(starts)) if max(starts) in days else 0


def hour_profile(hourly: Floats, first_hour: datetime) -> Floats:
    """Share of a day's GPU-hours in each hour of the week (168 values, each day's 24 summing
    to 1), from whole-day history starting at midnight `first_hour`.

    With two weeks or more, per weekday; before that one hour-of-day profile for every day.
    Days without usage carry no shape; with none at all, the hours are even."""
    if first_hour.hour or first_hour.minute or hourly.size % 24:
        raise ForecastInputError("hourly history must be whole UTC days from midnight")
    days = hourly.reshape(-1, 24)
    weekday = np.array([(first_hour + timedelta(days=i)).weekday() for i in range(len(days))])
    even = np.full(24, 1 / 24)

    def shape(rows: Floats) -> Floats:
        total = rows.sum()
        return rows.sum(axis=0) / total if total > 0 else even

    if len(days) < MIN_SEASONAL_DAYS:
        daily = shape(days)
        return np.tile(daily, WEEK)
    return np.concatenate([shape(days[weekday == w]) for w in range(WEEK)])


@dataclass(frozen=True)
class SeriesHistory:
    """One tenant's hourly GPU-hours of one hardware tier, whole UTC days up to `as_of`."""

    hardware_tier: str
    first_hour: datetime
    gpu_hours: Floats
    """Hourly GPU-hours from `first_hour`, all size classes together."""
    size_shares: Mapping[str, float]
    """Size class -> share of the tier's GPU-hours (recent mix, summing to 1)."""


@dataclass(frozen=True)
class TenantForecast:
    tenant: str
    period: str
    as_of: datetime
    """End of history (exclusive): midnight after the last day used."""
    currency: str
    rate_card_version: str
    models: Mapping[str, str]
    """Hardware tier -> the model chosen for it."""
    history_start: date | None
    """First day of history of the tenant's series that started latest (after a shift)."""
    actual_gpu_hours: Decimal
    """Month to date, up to `as_of`."""
    gpu_hours: Mapping[str, Decimal]
    """Scenario -> GPU-hours of the whole month (actual + forecast)."""
    amount: Mapping[str, Decimal]
    """Scenario -> invoice total of the whole month, priced from the scenario's usage."""
    cumulative: Mapping[str, list[tuple[date, Decimal]]]
    """Scenario -> (day, month-to-date GPU-hours by that day's end) for each future day."""


def _gpu_hours(value: float) -> Decimal:
    if not math.isfinite(value):
        raise ForecastInputError(f"a forecast quantity is not a number: {value}")
    return quantity(Decimal(repr(max(float(value), 0.0))))


def forecast_tenant(
    tenant: Tenant,
    card: RateCard,
    as_of: datetime,
    history: Sequence[SeriesHistory],
    month_to_date: Sequence[UsageHour],
    *,
    shifts: Mapping[str, Sequence[date]] | None = None,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
) -> TenantForecast:
    """The month-end forecast of `tenant` for the month that holds the hour before `as_of`.

    `history`: one series per hardware tier the tenant used in the look-back; `month_to_date`:
    the period's actual usage before `as_of` (as billed); `shifts`: hardware tier -> change
    dates of confirmed shifts of its GPU-hours series."""
    if as_of.hour or as_of.minute or as_of.second or as_of.microsecond:
        raise ForecastInputError(f"as_of must be a UTC midnight, got {as_of.isoformat()}")
    last = as_of - HOUR
    period = f"{last:%Y-%m}"
    _, end = month_bounds(period)
    days_left = (end - as_of) // timedelta(days=1)
    future_days = [as_of.date() + timedelta(days=i) for i in range(days_left)]
    scenario_hours: dict[str, list[UsageHour]] = {s: list(month_to_date) for s in SCENARIOS}
    cumulative = {s: np.zeros(days_left) for s in SCENARIOS}
    models: dict[str, str] = {}
    starts: list[date] = []
    for series in history:
        n_days = series.gpu_hours.size // 24
        if n_days == 0 or series.first_hour + timedelta(days=n_days) != as_of:
            raise ForecastInputError(
                f"tenant {tenant.name}, tier {series.hardware_tier}: history ends at "
                f"{series.first_hour + timedelta(days=n_days)}, not at as_of {as_of}")
        daily = series.gpu_hours.reshape(-1, 24).sum(axis=1)
        days = [series.first_hour.date() + timedelta(days=i) for i in range(n_days)]
        first = max(history_start(days, (shifts or {}).get(series.hardware_tier, ())),
                    n_days - lookback_days)
        starts.append(days[first])
        fc = forecast_daily(daily[first:], days_left)
        models[series.hardware_tier] = fc.model
        profile = hour_profile(series.gpu_hours[first * 24:],
                               series.first_hour + timedelta(days=first))
        for scenario, path in fc.cumulative.items():
            cumulative[scenario] += path
            # The scenario's days keep the point forecast's shape, scaled to its total: a
            # quantile of the month's sum, not a path of per-day quantiles (which would not
            # add up to it).
            per_day = np.diff(path, prepend=0.0)
            if scenario != "point":
                point_total = fc.totals["point"]
                per_day = (fc.point * fc.totals[scenario] / point_total if point_total > 0
                           else np.full(days_left, fc.totals[scenario] / max(days_left, 1)))
            for i, day_total in enumerate(per_day):
                if day_total <= 0:
                    continue
                day_start = as_of + timedelta(days=i)
                shares = profile[day_start.weekday() * 24:(day_start.weekday() + 1) * 24]
                for hour, share in enumerate(shares):
                    for size, size_share in series.size_shares.items():
                        gpu_hours = _gpu_hours(day_total * share * size_share)
                        if gpu_hours:
                            scenario_hours[scenario].append(UsageHour(
                                day_start + hour * HOUR, series.hardware_tier, size, gpu_hours))
    actual = sum((h.gpu_hours for h in month_to_date), Decimal(0))
    invoices = {s: price_invoice(tenant, card, period, hours)
                for s, hours in scenario_hours.items()}
    amount = {s: invoice.total for s, invoice in invoices.items()}
    # Spend is not monotone in usage everywhere (a volume band's lower price): the interval of
    # spend is the range of the priced bounds, and contains the point.
    for level in LEVELS:
        lo, hi = _quantile_name(level, False), _quantile_name(level, True)
        amount[lo], amount[hi] = (min(amount[lo], amount[hi], amount["point"]),
                                  max(amount[lo], amount[hi], amount["point"]))
    return TenantForecast(
        tenant=tenant.name, period=period, as_of=as_of, currency=card.currency,
        rate_card_version=card.version, models=models,
        history_start=max(starts) if starts else None,
        actual_gpu_hours=actual,
        # What was priced: month to date plus the scenario's hours, each at 6 decimals.
        gpu_hours={s: sum((h.gpu_hours for h in hours), Decimal(0))
                   for s, hours in scenario_hours.items()},
        amount=amount,
        cumulative={s: [(d, actual + _gpu_hours(float(v))) for d, v in zip(future_days, c,
                                                                          strict=True)]
                    for s, c in cumulative.items()},
    )
