"""Latency SLAs under bursts: P95 latency from histograms, burst episodes, and the rule
"P95 above the SLA x 1.2 during bursts -> a dedicated reservation sized from burst demand".

Bursts (BurstRule): an interval of a tenant on an endpoint (namespace + model) is in a burst
when its request rate, or its GPU demand (ledger GPU-seconds / interval seconds), is at least
`factor` times the median of the same signal over the `base_minutes` before it (the tenant's
recent base), and the base has at least `min_base_intervals` observed intervals. Intervals
without a row are not observed (never read as zero). Burst intervals at most `merge_gap_s`
apart form one episode; episodes shorter than `min_episode_s` are noise and dropped; every
interval inside a remaining episode is in the burst. A trailing median is robust to the
bursts themselves: a burst does not raise its own base.

A dedicated reservation is sized from the burst demand: the P95 over burst intervals of the
tenant's GPUs on the endpoint (its apportioned GPU-seconds / interval seconds), rounded up to
whole GPUs, at least one. Its evidence: the episodes, P95 in and out of bursts against the
target, and the reservation's monthly cost (reserved price x 730 h) against the SLA miss:
requests in bursts slower than the target, projected to a month, and the cost per such
request.

P95 is read as Prometheus' `histogram_quantile(0.95, sum by (le) (...))` reads it: buckets of
the same `le` summed, then linear interpolation inside the bucket the rank falls in (the
highest finite bound when it falls in +Inf).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from itertools import groupby
from typing import Any

import duckdb
import numpy as np
import polars as pl

from models.billing.rate_cards import RateCard, Tenant
from models.ledger import warehouse
from models.planning.quotas import Recommendation
from models.planning.reservations import CENT, MONTH_HOURS

SLA_MARGIN = Decimal("1.2")
"""The rule's tolerance: a breach is a P95 in bursts above the target by more than 20%."""
QUANTILE = 0.95

Buckets = Sequence[tuple[float, int]]
"""Cumulative (le, count) pairs, as Prometheus histogram buckets are; +Inf last."""


def merge_buckets(histograms: Iterable[Buckets | None]) -> list[tuple[float, int]]:
    """`sum by (le)`: counts of equal bounds added; rows without a histogram are skipped."""
    total: dict[float, int] = {}
    for buckets in histograms:
        for le, count in buckets or ():
            total[le] = total.get(le, 0) + count
    return sorted(total.items())


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """Prometheus' bucketQuantile (promql/quantile.go); None where Prometheus returns NaN
    (no +Inf bucket, fewer than two buckets, or no observations)."""
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return None
    bounds = [le for le, _ in ordered]
    # Prometheus repairs non-monotonic counts (scrapes of a histogram that moved mid-read).
    counts = [float(c) for c in np.maximum.accumulate([c for _, c in ordered])]
    observations = counts[-1]
    if observations == 0:
        return None
    rank = q * observations
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(ordered) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, end, count = 0.0, bounds[b], counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count)


def requests_over(target_s: float, buckets: Buckets) -> int:
    """Requests slower than `target_s`, interpolating inside the target's bucket as
    histogram_quantile does; beyond the highest finite bound only the +Inf bucket counts."""
    ordered = sorted(buckets)
    if not ordered:
        return 0
    total = ordered[-1][1]
    within = 0.0
    lower, below = 0.0, 0
    for le, count in ordered:
        if math.isinf(le):
            within = below
            break
        if target_s <= le:
            within = below + (count - below) * (target_s - lower) / (le - lower)
            break
        lower, below = le, count
    return max(0, total - math.ceil(within))


@dataclass(frozen=True)
class BurstRule:
    factor: float = 2.0
    """A burst interval's signal is at least this multiple of its recent base."""
    base_minutes: int = 60
    """The recent base: the median of the signal over this many minutes before the interval."""
    min_base_intervals: int = 10
    """Fewer observed intervals in the base window: no base, no burst."""
    merge_gap_s: int = 120
    """Burst intervals at most this far apart belong to one episode."""
    min_episode_s: int = 180
    """Shorter episodes are noise (one busy minute), not bursts: dropped."""

    def __post_init__(self) -> None:
        if self.factor <= 1:
            raise ValueError(f"burst factor must be above 1, got {self.factor}")
        if (self.base_minutes <= 0 or self.min_base_intervals < 1 or self.merge_gap_s < 0
                or self.min_episode_s < 0):
            raise ValueError(f"burst rule out of range: {self}")


def burst_flags(epoch_s: np.ndarray, values: np.ndarray, rule: BurstRule) -> np.ndarray:
    """For time-sorted observations, whether each is at least `rule.factor` x the median of the
    observations in the `rule.base_minutes` before it."""
    flags = np.zeros(len(values), dtype=bool)
    starts = np.searchsorted(epoch_s, epoch_s - rule.base_minutes * 60, side="left")
    for i, lo in enumerate(starts):
        if i - lo >= rule.min_base_intervals:
            base = float(np.median(values[lo:i]))
            flags[i] = values[i] > 0 and values[i] >= rule.factor * base
    return flags


@dataclass(frozen=True)
class Episode:
    start: datetime
    end: datetime
    """End of the episode's last interval."""
    intervals: int
    peak_requests_per_s: float
    peak_gpus: float


def episodes(starts: Sequence[datetime], durations_s: Sequence[float], flags: Sequence[bool],
             rates: Sequence[float], gpus: Sequence[float], rule: BurstRule) -> list[Episode]:
    """Burst intervals grouped into episodes (gaps up to `rule.merge_gap_s` joined), those
    shorter than `rule.min_episode_s` dropped."""
    found: list[Episode] = []
    for t, d, f, r, g in zip(starts, durations_s, flags, rates, gpus, strict=True):
        if not f:
            continue
        end = t + timedelta(seconds=d)
        last = found[-1] if found else None
        if last is not None and (t - last.end).total_seconds() <= rule.merge_gap_s:
            found[-1] = Episode(last.start, end, last.intervals + 1,
                                max(last.peak_requests_per_s, r), max(last.peak_gpus, g))
        else:
            found.append(Episode(t, end, 1, r, g))
    return [e for e in found if (e.end - e.start).total_seconds() >= rule.min_episode_s]


@dataclass(frozen=True)
class Interval:
    """One tenant's work on one endpoint in one interval."""

    start: datetime
    duration_s: float
    requests: int
    latency_buckets: Buckets | None
    gpu_seconds: float
    """The tenant's GPU-seconds on the endpoint in the interval (its ledger rows)."""


@dataclass(frozen=True)
class EndpointLatency:
    """A tenant's latency on one endpoint, in and out of its bursts, against its target."""

    tenant: str
    namespace: str
    model: str
    hardware_tier: str | None
    target_p95_s: Decimal | None
    p95_s: float | None
    p95_in_bursts_s: float | None
    p95_out_of_bursts_s: float | None
    requests_in_bursts: int
    late_requests_in_bursts: int
    """Requests in bursts slower than the target (0 without a target)."""
    burst_demand_gpus: float
    """The P95 over burst intervals of the tenant's GPUs on the endpoint."""
    observed_hours: float
    episodes: tuple[Episode, ...]

    @property
    def breached(self) -> bool:
        return (self.target_p95_s is not None and self.p95_in_bursts_s is not None
                and Decimal(repr(self.p95_in_bursts_s)) > self.target_p95_s * SLA_MARGIN)


def endpoint_latency(tenant: str, namespace: str, model: str, hardware_tier: str | None,
                     target_p95_s: Decimal | None, intervals: Sequence[Interval],
                     rule: BurstRule) -> EndpointLatency:
    """Bursts by request rate or GPU demand, and P95 in and out of them, of one tenant on one
    endpoint (`intervals` in time order)."""
    epoch = np.array([i.start.timestamp() for i in intervals])
    rates = np.array([i.requests / i.duration_s for i in intervals])
    gpus = np.array([i.gpu_seconds / i.duration_s for i in intervals])
    flagged = burst_flags(epoch, rates, rule) | burst_flags(epoch, gpus, rule)
    found = episodes([i.start for i in intervals], [i.duration_s for i in intervals],
                     list(flagged), list(rates), list(gpus), rule)
    # In a burst: every interval inside an episode's window, the short gaps it joined too.
    flags = np.zeros(len(intervals), dtype=bool)
    for e in found:
        flags |= (epoch >= e.start.timestamp()) & (epoch < e.end.timestamp())
    inside = [i.latency_buckets for i, f in zip(intervals, flags, strict=True) if f]
    outside = [i.latency_buckets for i, f in zip(intervals, flags, strict=True) if not f]
    in_buckets = merge_buckets(inside)
    late = (requests_over(float(target_p95_s), in_buckets)
            if target_p95_s is not None else 0)
    return EndpointLatency(
        tenant, namespace, model, hardware_tier, target_p95_s,
        histogram_quantile(QUANTILE, merge_buckets(i.latency_buckets for i in intervals)),
        histogram_quantile(QUANTILE, in_buckets),
        histogram_quantile(QUANTILE, merge_buckets(outside)),
        int(sum(i.requests for i, f in zip(intervals, flags, strict=True) if f)), late,
        float(np.percentile(gpus[flags], 95)) if flags.any() else 0.0,
        float(sum(i.duration_s for i in intervals)) / 3600, tuple(found))


@dataclass(frozen=True)
class DedicatedReservation:
    """The rule's recommendation, with its evidence."""

    finding: EndpointLatency
    namespace: str
    """The tenant's namespace the reservation's quota goes to."""
    gpus: int
    monthly_cost: Decimal
    """`gpus` x MONTH_HOURS at the tier's reserved price."""
    late_requests_per_month: int
    """Late requests in bursts projected to a MONTH_HOURS month from the observed hours."""
    currency: str

    @property
    def cost_per_late_request(self) -> Decimal | None:
        """What the reservation costs per SLA-missing request it is meant to prevent."""
        if not self.late_requests_per_month:
            return None
        return (self.monthly_cost / self.late_requests_per_month).quantize(
            Decimal("0.0001"), rounding=ROUND_HALF_UP)

    def recommendation(self, in_use_gpus: int | None = None) -> Recommendation:
        """As the quota path takes it: latency-sensitive, so it lends none of its GPUs."""
        return Recommendation(self.finding.tenant, self.namespace,
                              self.finding.hardware_tier or "", None, self.gpus,
                              in_use_gpus=in_use_gpus, sla_class="latency-sensitive")


def dedicated_reservation(finding: EndpointLatency, namespace: str,
                          reserved_price: Mapping[str, Decimal], currency: str
                          ) -> DedicatedReservation | None:
    """A dedicated reservation when the tenant's P95 in bursts breaches its target by more than
    20%: whole GPUs covering the P95 of its burst demand, priced at the tier's reserved price."""
    if not finding.breached or finding.hardware_tier is None:
        return None
    price = reserved_price.get(finding.hardware_tier)
    if price is None:
        return None
    gpus = max(1, int(Decimal(repr(finding.burst_demand_gpus)).to_integral_value(ROUND_CEILING)))
    monthly = (gpus * MONTH_HOURS * price).quantize(CENT, rounding=ROUND_HALF_UP)
    per_month = (round(finding.late_requests_in_bursts * MONTH_HOURS / finding.observed_hours)
                 if finding.observed_hours else 0)
    return DedicatedReservation(finding, namespace, gpus, monthly, per_month, currency)


@dataclass(frozen=True)
class LatencyReport:
    findings: list[EndpointLatency]
    reservations: list[DedicatedReservation]
    unpriced: list[EndpointLatency]
    """Breaches on a tier without a reserved price, or of a tenant without a namespace: shown,
    not sized into a quota."""


def latency_report(con: duckdb.DuckDBPyConnection, tenants: Mapping[str, Tenant],
                   card: RateCard, start: datetime, end: datetime,
                   rule: BurstRule = BurstRule()) -> LatencyReport:
    """Latency in and out of bursts of every tenant on every endpoint in [start, end) from the
    warehouse, and a dedicated reservation for each breach of a declared target."""
    return report_of(warehouse.endpoint_intervals(con, start, end), tenants, card, rule)


def report_of(rows: Sequence[tuple[Any, ...]], tenants: Mapping[str, Tenant], card: RateCard,
              rule: BurstRule = BurstRule()) -> LatencyReport:
    """`latency_report` of `warehouse.endpoint_intervals` rows."""
    prices = {t.name: t.reserved_price for t in card.tiers if t.reserved_price is not None}
    findings, reservations, unpriced = [], [], []
    for (tenant, namespace, model), group in groupby(rows, key=lambda r: r[:3]):
        items = list(group)
        declared = tenants.get(tenant)
        finding = endpoint_latency(
            tenant, namespace, model, items[0][3],
            declared.p95_latency_seconds if declared else None,
            [Interval(r[4], r[5], r[6], [(b["le"], b["count"]) for b in r[7] or ()], r[8])
             for r in items], rule)
        findings.append(finding)
        if not finding.breached:
            continue
        reservation = (dedicated_reservation(finding, declared.namespaces[0], prices,
                                             card.currency)
                       if declared and declared.namespaces else None)
        if reservation is None:
            unpriced.append(finding)
        else:
            reservations.append(reservation)
    return LatencyReport(findings, reservations, unpriced)


# The warehouse's analytics tables of a report (sql/schema.sql), `day` added when stored.
FINDINGS_SCHEMA: dict[str, pl.DataType] = {
    "tenant": pl.String(), "namespace": pl.String(), "model": pl.String(),
    "hardware_tier": pl.String(), "window_start": pl.Datetime("us", "UTC"),
    "window_end": pl.Datetime("us", "UTC"), "target_p95_s": pl.Decimal(18, 6),
    "p95_s": pl.Float64(), "p95_in_bursts_s": pl.Float64(), "p95_out_of_bursts_s": pl.Float64(),
    "breached": pl.Boolean(), "requests_in_bursts": pl.Int64(),
    "late_requests_in_bursts": pl.Int64(), "burst_demand_gpus": pl.Float64(),
    "observed_hours": pl.Float64(), "burst_episodes": pl.Int64()}
EPISODES_SCHEMA: dict[str, pl.DataType] = {
    "tenant": pl.String(), "namespace": pl.String(), "model": pl.String(),
    "episode_start": pl.Datetime("us", "UTC"), "episode_end": pl.Datetime("us", "UTC"),
    "intervals": pl.Int64(), "peak_requests_per_s": pl.Float64(), "peak_gpus": pl.Float64()}
RATES_SCHEMA: dict[str, pl.DataType] = {
    "tenant": pl.String(), "namespace": pl.String(), "model": pl.String(),
    "window_start": pl.Datetime("us", "UTC"), "duration_s": pl.Float64(),
    "requests_per_s": pl.Float64(), "gpus": pl.Float64()}
DEDICATED_SCHEMA: dict[str, pl.DataType] = {
    "tenant": pl.String(), "namespace": pl.String(), "endpoint_namespace": pl.String(),
    "model": pl.String(), "hardware_tier": pl.String(), "recommended_gpus": pl.Int64(),
    "burst_demand_gpus": pl.Float64(), "target_p95_s": pl.Decimal(18, 6),
    "p95_in_bursts_s": pl.Float64(), "p95_out_of_bursts_s": pl.Float64(),
    "late_requests_per_month": pl.Int64(), "currency": pl.String(),
    "monthly_cost": pl.Decimal(18, 2), "cost_per_late_request": pl.Decimal(18, 4)}


def report_frames(report: LatencyReport, rows: Sequence[tuple[Any, ...]], start: datetime,
                  end: datetime) -> dict[str, pl.DataFrame]:
    """The report as the warehouse stores it: table name -> rows (`rows`: the
    `endpoint_intervals` it was computed from, kept as the request rates behind the bursts)."""
    findings = pl.DataFrame([{
        "tenant": f.tenant, "namespace": f.namespace, "model": f.model,
        "hardware_tier": f.hardware_tier, "window_start": start, "window_end": end,
        "target_p95_s": f.target_p95_s, "p95_s": f.p95_s,
        "p95_in_bursts_s": f.p95_in_bursts_s, "p95_out_of_bursts_s": f.p95_out_of_bursts_s,
        "breached": f.breached, "requests_in_bursts": f.requests_in_bursts,
        "late_requests_in_bursts": f.late_requests_in_bursts,
        "burst_demand_gpus": f.burst_demand_gpus, "observed_hours": f.observed_hours,
        "burst_episodes": len(f.episodes)} for f in report.findings], schema=FINDINGS_SCHEMA)
    episodes_ = pl.DataFrame([{
        "tenant": f.tenant, "namespace": f.namespace, "model": f.model,
        "episode_start": e.start, "episode_end": e.end, "intervals": e.intervals,
        "peak_requests_per_s": e.peak_requests_per_s, "peak_gpus": e.peak_gpus}
        for f in report.findings for e in f.episodes], schema=EPISODES_SCHEMA)
    rates = pl.DataFrame([{
        "tenant": r[0], "namespace": r[1], "model": r[2], "window_start": r[4],
        "duration_s": r[5], "requests_per_s": r[6] / r[5], "gpus": r[8] / r[5]}
        for r in rows], schema=RATES_SCHEMA)
    dedicated = pl.DataFrame([{
        "tenant": r.finding.tenant, "namespace": r.namespace,
        "endpoint_namespace": r.finding.namespace, "model": r.finding.model,
        "hardware_tier": r.finding.hardware_tier, "recommended_gpus": r.gpus,
        "burst_demand_gpus": r.finding.burst_demand_gpus,
        "target_p95_s": r.finding.target_p95_s, "p95_in_bursts_s": r.finding.p95_in_bursts_s,
        "p95_out_of_bursts_s": r.finding.p95_out_of_bursts_s,
        "late_requests_per_month": r.late_requests_per_month, "currency": r.currency,
        "monthly_cost": r.monthly_cost, "cost_per_late_request": r.cost_per_late_request}
        for r in report.reservations], schema=DEDICATED_SCHEMA)
    return {"latency_findings": findings, "burst_episodes": episodes_,
            "request_rates": rates, "dedicated_reservation_recommendations": dedicated}
