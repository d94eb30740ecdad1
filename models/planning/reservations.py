"""Capacity-reservation recommendations from decayed hourly GPU demand (DESIGN.md, "Capacity
reservations and the scheduler").

Demand of one tenant x hardware tier (x MIG profile) is a series of hourly GPU-equivalents: the
GPU-hours it used in each hour, i.e. its mean concurrent GPUs, which is exactly what a bill
covers hour by hour (`min(usage, R)` covered, the rest on-demand). Hours are weighted by age with
an exponential half-life, as the Kubernetes VPA recommender weights its decaying histograms.

Reserving the k-th unit (a whole GPU, or one MIG instance of the row's profile) costs the
reserved price every hour and saves the on-demand price for the part of that unit used. Its
expected use is the weighted mean of `clamp(d - (k - 1), 0, 1)`, which for whole-number demand
is exactly P(demand >= k), and for fractional hourly demand is the exact marginal saving under
hourly coverage. That tail is non-increasing in k, so the expected cost is convex in k and the
largest k whose tail reaches reserved/on-demand price is the cost-optimal reservation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import numpy.typing as npt
import polars as pl

from models.billing.pricing import on_demand_price
from models.billing.rate_cards import RateCard, SlaClass, Tenant
from models.ledger.tiers import mig_gpu_equivalents

FloatArray = npt.NDArray[np.float64]

MONTH_HOURS = 730
"""Expected monthly figures are over 730 hours (365 x 24 / 12), the cloud providers' month."""

DEFAULT_HALF_LIFE_HOURS = 168.0
"""One week. VPA halves CPU samples every 24 h because a pod's request can change within the
hour; a reservation is a commitment for a month, so it should follow the level of the last
weeks, with the weekly cycle (weekday training runs, quiet weekends) inside one half-life, not
the last day or two. See docs/reservations.md for the backtest at other half-lives."""

DEFAULT_LOOKBACK_HOURS = 28 * 24
"""Four weeks: samples older than four half-lives carry under 7% of the weight of new ones."""

LATENCY_QUANTILE = 0.95
POOL_QUANTILE = 0.95

CENT = Decimal("0.01")
QUANTITY = Decimal("0.000001")
"""DESIGN.md: quantities are kept at 6 decimals of a GPU-hour, amounts rounded to the cent."""

# Demand divided by a MIG instance's share (1/7, 3/7) is not exact in binary; rounding at a
# nanounit keeps 3 instances of demand from counting as 3.0000000001 and asking for a fourth.
_UNIT_DECIMALS = 9

DEMAND_COLUMNS = ("tenant", "hardware_tier", "mig_profile", "hour", "demand_gpus")


@dataclass(frozen=True)
class TierPrices:
    """Prices of one hardware tier per GPU-hour, in the rate card's currency."""

    on_demand_per_gpu_hour: Decimal
    reserved_per_gpu_hour: Decimal

    def __post_init__(self) -> None:
        if not self.on_demand_per_gpu_hour > 0:
            raise ValueError(f"on-demand price must be positive, got {self.on_demand_per_gpu_hour}")
        if not self.reserved_per_gpu_hour > 0:
            raise ValueError(f"reserved price must be positive, got {self.reserved_per_gpu_hour}")

    @property
    def break_even(self) -> Decimal:
        """Share of hours a reserved unit must be used to pay for itself."""
        return self.reserved_per_gpu_hour / self.on_demand_per_gpu_hour


def decay_weights(age_hours: npt.ArrayLike, half_life_hours: float) -> FloatArray:
    """Weight of a sample `age_hours` old: 1 now, 1/2 one half-life ago."""
    if not half_life_hours > 0:
        raise ValueError(f"half-life must be positive hours, got {half_life_hours}")
    return np.asarray(np.exp2(-np.asarray(age_hours, dtype=np.float64) / half_life_hours))


@dataclass(frozen=True)
class DemandDistribution:
    """Hourly demand in reservation units with normalised weights (the decayed histogram, kept
    as its samples: a month of hours is small, and exact samples need no bucket rounding)."""

    units: FloatArray
    weights: FloatArray

    @classmethod
    def of(cls, units: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> DemandDistribution:
        values = np.asarray(
            np.round(np.asarray(units, dtype=np.float64), _UNIT_DECIMALS), dtype=np.float64
        )
        w = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
        if values.ndim != 1 or values.shape != w.shape or values.size == 0:
            raise ValueError("demand and weights must be non-empty 1-d arrays of one length")
        if not (np.all(np.isfinite(values)) and np.all(values >= 0)):
            raise ValueError("demand must be finite and non-negative")
        if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
            raise ValueError("weights must be finite, non-negative and not all zero")
        return cls(values, np.asarray(w / w.sum(), dtype=np.float64))

    def tail(self, k: int) -> float:
        """Expected use of the k-th reserved unit; P(demand >= k) when demand is whole."""
        return float(np.dot(self.weights, np.clip(self.units - (k - 1), 0.0, 1.0)))

    def quantile(self, q: float) -> float:
        """Smallest demand d with weighted P(demand <= d) >= q."""
        order = np.argsort(self.units, kind="stable")
        cumulative = np.cumsum(self.weights[order])
        index = int(np.searchsorted(cumulative, q - 1e-12, side="left"))
        return float(self.units[order][min(index, self.units.size - 1)])

    def expected_overflow(self, k: int) -> float:
        """Expected demand above k units per hour (goes to on-demand)."""
        return float(np.dot(self.weights, np.maximum(self.units - k, 0.0)))

    def overflow_probability(self, k: int) -> float:
        """Share of hours with demand above k units."""
        return float(self.weights[self.units > k].sum())


def cost_optimal_reservation(distribution: DemandDistribution, break_even: Decimal) -> int:
    """Largest k with P(demand >= k) >= reserved/on-demand price; 0 if no unit pays off."""
    # Weights summed in binary land a hair off exact shares (ten 0.1s make 0.9999999999999999);
    # a tail equal to the ratio must still count as reaching it.
    ratio = float(break_even) - 1e-12
    k = 0
    # The tail is non-increasing, so the first k that falls short ends the search.
    while k < math.ceil(float(distribution.units.max())) and distribution.tail(k + 1) >= ratio:
        k += 1
    return k


def recommend_units(
    distribution: DemandDistribution, prices: TierPrices, sla_class: SlaClass
) -> int:
    k = cost_optimal_reservation(distribution, prices.break_even)
    if sla_class is SlaClass.LATENCY_SENSITIVE:
        k = max(k, math.ceil(distribution.quantile(LATENCY_QUANTILE)))
    return k


@dataclass(frozen=True)
class ExpectedCost:
    reserved_gpu_hours: Decimal
    overflow_gpu_hours: Decimal
    reserved_amount: Decimal
    on_demand_amount: Decimal

    @property
    def total(self) -> Decimal:
        return self.reserved_amount + self.on_demand_amount


def _quantity(value: float | Decimal) -> Decimal:
    return Decimal(value).quantize(QUANTITY, rounding=ROUND_HALF_UP)


def cost_of(
    reserved_gpu_hours: float | Decimal, overflow_gpu_hours: float | Decimal, prices: TierPrices
) -> ExpectedCost:
    """Reserved GPU-hours at the reserved price plus overflow at on-demand, each line rounded
    half-up to the cent after its quantity is kept at 6 decimals (DESIGN.md, Money)."""
    reserved = _quantity(reserved_gpu_hours)
    overflow = _quantity(overflow_gpu_hours)
    return ExpectedCost(
        reserved,
        overflow,
        (reserved * prices.reserved_per_gpu_hour).quantize(CENT, rounding=ROUND_HALF_UP),
        (overflow * prices.on_demand_per_gpu_hour).quantize(CENT, rounding=ROUND_HALF_UP),
    )


def expected_cost(
    distribution: DemandDistribution,
    reserved_units: int,
    unit_gpus: Decimal,
    prices: TierPrices,
    hours: int = MONTH_HOURS,
) -> ExpectedCost:
    """Expected cost over `hours` of reserving `reserved_units` units of `unit_gpus` GPUs each."""
    overflow = Decimal(distribution.expected_overflow(reserved_units) * hours) * unit_gpus
    return cost_of(reserved_units * hours * unit_gpus, overflow, prices)


def unit_gpus(mig_profile: str | None) -> Decimal:
    """GPU-equivalents of one reservation unit: a whole GPU, or one MIG instance (g/7)."""
    if mig_profile is None:
        return Decimal(1)
    share = mig_gpu_equivalents(mig_profile)
    return Decimal(share.numerator) / Decimal(share.denominator)


def _hour_index(column: str) -> pl.Expr:
    return (pl.col(column).dt.epoch("s") // 3600).cast(pl.Int64)


def _check_demand(demand: pl.DataFrame) -> None:
    problems = [f"missing column {c!r}" for c in DEMAND_COLUMNS if c not in demand.columns]
    if not problems:
        dtype = demand.schema["hour"]
        if not (isinstance(dtype, pl.Datetime) and dtype.time_zone == "UTC"):
            problems.append(f"column 'hour' must be a UTC datetime, got {dtype}")
        for column in ("tenant", "hardware_tier", "hour", "demand_gpus"):
            nulls = demand[column].null_count()
            if nulls:
                problems.append(f"column {column!r} has {nulls} null rows")
        bad = demand.with_row_index("row").filter(
            ~pl.col("demand_gpus").cast(pl.Float64).is_finite() | (pl.col("demand_gpus") < 0)
        )
        if bad.height:
            problems.append(
                f"demand_gpus must be finite and >= 0; rows {bad['row'].head(5).to_list()} are not"
            )
    if problems:
        raise ValueError("demand frame: " + "; ".join(problems))


@dataclass(frozen=True)
class _Series:
    tenant: str
    hardware_tier: str
    mig_profile: str | None
    first_hour: int
    units: FloatArray
    """Dense hourly demand in units from `first_hour` up to the hour before `as_of`."""


def _dense_series(demand: pl.DataFrame, as_of_hour: int, lookback_hours: int) -> list[_Series]:
    """Hours of the window without a row are zero demand, from the series' first hour on (a
    tenant that started last week is not diluted by three weeks of not yet existing)."""
    start = as_of_hour - lookback_hours
    hourly = (
        demand.select(
            "tenant",
            "hardware_tier",
            "mig_profile",
            _hour_index("hour").alias("h"),
            pl.col("demand_gpus").cast(pl.Float64),
        )
        .filter((pl.col("h") >= start) & (pl.col("h") < as_of_hour))
        # Several rows of one key and hour (models, pods) add up to the key's demand.
        .group_by("tenant", "hardware_tier", "mig_profile", "h")
        .agg(pl.col("demand_gpus").sum())
        .sort("tenant", "hardware_tier", "mig_profile", "h", nulls_last=False)
    )
    series = []
    for (tenant, tier, profile), group in hourly.group_by(
        "tenant", "hardware_tier", "mig_profile", maintain_order=True
    ):
        hours = group["h"].to_numpy()
        first = int(hours.min())
        dense = np.zeros(as_of_hour - first, dtype=np.float64)
        dense[hours - first] = group["demand_gpus"].to_numpy() / float(unit_gpus(profile))
        series.append(_Series(str(tenant), str(tier), profile, first, dense))
    return series


def _distribution(series: _Series, as_of_hour: int, half_life_hours: float) -> DemandDistribution:
    ages = as_of_hour - 1 - (series.first_hour + np.arange(series.units.size))
    return DemandDistribution.of(series.units, decay_weights(ages, half_life_hours))


def _as_of_hour(demand: pl.DataFrame, as_of: datetime | None) -> int:
    if as_of is None:
        last = demand.select(_hour_index("hour").max()).item()
        if last is None:
            raise ValueError("demand frame is empty: no hours to recommend from")
        return int(last) + 1
    if as_of.tzinfo is None:
        raise ValueError(f"as_of must be timezone-aware (UTC), got {as_of.isoformat()}")
    return math.ceil(as_of.timestamp() / 3600)


ReservationKey = tuple[str, str, str | None]
"""(tenant, hardware_tier, mig_profile or None)."""

RECOMMENDATION_SCHEMA: dict[str, pl.DataType] = {
    "tenant": pl.String(),
    "hardware_tier": pl.String(),
    "mig_profile": pl.String(),
    "sla_class": pl.String(),
    "unit_gpu_equivalents": pl.Float64(),
    "recommended_gpus": pl.Int64(),
    "cost_optimal_gpus": pl.Int64(),
    "p95_demand_gpus": pl.Float64(),
    "current_reserved_gpus": pl.Int64(),
    "break_even_utilization": pl.Float64(),
    "currency": pl.String(),
    "expected_monthly_cost_recommended": pl.Decimal(18, 2),
    "expected_monthly_cost_current": pl.Decimal(18, 2),
    "expected_monthly_cost_none": pl.Decimal(18, 2),
    "expected_overflow_gpu_hours_per_month": pl.Decimal(18, 6),
    "expected_overflow_hours_per_month": pl.Float64(),
    "month_hours": pl.Int64(),
    "hours_observed": pl.Int64(),
    "half_life_hours": pl.Float64(),
    "as_of": pl.Datetime("us", "UTC"),
}
"""`*_gpus` count reservation units: whole GPUs, or MIG instances of the row's profile (what a
ResourceQuota's `requests.nvidia.com/mig-<profile>` counts); `p95_demand_gpus` likewise."""


def recommend_reservations(
    demand: pl.DataFrame,
    prices: Mapping[str, TierPrices],
    *,
    current_reserved: Mapping[ReservationKey, int] | None = None,
    sla_classes: Mapping[str, str] | None = None,
    as_of: datetime | None = None,
    half_life_hours: float = DEFAULT_HALF_LIFE_HOURS,
    lookback_hours: int = DEFAULT_LOOKBACK_HOURS,
    currency: str = "USD",
) -> pl.DataFrame:
    """One recommendation per tenant x hardware tier x MIG profile seen in the look-back window.

    `demand` has DEMAND_COLUMNS: `hour` (UTC, hour start), `demand_gpus` in GPU-equivalents (the
    ledger's allocated GPU-hours of that hour; a MIG row's 1g.10gb instance is 1/7). `prices` by
    hardware tier; `current_reserved` in units (GPUs or MIG instances), absent = 0; tenants
    absent from `sla_classes` are standard. Expected costs are over a MONTH_HOURS month."""
    _check_demand(demand)
    as_of_hour = _as_of_hour(demand, as_of)
    current_reserved = current_reserved or {}
    sla_classes = sla_classes or {}
    problems = [
        f"no prices for hardware tier {tier!r}"
        for tier in sorted(set(demand["hardware_tier"].unique().to_list()) - set(prices))
    ]
    valid = {c.value for c in SlaClass}
    problems += [
        f"tenant {tenant!r}: sla_class {sla!r} is not one of {sorted(valid)}"
        for tenant, sla in sorted(sla_classes.items())
        if sla not in valid
    ]
    problems += [
        f"current reservation {key}: must be a whole number >= 0, got {count!r}"
        for key, count in current_reserved.items()
        if not (isinstance(count, int) and count >= 0)
    ]
    if problems:
        raise ValueError("; ".join(problems))

    rows = []
    for series in _dense_series(demand, as_of_hour, lookback_hours):
        distribution = _distribution(series, as_of_hour, half_life_hours)
        tier_prices = prices[series.hardware_tier]
        sla = SlaClass(sla_classes.get(series.tenant, SlaClass.STANDARD))
        unit = unit_gpus(series.mig_profile)
        key = (series.tenant, series.hardware_tier, series.mig_profile)
        current = current_reserved.get(key, 0)
        recommended = recommend_units(distribution, tier_prices, sla)
        with_recommended = expected_cost(distribution, recommended, unit, tier_prices)
        rows.append(
            {
                "tenant": series.tenant,
                "hardware_tier": series.hardware_tier,
                "mig_profile": series.mig_profile,
                "sla_class": sla.value,
                "unit_gpu_equivalents": float(unit),
                "recommended_gpus": recommended,
                "cost_optimal_gpus": cost_optimal_reservation(distribution, tier_prices.break_even),
                "p95_demand_gpus": distribution.quantile(LATENCY_QUANTILE),
                "current_reserved_gpus": current,
                "break_even_utilization": float(tier_prices.break_even),
                "currency": currency,
                "expected_monthly_cost_recommended": with_recommended.total,
                "expected_monthly_cost_current": expected_cost(
                    distribution, current, unit, tier_prices
                ).total,
                "expected_monthly_cost_none": expected_cost(
                    distribution, 0, unit, tier_prices
                ).total,
                "expected_overflow_gpu_hours_per_month": with_recommended.overflow_gpu_hours,
                "expected_overflow_hours_per_month": distribution.overflow_probability(recommended)
                * MONTH_HOURS,
                "month_hours": MONTH_HOURS,
                "hours_observed": series.units.size,
                "half_life_hours": half_life_hours,
                "as_of": datetime.fromtimestamp(as_of_hour * 3600, tz=UTC),
            }
        )
    return pl.DataFrame(rows, schema=RECOMMENDATION_SCHEMA, orient="row")


@dataclass(frozen=True)
class PoolSize:
    pool_units: int
    """Quantile of the hourly SUM of tenants' overflow, rounded up."""
    sum_of_individual_units: int
    """Sum over tenants of each one's overflow quantile, rounded up: the pool if bursts
    always coincided."""


def size_overflow_pool(
    overflow_units: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
    quantile: float = POOL_QUANTILE,
) -> PoolSize:
    """`overflow_units`: hours x tenants of demand above each tenant's reservation."""
    matrix = np.asarray(overflow_units, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError("overflow must be a 2-d array of hours x tenants")
    summed = DemandDistribution.of(matrix.sum(axis=1), weights).quantile(quantile)
    individual = sum(
        math.ceil(DemandDistribution.of(matrix[:, i], weights).quantile(quantile))
        for i in range(matrix.shape[1])
    )
    return PoolSize(math.ceil(summed), individual)


def overflow_pools(
    demand: pl.DataFrame,
    reservations: pl.DataFrame,
    *,
    as_of: datetime | None = None,
    half_life_hours: float = DEFAULT_HALF_LIFE_HOURS,
    lookback_hours: int = DEFAULT_LOOKBACK_HOURS,
    quantile: float = POOL_QUANTILE,
) -> pl.DataFrame:
    """Shared on-demand pool per hardware tier x MIG profile, for the overflow above
    `reservations` (tenant, hardware_tier, mig_profile, recommended_gpus; missing keys reserve
    nothing), from the same decayed window as the recommendations."""
    _check_demand(demand)
    as_of_hour = _as_of_hour(demand, as_of)
    reserved: dict[ReservationKey, int] = {
        (r["tenant"], r["hardware_tier"], r["mig_profile"]): int(r["recommended_gpus"])
        for r in reservations.iter_rows(named=True)
    }
    groups: dict[tuple[str, str | None], list[_Series]] = {}
    for series in _dense_series(demand, as_of_hour, lookback_hours):
        groups.setdefault((series.hardware_tier, series.mig_profile), []).append(series)
    rows = []
    for (tier, profile), members in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1] or "")):
        first = min(s.first_hour for s in members)
        matrix = np.zeros((as_of_hour - first, len(members)))
        for i, s in enumerate(members):
            k = reserved.get((s.tenant, tier, profile), 0)
            matrix[s.first_hour - first :, i] = np.maximum(s.units - k, 0.0)
        ages = as_of_hour - 1 - (first + np.arange(matrix.shape[0]))
        size = size_overflow_pool(matrix, decay_weights(ages, half_life_hours), quantile)
        rows.append(
            {
                "hardware_tier": tier,
                "mig_profile": profile,
                "pool_gpus": size.pool_units,
                "sum_of_tenant_overflow_gpus": size.sum_of_individual_units,
                "quantile": quantile,
                "tenants": len(members),
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "hardware_tier": pl.String(),
            "mig_profile": pl.String(),
            "pool_gpus": pl.Int64(),
            "sum_of_tenant_overflow_gpus": pl.Int64(),
            "quantile": pl.Float64(),
            "tenants": pl.Int64(),
        },
        orient="row",
    )


@dataclass(frozen=True)
class TenantRecommendations:
    recommendations: pl.DataFrame
    """RECOMMENDATION_SCHEMA rows."""
    pools: pl.DataFrame | None
    """Overflow pools per tier and MIG profile (`overflow_pools`); None without demand."""
    unpriced_tiers: list[str]
    """Tiers skipped: the rate card has no reserved price for them."""
    unknown_tenants: list[str]
    """Tenants skipped: missing from the tenants file."""


def recommend_for_tenants(
    demand: pl.DataFrame,
    size_mix: Iterable[tuple[str, str, str, Decimal]],
    hours_observed: Mapping[tuple[str, str], int],
    tenants: Mapping[str, Tenant],
    card: RateCard,
    *,
    as_of: datetime,
    half_life_hours: float = DEFAULT_HALF_LIFE_HOURS,
    lookback_hours: int = DEFAULT_LOOKBACK_HOURS,
) -> TenantRecommendations:
    """Recommendations for every tenant of `demand` at its own prices, and the overflow pools.

    A tenant's on-demand price per tier is what its next GPU-hour costs: the band its month
    reaches (its GPU-hours in the window, `size_mix`, scaled to a month by `hours_observed`),
    at its size mix's mean multiplier, less its plan's discount. `current_reserved_gpus` are
    the tenant's reservations active at `as_of`."""
    unpriced = sorted({t.name for t in card.tiers if t.reserved_price is None})
    unknown = sorted(set(demand["tenant"].unique().to_list()) - set(tenants))
    demand = demand.filter(~pl.col("hardware_tier").is_in(unpriced)
                           & ~pl.col("tenant").is_in(unknown))
    hours: dict[tuple[str, str], Decimal] = {}
    weighted: dict[tuple[str, str], Decimal] = {}
    for tenant_name, tier, size, gpu_hours in size_mix:
        key = (tenant_name, tier)
        hours[key] = hours.get(key, Decimal(0)) + gpu_hours
        weighted[key] = weighted.get(key, Decimal(0)) + gpu_hours * card.multiplier(size)
    recommendations, series = [], []
    for (name,), rows in demand.group_by("tenant", maintain_order=True):
        tenant = tenants[str(name)]
        discount = card.plans[tenant.plan].discount_pct if tenant.plan in card.plans else 0
        prices = {}
        for tier in rows["hardware_tier"].unique().to_list():
            key = (tenant.name, tier)
            total = hours.get(key, Decimal(0))
            multiplier = weighted[key] / total if total else Decimal(1)
            monthly = total * MONTH_HOURS / max(hours_observed.get(key, 1), 1)
            reserved_price = card.tier(tier).reserved_price
            assert reserved_price is not None  # unpriced tiers were filtered out
            prices[tier] = TierPrices(on_demand_price(
                card, tier, monthly, multiplier, Decimal(discount)), reserved_price)
        current: dict[ReservationKey, int] = {
            (tenant.name, r.tier, None): math.ceil(r.gpus)
            for r in tenant.reservations
            if r.start <= as_of and (r.end is None or r.end > as_of)
        }
        recommendations.append(recommend_reservations(
            rows, prices, current_reserved=current,
            sla_classes={tenant.name: tenant.sla_class.value}, as_of=as_of,
            half_life_hours=half_life_hours, lookback_hours=lookback_hours,
            currency=card.currency,
        ))
        series.append(rows)
    recs = (pl.concat(recommendations) if recommendations
            else pl.DataFrame(schema=RECOMMENDATION_SCHEMA))
    pools = overflow_pools(
        pl.concat(series), recs, as_of=as_of, half_life_hours=half_life_hours,
        lookback_hours=lookback_hours,
    ) if series else None
    return TenantRecommendations(recs, pools, unpriced, unknown)
