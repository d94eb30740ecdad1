"""`chargeback eval forecast`: backtest month-end usage forecasts on real public traces.

For every tenant of every trace and every calendar month of the trace's calendar, forecast the
month's total GPU-hours (or, where the trace ends first, the total up to its end) from the end
of day 7, 14 and 21, knowing only the hours before, and compare with what happened:

- `ours`: models.planning.forecast.forecast_daily, fitted from the latest confirmed usage
  shift (models.planning.shifts.detect_shifts on the daily history) and at most
  DEFAULT_LOOKBACK_DAYS back, intervals from simulated sample paths, calibrated by
  models.planning.forecast.pool_intervals over the forecasts of all the trace's tenants made
  at the same hour (as the pipeline pools all tenants of a day);
- `ours-own`: the same forecast before pooling, intervals from the tenant's history alone;
- `seasonal-naive`: the last 7 days repeated (for whole-day totals the same as repeating the
  last 168 hours); interval per day from the spread of week-on-week differences, sigma_h =
  sigma * sqrt(weeks ahead), the days' bounds added up; none before two weeks of history;
- `linear-trend`: Koku's forecast (project-koku/koku, koku/forecast/forecast.py): ordinary
  least squares of daily totals on the day number over the last 30 days (at most), after
  dropping days outside 1.5 IQR of the quartiles, each future day floored at zero; interval
  from statsmodels' prediction interval per day, the days' bounds added up as Koku's
  cumulative chart does. Koku refuses fewer than 8 days; here it fits whatever there is, so
  the day-7 row is what Koku would do with one more day.

Errors are on the month's total GPU-hours (month to date is known, so all methods share it):
MAPE = mean |F - A| / A, sMAPE = mean 2 |F - A| / (|F| + A), over cases with A > 0; coverage
= share of cases whose actual lies inside the 80% (95%) interval.

Traces (the same calendar as `chargeback replay`: trace second 0 = collectors.traces
TRACE_START, 2026-05-01; Helios keeps its own May 2020):
- alibaba-2025: `disaggregated_DLRM_trace.csv`, GPUs of each instance from scheduling to
  deletion, per app (the tenants); by default the `--top` apps with the most GPU-hours;
- helios: every `*.csv` of `--helios` (default `<data>/helios/earth_vcs`), running GPUs per
  minute, per virtual cluster;
- alibaba-2023: `openb_pod_list_default.csv`, num_gpu x gpu_milli / 1000 from scheduling to
  deletion, per QoS class (the tenants of the replay)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
import statsmodels.api as sm
from scipy.stats import norm

from collectors.traces import TRACE_START
from models.errors import UserError
from models.planning.forecast import (
    DEFAULT_LOOKBACK_DAYS,
    LEVELS,
    DailyForecast,
    forecast_daily,
    history_start,
    pool_intervals,
)
from models.planning.shifts import detect_shifts

Floats = npt.NDArray[np.float64]

TRACES = ("alibaba-2025", "helios", "alibaba-2023")
METHODS = ("ours", "ours-own", "seasonal-naive", "linear-trend")
ORIGIN_DAYS = (7, 14, 21)
DEFAULT_TOP = 40
KOKU_WINDOW_DAYS = 30
HELIOS_COLUMNS = ("time", "running_gpu_num")
HELIOS_EPOCH = datetime(2020, 5, 1, tzinfo=UTC)
DAY_HOURS = 24


@dataclass(frozen=True)
class Series:
    trace: str
    tenant: str
    first_hour: datetime
    gpu_hours: Floats
    """GPU-hours of each hour from `first_hour`."""


@dataclass(frozen=True)
class Forecast:
    total: float
    """GPU-hours of the rest of the period."""
    intervals: dict[int, tuple[float, float]] | None
    """Level -> bounds of the rest of the period's GPU-hours; None where the method has none."""


@dataclass(frozen=True)
class Case:
    trace: str
    tenant: str
    period: str
    origin_day: int
    actual: float
    """GPU-hours of the whole period (month, or up to the trace's end)."""
    month_to_date: float
    forecasts: dict[str, Forecast] = field(default_factory=dict)


def _bad(path: Path, message: str, hint: str) -> UserError:
    return UserError(f"{hint}: {path}: {message}")


def hourly_from_intervals(start_s: Floats, end_s: Floats, gpus: Floats, hours: int) -> Floats:
    """GPU-hours of each hour [h, h+1) of `hours` from intervals [start, end) holding `gpus`.

    Exact, in O(n log n): the GPU-seconds before time T are sum over s < T of g (T - s) less
    sum over e < T of g (T - e), two prefix sums over the sorted starts and ends."""
    edges = np.arange(hours + 1, dtype=float) * 3600.0

    def before(times: Floats) -> Floats:
        order = np.argsort(times)
        t, g = times[order], gpus[order]
        cum_g = np.concatenate([[0.0], np.cumsum(g)])
        cum_gt = np.concatenate([[0.0], np.cumsum(g * t)])
        k = np.searchsorted(t, edges, side="left")
        result: Floats = cum_g[k] * edges - cum_gt[k]
        return result

    seconds = before(start_s) - before(end_s)
    hourly: Floats = np.diff(seconds) / 3600.0
    return hourly


def _read_times(path: Path, columns: Sequence[str], hint: str) -> pl.DataFrame:
    if not path.is_file():
        raise _bad(path, "not found; pass --data with the shared data folder", hint)
    times = ("creation_time", "scheduled_time", "deletion_time")
    try:
        frame = pl.read_csv(path, columns=list(columns),
                            schema_overrides={c: pl.Float64 for c in times if c in columns})
    except (pl.exceptions.PolarsError, OSError) as error:
        raise _bad(path, f"not a readable trace CSV ({error}); expected columns "
                   f"{', '.join(columns)}", hint) from None
    return frame


def _span_hours(frame: pl.DataFrame) -> tuple[float, int]:
    span = max(float(frame[c].max() or 0.0)  # type: ignore[arg-type]
               for c in ("creation_time", "scheduled_time", "deletion_time"))
    return span, math.ceil(span / 3600)


def load_alibaba_2025(data: Path) -> list[Series]:
    path = data / "alibaba" / "disaggregated_DLRM_trace.csv"
    frame = _read_times(path, ["app_name", "gpu_request", "creation_time", "scheduled_time",
                               "deletion_time"], "--data")
    span, hours = _span_hours(frame)
    # Empty times: scheduled before the trace began, or still running at its end.
    frame = frame.filter(pl.col("gpu_request") > 0).with_columns(
        pl.col("scheduled_time").fill_null(0.0), pl.col("deletion_time").fill_null(span))
    return [
        Series("alibaba-2025", str(app), TRACE_START, hourly_from_intervals(
            g["scheduled_time"].to_numpy(), g["deletion_time"].to_numpy(),
            g["gpu_request"].cast(pl.Float64).to_numpy(), hours))
        for (app,), g in frame.sort("app_name").group_by("app_name", maintain_order=True)
    ]


def load_alibaba_2023(data: Path) -> list[Series]:
    path = data / "alibaba" / "openb_pod_list_default.csv"
    frame = _read_times(path, ["qos", "num_gpu", "gpu_milli", "creation_time", "scheduled_time",
                               "deletion_time"], "--data")
    span, hours = _span_hours(frame)
    frame = frame.filter(
        (pl.col("num_gpu") > 0) & pl.col("scheduled_time").is_not_null()
    ).with_columns(pl.col("deletion_time").fill_null(span),
                   (pl.col("num_gpu") * pl.col("gpu_milli") / 1000).alias("gpus"))
    return [
        Series("alibaba-2023", f"qos-{str(qos).lower()}", TRACE_START, hourly_from_intervals(
            g["scheduled_time"].to_numpy(), g["deletion_time"].to_numpy(),
            g["gpus"].cast(pl.Float64).to_numpy(), hours))
        for (qos,), g in frame.sort("qos").group_by("qos", maintain_order=True)
    ]


def load_helios(folder: Path) -> list[Series]:
    """Every `*.csv` of `folder` is one tenant (the file name less `_cluster_sequence_vc`):
    per-minute `running_gpu_num`, summed per hour / 60. Minutes missing from a file count as
    no GPUs running (the Earth files have every minute)."""
    if not folder.is_dir():
        raise UserError(f"--helios: {folder} is not a folder")
    files = sorted(folder.glob("*.csv"))
    if not files:
        raise UserError(f"--helios: {folder} has no .csv files (Helios VC files "
                        "<vc>_cluster_sequence_vc.csv)")
    out = []
    for path in files:
        try:
            header = pl.read_csv(path, n_rows=0).columns
            missing = [c for c in HELIOS_COLUMNS if c not in header]
            if missing:
                raise _bad(path, f"missing column(s) {', '.join(missing)}; a Helios VC file has "
                           f"{', '.join(HELIOS_COLUMNS)}", "--helios")
            minutes = pl.read_csv(path, columns=list(HELIOS_COLUMNS)).select(
                pl.col("time").str.to_datetime("%Y-%m-%d %H:%M:%S", time_zone="UTC"),
                pl.col("running_gpu_num").cast(pl.Float64))
        except pl.exceptions.PolarsError as error:
            raise _bad(path, f"{error}; expected times like 2020-05-01 00:00:00 and GPU counts",
                       "--helios") from None
        if minutes.height == 0 or minutes.null_count().sum_horizontal().item():
            raise _bad(path, "no rows, or empty cells", "--helios")
        first = minutes["time"].min()
        assert isinstance(first, datetime)
        day0 = first.replace(hour=0, minute=0, second=0, microsecond=0)
        offset = ((minutes["time"] - day0).dt.total_minutes() // 60).to_numpy()
        hourly = np.bincount(offset, weights=minutes["running_gpu_num"].to_numpy()) / 60.0
        out.append(Series("helios", path.stem.removesuffix("_cluster_sequence_vc"), day0,
                          hourly))
    return out


def periods(series: Series) -> list[tuple[str, int, int]]:
    """(YYYY-MM, first hour index, end hour index) of each calendar month the series covers
    from its first day, cut at the series' end; only periods reaching past the last origin."""
    out = []
    start = series.first_hour
    n = series.gpu_hours.size
    month = start.replace(day=1)
    while True:
        nxt = (month + timedelta(days=32)).replace(day=1)
        lo = max(0, int((month - start).total_seconds() // 3600))
        hi = min(n, int((nxt - start).total_seconds() // 3600))
        if lo >= n:
            break
        if month >= start and hi - lo > max(ORIGIN_DAYS) * DAY_HOURS:
            out.append((f"{month:%Y-%m}", lo, hi))
        month = nxt
    return out


def ours(daily: Floats, first_day: date, days: int) -> DailyForecast:
    dates = [first_day + timedelta(days=i) for i in range(daily.size)]
    confirmed = [s.change_date for s in detect_shifts(daily, dates) if s.confirmed]
    first = max(history_start(dates, confirmed), daily.size - DEFAULT_LOOKBACK_DAYS)
    return forecast_daily(daily[first:], days)


def _forecast(fc: DailyForecast) -> Forecast:
    totals = fc.totals
    return Forecast(totals["point"], {lv: (totals[f"lo{lv}"], totals[f"hi{lv}"]) for lv in LEVELS})


def seasonal_naive(daily: Floats, days: int) -> Forecast:
    week = daily[-7:]
    path = np.resize(week, days)
    if daily.size < 14:
        return Forecast(float(path.sum()), None)
    sigma = float(np.sqrt(np.mean((daily[7:] - daily[:-7]) ** 2)))
    sigma_h = sigma * np.sqrt(np.arange(days) // 7 + 1)
    intervals = {}
    for level in LEVELS:
        z = float(norm.ppf(0.5 + level / 200))
        intervals[level] = (float(np.maximum(path - z * sigma_h, 0).sum()),
                            float((path + z * sigma_h).sum()))
    return Forecast(float(path.sum()), intervals)


def linear_trend(daily: Floats, days: int) -> Forecast:
    y = daily[-KOKU_WINDOW_DAYS:]
    q1, q3 = np.percentile(y, [25, 75])
    keep = (y >= q1 - 1.5 * (q3 - q1)) & (y <= q3 + 1.5 * (q3 - q1))
    x = np.arange(y.size, dtype=float)
    fitted = sm.OLS(y[keep], sm.add_constant(x[keep])).fit()
    future = sm.add_constant(np.arange(y.size, y.size + days, dtype=float), has_constant="add")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a perfect fit has zero variance
        prediction = fitted.get_prediction(future)
        intervals = {}
        for level in LEVELS:
            frame = prediction.summary_frame(alpha=1 - level / 100)
            lower = np.nan_to_num(frame["obs_ci_lower"].to_numpy(), nan=0.0)
            upper = np.nan_to_num(frame["obs_ci_upper"].to_numpy(), nan=0.0)
            intervals[level] = (float(np.maximum(lower, 0).sum()),
                                float(np.maximum(upper, 0).sum()))
    return Forecast(float(np.maximum(prediction.predicted_mean, 0).sum()), intervals)


def backtest(series: Iterable[Series], *, origin_days: Sequence[int] = ORIGIN_DAYS,
             progress: Callable[[Series], None] | None = None) -> list[Case]:
    """Every case of every series; `ours` pooled, as the pipeline pools all tenants of one
    day, over the forecasts of all series of the trace made at the same hour."""
    cases: list[Case] = []
    pools: dict[tuple[str, datetime], list[tuple[Case, DailyForecast, float]]] = {}
    for s in series:
        if progress:
            progress(s)
        for period, lo, hi in periods(s):
            actual = float(s.gpu_hours[lo:hi].sum())
            for day in origin_days:
                origin = lo + day * DAY_HOURS
                history = s.gpu_hours[max(0, origin - DEFAULT_LOOKBACK_DAYS * DAY_HOURS):origin]
                daily = history.reshape(-1, DAY_HOURS).sum(axis=1)
                rest_days = math.ceil((hi - origin) / DAY_HOURS)
                first_day = (s.first_hour + timedelta(hours=origin) - timedelta(
                    days=daily.size)).date()
                # A last partial day (a trace ending mid-day) is forecast whole and its part
                # past the end left out, pro rata.
                part = (hi - origin) / DAY_HOURS / rest_days
                case = Case(s.trace, s.tenant, period, day, actual,
                            float(s.gpu_hours[lo:origin].sum()))
                own = ours(daily, first_day, rest_days)
                pools.setdefault((s.trace, s.first_hour + timedelta(hours=origin)), []).append(
                    (case, own, part))
                for name, fc in (("ours-own", _forecast(own)),
                                 ("seasonal-naive", seasonal_naive(daily, rest_days)),
                                 ("linear-trend", linear_trend(daily, rest_days))):
                    case.forecasts[name] = _part(fc, part)
                cases.append(case)
    for pool in pools.values():
        for (case, _, part), pooled in zip(pool, pool_intervals([fc for _, fc, _ in pool]),
                                           strict=True):
            case.forecasts["ours"] = _part(_forecast(pooled), part)
    return cases


def _part(fc: Forecast, part: float) -> Forecast:
    return Forecast(fc.total * part, None if fc.intervals is None else
                    {lv: (a * part, b * part) for lv, (a, b) in fc.intervals.items()})


@dataclass(frozen=True)
class Score:
    n: int
    mape: float
    smape: float
    coverage: dict[int, float | None]
    """Level -> share of cases inside the interval (None: the method had no interval)."""


def score(cases: Sequence[Case], method: str) -> Score:
    used = [c for c in cases if c.actual > 0]
    ape, sape = [], []
    inside: dict[int, list[bool]] = {lv: [] for lv in LEVELS}
    for c in used:
        fc = c.forecasts[method]
        total = c.month_to_date + fc.total
        ape.append(abs(total - c.actual) / c.actual)
        sape.append(2 * abs(total - c.actual) / (abs(total) + c.actual))
        if fc.intervals is not None:
            for lv, (a, b) in fc.intervals.items():
                inside[lv].append(c.month_to_date + a <= c.actual <= c.month_to_date + b)
    return Score(
        len(used), float(np.mean(ape)) if ape else math.nan,
        float(np.mean(sape)) if sape else math.nan,
        {lv: (float(np.mean(v)) if v else None) for lv, v in inside.items()},
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def report_rows(cases: Sequence[Case]) -> list[list[str]]:
    rows = []
    for trace in dict.fromkeys(c.trace for c in cases):
        of_trace = [c for c in cases if c.trace == trace]
        for day in [*dict.fromkeys(c.origin_day for c in of_trace), None]:
            chosen = [c for c in of_trace if day is None or c.origin_day == day]
            for method in METHODS:
                s = score(chosen, method)
                rows.append([trace, "all" if day is None else str(day), method, str(s.n),
                             _pct(s.mape), _pct(s.smape),
                             *(_pct(s.coverage[lv]) for lv in LEVELS)])
    return rows


HEADER = ["trace", "from day", "method", "cases", "MAPE %", "sMAPE %",
          *(f"{lv}% cover" for lv in LEVELS)]


def _text_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(HEADER), "  ".join("-" * w for w in widths),
                      *(line(r) for r in rows)])


def _markdown_table(rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return "\n".join([line(HEADER), line(["---"] * 3 + ["---:"] * (len(HEADER) - 3)),
                      *(line(r) for r in rows)])


def run(data_dir: Path, helios_dir: Path | None, traces: Sequence[str], top: int,
        progress: Callable[[str], None]) -> list[Case]:
    """The backtest of every chosen trace (all of TRACES when none), reporting each trace's
    tenant count through `progress`."""
    chosen = traces or TRACES
    if (any(t != "helios" for t in chosen) or helios_dir is None) and not data_dir.is_dir():
        raise UserError(f"--data: {data_dir} is not a folder; point --data at the shared data "
                        "folder (../shared/data beside the project)")
    loaders: dict[str, Callable[[], list[Series]]] = {
        "alibaba-2025": lambda: sorted(load_alibaba_2025(data_dir),
                                       key=lambda s: -float(s.gpu_hours.sum()))[:top],
        "helios": lambda: load_helios(helios_dir or data_dir / "helios" / "earth_vcs"),
        "alibaba-2023": lambda: load_alibaba_2023(data_dir),
    }
    cases: list[Case] = []
    for trace in chosen:
        series = loaders[trace]()
        progress(f"{trace}: {len(series)} tenants")
        cases += backtest(series)
    return cases


def render(cases: Sequence[Case], *, markdown: bool) -> str:
    rows = report_rows(cases)
    return _markdown_table(rows) if markdown else _text_table(rows)
