"""Off-peak work: batch and fine-tuning GPU-hours that run in a tier's peak hours, moved to
its off-peak hours, priced by the invoice engine under the tenant's own rate card.

The move (`move_off_peak`): each peak hour of movable work goes, whole, to the first
off-peak hour of the same tier after it (within the billing period, at most a week later)
that no other moved hour of the tenant and tier took, so the work keeps its concurrency
instead of piling into one hour. Work with no such hour stays where it is (`unplaced`).
The saving is the invoice's charges as run minus its charges with the work moved: both
from `price_invoice`, so bands, time-of-use prices, discounts, reservations netted hour by
hour and minimums all count as they would on the bill. Charges are the lines before credits
and tax: a saving paid out of a prepaid credit is a saving all the same. The capacity freed
for inference at peak is the moved GPU-hours, and their largest hour (GPUs free in that peak
hour)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import polars as pl

from models.billing.pricing import Invoice, LineKind, UsageHour, price_invoice
from models.billing.rate_cards import RateCard, Tenant, month_bounds
from models.ledger.usage import WorkloadKind

MOVABLE = frozenset({WorkloadKind.BATCH.value, WorkloadKind.FINE_TUNING.value})
"""Work that can wait for off-peak hours; inference serves users now."""
HOUR = timedelta(hours=1)
SEARCH = timedelta(days=7)


@dataclass(frozen=True)
class OffPeakMove:
    """The recommendation for one tenant: what moves, what it saves, what it frees."""

    tenant: str
    period: str
    kinds: tuple[str, ...]
    peak_gpu_hours: dict[str, Decimal]
    """Movable GPU-hours in peak hours, per tier."""
    moved_gpu_hours: dict[str, Decimal]
    unplaced_gpu_hours: dict[str, Decimal]
    freed_peak_gpus: dict[str, Decimal]
    """Per tier, the largest GPU-hours moved out of one peak hour: GPUs free for inference."""
    charges_as_run: Decimal
    charges_moved: Decimal
    currency: str

    @property
    def saving(self) -> Decimal:
        return self.charges_as_run - self.charges_moved


def move_off_peak(usage: Sequence[tuple[UsageHour, str]], card: RateCard, period: str
                  ) -> tuple[list[UsageHour], dict[str, Decimal], dict[str, Decimal],
                             dict[str, Decimal], dict[str, Decimal]]:
    """The tenant's usage with its movable peak work moved; and per tier the movable peak
    GPU-hours, the moved ones, the unplaced ones and the largest hour moved."""
    lo, hi = month_bounds(period)
    kept: list[UsageHour] = []
    peak: dict[str, Decimal] = defaultdict(Decimal)
    moved: dict[str, Decimal] = defaultdict(Decimal)
    unplaced: dict[str, Decimal] = defaultdict(Decimal)
    freed: dict[str, Decimal] = defaultdict(Decimal)
    # Per tier, the peak hours to move (all size classes of an hour move together).
    to_move: dict[str, dict[datetime, list[UsageHour]]] = defaultdict(lambda: defaultdict(list))
    for row, kind in usage:
        time_of_use = card.tier(row.hardware_tier).time_of_use
        if kind in MOVABLE and time_of_use is not None and not time_of_use.off_peak(row.hour):
            to_move[row.hardware_tier][row.hour].append(row)
        else:
            kept.append(row)
    for tier, hours in to_move.items():
        time_of_use = card.tier(tier).time_of_use
        assert time_of_use is not None
        taken: set[datetime] = set()
        for hour in sorted(hours):
            gpu_hours = sum((r.gpu_hours for r in hours[hour]), Decimal(0))
            peak[tier] += gpu_hours
            target = hour + HOUR
            while target < min(hi, hour + SEARCH) and (
                    target in taken or not time_of_use.off_peak(target)):
                target += HOUR
            if target >= min(hi, hour + SEARCH) or target < lo:
                unplaced[tier] += gpu_hours
                kept.extend(hours[hour])
                continue
            taken.add(target)
            moved[tier] += gpu_hours
            freed[tier] = max(freed[tier], gpu_hours)
            kept.extend(UsageHour(target, r.hardware_tier, r.size_class, r.gpu_hours)
                        for r in hours[hour])
    return kept, dict(peak), dict(moved), dict(unplaced), dict(freed)


def off_peak_move(tenant: Tenant, card: RateCard, period: str,
                  usage: Sequence[tuple[UsageHour, str]]) -> OffPeakMove | None:
    """The off-peak recommendation of `tenant` for `period`, or None when none of its batch
    or fine-tuning work runs in a tier's peak hours (or moving it saves nothing)."""
    moved_usage, peak, moved, unplaced, freed = move_off_peak(usage, card, period)
    if not moved:
        return None
    as_run = charges(price_invoice(tenant, card, period, [row for row, _ in usage]))
    with_move = charges(price_invoice(tenant, card, period, moved_usage))
    if with_move >= as_run:
        return None
    kinds = tuple(sorted({k for _, k in usage if k in MOVABLE}))
    return OffPeakMove(tenant.name, period, kinds, peak, moved, unplaced, freed,
                       as_run, with_move, card.currency)


def charges(invoice: Invoice) -> Decimal:
    """The invoice's lines before credits and tax."""
    return sum((line.amount for line in invoice.lines
                if line.kind not in (LineKind.CREDIT, LineKind.TAX)), Decimal(0))


OFF_PEAK_SCHEMA: dict[str, pl.DataType] = {
    "tenant": pl.String(), "period": pl.String(), "hardware_tier": pl.String(),
    "kinds": pl.String(), "peak_gpu_hours": pl.Decimal(18, 6),
    "moved_gpu_hours": pl.Decimal(18, 6), "unplaced_gpu_hours": pl.Decimal(18, 6),
    "freed_peak_gpus": pl.Decimal(18, 6), "currency": pl.String(),
    "charges_as_run": pl.Decimal(18, 4), "charges_moved": pl.Decimal(18, 4),
    "saving": pl.Decimal(18, 4)}
"""The warehouse's `off_peak_recommendations` (`day` added when stored): a row per tenant and
tier with movable peak work; the move's charges and saving (all its tiers) on each."""


def moves_frame(moves: Sequence[OffPeakMove]) -> pl.DataFrame:
    return pl.DataFrame([{
        "tenant": m.tenant, "period": m.period, "hardware_tier": tier,
        "kinds": ",".join(m.kinds), "peak_gpu_hours": peak,
        "moved_gpu_hours": m.moved_gpu_hours.get(tier, Decimal(0)),
        "unplaced_gpu_hours": m.unplaced_gpu_hours.get(tier, Decimal(0)),
        "freed_peak_gpus": m.freed_peak_gpus.get(tier, Decimal(0)), "currency": m.currency,
        "charges_as_run": m.charges_as_run, "charges_moved": m.charges_moved,
        "saving": m.saving} for m in moves for tier, peak in sorted(m.peak_gpu_hours.items())],
        schema=OFF_PEAK_SCHEMA)
