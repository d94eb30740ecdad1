"""Usage-shift detection on synthetic daily series with known shifts, spikes and seasonality."""

import itertools
import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from models.planning import shifts
from models.planning.shifts import (
    ShiftInputError,
    change_points,
    detect_shifts,
    detect_shifts_frame,
)

START = date(2026, 3, 1)


def days(n, start=START):
    return [start + timedelta(days=i) for i in range(n)]


def step_series(n, at, before=2.0, after=6.0, noise=0.4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.where(np.arange(n) < at, before, after) + rng.normal(0, noise, n)
    return y


@pytest.mark.parametrize("seed", range(5))
def test_finds_a_step_on_its_day_with_both_levels(seed):
    y = step_series(30, at=12, seed=seed)
    found = detect_shifts(y, days(30))
    assert len(found) == 1
    shift = found[0]
    assert shift.change_date == START + timedelta(days=12)
    # Medians of 7 noisy days (sd 0.4) sit well within 0.5 of the true levels.
    assert shift.level_before == pytest.approx(2.0, abs=0.5)
    assert shift.level_after == pytest.approx(6.0, abs=0.5)
    assert shift.confirmed
    assert shift.days_at_new_level == 18
    assert 0.99 < shift.confidence <= 1.0


@pytest.mark.parametrize("seed", range(5))
def test_ignores_a_one_day_spike(seed):
    rng = np.random.default_rng(seed)
    y = 2.0 + rng.normal(0, 0.4, 30)
    y[15] = 20.0
    assert detect_shifts(y, days(30)) == []


def test_ignores_a_one_day_drop_to_zero_on_a_flat_series():
    y = np.full(40, 8.0)
    y[20] = 0.0
    assert detect_shifts(y, days(40)) == []


@pytest.mark.parametrize("seed", range(5))
def test_confirmation_waits_for_confirm_days_at_the_new_level(seed):
    # Two days at the new level: at most a pending shift; the third day confirms it.
    full = step_series(15, at=12, seed=seed)
    early = detect_shifts(full[:14], days(14), confirm_days=3)
    assert not any(s.confirmed for s in early)
    confirmed = detect_shifts(full, days(15), confirm_days=3)
    assert [(s.change_date, s.confirmed) for s in confirmed] == [(START + timedelta(days=12), True)]
    # A longer confirmation delay keeps the same shift pending.
    assert not any(s.confirmed for s in detect_shifts(full, days(15), confirm_days=5))


def test_a_pending_spike_at_the_end_is_never_confirmed():
    y = np.full(30, 3.0) + np.random.default_rng(1).normal(0, 0.2, 30)
    y[-2:] = 9.0
    found = detect_shifts(y, days(30))
    assert all(not s.confirmed for s in found)


@pytest.mark.parametrize("seed", range(10))
def test_no_shift_on_steady_noisy_series_with_weekly_seasonality(seed):
    rng = np.random.default_rng(seed)
    t = np.arange(120)
    y = 8.0 + 2.0 * ((t % 7) < 5) + rng.normal(0, 0.5, 120)
    assert detect_shifts(y, days(120)) == []


@pytest.mark.parametrize("seed", range(5))
def test_steady_growth_is_one_trend_not_a_staircase(seed):
    rng = np.random.default_rng(seed)
    t = np.arange(120)
    y = 5.0 + 0.05 * t + 2.0 * ((t % 7) < 5) + rng.normal(0, 0.5, 120)
    assert detect_shifts(y, days(120)) == []


def test_a_shift_on_top_of_weekly_seasonality_is_found():
    rng = np.random.default_rng(3)
    t = np.arange(90)
    y = 8.0 + 2.0 * ((t % 7) < 5) + np.where(t >= 60, 6.0, 0.0) + rng.normal(0, 0.5, 90)
    found = detect_shifts(y, days(90))
    assert len(found) == 1
    assert abs((found[0].change_date - (START + timedelta(days=60))).days) <= 1
    assert found[0].confirmed


def _brute_force(z, penalty, min_segment, model):
    cost = shifts._SegmentCost(z, model, slope_penalty=penalty / 2)
    n = z.shape[0]

    def c(a, b):
        return float(cost(np.array([a]), np.array([b]))[0])

    best, best_cps = math.inf, None
    for k in range(n):
        for cps in itertools.combinations(range(1, n), k):
            bounds = [0, *cps, n]
            if min(b - a for a, b in itertools.pairwise(bounds)) < min_segment:
                continue
            total = sum(c(a, b) for a, b in itertools.pairwise(bounds)) + penalty * k
            if total < best - 1e-9:
                best, best_cps = total, list(cps)
    return best_cps


@pytest.mark.parametrize("model", ["mixed", "linear", "mean"])
def test_segmentation_is_the_exact_optimum(model):
    rng = np.random.default_rng(7)
    for _ in range(5):
        z = rng.normal(0, 1, (11, 1)) + np.repeat(rng.normal(0, 2, 3), [4, 4, 3])[:, None]
        for penalty in (0.5, 2.0, 6.0):
            assert shifts._segment(z, penalty, 2, model) == _brute_force(z, penalty, 2, model)


def test_change_points_handles_missing_values_and_several_dimensions():
    y = np.r_[np.zeros(40), np.full(40, 5.0)] + np.random.default_rng(0).normal(0, 0.3, 80)
    two = np.column_stack([y, -y])
    two[[5, 50], 0] = np.nan
    assert change_points(two) == [40]


def test_input_errors_say_what_is_wrong():
    with pytest.raises(ShiftInputError, match="3 values but 2 dates"):
        detect_shifts([1.0, 2.0, 3.0], days(2))
    gap = [START, START + timedelta(days=2)]
    with pytest.raises(ShiftInputError, match=r"consecutive days.*index 1"):
        detect_shifts([1.0, 2.0], gap)
    with pytest.raises(ShiftInputError, match="penalty_factor must be > 0"):
        change_points([1.0, 2.0], penalty_factor=0)


def test_short_or_empty_series_have_no_shifts():
    assert detect_shifts([], []) == []
    assert detect_shifts([1.0, 5.0, 5.0], days(3)) == []
    assert detect_shifts([math.nan] * 10, days(10)) == []


def test_frame_helper_reports_shifts_per_tenant_and_series():
    n = 40
    shifted = step_series(n, at=25, before=10.0, after=30.0, noise=1.0, seed=4)
    steady = 10.0 + np.random.default_rng(5).normal(0, 1.0, n)
    rows = []
    for i, d in enumerate(days(n)):
        rows.append(("acme", "gpu_hours_premium", d, float(shifted[i])))
        if i != 10:  # a day without ledger rows: filled with 0, then despiked as a one-day drop
            rows.append(("zen", "gpu_hours_premium", d, float(steady[i])))
    frame = pl.DataFrame(
        rows, schema=["tenant", "series_name", "day", "value"], orient="row"
    ).sample(fraction=1.0, shuffle=True, seed=1)
    result = detect_shifts_frame(frame)
    assert result.schema == pl.Schema(shifts.SHIFTS_SCHEMA)
    assert result.height == 1
    row = result.row(0, named=True)
    assert (row["tenant"], row["series_name"]) == ("acme", "gpu_hours_premium")
    assert row["change_date"] == START + timedelta(days=25)
    assert row["confirmed"] is True
    # 10 -> 30 is +200 %; medians of noisy days land near it.
    assert row["relative_change"] == pytest.approx(2.0, abs=0.3)


def test_frame_helper_rejects_bad_frames():
    with pytest.raises(ShiftInputError, match="lacks column"):
        detect_shifts_frame(pl.DataFrame({"tenant": ["a"]}))
    dup = pl.DataFrame(
        {"tenant": ["a", "a"], "series_name": ["s", "s"], "day": [START, START], "value": [1, 2]}
    )
    with pytest.raises(ShiftInputError, match="more than one value for a day"):
        detect_shifts_frame(dup)


def test_frame_helper_on_empty_frame():
    empty = pl.DataFrame(
        schema={"tenant": pl.String, "series_name": pl.String, "day": pl.Date, "value": pl.Float64}
    )
    assert detect_shifts_frame(empty).height == 0
