"""The pricing engine: DESIGN.md's billing semantics, in decimal arithmetic end to end.

For one tenant and one calendar month, in this order: quantities per hour, hardware tier and
size class; hour-level reservation netting; billable units; bands; discount; base fee;
minimum-commitment true-up; credits. Every line is rounded half-up to the currency's minor unit
and the total is the sum of the rounded lines.

This is the only module that computes a price, a netting or a money figure of an invoice.
Everything downstream (documents, PDF, FOCUS, marts, adjustments) reads the `Invoice` it
returns, through models.billing.invoices, and at most spreads its figures over finer rows with
`allocate`."""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import NamedTuple

from models.billing.rate_cards import (
    Band,
    ConfigError,
    Meter,
    PricingMode,
    RateCard,
    Reservation,
    Tenant,
    month_bounds,
)

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
    TAX = "tax"
    TOKENS = "tokens"


class HourUse(StrEnum):
    """Where a GPU-hour of the netting went."""

    ON_DEMAND = "on_demand"
    """Usage beyond the reservations: billed at band prices."""
    COVERED = "covered"
    """Usage covered by one reservation: paid for by the reservation line."""
    UNUSED = "unused"
    """Reserved capacity nobody used: paid for all the same."""


@dataclass(frozen=True, slots=True)
class UsageHour:
    """GPU-hours of one tenant in one hour, of one hardware tier and size class."""

    hour: datetime
    hardware_tier: str
    size_class: str
    gpu_hours: Decimal


class NettedHour(NamedTuple):
    """One cell of the hourly netting (DESIGN.md billing step 2) of a tenant's month.

    ON_DEMAND and COVERED cells belong to a size class; COVERED and UNUSED cells to a
    reservation. In every hour and tier: the size classes' cells sum to their usage, the
    COVERED cells to min(reserved, usage), and each reservation's COVERED and UNUSED cells to
    its capacity in the hour. (A named tuple: a month holds thousands, made fast.)"""

    hour: datetime
    hardware_tier: str
    size_class: str | None
    reservation_id: str | None
    use: HourUse
    gpu_hours: Decimal


@dataclass(frozen=True)
class PriceBand:
    """The band of a tier's price list that a usage line or band fee prices."""

    mode: PricingMode
    number: int | None
    """1 for the tier's first band; None for a flat price (one price, no bands)."""
    lower_units: Decimal
    """Exclusive lower bound in billable units (0 for the first band)."""
    upper_units: Decimal | None
    """Inclusive upper bound; None for the open last band (and a flat price)."""

    @property
    def label(self) -> str:
        if self.number is None:
            return self.mode.value
        span = (f"{self.lower_units}-{self.upper_units} units" if self.upper_units is not None
                else f"over {self.lower_units} units")
        return f"{self.mode.value} band {self.number} ({span})"


@dataclass(frozen=True)
class HeldReservation:
    """A reservation of the tenant active in the period, with the id its lines and netting
    cells refer to."""

    reservation_id: str
    reservation: Reservation


@dataclass(frozen=True)
class InvoiceLine:
    kind: LineKind
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal
    """Rounded to the invoice's currency minor unit (`Invoice.minor_unit`)."""
    hardware_tier: str | None = None
    size_class: str | None = None
    band: PriceBand | None = None
    """USAGE and BAND_FEE lines: the band priced."""
    reservation_id: str | None = None
    """RESERVATION lines: the reservation charged (`Invoice.reservations`)."""
    model: str | None = None
    """TOKENS lines: the model whose tokens are charged."""


@dataclass(frozen=True)
class TierUsage:
    """What the usage lines were computed from, per hardware tier and size class: the sums of
    the netting cells of the month."""

    hardware_tier: str
    size_class: str
    gpu_hours: Decimal
    covered_gpu_hours: Decimal
    overflow_gpu_hours: Decimal
    multiplier: Decimal
    billable_units: Decimal


@dataclass(frozen=True, slots=True)
class ModelWork:
    """A tenant's request work on one model in the period (request work of shared endpoints)
    and the GPU-hours its ledger holds for that model under its basis."""

    model: str
    input_tokens: int
    output_tokens: int
    prefill_share: Decimal
    """Of the model's GPU time, the part prefill took (measured prefill / (prefill + decode)
    seconds, else the cost model's per-token GPU time), 0..1."""
    gpu_hours: Decimal


@dataclass(frozen=True)
class TokenUsage:
    """Tokens of one model on the invoice and what they cost under the tenant's own GPU-time
    charges: the GPU charges (usage, band fees, reservations, discount) spread over the
    tenant's GPU-hours, this model's share split into prefill (input) and decode (output)."""

    model: str
    input_tokens: int
    output_tokens: int
    gpu_hours: Decimal
    input_cost: Decimal
    output_cost: Decimal
    cost_per_million_input: Decimal | None
    """input_cost per million input tokens (4 more decimals than the currency); None without
    input tokens."""
    cost_per_million_output: Decimal | None


@dataclass(frozen=True)
class Invoice:
    tenant: str
    plan: str
    period: str
    currency: str
    minor_unit: int
    """Decimal places of the currency (ISO 4217, or the rate card's `minor_unit`): every
    amount is rounded to it."""
    rate_card_version: str
    basis: str
    lines: tuple[InvoiceLine, ...]
    usage: tuple[TierUsage, ...]
    reservations: tuple[HeldReservation, ...]
    hours: Sequence[NettedHour]
    """The hourly netting, in (hour, tier, size class, reservation) order. Stored beside the
    document (models.billing.lifecycle), not in it: thousands of cells a month."""
    credit_available: Decimal
    credit_applied: Decimal
    active_fraction: Decimal
    minimum_commitment: Decimal
    """The plan's minimum, prorated like the base fee; 0 when the plan has none."""
    tokens: tuple[TokenUsage, ...] = ()
    """Tokens and their effective cost per million, by model (memo: not charged again)."""
    total: Decimal = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total", sum((line.amount for line in self.lines), ZERO))

    @property
    def quantum(self) -> Decimal:
        """The currency's smallest amount (0.01 for USD, 1 for JPY)."""
        return Decimal(1).scaleb(-self.minor_unit)

    def reservation(self, reservation_id: str) -> Reservation:
        for held in self.reservations:
            if held.reservation_id == reservation_id:
                return held.reservation
        raise KeyError(f"invoice of {self.tenant} for {self.period} has no reservation "
                       f"{reservation_id!r}")

    @property
    def discount_factor(self) -> Decimal:
        """What the plan discount leaves of an on-demand price (0.95 for 5% off)."""
        return Decimal(1) + sum(
            (line.unit_price for line in self.lines if line.kind is LineKind.DISCOUNT), ZERO)


@dataclass(frozen=True)
class PricedBand:
    band: PriceBand
    quantity: Decimal
    unit_price: Decimal
    flat_fee: Decimal


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


def allocate(total: Decimal, weights: Sequence[Decimal], quantum: Decimal) -> list[Decimal]:
    """`total` split over `weights` in multiples of `quantum`, summing to `total` exactly.

    Largest remainder: every share is floored, the leftover quanta go to the largest
    fractional parts (ties to the earlier weight). Computed in integers, so no share depends on
    the precision of a decimal division."""
    steps = total / quantum
    if steps != steps.to_integral_value():
        raise ValueError(f"{total} is not a multiple of {quantum}")
    if not weights:
        if steps:
            raise ValueError(f"cannot allocate {total} over no rows")
        return []
    if any(w < 0 for w in weights):
        raise ValueError("allocation weights must not be negative")
    ratios = [w.as_integer_ratio() for w in weights]  # exact, whatever the digits
    denominator = math.lcm(*(d for _, d in ratios))
    scaled = [n * (denominator // d) for n, d in ratios]
    return [n * quantum for n in _largest_remainder(int(steps), scaled)]


def _largest_remainder(count: int, weights: Sequence[int]) -> list[int]:
    """`count` (any sign) split over non-negative integer `weights`, floors plus one to the
    largest remainders."""
    sign, count = (-1, -count) if count < 0 else (1, count)
    weight_sum = sum(weights)
    if weight_sum == 0:
        if count:
            raise ValueError(f"cannot allocate {count} quanta over rows that all weigh zero")
        return [0] * len(weights)
    shares = [divmod(count * w, weight_sum) for w in weights]
    floors = [floor for floor, _ in shares]
    leftover = count - sum(floors)
    if leftover:
        for i in sorted(range(len(shares)), key=lambda i: (-shares[i][1], i))[:leftover]:
            floors[i] += 1
    return [sign * n for n in floors] if sign < 0 else floors


def _cross(rows: Sequence[Decimal], columns: Sequence[Decimal]) -> list[list[Decimal]]:
    """A table of non-negative multiples of QUANTITY whose row sums are `rows` and column sums
    `columns` exactly (both sum to the same total), each cell near rows[i] x columns[j] / total.

    Cells are floored, then the missing quanta go to the largest fractional parts where both
    the row and the column still lack one; whatever remains is filled corner by corner, which
    always closes (the rows and the columns lack the same number of quanta)."""
    row_q = [int(r / QUANTITY) for r in rows]
    col_q = [int(c / QUANTITY) for c in columns]
    total = sum(row_q)
    if total != sum(col_q):
        raise ValueError(f"rows sum to {sum(rows)} but columns to {sum(columns)}")
    if total == 0:
        return [[ZERO] * len(columns) for _ in rows]
    cells = [[r * c // total for c in col_q] for r in row_q]
    row_left = [r - sum(line) for r, line in zip(row_q, cells, strict=True)]
    col_left = [c - sum(line[j] for line in cells) for j, c in enumerate(col_q)]
    by_remainder = sorted(((-(r * c % total), i, j) for i, r in enumerate(row_q)
                           for j, c in enumerate(col_q)))
    for _, i, j in by_remainder:
        if row_left[i] and col_left[j]:
            cells[i][j] += 1
            row_left[i] -= 1
            col_left[j] -= 1
    for i in range(len(row_q)):
        for j in range(len(col_q)):
            take = min(row_left[i], col_left[j])
            cells[i][j] += take
            row_left[i] -= take
            col_left[j] -= take
    return [[n * QUANTITY for n in line] for line in cells]


def net_hour(hour: datetime, tier: str, used: Mapping[str, Decimal],
             reserved: Sequence[tuple[str, Decimal]]) -> list[NettedHour]:
    """The netting of one hour and hardware tier: `used` GPU-hours per size class against
    `reserved` GPU-hours (capacity in the hour) per reservation id.

    min(reserved, used) is covered; every size class by the same fraction min(1, R / used),
    every reservation in proportion to its capacity, each rounded to 6 decimals by largest
    remainder so that the covered quantities sum exactly to min(R, used) both ways."""
    sizes = sorted(used)
    capacity = sum((gpu_hours for _, gpu_hours in reserved), ZERO)
    total_used = sum(used.values(), ZERO)
    covered = min(capacity, total_used)
    out: list[NettedHour] = []
    if not covered:
        out += [NettedHour(hour, tier, size, None, HourUse.ON_DEMAND, used[size])
                for size in sizes if used[size]]
        out += [NettedHour(hour, tier, None, rid, HourUse.UNUSED, gpu_hours)
                for rid, gpu_hours in reserved if gpu_hours]
        return out
    # Allocation is only needed on the side that is not wholly covered or used; one size
    # class or one reservation makes the table a single row or column.
    by_size = ([used[size] for size in sizes] if covered == total_used
               else allocate(covered, [used[size] for size in sizes], QUANTITY))
    by_reservation = ([gpu_hours for _, gpu_hours in reserved] if covered == capacity
                      else allocate(covered, [gpu_hours for _, gpu_hours in reserved], QUANTITY))
    if len(sizes) == 1:
        cells = [by_reservation]
    elif len(reserved) == 1:
        cells = [[size_covered] for size_covered in by_size]
    else:
        cells = _cross(by_size, by_reservation)
    for size, size_covered, line in zip(sizes, by_size, cells, strict=True):
        if used[size] - size_covered:
            out.append(NettedHour(hour, tier, size, None, HourUse.ON_DEMAND,
                                  used[size] - size_covered))
        out += [NettedHour(hour, tier, size, rid, HourUse.COVERED, cell)
                for (rid, _), cell in zip(reserved, line, strict=True) if cell]
    out += [NettedHour(hour, tier, None, rid, HourUse.UNUSED, gpu_hours - taken)
            for (rid, gpu_hours), taken in zip(reserved, by_reservation, strict=True)
            if gpu_hours - taken]
    return out


def held_reservations(tenant: Tenant, lo: datetime, hi: datetime) -> list[HeldReservation]:
    """The tenant's reservations active in [lo, hi), each with a stable id: tenant, tier and
    start (a second reservation of the same tier and start gets `#2`, and so on)."""
    held = []
    seen: dict[str, int] = defaultdict(int)
    for r in tenant.reservations:
        base = f"{tenant.name}/reservations/{r.tier}/{r.start:%Y-%m-%dT%H:%M:%SZ}"
        seen[base] += 1
        if active_hours(r.start, r.end, lo, hi):
            held.append(HeldReservation(
                base if seen[base] == 1 else f"{base}#{seen[base]}", r))
    return held


def _hourly_capacity(held: Sequence[HeldReservation], lo: datetime, hi: datetime
                     ) -> tuple[dict[tuple[datetime, str], list[tuple[str, Decimal]]],
                                dict[str, Decimal]]:
    """Each reservation's GPU-hours per hour of [lo, hi) and in all: a partial first or last
    hour holds its part, and the hours, at 6 decimals, add up exactly to the month's quantity
    that the reservation line charges."""
    per_hour: dict[tuple[datetime, str], list[tuple[str, Decimal]]] = defaultdict(list)
    totals: dict[str, Decimal] = {}
    for h in held:
        r = h.reservation
        first = max(r.start, lo).replace(minute=0, second=0, microsecond=0)
        last = min(r.end or hi, hi)
        hours = []
        weights = []
        moment = first
        while moment < last:
            hours.append(moment)
            whole = r.start <= moment and (r.end is None or moment + HOUR <= r.end)
            weights.append(r.gpus if whole else
                           r.gpus * active_hours(r.start, r.end, moment, moment + HOUR))
            moment += HOUR
        total = totals[h.reservation_id] = reserved_gpu_hours(r, lo, hi)
        # Whole hours of a whole number of millionths need no allocation (the usual case).
        exact = sum(weights, ZERO) == total and all(quantity(w) == w for w in {*weights})
        for moment, gpu_hours in zip(
                hours, weights if exact else allocate(total, weights, QUANTITY), strict=True):
            per_hour[(moment, r.tier)].append((h.reservation_id, gpu_hours))
    return per_hour, totals


def reserved_gpu_hours(r: Reservation, lo: datetime, hi: datetime) -> Decimal:
    """The GPU-hours a reservation's line charges for [lo, hi): its GPUs x its hours in it."""
    return quantity(r.gpus * active_hours(r.start, r.end, lo, hi))


def price_bands(mode: PricingMode, bands: Sequence[Band], units: Decimal) -> list[PricedBand]:
    """The priced bands of a month's billable units of one tier.

    Bands are "up to X" inclusive and continuous: exactly X units are in the band that ends
    at X, X + 0.5 in the next. A band's flat fee is due once the quantity reaches the band,
    never at zero quantity."""
    if units <= 0:
        return []
    if mode is PricingMode.FLAT:
        return [PricedBand(PriceBand(mode, None, ZERO, None), quantity(units), bands[0].price,
                           bands[0].flat_fee)]
    lower = ZERO
    priced = []
    for number, band in enumerate(bands, start=1):
        upper = band.up_to
        ref = PriceBand(mode, number, lower, upper)
        if mode is PricingMode.VOLUME:
            if upper is None or units <= upper:
                return [PricedBand(ref, quantity(units), band.price, band.flat_fee)]
        elif units > lower:
            in_band = (units if upper is None else min(units, upper)) - lower
            priced.append(PricedBand(ref, quantity(in_band), band.price, band.flat_fee))
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
    work: Iterable[ModelWork] = (),
) -> Invoice:
    """The invoice of `tenant` for `period` (YYYY-MM) from its hourly usage under its basis.

    `credit_available` is the prepaid balance at the start of the period; by default, every
    credit granted before the period ends (nothing spent yet). `work`: the tenant's tokens by
    model, shown with their effective cost (`token_usage`)."""
    lo, hi = month_bounds(period)

    # 1-2. Quantities per hour, tier and size class; reservations netted hour by hour.
    by_hour: dict[tuple[datetime, str], dict[str, Decimal]] = defaultdict(
        lambda: defaultdict(lambda: ZERO)
    )
    known = set()
    for row in usage:
        if not lo <= row.hour < hi:
            raise ValueError(f"usage hour {row.hour.isoformat()} is outside period {period}")
        if row.hardware_tier not in known:
            card.tier(row.hardware_tier)  # an unknown tier is a bug upstream, not a free hour
            known.add(row.hardware_tier)
        by_hour[(row.hour, row.hardware_tier)][row.size_class] += quantity(row.gpu_hours)

    held = held_reservations(tenant, lo, hi)
    capacity, reserved_total = _hourly_capacity(held, lo, hi)
    hours: list[NettedHour] = []
    totals: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [ZERO, ZERO])
    for key in sorted(by_hour.keys() | capacity.keys()):
        hour, tier_name = key
        sizes = by_hour.get(key, {})
        for size, gpu_hours in sizes.items():
            totals[(tier_name, size)][0] += gpu_hours
        if key not in capacity:  # nothing reserved: all on demand (most hours of most tenants)
            hours += [NettedHour(hour, tier_name, size, None, HourUse.ON_DEMAND, sizes[size])
                      for size in sorted(sizes) if sizes[size]]
            continue
        cells = net_hour(hour, tier_name, sizes, sorted(capacity[key]))
        for cell in cells:
            if cell.use is HourUse.COVERED and cell.size_class is not None:
                totals[(tier_name, cell.size_class)][1] += cell.gpu_hours
        hours += cells

    off_peak_overflow: dict[tuple[str, str], Decimal] = defaultdict(lambda: ZERO)
    time_of_use = {t.name: t.time_of_use for t in card.tiers if t.time_of_use is not None}
    if time_of_use:
        for cell in hours:
            tou = time_of_use.get(cell.hardware_tier)
            if (tou is not None and cell.use is HourUse.ON_DEMAND
                    and cell.size_class is not None and tou.off_peak(cell.hour)):
                off_peak_overflow[(cell.hardware_tier, cell.size_class)] += cell.gpu_hours
    return price_netted(tenant, card, period, totals, off_peak_overflow, held, reserved_total,
                        tuple(hours), credit_available=credit_available, work=work)


_bounds = functools.lru_cache(maxsize=16)(month_bounds)
"""`month_bounds`, parsed once per period: the set-wise engine prices thousands of tenants."""


def price_netted(
    tenant: Tenant,
    card: RateCard,
    period: str,
    totals: Mapping[tuple[str, str], Sequence[Decimal]],
    off_peak_overflow: Mapping[tuple[str, str], Decimal],
    held: Sequence[HeldReservation],
    reserved_total: Mapping[str, Decimal],
    hours: Sequence[NettedHour],
    *,
    credit_available: Decimal | None = None,
    work: Iterable[ModelWork] = (),
) -> Invoice:
    """Steps 3 to 10 of `price_invoice` from the month's netting: `totals` holds the GPU-hours
    and covered GPU-hours per (tier, size class), `off_peak_overflow` the on-demand GPU-hours
    of off-peak hours per (tier, size class), `reserved_total` each held reservation's
    GPU-hours. The set-wise engine (models.billing.pricing_sql) nets all tenants at once and
    prices each through here, so both engines share every line's arithmetic."""
    lo, hi = _bounds(period)
    period_hours = Decimal((hi - lo) // HOUR)
    minor = card.minor_unit
    lines: list[InvoiceLine] = []

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

    # 3b. Time of use: the on-demand units of each tier used in its off-peak hours.
    off_peak_units: dict[str, Decimal] = defaultdict(lambda: ZERO)
    if off_peak_overflow:
        for (tier_name, size), overflow in off_peak_overflow.items():
            off_peak_units[tier_name] += quantity(overflow * card.multiplier(size))
        for tier_name in off_peak_units:
            off_peak_units[tier_name] = min(off_peak_units[tier_name], units_by_tier[tier_name])

    # 4. Bands per hardware tier over the month's billable units. With time of use, each
    # band's units are split into peak and off-peak in the month's proportion (largest
    # remainder), the off-peak ones priced at the band price x the off-peak multiplier.
    for tier in card.tiers:
        tier_name, units = tier.name, units_by_tier.get(tier.name, ZERO)
        priced_bands = price_bands(tier.mode, tier.bands, units)
        off = off_peak_units.get(tier_name, ZERO)
        off_shares = (allocate(off, [b.quantity for b in priced_bands], QUANTITY) if off
                      else [ZERO] * len(priced_bands))
        for priced, off_share in zip(priced_bands, off_shares, strict=True):
            band, qty, price = priced.band, priced.quantity, priced.unit_price
            off_share = min(off_share, qty)
            if off_share and tier.time_of_use is not None:
                off_price = price * tier.time_of_use.off_peak_multiplier
                if qty - off_share:
                    lines.append(InvoiceLine(
                        LineKind.USAGE, f"{tier_name} on-demand, {band.label}, peak",
                        qty - off_share, "unit", price, money((qty - off_share) * price, minor),
                        hardware_tier=tier_name, band=band))
                lines.append(InvoiceLine(
                    LineKind.USAGE, f"{tier_name} on-demand, {band.label}, off-peak", off_share,
                    "unit", off_price, money(off_share * off_price, minor),
                    hardware_tier=tier_name, band=band))
            else:
                lines.append(InvoiceLine(
                    LineKind.USAGE, f"{tier_name} on-demand, {band.label}", qty, "unit", price,
                    money(qty * price, minor), hardware_tier=tier_name, band=band))
            if priced.flat_fee:
                lines.append(InvoiceLine(
                    LineKind.BAND_FEE, f"{tier_name} {band.label} fee", Decimal(1), "fee",
                    priced.flat_fee, money(priced.flat_fee, minor), hardware_tier=tier_name,
                    band=band))
    plan = card.plans.get(tenant.plan)
    if plan is None:
        raise ConfigError([f"{card.source}: tenant {tenant.name}: plan {tenant.plan!r} is not "
                           f"in rate card {card.version}"])

    # 4b. Tokens, on plans that meter them: per million input and output tokens, or per
    # started package (their GPU-hours were left out of the usage above: warehouse.usage_hours).
    work = sorted(work, key=lambda w: w.model)
    if plan.meter is Meter.TOKENS:
        for w in work:
            token_price = card.token_prices.get(w.model)
            if token_price is None:
                continue
            if token_price.package_tokens is not None and token_price.package_price is not None:
                package_size = token_price.package_tokens
                packages = -(-(w.input_tokens + w.output_tokens) // package_size)
                if packages:
                    lines.append(InvoiceLine(
                        LineKind.TOKENS, f"{w.model} tokens, packages of {package_size:,}",
                        Decimal(packages), f"package of {package_size} tokens",
                        token_price.package_price,
                        money(packages * token_price.package_price, minor), model=w.model))
                continue
            for side, count, unit_price in (
                    ("input", w.input_tokens, token_price.input_per_million),
                    ("output", w.output_tokens, token_price.output_per_million)):
                if count and unit_price is not None:
                    millions = Decimal(count) / MILLION  # exact: a shift of 6 places
                    lines.append(InvoiceLine(
                        LineKind.TOKENS, f"{w.model} {side} tokens", millions,
                        f"million {side} tokens", unit_price, money(millions * unit_price, minor),
                        model=w.model))
    usage_amount = sum((line.amount for line in lines), ZERO)

    # 5. Discount: one negative line, a percentage of the on-demand usage amount.
    discount = ZERO
    if plan.discount_pct and usage_amount:
        discount = -money(usage_amount * plan.discount_pct / 100, minor)
        lines.append(InvoiceLine(
            LineKind.DISCOUNT, f"plan {plan.name} discount {plan.discount_pct}%", usage_amount,
            card.currency, -plan.discount_pct / 100, discount))

    # Reservations cost R x hours active in the period x reserved price, used or not.
    reservation_amount = ZERO
    for h in held:
        r = h.reservation
        reserved_price = card.tier(r.tier).reserved_price
        if reserved_price is None:
            raise ConfigError([f"{card.source}: tiers.{r.tier}.reserved_price: missing, but "
                               f"tenant {tenant.name} holds a {r.tier} reservation"])
        qty = reserved_total[h.reservation_id]
        amount = money(qty * reserved_price, minor)
        reservation_amount += amount
        lines.append(InvoiceLine(
            LineKind.RESERVATION,
            f"{r.tier} reservation, {r.gpus} GPUs x {active_hours(r.start, r.end, lo, hi)} h",
            qty, "GPU-hour", reserved_price, amount, hardware_tier=r.tier,
            reservation_id=h.reservation_id))

    # 6. Base fee, prorated by the fraction of the period's hours the tenant was active.
    fraction = active_hours(tenant.start, tenant.end, lo, hi) / period_hours
    if plan.base_fee:
        lines.append(InvoiceLine(
            LineKind.BASE_FEE, f"plan {plan.name} base fee", quantity(fraction), "month",
            plan.base_fee, money(plan.base_fee * fraction, minor)))

    # 7. Minimum commitment (prorated likewise): a true-up line up to the minimum.
    minimum = money(plan.minimum * fraction, minor) if plan.minimum else ZERO
    committed = usage_amount + discount + reservation_amount
    if minimum and committed < minimum:
        lines.append(InvoiceLine(
            LineKind.TRUE_UP, f"minimum commitment {minimum} {card.currency}", Decimal(1),
            "true-up", minimum - committed, minimum - committed))

    # 8. Credits reduce the total, never below zero; the rest carries forward.
    available = (tenant.credit_granted_before(hi) if credit_available is None
                 else credit_available)
    subtotal = sum((line.amount for line in lines), ZERO)
    applied = money(min(available, subtotal), minor) if subtotal > 0 and available > 0 else ZERO
    if applied:
        lines.append(InvoiceLine(
            LineKind.CREDIT, "prepaid credit", applied, card.currency, Decimal(-1), -applied))

    # 10. Tax of the tenant's billing profile on what is due after credits: one line, rounded
    # like every other (the tax base is the sum of the rounded lines above it).
    tax = tenant.billing.tax if tenant.billing else None
    due = sum((line.amount for line in lines), ZERO)
    if tax is not None and tax.rate_pct and due:
        rate = tax.rate_pct / 100
        lines.append(InvoiceLine(
            LineKind.TAX, f"{tax.label} {tax.rate_pct}%", due, card.currency, rate,
            money(due * rate, minor)))

    return Invoice(
        tenant=tenant.name, plan=plan.name, period=period, currency=card.currency,
        minor_unit=minor, rate_card_version=card.version, basis=tenant.basis.value,
        lines=tuple(lines), usage=tuple(tier_usage), reservations=tuple(held),
        hours=hours, credit_available=available, credit_applied=applied,
        active_fraction=quantity(fraction), minimum_commitment=minimum,
        tokens=token_usage(lines, tier_usage, work, minor),
    )


GPU_CHARGES = frozenset({LineKind.USAGE, LineKind.BAND_FEE, LineKind.RESERVATION,
                         LineKind.DISCOUNT})
"""Lines that pay for GPU time: what a token's effective cost is derived from."""
MILLION = Decimal(1_000_000)


def token_usage(lines: Sequence[InvoiceLine], usage: Sequence[TierUsage],
                work: Iterable[ModelWork], minor_unit: int) -> tuple[TokenUsage, ...]:
    """Each model's tokens with the GPU charges their GPU-hours carry. The GPU charges are
    spread over the models' GPU-hours and the rest of the tenant's GPU-hours (largest
    remainder, in the currency's minor unit), so the models' costs plus the rest are the GPU
    charges exactly: a GPU-time bill and its token view reconcile to the cent."""
    token_lines: dict[str, list[InvoiceLine]] = defaultdict(list)
    for line in lines:
        if line.kind is LineKind.TOKENS and line.model is not None:
            token_lines[line.model].append(line)
    billed = [w for w in work if w.model in token_lines]
    models = sorted((w for w in work if (w.input_tokens or w.output_tokens)
                     and w.model not in token_lines), key=lambda w: w.model)
    quantum = Decimal(1).scaleb(-minor_unit)
    out = [_token_cost(w, token_lines[w.model], quantum, minor_unit) for w in billed]
    if not models:
        return tuple(sorted(out, key=lambda t: t.model))
    charges = sum((line.amount for line in lines if line.kind in GPU_CHARGES), ZERO)
    total_hours = sum((u.gpu_hours for u in usage), ZERO)
    on_models = sum((w.gpu_hours for w in models), ZERO)
    weights = [w.gpu_hours for w in models] + [max(ZERO, total_hours - on_models)]
    if not any(weights):
        weights = [Decimal(1)] * len(models) + [ZERO]  # no GPU-hours: nothing to spread
        charges = ZERO
    costs = allocate(charges, weights, quantum)
    for w, cost in zip(models, costs, strict=False):
        input_cost, output_cost = allocate(cost, [w.prefill_share, 1 - w.prefill_share],
                                           quantum)
        out.append(_per_million(w, input_cost, output_cost, minor_unit))
    return tuple(sorted(out, key=lambda t: t.model))


def _token_cost(w: ModelWork, lines: Sequence[InvoiceLine], quantum: Decimal,
                minor_unit: int) -> TokenUsage:
    """A token-billed model's cost: its token lines (a package split like GPU time, by the
    prefill share of its work)."""
    inputs = sum((x.amount for x in lines if x.unit == "million input tokens"), ZERO)
    outputs = sum((x.amount for x in lines if x.unit == "million output tokens"), ZERO)
    packages = sum((x.amount for x in lines if x.unit.startswith("package")), ZERO)
    if packages:
        split = allocate(packages, [w.prefill_share, 1 - w.prefill_share], quantum)
        inputs, outputs = inputs + split[0], outputs + split[1]
    return _per_million(w, inputs, outputs, minor_unit)


def _per_million(w: ModelWork, input_cost: Decimal, output_cost: Decimal,
                 minor_unit: int) -> TokenUsage:
    per_million = Decimal(1).scaleb(-(minor_unit + 4))
    return TokenUsage(
        w.model, w.input_tokens, w.output_tokens, w.gpu_hours, input_cost, output_cost,
        (input_cost * MILLION / w.input_tokens).quantize(per_million, ROUND_HALF_UP)
        if w.input_tokens else None,
        (output_cost * MILLION / w.output_tokens).quantize(per_million, ROUND_HALF_UP)
        if w.output_tokens else None)


def on_demand_by_tier(lines: Iterable[InvoiceLine]) -> dict[str, Decimal]:
    """On-demand charges (usage and band fees) per hardware tier, each tier carrying its share
    of the plan discount (one line over all tiers), so they sum to usage + discount."""
    gross: dict[str, Decimal] = defaultdict(lambda: ZERO)
    discount = ZERO
    for line in lines:
        if line.kind in (LineKind.USAGE, LineKind.BAND_FEE) and line.hardware_tier:
            gross[line.hardware_tier] += line.amount
        elif line.kind is LineKind.DISCOUNT:
            discount += line.amount
    total = sum(gross.values(), ZERO)
    keep = (total + discount) / total if total else Decimal(1)
    return {tier: amount * keep for tier, amount in gross.items()}


def forecast_total(invoice: Invoice, period_hours: int, elapsed_hours: int) -> Decimal:
    """The month's total if on-demand usage continues at its month-to-date rate: on-demand
    charges (GPU time and tokens, after discount) scaled to the whole period, reservations and
    the base fee as they are, then the minimum commitment, the prepaid credit and the tax as
    pricing applies them."""
    if elapsed_hours <= 0 or elapsed_hours >= period_hours:
        return invoice.total
    by_kind: dict[LineKind, Decimal] = defaultdict(lambda: ZERO)
    for line in invoice.lines:
        by_kind[line.kind] += line.amount
    on_demand = (by_kind[LineKind.USAGE] + by_kind[LineKind.BAND_FEE] + by_kind[LineKind.TOKENS]
                 + by_kind[LineKind.DISCOUNT])
    committed = max(on_demand * period_hours / elapsed_hours + by_kind[LineKind.RESERVATION],
                    invoice.minimum_commitment)
    subtotal = committed + by_kind[LineKind.BASE_FEE]
    credit = min(invoice.credit_available, max(subtotal, ZERO))
    rate = next((line.unit_price for line in invoice.lines if line.kind is LineKind.TAX), ZERO)
    due = money(subtotal - credit, invoice.minor_unit)
    return due + money(due * rate, invoice.minor_unit)


def spent_to_date(invoice: Invoice, period_hours: int, elapsed_hours: int) -> Decimal:
    """What the tenant has spent `elapsed_hours` into the period, counted as its invoice counts
    it (a budget's month-to-date spend): the on-demand charges of the usage so far after the
    discount, and the period's fixed charges (reservations, base fee) and minimum commitment
    accrued evenly over its hours, less the prepaid credit that uses up. At the period's end it
    is the invoice total. `invoice` prices the usage of those hours only."""
    if elapsed_hours >= period_hours:
        return invoice.total
    share = Decimal(max(elapsed_hours, 0)) / Decimal(period_hours)
    by_kind: dict[LineKind, Decimal] = defaultdict(lambda: ZERO)
    for line in invoice.lines:
        by_kind[line.kind] += line.amount
    on_demand = (by_kind[LineKind.USAGE] + by_kind[LineKind.BAND_FEE] + by_kind[LineKind.TOKENS]
                 + by_kind[LineKind.DISCOUNT])
    committed = max(on_demand + by_kind[LineKind.RESERVATION] * share,
                    invoice.minimum_commitment * share)
    subtotal = committed + by_kind[LineKind.BASE_FEE] * share
    credit = min(invoice.credit_available, max(subtotal, ZERO))
    return money(subtotal - credit, invoice.minor_unit)


def on_demand_price(card: RateCard, tier: str, monthly_gpu_hours: Decimal,
                    multiplier: Decimal, discount_pct: Decimal) -> Decimal:
    """What one more on-demand GPU-hour of `tier` costs the tenant: the price of the band its
    month's billable units reach (the marginal band under graduated pricing, the band the total
    falls in under volume), times its size multiplier, less its plan's discount. A reserved GPU
    saves exactly this for each hour it is used, so it is the price the break-even compares."""
    _, band_price = marginal_band(card, tier, monthly_gpu_hours * multiplier)
    return band_price * multiplier * (100 - discount_pct) / 100


def marginal_band(card: RateCard, tier: str, units: Decimal) -> tuple[PriceBand, Decimal]:
    """The band of `tier` that a month's `units` billable units reach, and its list price per
    unit: the last band reached under graduated pricing, the band the total falls in under
    volume pricing, the one price of a flat tier; the first band when there are no units.
    This is the on-demand list price of the tier's GPU-hours that a reservation covered."""
    spec = card.tier(tier)
    bands = price_bands(spec.mode, spec.bands, units)
    if bands:
        return bands[-1].band, bands[-1].unit_price
    first = spec.bands[0]
    number = None if spec.mode is PricingMode.FLAT else 1
    upper = None if spec.mode is PricingMode.FLAT else first.up_to
    return PriceBand(spec.mode, number, ZERO, upper), first.price
