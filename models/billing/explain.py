"""How an invoice gets from GPU-hours to its total, in steps a tenant can follow.

Everything is read off the typed invoice (its `usage` netting and its lines); nothing is priced
again here, so the explanation cannot disagree with the bill:
- `units`: per hardware tier and size class, the GPU-hours, the part covered by reservations,
  the on-demand rest, its size multiplier and the billable units that makes, with the numbers
  of the invoice lines that price them (band lines for the units, reservation lines for the
  covered hours);
- `steps`: every invoice line in order with quantity, unit price, amount and the running total,
  a waterfall that ends at the invoice total.
Line numbers count from 1 in the invoice's order, as the invoice-line CSV and PDF number them."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from models.billing.pricing import Invoice, LineKind

ZERO = Decimal(0)


@dataclass(frozen=True)
class UnitsRow:
    hardware_tier: str
    size_class: str
    gpu_hours: Decimal
    covered_gpu_hours: Decimal
    """Within a reservation: paid by the reservation line, not by units."""
    on_demand_gpu_hours: Decimal
    multiplier: Decimal
    billable_units: Decimal
    """on_demand_gpu_hours x multiplier: what the tier's band lines price."""
    lines: tuple[int, ...]
    """Numbers of the invoice lines these GPU-hours end up on."""


@dataclass(frozen=True)
class Step:
    line_no: int
    kind: LineKind
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal
    running_total: Decimal


@dataclass(frozen=True)
class Explanation:
    currency: str
    units: tuple[UnitsRow, ...]
    steps: tuple[Step, ...]
    total: Decimal

    @property
    def gpu_hours(self) -> Decimal:
        return sum((row.gpu_hours for row in self.units), ZERO)

    @property
    def billable_units(self) -> Decimal:
        return sum((row.billable_units for row in self.units), ZERO)


def explain(invoice: Invoice) -> Explanation:
    """The invoice's path from GPU-hours to total. Raises ValueError if the invoice's band
    lines do not price exactly its billable units (a corrupt document, never shown explained)."""
    unit_lines: dict[str, list[int]] = defaultdict(list)
    reservation_lines: dict[str, list[int]] = defaultdict(list)
    priced_units: dict[str, Decimal] = defaultdict(lambda: ZERO)
    steps = []
    running = ZERO
    for number, line in enumerate(invoice.lines, start=1):
        running += line.amount
        steps.append(Step(number, line.kind, line.description, line.quantity, line.unit,
                          line.unit_price, line.amount, running))
        if line.hardware_tier is None:
            continue
        if line.kind in (LineKind.USAGE, LineKind.BAND_FEE):
            unit_lines[line.hardware_tier].append(number)
            if line.kind is LineKind.USAGE:
                priced_units[line.hardware_tier] += line.quantity
        elif line.kind is LineKind.RESERVATION:
            reservation_lines[line.hardware_tier].append(number)
    billable: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for usage in invoice.usage:
        billable[usage.hardware_tier] += usage.billable_units
    for tier in sorted(billable.keys() | priced_units.keys()):
        if billable[tier] != priced_units[tier]:
            raise ValueError(f"invoice of {invoice.tenant} for {invoice.period}: {tier} has "
                             f"{billable[tier]} billable units but its band lines price "
                             f"{priced_units[tier]}")
    if running != invoice.total:
        raise ValueError(f"invoice of {invoice.tenant} for {invoice.period}: lines add up to "
                         f"{running}, total is {invoice.total}")
    units = tuple(
        UnitsRow(u.hardware_tier, u.size_class, u.gpu_hours, u.covered_gpu_hours,
                 u.overflow_gpu_hours, u.multiplier, u.billable_units,
                 tuple(sorted((reservation_lines[u.hardware_tier] if u.covered_gpu_hours
                               else []) + (unit_lines[u.hardware_tier] if u.billable_units
                                           else []))))
        for u in invoice.usage)
    return Explanation(invoice.currency, units, tuple(steps), invoice.total)
