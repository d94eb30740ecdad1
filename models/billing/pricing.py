"""The pricing engine: DESIGN.md's billing semantics, in decimal arithmetic end to end.

For one tenant and one calendar month, in this order: quantities per hour, hardware tier and
size class; hour-level reservation netting; billable units; bands; discount; base fee;
minimum-commitment true-up; credits. Every line is rounded half-up to the currency's minor unit
and the total is the sum of the rounded lines."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from models.billing.rate_cards import Band, ConfigError, PricingMode, RateCard, Tenant, month_bounds

QUANTITY = Decimal("0.000001")
"""Quantities are kept at 6 decimals of a GPU-hour (DESIGN.md, billing step 9)."""
ZERO = Decimal(0)
HOUR = timedelta(hours=1)


class LineKind(StrEnum):
    USAGE = "usage"
    BAND_FEE = "band_fee"
    RESERVATION = "reservation"
    DISCOUNT = "discount"
    BASE_FEE = "base_fee"
    TRUE_UP = "true_up"
    CREDIT = "credit"


@dataclass(frozen=True)
class UsageHour:
    """GPU-hours of one tenant in one hour, of one hardware tier and size class."""

    hour: datetime
    hardware_tier: str
    size_class: str
    gpu_hours: Decimal


@dataclass(frozen=True)
class InvoiceLine:
    kind: LineKind
    description: str
    hardware_tier: str | None
    size_class: str | None
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal


@dataclass(frozen=True)
class TierUsage:
    """What the usage lines were computed from, per hardware tier and size class."""

    hardware_tier: str
    size_class: str
    gpu_hours: Decimal
    covered_gpu_hours: Decimal
    overflow_gpu_hours: Decimal
    multiplier: Decimal
    billable_units: Decimal


@dataclass(frozen=True)
class Invoice:
    tenant: str
    plan: str
    period: str
    currency: str
    rate_card_version: str
    basis: str
    lines: tuple[InvoiceLine, ...]
    usage: tuple[TierUsage, ...]
    credit_available: Decimal
    credit_applied: Decimal
    active_fraction: Decimal
    total: Decimal = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total", sum((line.amount for line in self.lines), ZERO))


def money(value: Decimal, minor_unit: int) -> Decimal:
    """Round half-up (away from zero at the half) to the currency's minor unit."""
    return value.quantize(Decimal(1).scaleb(-minor_unit), rounding=ROUND_HALF_UP)


def quantity(value: Decimal) -> Decimal:
    return value.quantize(QUANTITY, rounding=ROUND_HALF_UP)


def active_hours(start: datetime, end: datetime | None, lo: datetime, hi: datetime) -> Decimal:
    """Hours of [start, end) inside [lo, hi), as an exact decimal."""
    begin, finish = max(start, lo), min(end or hi, hi)
    if finish <= begin:
        return ZERO
    return Decimal((finish - begin) // timedelta(seconds=1)) / 3600


def price_bands(mode: PricingMode, bands: Sequence[Band], units: Decimal
                ) -> list[tuple[str, Decimal, Decimal, Decimal]]:
    """(description, quantity, unit price, fee) per priced band for a month's billable units.

    Bands are "up to X" inclusive and continuous: exactly X units are in the band that ends
    at X, X + 0.5 in the next. A band's flat fee is due once the quantity reaches the band,
    never at zero quantity."""
    if units <= 0:
        return []
    if mode is PricingMode.FLAT:
        return [("flat", quantity(units), bands[0].price, bands[0].flat_fee)]
    lower = ZERO
    priced = []
    for number, band in enumerate(bands, start=1):
        upper = band.up_to
        label = (f"band {number} ({lower}-{upper} units)" if upper is not None
                 else f"band {number} (over {lower} units)")
        if mode is PricingMode.VOLUME:
            if upper is None or units <= upper:
                return [(f"volume {label}", quantity(units), band.price, band.flat_fee)]
        elif units > lower:
            in_band = (units if upper is None else min(units, upper)) - lower
            priced.append((f"graduated {label}", quantity(in_band), band.price, band.flat_fee))
        if upper is None:
            break
        lower = upper
    return priced


def price_invoice(
    tenant: Tenant,
    card: RateCard,
    period: str,
    usage: Iterable[UsageHour],
    *,
    credit_available: Decimal | None = None,
) -> Invoice:
    """The invoice of `tenant` for `period` (YYYY-MM) from its hourly usage under its basis.

    `credit_available` is the prepaid balance at the start of the period; by default, every
    credit granted before the period ends (nothing spent yet)."""
    lo, hi = month_bounds(period)
    period_hours = Decimal((hi - lo) // HOUR)
    minor = card.minor_unit
    lines: list[InvoiceLine] = []

    # 1-2. Quantities per hour, tier and size class; reservations netted hour by hour.
    by_hour: dict[tuple[datetime, str], dict[str, Decimal]] = defaultdict(
        lambda: defaultdict(lambda: ZERO)
    )
    for row in usage:
        if not lo <= row.hour < hi:
            raise ValueError(f"usage hour {row.hour.isoformat()} is outside period {period}")
        card.tier(row.hardware_tier)  # an unknown tier is a bug upstream, not a free hour
        by_hour[(row.hour, row.hardware_tier)][row.size_class] += quantity(row.gpu_hours)

    totals: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [ZERO, ZERO])
    for (hour, tier_name), sizes in by_hour.items():
        # A reservation active for part of the hour (starting or ending at 10:30) covers that
        # part of R, as it is charged for that part of the hour.
        reserved = sum(
            (r.gpus * active_hours(r.start, r.end, hour, hour + HOUR)
             for r in tenant.reservations if r.tier == tier_name),
            ZERO,
        )
        used = sum(sizes.values(), ZERO)
        covered_fraction = min(Decimal(1), reserved / used) if used > 0 else ZERO
        for size, gpu_hours in sizes.items():
            covered = quantity(gpu_hours * covered_fraction)
            totals[(tier_name, size)][0] += gpu_hours
            totals[(tier_name, size)][1] += covered

    # 3. Billable units = overflow GPU-hours x size multiplier.
    tier_usage: list[TierUsage] = []
    units_by_tier: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for (tier_name, size), (gpu_hours, covered) in sorted(totals.items()):
        overflow = gpu_hours - covered
        multiplier = card.multiplier(size)
        units = quantity(overflow * multiplier)
        tier_usage.append(
            TierUsage(tier_name, size, gpu_hours, covered, overflow, multiplier, units)
        )
        units_by_tier[tier_name] += units

    # 4. Bands per hardware tier over the month's billable units.
    for tier in card.tiers:
        tier_name, units = tier.name, units_by_tier.get(tier.name, ZERO)
        for label, qty, price, fee in price_bands(tier.mode, tier.bands, units):
            lines.append(InvoiceLine(
                LineKind.USAGE, f"{tier_name} on-demand, {label}", tier_name, None,
                qty, "unit", price, money(qty * price, minor)))
            if fee:
                lines.append(InvoiceLine(
                    LineKind.BAND_FEE, f"{tier_name} {label} fee", tier_name, None,
                    Decimal(1), "fee", fee, money(fee, minor)))
    usage_amount = sum((line.amount for line in lines), ZERO)

    plan = card.plans.get(tenant.plan)
    if plan is None:
        raise ConfigError([f"{card.source}: tenant {tenant.name}: plan {tenant.plan!r} is not "
                           f"in rate card {card.version}"])

    # 5. Discount: one negative line, a percentage of the on-demand usage amount.
    discount = ZERO
    if plan.discount_pct and usage_amount:
        discount = -money(usage_amount * plan.discount_pct / 100, minor)
        lines.append(InvoiceLine(
            LineKind.DISCOUNT, f"plan {plan.name} discount {plan.discount_pct}%", None, None,
            usage_amount, card.currency, -plan.discount_pct / 100, discount))

    # Reservations cost R x hours active in the period x reserved price, used or not.
    reservation_amount = ZERO
    for r in tenant.reservations:
        hours = active_hours(r.start, r.end, lo, hi)
        if hours == 0:
            continue
        reserved_price = card.tier(r.tier).reserved_price
        if reserved_price is None:
            raise ConfigError([f"{card.source}: tiers.{r.tier}.reserved_price: missing, but "
                               f"tenant {tenant.name} holds a {r.tier} reservation"])
        qty = quantity(r.gpus * hours)
        amount = money(qty * reserved_price, minor)
        reservation_amount += amount
        lines.append(InvoiceLine(
            LineKind.RESERVATION, f"{r.tier} reservation, {r.gpus} GPUs x {hours} h", r.tier,
            None, qty, "GPU-hour", reserved_price, amount))

    # 6. Base fee, prorated by the fraction of the period's hours the tenant was active.
    fraction = active_hours(tenant.start, tenant.end, lo, hi) / period_hours
    if plan.base_fee:
        lines.append(InvoiceLine(
            LineKind.BASE_FEE, f"plan {plan.name} base fee", None, None, quantity(fraction),
            "month", plan.base_fee, money(plan.base_fee * fraction, minor)))

    # 7. Minimum commitment (prorated likewise): a true-up line up to the minimum.
    if plan.minimum:
        committed = usage_amount + discount + reservation_amount
        minimum = money(plan.minimum * fraction, minor)
        if committed < minimum:
            lines.append(InvoiceLine(
                LineKind.TRUE_UP, f"minimum commitment {minimum} {card.currency}", None, None,
                Decimal(1), "true-up", minimum - committed, minimum - committed))

    # 8. Credits reduce the total, never below zero; the rest carries forward.
    available = (tenant.credit_granted_before(hi) if credit_available is None
                 else credit_available)
    subtotal = sum((line.amount for line in lines), ZERO)
    applied = money(min(available, subtotal), minor) if subtotal > 0 and available > 0 else ZERO
    if applied:
        lines.append(InvoiceLine(
            LineKind.CREDIT, "prepaid credit", None, None, applied, card.currency,
            Decimal(-1), -applied))

    return Invoice(
        tenant=tenant.name, plan=plan.name, period=period, currency=card.currency,
        rate_card_version=card.version, basis=tenant.basis.value, lines=tuple(lines),
        usage=tuple(tier_usage), credit_available=available, credit_applied=applied,
        active_fraction=quantity(fraction),
    )


def marginal_on_demand_price(card: RateCard, tier: str, monthly_gpu_hours: Decimal,
                             multiplier: Decimal, discount_pct: Decimal) -> Decimal:
    """What one more on-demand GPU-hour of `tier` costs a tenant using `monthly_gpu_hours` a
    month at size multiplier `multiplier`: the price of the band its billable units reach (the
    marginal band under graduated pricing, the band the total falls in under volume), times
    the multiplier, less its plan's discount. A reserved GPU saves exactly this for each hour
    it is used, so it is the price a reservation's break-even compares with."""
    spec = card.tier(tier)
    bands = price_bands(spec.mode, spec.bands, monthly_gpu_hours * multiplier)
    band_price = bands[-1][2] if bands else spec.bands[0].price
    return band_price * multiplier * (100 - discount_pct) / 100
