"""Idle GPU capacity by cause: why the GPUs nobody used were idle, and what that cost.

The ledger writes every unallocated GPU-second as `__idle__` (conservation), and the idle time
of a shared endpoint as `__shared_idle__`. Each idle GPU-second of an hour and hardware tier
gets exactly one cause, the first that applies in this order:

1. `shared_endpoint_idle`: a shared endpoint's time without requests (`__shared_idle__`).
2. `unpartitioned_mig`: slices of a MIG-mode GPU that no instance covers, which no pod can
   use until the GPU is repartitioned (the pod collector's idle rows of device
   `<node>/gpu<i>-unpartitioned`).
3. `reserved_unused`: capacity a tenant reserved and did not use that hour (the invoices'
   netting, UNUSED cells); its holder pays for it through the reservation line, so it is
   shown apart from the platform's own idle, per holder.
4. `queue_held`: capacity a Kueue ClusterQueue's nominal quota holds for its tenant beyond
   what the tenant used or reserved that hour (quota figures in force, from
   `scheduler_quota_changes`).
5. `unreserved_idle`: the rest, idle capacity nothing held.

Causes 3 and 4 can claim only what is idle in that hour and tier, so the split of every hour
sums to its idle GPU-seconds exactly; GPU-hours and values are then split by the largest
remainder (pricing.allocate), so per period and tier the causes sum to the idle total to the
6th decimal of a GPU-hour and to the cent."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

import duckdb

from models.billing.pricing import QUANTITY, allocate
from models.ledger.tiers import mig_gpu_equivalents
from models.ledger.usage import IDLE_TENANT, SHARED_IDLE_TENANT
from models.ledger.warehouse import IN_FORCE_OUTCOMES
from models.planning.quotas import dns_name

UNPARTITIONED = "%-unpartitioned"
"""gpu_uuid (LIKE pattern) of the pod collector's idle rows for slices no MIG instance covers
(collectors.pods.NodeGpus.devices)."""
ZERO = Decimal(0)
HOUR_S = Decimal(3600)


class IdleCause(StrEnum):
    SHARED_ENDPOINT_IDLE = "shared_endpoint_idle"
    UNPARTITIONED_MIG = "unpartitioned_mig"
    RESERVED_UNUSED = "reserved_unused"
    QUEUE_HELD = "queue_held"
    UNRESERVED_IDLE = "unreserved_idle"

    @property
    def label(self) -> str:
        return {
            "shared_endpoint_idle": "Shared endpoint idle",
            "unpartitioned_mig": "MIG slices not partitioned",
            "reserved_unused": "Reserved but unused (billed to its holder)",
            "queue_held": "Held by queue quotas",
            "unreserved_idle": "Unreserved idle",
        }[self.value]


@dataclass(frozen=True)
class IdleSplit:
    period: str
    hardware_tier: str
    gpu_hours: Mapping[IdleCause, Decimal]
    """Per cause, at 6 decimals; they sum to the period's idle GPU-hours of the tier."""
    reserved_by_holder: Mapping[str, Decimal]
    """The reserved-but-unused GPU-hours per tenant holding the reservations, at 6 decimals;
    they sum to `gpu_hours[RESERVED_UNUSED]`."""

    @property
    def total_gpu_hours(self) -> Decimal:
        return sum(self.gpu_hours.values(), ZERO)


def _quota_figures(con: duckdb.DuckDBPyConnection, tenants: Iterable[str],
                   tiers: Iterable[str]) -> dict[tuple[str, str], list[tuple[datetime, Decimal]]]:
    """Each tenant's and tier's ClusterQueue nominal quota over time, in GPU-equivalents:
    (changed_at, GPUs) in time order, a MIG resource counted at its profile's share."""
    queue_of = {dns_name(t): t for t in tenants}
    flavor_of = {dns_name(t): t for t in tiers}
    rows = con.execute(
        "SELECT name, flavor, resource, changed_at, after_gpus FROM scheduler_quota_changes "
        "WHERE kind = 'ClusterQueue' AND list_contains(?, outcome) ORDER BY changed_at",
        [list(IN_FORCE_OUTCOMES)]).fetchall()
    current: dict[tuple[str, str], dict[str, Decimal]] = defaultdict(dict)
    timeline: dict[tuple[str, str], list[tuple[datetime, Decimal]]] = defaultdict(list)
    for name, flavor, resource, changed_at, gpus in rows:
        tenant, tier = queue_of.get(name), flavor_of.get(flavor)
        if tenant is None or tier is None:
            continue  # a queue or flavor of no tenant or tier billed here
        profile = resource.removeprefix("nvidia.com/mig-") if "mig-" in resource else None
        share = Decimal(1) if profile is None else Decimal(
            mig_gpu_equivalents(profile).numerator) / mig_gpu_equivalents(profile).denominator
        figures = current[(tenant, tier)]
        figures[resource] = Decimal(gpus) * share
        timeline[(tenant, tier)].append((changed_at, sum(figures.values(), ZERO)))
    return timeline


def _in_force(timeline: list[tuple[datetime, Decimal]], moment: datetime) -> Decimal:
    """The quota figure set last at or before `moment` (0 before the first)."""
    i = bisect.bisect_right([t for t, _ in timeline], moment)
    return timeline[i - 1][1] if i else ZERO


def idle_by_cause(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime,
                  tenants: Iterable[str]) -> list[IdleSplit]:
    """The idle GPU-hours of [start, end) by cause, per month and hardware tier with idle
    capacity (see the module's docstring for the causes and their order)."""
    names = sorted(tenants)
    hourly = con.execute(
        "SELECT hour, hardware_tier, "
        "coalesce(sum(allocated_gpu_seconds) FILTER (WHERE tenant = ?), 0), "
        "coalesce(sum(allocated_gpu_seconds) FILTER (WHERE tenant = ?), 0) "
        "FROM usage_hourly WHERE hour >= ? AND hour < ? GROUP BY ALL ORDER BY ALL",
        [IDLE_TENANT, SHARED_IDLE_TENANT, start, end]).fetchall()
    # usage_hourly has no device, so the unpartitioned slices come from the ledger, summed
    # as the hourly rollup sums them (models/ledger/sql/hourly.sql).
    unpartitioned: dict[tuple[datetime, str], Decimal] = {
        (hour, tier): seconds for hour, tier, seconds in con.execute(
            "SELECT date_trunc('hour', window_start), hardware_tier, "
            "sum(allocated_gpu_seconds::DECIMAL(38, 6)) FROM ledger "
            "WHERE tenant = ? AND gpu_uuid LIKE ? AND window_start >= ? AND window_start < ? "
            "GROUP BY ALL", [IDLE_TENANT, UNPARTITIONED, start, end]).fetchall()}
    # The netting of each month's invoice (not of its notes): per hour, tier and tenant the
    # reservations' capacity and what of it went unused, in GPU-hours.
    reserved: dict[tuple[datetime, str, str], Decimal] = defaultdict(lambda: ZERO)
    unused: dict[tuple[datetime, str], dict[str, Decimal]] = defaultdict(
        lambda: defaultdict(lambda: ZERO))
    for hour, tier, tenant, use, gpu_hours in con.execute(
            "SELECT h.hour, h.hardware_tier, i.tenant, h.hour_use, sum(h.gpu_hours) "
            "FROM invoice_hours h JOIN invoices i USING (invoice_id) "
            "WHERE i.kind = 'invoice' AND h.reservation_id IS NOT NULL "
            "AND h.hour >= ? AND h.hour < ? GROUP BY ALL", [start, end]).fetchall():
        reserved[(hour, tier, tenant)] += gpu_hours
        if use == "unused":
            unused[(hour, tier)][tenant] += gpu_hours
    tiers = sorted({tier for _, tier, *_ in hourly})
    quotas = _quota_figures(con, names, tiers)
    used: dict[tuple[datetime, str, str], Decimal] = {}
    if quotas:
        for hour, tier, tenant, gpu_seconds in con.execute(
                "SELECT hour, hardware_tier, tenant, sum(allocated_gpu_seconds) "
                "FROM usage_hourly WHERE hour >= ? AND hour < ? AND list_contains(?, tenant) "
                "GROUP BY ALL", [start, end, names]).fetchall():
            used[(hour, tier, tenant)] = gpu_seconds / HOUR_S
    queues_of_tier: dict[str, list[tuple[str, list[tuple[datetime, Decimal]]]]] = defaultdict(
        list)
    for (tenant, tier), timeline in sorted(quotas.items()):
        queues_of_tier[tier].append((tenant, timeline))

    seconds: dict[tuple[str, str], dict[IdleCause, Decimal]] = defaultdict(
        lambda: dict.fromkeys(IdleCause, ZERO))
    # Weights only: what of each holder's unused hours the idle GPUs could take (all of it,
    # or the same share of every holder's when less was idle).
    holders: dict[tuple[str, str], dict[str, Decimal]] = defaultdict(
        lambda: defaultdict(lambda: ZERO))
    for hour, tier, idle, shared in hourly:
        held = ZERO
        for tenant, timeline in queues_of_tier.get(tier, ()):
            floor = max(used.get((hour, tier, tenant), ZERO),
                        reserved.get((hour, tier, tenant), ZERO))
            held += max(ZERO, _in_force(timeline, hour) - floor)
        left = Decimal(idle)
        split = seconds[(f"{hour:%Y-%m}", tier)]
        split[IdleCause.SHARED_ENDPOINT_IDLE] += shared
        unused_of = unused.get((hour, tier), {})
        for cause, claim in ((IdleCause.UNPARTITIONED_MIG, unpartitioned.get((hour, tier), ZERO)),
                             (IdleCause.RESERVED_UNUSED, sum(unused_of.values(), ZERO) * HOUR_S),
                             (IdleCause.QUEUE_HELD, held * HOUR_S)):
            taken = min(claim, left)
            split[cause] += taken
            left -= taken
            if cause is IdleCause.RESERVED_UNUSED and taken:
                for tenant, gpu_hours in unused_of.items():
                    holders[(f"{hour:%Y-%m}", tier)][tenant] += gpu_hours * taken / claim
        split[IdleCause.UNRESERVED_IDLE] += left
    out = []
    for (period, tier), by_cause in sorted(seconds.items()):
        total = (sum(by_cause.values(), ZERO) / HOUR_S).quantize(QUANTITY)
        if not total:
            continue  # a tier with no idle capacity that month has nothing to split
        causes = list(IdleCause)
        shares = dict(zip(causes, allocate(total, [by_cause[c] for c in causes], QUANTITY),
                          strict=True))
        weights = holders.get((period, tier), {})
        holder_names = sorted(weights)
        by_holder = allocate(shares[IdleCause.RESERVED_UNUSED],
                             [weights[n] for n in holder_names], QUANTITY) if holder_names else []
        out.append(IdleSplit(period, tier, shares,
                             dict(zip(holder_names, by_holder, strict=True))))
    return out


def split_value(value: Decimal, split: IdleSplit, quantum: Decimal) -> dict[IdleCause, Decimal]:
    """The value of a period's idle capacity of a tier, split over its causes in proportion to
    their GPU-hours: multiples of `quantum` that sum to `value` exactly."""
    causes = list(IdleCause)
    if not split.total_gpu_hours:
        return dict.fromkeys(causes, ZERO)
    shares = allocate(value, [split.gpu_hours[c] for c in causes], quantum)
    return dict(zip(causes, shares, strict=True))

