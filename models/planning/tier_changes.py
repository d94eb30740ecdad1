"""Tier-change (plan) recommendations from confirmed usage shifts (DESIGN.md, "Usage shifts and
tier changes").

A tenant's daily series (`daily_series`): billable GPU-hours per hardware tier under its metering
basis, peak concurrent GPUs, and model-size mix (the share of its GPU-hours on large and xlarge
models). `detect_usage_shifts` runs the shift detector (models.planning.shifts) on them.

From the shifts and recent daily usage, next month is projected per hardware tier and size class:
a tier whose GPU-hours shifted (confirmed) is projected at the level after its latest shift, any
other tier at the median of its last `level_window_days` days; the tier's level is split across
size classes by their shares since that shift (or in those days). The projection is spread evenly
over the month's hours and priced by the real pricing engine under every plan of the rate card,
the tenant's reservations kept and prepaid credit left out (credit lowers every plan's bill
alike, so it cannot change which plan is cheaper).

A recommendation needs a confirmed shift in a series that moves the bill (GPU-hours of a tier, or
the size mix): without one the tenant's usage is what its plan was chosen for, so steady tenants
never get one. Then, with `P` the projected monthly GPU-hours:
- rule `out_of_range`: P is outside the current plan's `usage_range_gpu_hours` [low, high); the
  recommendation is the cheapest plan whose range holds P (the cheapest plan of all if none does);
- rule `cheaper`: P is in range but another plan's projected bill is lower; the recommendation is
  the cheapest plan. Plans are compared on price alone: a plan's range says what it is meant for,
  the bill says what it costs, and the evidence shows both.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl

from models.billing.pricing import Invoice, UsageHour, price_invoice, quantity
from models.billing.rate_cards import RateCard, Tenant, month_bounds
from models.ledger.usage import RESERVED_TENANTS
from models.planning.shifts import SHIFTS_SCHEMA, detect_shifts_frame

GPU_HOURS_SERIES = "gpu_hours"
"""Series `gpu_hours[<tier>]`: the tenant's billable GPU-hours of one hardware tier per day."""
PEAK_SERIES = "peak_gpus"
"""The most GPU-equivalents the tenant held at once in the day, all tiers together."""
LARGE_SHARE_SERIES = "large_share"
"""Share of the day's GPU-hours on large and xlarge models (null on a day without usage)."""
LARGE_SIZE_CLASSES = ("large", "xlarge")

DEFAULT_LEVEL_WINDOW_DAYS = 7
HOUR = timedelta(hours=1)

USAGE_COLUMNS = ("tenant", "day", "hardware_tier", "size_class", "gpu_hours")
PEAK_COLUMNS = ("tenant", "day", "peak_gpus")

Rule = str
OUT_OF_RANGE: Rule = "out_of_range"
CHEAPER: Rule = "cheaper"

TIER_CHANGE_SCHEMA: dict[str, pl.DataType] = {
    "tenant": pl.String(),
    "as_of": pl.Date(),
    "period": pl.String(),
    "current_plan": pl.String(),
    "recommended_plan": pl.String(),
    "rule": pl.String(),
    "change_date": pl.Date(),
    "series_name": pl.String(),
    "level_before": pl.Float64(),
    "level_after": pl.Float64(),
    "confidence": pl.Float64(),
    "projected_gpu_hours": pl.Decimal(18, 6),
    "projected_usage": pl.String(),
    "projected_bills": pl.String(),
    "current_plan_total": pl.Decimal(18, 2),
    "recommended_plan_total": pl.Decimal(18, 2),
    "currency": pl.String(),
    "rate_card_version": pl.String(),
}
"""`projected_usage`: JSON of "tier/size_class" -> projected monthly GPU-hours (decimal string);
`projected_bills`: JSON of plan -> projected invoice total (decimal string); levels are
GPU-hours per day (or GPUs, or a share, for the other series)."""


def gpu_hours_series(tier: str) -> str:
    return f"{GPU_HOURS_SERIES}[{tier}]"


def _tier_of_series(series_name: str) -> str | None:
    prefix = f"{GPU_HOURS_SERIES}["
    if series_name.startswith(prefix) and series_name.endswith("]"):
        return series_name[len(prefix):-1]
    return None


def _check_columns(frame: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} frame lacks column(s) {missing}; it needs {list(columns)}")


def daily_series(usage: pl.DataFrame, peaks: pl.DataFrame, as_of: date) -> pl.DataFrame:
    """Long frame (tenant, series_name, day, value) of every tenant's daily series.

    `usage` has USAGE_COLUMNS (GPU-hours under the tenant's basis), `peaks` PEAK_COLUMNS. Each
    series runs from its first day up to `as_of`: a tier the tenant stopped using reads 0 after
    that, which is the shift we want to see. Reserved tenants (`__idle__`, ...) are left out."""
    _check_columns(usage, USAGE_COLUMNS, "usage")
    _check_columns(peaks, PEAK_COLUMNS, "peaks")
    usage = usage.filter(~pl.col("tenant").is_in(list(RESERVED_TENANTS)) & (pl.col("day") <= as_of))
    peaks = peaks.filter(~pl.col("tenant").is_in(list(RESERVED_TENANTS)) & (pl.col("day") <= as_of))
    hours = pl.col("gpu_hours").cast(pl.Float64)
    per_tier = usage.group_by("tenant", "hardware_tier", "day").agg(hours.sum().alias("value"))
    tiers = per_tier.select(
        "tenant", "day", "value",
        pl.format("{}[{}]", pl.lit(GPU_HOURS_SERIES), "hardware_tier").alias("series_name"),
    )
    per_day = usage.group_by("tenant", "day").agg(
        hours.sum().alias("total"),
        hours.filter(pl.col("size_class").is_in(LARGE_SIZE_CLASSES)).sum().alias("large"),
    )
    share = per_day.select(
        "tenant", "day", pl.lit(LARGE_SHARE_SERIES).alias("series_name"),
        pl.when(pl.col("total") > 0).then(pl.col("large") / pl.col("total")).alias("value"),
    )
    peak = peaks.group_by("tenant", "day").agg(pl.col("peak_gpus").cast(pl.Float64).max()
                                               .alias("value"))
    peak = peak.with_columns(pl.lit(PEAK_SERIES).alias("series_name"))
    columns = ["tenant", "series_name", "day", "value"]
    long = pl.concat([f.select(columns) for f in (tiers, share, peak)])
    if long.is_empty():
        return long
    # Dense days from each series' first day to as_of; the share stays unknown on a day without
    # usage, the amounts are 0.
    firsts = long.group_by("tenant", "series_name").agg(pl.col("day").min().alias("first"))
    grid = firsts.with_columns(
        pl.date_ranges("first", pl.lit(as_of), interval="1d").alias("day")
    ).explode("day").drop("first")
    dense = grid.join(long, on=["tenant", "series_name", "day"], how="left")
    return dense.with_columns(
        pl.when(pl.col("series_name") == LARGE_SHARE_SERIES)
        .then(pl.col("value"))
        .otherwise(pl.col("value").fill_null(0.0))
        .alias("value")
    ).sort(columns[:3])


def detect_usage_shifts(series: pl.DataFrame, **params: Any) -> pl.DataFrame:
    """Shifts (SHIFTS_SCHEMA) of every series of `daily_series`; `params` go to detect_shifts.

    Days without a value are unknown (the share of a day without usage), interpolated over."""
    if series.is_empty():
        return pl.DataFrame(schema=SHIFTS_SCHEMA)
    return detect_shifts_frame(series, fill_missing_days=None, **params)


@dataclass(frozen=True)
class Projection:
    period: str
    gpu_hours_per_hour: Mapping[tuple[str, str], Decimal]
    """(hardware tier, size class) -> GPU-hours in every hour of the period."""
    hours: int

    def usage(self) -> list[UsageHour]:
        start, _ = month_bounds(self.period)
        return [
            UsageHour(start + i * HOUR, tier, size, per_hour)
            for i in range(self.hours)
            for (tier, size), per_hour in sorted(self.gpu_hours_per_hour.items())
            if per_hour > 0
        ]

    def monthly(self) -> dict[tuple[str, str], Decimal]:
        return {key: per_hour * self.hours for key, per_hour in self.gpu_hours_per_hour.items()}

    @property
    def total_gpu_hours(self) -> Decimal:
        return sum(self.monthly().values(), Decimal(0))


def next_period(as_of: date) -> str:
    first = (as_of.replace(day=1) + timedelta(days=32)).replace(day=1)
    return f"{first:%Y-%m}"


def _decimal(value: float) -> Decimal:
    if not math.isfinite(value):
        raise ValueError(f"usage level must be a finite number, got {value}")
    return quantity(Decimal(repr(max(value, 0.0))))


def project_usage(
    usage: pl.DataFrame,
    shifts: pl.DataFrame,
    as_of: date,
    *,
    level_window_days: int = DEFAULT_LEVEL_WINDOW_DAYS,
) -> Projection:
    """Next month's usage of ONE tenant, per hardware tier and size class (module docstring).

    `usage`: the tenant's USAGE_COLUMNS rows up to `as_of`; `shifts`: its SHIFTS_SCHEMA rows."""
    _check_columns(usage, USAGE_COLUMNS, "usage")
    period = next_period(as_of)
    start, end = month_bounds(period)
    hours = (end - start) // HOUR
    usage = usage.filter(pl.col("day") <= as_of).with_columns(
        pl.col("gpu_hours").cast(pl.Float64))
    confirmed = shifts.filter(pl.col("confirmed") & (pl.col("change_date") <= as_of))
    per_hour: dict[tuple[str, str], Decimal] = {}
    for (tier,), rows in usage.group_by("hardware_tier", maintain_order=True):
        tier_shifts = confirmed.filter(pl.col("series_name") == gpu_hours_series(str(tier)))
        if tier_shifts.height:
            latest = tier_shifts.sort("change_date").row(-1, named=True)
            since: date = latest["change_date"]
            level = float(latest["level_after"])
        else:
            since = as_of - timedelta(days=level_window_days - 1)
            by_day = dict(rows.group_by("day").agg(pl.col("gpu_hours").sum()).iter_rows())
            days = [since + timedelta(days=i) for i in range(level_window_days)]
            level = statistics.median(float(by_day.get(d, 0.0)) for d in days)
        recent = rows.filter(pl.col("day") >= since).group_by("size_class").agg(
            pl.col("gpu_hours").sum())
        total = float(recent["gpu_hours"].sum()) if recent.height else 0.0
        if total <= 0 or level <= 0:
            continue
        for size, gpu_hours in recent.sort("size_class").iter_rows():
            per_hour[(str(tier), str(size))] = _decimal(level * gpu_hours / total / 24)
    return Projection(period, per_hour, hours)


def price_under_plans(tenant: Tenant, card: RateCard, projection: Projection
                      ) -> dict[str, Invoice]:
    """The projected invoice under every plan of `card`, reservations kept, credit left out."""
    usage = projection.usage()
    return {
        name: price_invoice(replace(tenant, plan=name), card, projection.period, usage,
                            credit_available=Decimal(0))
        for name in sorted(card.plans)
    }


def _in_range(card: RateCard, plan: str, gpu_hours: Decimal) -> bool:
    low, high = card.plans[plan].usage_range_gpu_hours
    return low <= gpu_hours and (high is None or gpu_hours < high)


@dataclass(frozen=True)
class TierChange:
    tenant: str
    as_of: date
    period: str
    current_plan: str
    recommended_plan: str
    rule: Rule
    change_date: date
    series_name: str
    level_before: float
    level_after: float
    confidence: float
    projected_gpu_hours: Decimal
    projected_usage: str
    projected_bills: str
    current_plan_total: Decimal
    recommended_plan_total: Decimal
    currency: str
    rate_card_version: str


def _moves_the_bill(series_name: str) -> bool:
    return series_name == LARGE_SHARE_SERIES or _tier_of_series(series_name) is not None


def recommend_tier_change(
    tenant: Tenant,
    card: RateCard,
    usage: pl.DataFrame,
    shifts: pl.DataFrame,
    as_of: date,
    *,
    level_window_days: int = DEFAULT_LEVEL_WINDOW_DAYS,
) -> TierChange | None:
    """The plan change for ONE tenant (its usage and shift rows), or None (module docstring)."""
    if tenant.plan not in card.plans:
        raise ValueError(f"tenant {tenant.name}: plan {tenant.plan!r} is not in rate card "
                         f"{card.version} ({card.source}); fix the tenants file")
    triggers = [
        s for s in shifts.filter(pl.col("confirmed") & (pl.col("change_date") <= as_of))
        .sort("change_date", "series_name").iter_rows(named=True)
        if _moves_the_bill(s["series_name"])
    ]
    if not triggers:
        return None
    evidence = triggers[-1]
    projection = project_usage(usage, shifts, as_of, level_window_days=level_window_days)
    projected = projection.total_gpu_hours
    bills = {plan: invoice.total for plan, invoice in price_under_plans(tenant, card,
                                                                         projection).items()}
    current = tenant.plan

    def cheapest(plans: list[str]) -> str:
        return min(plans, key=lambda p: (bills[p], p))

    if not _in_range(card, current, projected):
        fitting = [p for p in bills if _in_range(card, p, projected)]
        recommended, rule = cheapest(fitting or list(bills)), OUT_OF_RANGE
    else:
        recommended, rule = cheapest(list(bills)), CHEAPER
        if bills[recommended] >= bills[current]:
            return None
    if recommended == current:
        return None
    return TierChange(
        tenant=tenant.name,
        as_of=as_of,
        period=projection.period,
        current_plan=current,
        recommended_plan=recommended,
        rule=rule,
        change_date=evidence["change_date"],
        series_name=evidence["series_name"],
        level_before=evidence["level_before"],
        level_after=evidence["level_after"],
        confidence=evidence["confidence"],
        projected_gpu_hours=projected,
        projected_usage=json.dumps(
            {f"{t}/{s}": str(v) for (t, s), v in sorted(projection.monthly().items())}),
        projected_bills=json.dumps({p: str(v) for p, v in sorted(bills.items())}),
        current_plan_total=bills[current],
        recommended_plan_total=bills[recommended],
        currency=card.currency,
        rate_card_version=card.version,
    )


def recommend_tier_changes(
    tenants: Mapping[str, Tenant],
    card: RateCard,
    usage: pl.DataFrame,
    shifts: pl.DataFrame,
    as_of: date,
    *,
    level_window_days: int = DEFAULT_LEVEL_WINDOW_DAYS,
) -> pl.DataFrame:
    """TIER_CHANGE_SCHEMA rows for every tenant of `tenants` with a recommendation.

    `card` is the rate card in force next month (the month the projection is for)."""
    _check_columns(usage, USAGE_COLUMNS, "usage")
    rows = []
    for name, tenant in sorted(tenants.items()):
        if tenant.end is not None and tenant.end <= datetime.combine(as_of, datetime.min.time(),
                                                                      UTC):
            continue
        change = recommend_tier_change(
            tenant, card, usage.filter(pl.col("tenant") == name),
            shifts.filter(pl.col("tenant") == name), as_of,
            level_window_days=level_window_days,
        )
        if change is not None:
            rows.append(asdict(change))
    return pl.DataFrame(rows, schema=TIER_CHANGE_SCHEMA)
