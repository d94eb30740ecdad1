"""Usage shifts: sustained changes in a tenant's daily series, found by penalised segmentation.

The detector (`change_points`) is optimal partitioning (the exact search that PELT prunes) of a
Gaussian model whose segments are each a constant level or a straight line (a slope costs half a
change), each series standardised first, with a penalty of ``penalty_factor * log(n)`` per
change (3 log n is the MBIC-like constant of R's changepoint package). Isolated one-day spikes
are replaced by their 3-point median before the search, and a segment has at least
``min_segment`` points, so a spike never becomes a segment of its own. Lines are allowed because
usage grows: a growing tenant is one sloped segment, not a staircase of false shifts; levels are
allowed because a line through a short window would explain a real step away. Chosen and
measured on the Turing Change Point benchmark (docs/shift-detection.md, `chargeback eval
shifts`).

`detect_shifts` turns change points of a daily series into `Shift`s with levels, a confidence and
a confirmation: a shift is confirmed only once ``confirm_days`` days at the new level exist.
`detect_shifts_frame` does that for every (tenant, series_name) of a long polars frame.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

import numpy as np
import polars as pl

from models.errors import UserError

Model = Literal["mixed", "linear", "mean"]

DEFAULT_PENALTY_FACTOR = 3.0
DEFAULT_MIN_SEGMENT = 2
DEFAULT_SPIKE_THRESHOLD = 5.0
DEFAULT_MODEL: Model = "mixed"
DEFAULT_CONFIRM_DAYS = 3
DEFAULT_LEVEL_WINDOW_DAYS = 7

SHIFTS_SCHEMA = {
    "tenant": pl.String,
    "series_name": pl.String,
    "change_date": pl.Date,
    "level_before": pl.Float64,
    "level_after": pl.Float64,
    "relative_change": pl.Float64,
    "confidence": pl.Float64,
    "confirmed": pl.Boolean,
    "days_at_new_level": pl.Int64,
}


class ShiftInputError(UserError):
    """The series handed to the detector is unusable; the message says which and why."""


@dataclass(frozen=True)
class Shift:
    change_date: date
    """First day at the new level."""
    level_before: float
    """Median of the last `level_window_days` days before the change (spikes removed)."""
    level_after: float
    """Median of the first `level_window_days` days from the change (spikes removed)."""
    confidence: float
    """Chi-square CDF of the likelihood ratio for keeping this change against merging its two
    segments. The location was searched for, so this ranks shifts; it is not a calibrated
    probability."""
    confirmed: bool
    """The first `confirm_days` days from the change are all nearer the new level than the old."""
    days_at_new_level: int
    """Days from the change to the next change or the end of the series."""


def _as_matrix(values: Sequence[float] | np.ndarray) -> np.ndarray:
    y = np.asarray(values, dtype=float)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise ShiftInputError(f"series must be 1-D or (n_obs, n_dim), got shape {y.shape}")
    return y


def _fill_gaps(y: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN, per column; an all-NaN column becomes zeros (no signal)."""
    out = y.copy()
    idx = np.arange(y.shape[0])
    for j in range(y.shape[1]):
        missing = np.isnan(out[:, j])
        if missing.all():
            out[:, j] = 0.0
        elif missing.any():
            out[missing, j] = np.interp(idx[missing], idx[~missing], out[~missing, j])
    return out


def _despike(y: np.ndarray, threshold: float) -> np.ndarray:
    """Replace points far from their 3-point median: a one-day spike is not a level.

    "Far" is in units of the noise scale estimated from day-to-day differences (MAD / sqrt 2),
    which a few spikes or a level shift hardly move."""
    if y.shape[0] < 3:
        return y
    med = y.copy()
    med[1:-1] = np.median(np.stack([y[:-2], y[1:-1], y[2:]]), axis=0)
    diffs = np.diff(y, axis=0)
    mad = np.median(np.abs(diffs - np.median(diffs, axis=0)), axis=0)
    # A series that is flat between spikes has a noise scale of 0: any isolated jump is a spike.
    spikes = np.abs(y - med) > threshold * 1.4826 * mad / math.sqrt(2)
    return np.where(spikes, med, y)


def _standardise(y: np.ndarray) -> np.ndarray:
    """Centre and scale each column by its standard deviation, as TCPDBench does (R `scale`)."""
    sd = y.std(axis=0, ddof=1) if y.shape[0] > 1 else np.ones(y.shape[1])
    sd = np.where(sd > 0, sd, 1.0)
    result: np.ndarray = (y - y.mean(axis=0)) / sd
    return result


class _SegmentCost:
    """Residual sum of squares of a segment ``[s, t)`` in O(1) from cumulative sums."""

    def __init__(self, y: np.ndarray, model: Model, slope_penalty: float = 0.0) -> None:
        n, d = y.shape
        self.slope_penalty = slope_penalty
        t = np.arange(n, dtype=float)
        zeros = np.zeros((1, d))
        self.model = model
        self.sum_y = np.vstack([zeros, np.cumsum(y, axis=0)])
        self.sum_yy = np.concatenate([[0.0], np.cumsum((y**2).sum(axis=1))])
        self.sum_t = np.concatenate([[0.0], np.cumsum(t)])
        self.sum_tt = np.concatenate([[0.0], np.cumsum(t**2)])
        self.sum_ty = np.vstack([zeros, np.cumsum(y * t[:, None], axis=0)])

    def __call__(self, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        length = (t - s).astype(float)
        sy = self.sum_y[t] - self.sum_y[s]
        rss: np.ndarray = self.sum_yy[t] - self.sum_yy[s] - (sy**2).sum(axis=1) / length
        if self.model == "mean":
            clipped: np.ndarray = np.maximum(rss, 0.0)
            return clipped
        st = self.sum_t[t] - self.sum_t[s]
        stt = self.sum_tt[t] - self.sum_tt[s]
        sty = self.sum_ty[t] - self.sum_ty[s]
        sxx = stt - st * st / length
        sxy = sty - sy * (st / length)[:, None]
        explained = (sxy**2).sum(axis=1) / np.where(sxx > 0, sxx, 1.0)
        linear: np.ndarray = np.maximum(rss - explained, 0.0)
        if self.model == "linear":
            return linear
        mixed: np.ndarray = np.minimum(np.maximum(rss, 0.0), linear + self.slope_penalty)
        return mixed


def _validate_params(penalty_factor: float, min_segment: int, model: str) -> None:
    problems = []
    if not penalty_factor > 0:
        problems.append(f"penalty_factor must be > 0, got {penalty_factor}")
    if min_segment < 1:
        problems.append(f"min_segment must be >= 1, got {min_segment}")
    if model not in ("mixed", "linear", "mean"):
        problems.append(f"model must be 'mixed', 'linear' or 'mean', got {model!r}")
    if problems:
        raise ShiftInputError("; ".join(problems))


def _segment(y: np.ndarray, penalty: float, min_segment: int, model: Model) -> list[int]:
    """Exact penalised segmentation (optimal partitioning). O(n^2) vectorised: a few ms for a
    year of days, so PELT's pruning (and its caveats with a minimum segment) is not needed."""
    n = y.shape[0]
    # A change adds two parameters (where, new level), a slope one: same price per parameter.
    cost = _SegmentCost(y, model, slope_penalty=penalty / 2)
    best = np.full(n + 1, np.inf)
    best[0] = -penalty
    previous = np.zeros(n + 1, dtype=np.int64)
    for t in range(min_segment, n + 1):
        starts = np.arange(0, t - min_segment + 1)
        starts = starts[np.isfinite(best[starts])]
        if starts.size == 0:
            continue
        total = best[starts] + cost(starts, np.full(starts.shape, t)) + penalty
        i = int(np.argmin(total))
        best[t] = total[i]
        previous[t] = starts[i]
    cps: list[int] = []
    t = n
    while t > 0:
        t = int(previous[t])
        if t > 0:
            cps.append(t)
    return sorted(cps)


def _prepare(
    values: Sequence[float] | np.ndarray, spike_threshold: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """(despiked series in its own units, standardised series the search runs on)."""
    y = _fill_gaps(_as_matrix(values))
    if spike_threshold is not None:
        y = _despike(y, spike_threshold)
    return y, _standardise(y)


def change_points(
    values: Sequence[float] | np.ndarray,
    *,
    penalty_factor: float = DEFAULT_PENALTY_FACTOR,
    min_segment: int = DEFAULT_MIN_SEGMENT,
    spike_threshold: float | None = DEFAULT_SPIKE_THRESHOLD,
    model: Model = DEFAULT_MODEL,
) -> list[int]:
    """0-based indices where a new segment starts, for a 1-D or (n_obs, n_dim) series.

    NaN values are interpolated; a point further than ``spike_threshold`` robust deviations from
    its 3-point median is treated as a spike (None: no despiking). Each dimension is standardised
    and the per-change penalty is ``penalty_factor * log(n_obs) * n_dim``."""
    _validate_params(penalty_factor, min_segment, model)
    _, z = _prepare(values, spike_threshold)
    n, d = z.shape
    if n < 2 * min_segment:
        return []
    return _segment(z, penalty_factor * math.log(n) * d, min_segment, model)


def detect_shifts(
    series: Sequence[float] | np.ndarray,
    dates: Sequence[date],
    *,
    confirm_days: int = DEFAULT_CONFIRM_DAYS,
    min_segment_days: int = DEFAULT_MIN_SEGMENT,
    penalty_factor: float = DEFAULT_PENALTY_FACTOR,
    spike_threshold: float | None = DEFAULT_SPIKE_THRESHOLD,
    level_window_days: int = DEFAULT_LEVEL_WINDOW_DAYS,
    model: Model = DEFAULT_MODEL,
) -> list[Shift]:
    """Sustained shifts of a daily series (one value per consecutive day, NaN for unknown).

    A shift is reported as soon as the segmentation sees it (``min_segment_days`` at the new
    level) and confirmed once its first ``confirm_days`` days all sit nearer the new level than
    the old one; until then it is pending (``confirmed=False``) and may vanish on a later run."""
    values = np.asarray(series, dtype=float)
    if values.ndim != 1:
        raise ShiftInputError(f"detect_shifts takes one daily series, got shape {values.shape}")
    if len(dates) != values.shape[0]:
        raise ShiftInputError(f"{values.shape[0]} values but {len(dates)} dates")
    for i in range(1, len(dates)):
        if dates[i] - dates[i - 1] != timedelta(days=1):
            raise ShiftInputError(
                f"dates must be consecutive days: {dates[i - 1]} is followed by {dates[i]} "
                f"(index {i}); fill missing days (NaN or 0) first"
            )
    if confirm_days < 1 or level_window_days < 1:
        raise ShiftInputError(
            f"confirm_days and level_window_days must be >= 1, got {confirm_days}, "
            f"{level_window_days}"
        )
    _validate_params(penalty_factor, min_segment_days, model)
    n = values.shape[0]
    if n < 2 * min_segment_days or np.isnan(values).all():
        return []
    clean, z = _prepare(values, spike_threshold)
    penalty = penalty_factor * math.log(n)
    cps = _segment(z, penalty, min_segment_days, model)
    if not cps:
        return []

    bounds = [0, *cps, n]
    cost = _SegmentCost(z, model, slope_penalty=penalty / 2)

    def seg_cost(s: int, t: int) -> float:
        return float(cost(np.array([s]), np.array([t]))[0])

    params_per_segment = 1 if model == "mean" else 2
    rss = sum(seg_cost(a, b) for a, b in itertools.pairwise(bounds))
    dof = n - params_per_segment * (len(bounds) - 1)
    noise_var = rss / dof if dof > 0 and rss > 0 else 0.0
    flat = clean[:, 0]

    shifts = []
    for i, k in enumerate(cps):
        start, end = bounds[i], bounds[i + 2]
        before = float(np.median(flat[max(start, k - level_window_days) : k]))
        after = float(np.median(flat[k : min(end, k + level_window_days)]))
        gain = seg_cost(start, end) - seg_cost(start, k) - seg_cost(k, end)
        shifts.append(
            Shift(
                change_date=dates[k],
                level_before=before,
                level_after=after,
                confidence=_chi2_cdf(gain / noise_var, params_per_segment) if noise_var else 1.0,
                confirmed=_confirmed(flat[k:end], before, after, confirm_days),
                days_at_new_level=end - k,
            )
        )
    return shifts


def _confirmed(new_days: np.ndarray, before: float, after: float, confirm_days: int) -> bool:
    if new_days.shape[0] < confirm_days or before == after:
        return False
    first = new_days[:confirm_days]
    return bool(np.all(np.abs(first - after) < np.abs(first - before)))


def _chi2_cdf(x: float, dof: int) -> float:
    """CDF of chi-square with 1 or 2 degrees of freedom (closed forms; no scipy here)."""
    if x <= 0:
        return 0.0
    if dof == 1:
        return math.erf(math.sqrt(x / 2))
    return 1.0 - math.exp(-x / 2)


def detect_shifts_frame(
    daily: pl.DataFrame,
    *,
    fill_missing_days: float | None = 0.0,
    **params: float | int | str | None,
) -> pl.DataFrame:
    """Shifts of every (tenant, series_name) in a long frame with columns tenant, series_name,
    day (Date) and value. Days missing inside a series' range are filled with
    ``fill_missing_days`` (0.0: a day without ledger rows used no GPUs; None: unknown).

    Returns one row per shift with SHIFTS_SCHEMA's columns; relative_change is null when the
    level before is 0."""
    missing = {"tenant", "series_name", "day", "value"} - set(daily.columns)
    if missing:
        raise ShiftInputError(
            f"daily series frame lacks column(s) {sorted(missing)}; it needs tenant, "
            "series_name, day, value"
        )
    if daily.schema["day"] != pl.Date:
        raise ShiftInputError(f"column 'day' must be pl.Date, got {daily.schema['day']}")
    rows: list[dict[str, object]] = []
    ordered = daily.sort("tenant", "series_name", "day")
    for (tenant, series_name), group in ordered.group_by(
        ["tenant", "series_name"], maintain_order=True
    ):
        days: list[date] = group["day"].to_list()
        if len(set(days)) != len(days):
            raise ShiftInputError(
                f"tenant {tenant!r}, series {series_name!r}: more than one value for a day; "
                "aggregate to one value per day first"
            )
        by_day = dict(zip(days, group["value"].cast(pl.Float64).to_list(), strict=True))
        span = (days[-1] - days[0]).days + 1
        all_days = [days[0] + timedelta(days=i) for i in range(span)]
        fill = math.nan if fill_missing_days is None else fill_missing_days
        values = [
            fill if d not in by_day else (math.nan if by_day[d] is None else by_day[d])
            for d in all_days
        ]
        for s in detect_shifts(values, all_days, **params):  # type: ignore[arg-type]
            rows.append(
                {
                    "tenant": tenant,
                    "series_name": series_name,
                    "change_date": s.change_date,
                    "level_before": s.level_before,
                    "level_after": s.level_after,
                    "relative_change": (
                        (s.level_after - s.level_before) / abs(s.level_before)
                        if s.level_before != 0
                        else None
                    ),
                    "confidence": s.confidence,
                    "confirmed": s.confirmed,
                    "days_at_new_level": s.days_at_new_level,
                }
            )
    return pl.DataFrame(rows, schema=SHIFTS_SCHEMA)
