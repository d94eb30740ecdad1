"""Inference analytics for one UTC day: latency against each tenant's P95 target in and out of
its bursts, the dedicated reservations the SLA rule recommends, and off-peak moves of batch and
fine-tuning work. The engines are the CLI's (`chargeback quotas sla`, `chargeback advise
off-peak`); each asset rewrites exactly its day's rows, so reruns replace, never add."""

from datetime import timedelta

import dagster as dg

from models.billing.rate_cards import month_bounds
from models.ledger import warehouse
from models.planning.latency import BurstRule, report_frames, report_of
from models.planning.off_peak import moves_frame, off_peak_move
from pipelines.analytics.assets import end_of
from pipelines.ingest.assets import gpu_usage_hourly, gpu_usage_ledger
from pipelines.partitions import DAILY, partition_day
from pipelines.resources import BillingConfigResource, WarehouseResource

GROUP = "analytics"
DEFAULT_LATENCY_LOOKBACK_DAYS = 7
"""A week of intervals: every weekday's bursts, and a base an hour long before each."""
LATENCY_TABLES = ("latency_findings", "burst_episodes", "request_rates",
                  "dedicated_reservation_recommendations")


class LatencyConfig(dg.Config):
    lookback_days: int = DEFAULT_LATENCY_LOOKBACK_DAYS
    """Days of request work up to and including the partition day."""


@dg.asset(partitions_def=DAILY, group_name=GROUP, deps=[gpu_usage_ledger])
def latency_slas(
    context: dg.AssetExecutionContext,
    config: LatencyConfig,
    warehouse_db: WarehouseResource,
    billing: BillingConfigResource,
) -> dg.MaterializeResult:
    """P95 latency per tenant and endpoint in and out of its bursts against its declared
    target, the burst episodes and request rates, and a dedicated reservation (sized from
    burst demand, priced at the tier's reserved price) for each breach by more than 20%."""
    day = partition_day(context)
    end = end_of(day)
    start = end - timedelta(days=config.lookback_days)
    card = billing.rate_card(day)
    with warehouse_db.connect() as con:
        rows = warehouse.endpoint_intervals(con, start, end)
        report = report_of(rows, billing.tenants(), card, BurstRule())
        for table, frame in report_frames(report, rows, start, end).items():
            warehouse.replace_analysis(con, table, frame, day)
    for f in report.unpriced:
        context.log.warning(f"{f.tenant} breaches its P95 target on {f.hardware_tier}, which "
                            "has no reserved price, or the tenant has no namespace: no "
                            "dedicated reservation sized")
    return dg.MaterializeResult(metadata={
        "endpoints": len(report.findings),
        "breaches": "\n".join(
            f"{f.tenant} {f.namespace}/{f.model}: P95 in bursts {f.p95_in_bursts_s:.2f}s, "
            f"target {f.target_p95_s}s" for f in report.findings
            if f.breached and f.p95_in_bursts_s is not None) or "none",
        "dedicated_reservations": "\n".join(
            f"{r.finding.tenant}: {r.gpus} x {r.finding.hardware_tier} in {r.namespace}"
            for r in report.reservations) or "none",
        "window": f"{start:%Y-%m-%d} .. {day}",
        "rate_card_version": card.version,
    })


@dg.asset(partitions_def=DAILY, group_name=GROUP, deps=[gpu_usage_hourly])
def off_peak_recommendations(
    context: dg.AssetExecutionContext,
    warehouse_db: WarehouseResource,
    billing: BillingConfigResource,
) -> dg.MaterializeResult:
    """Batch and fine-tuning work in a tier's peak hours of the partition day's month so far,
    moved to off-peak hours, with the saving the invoice engine prices under each tenant's own
    rate card and the GPUs it frees for inference at peak."""
    day = partition_day(context)
    period = f"{day:%Y-%m}"
    lo, _ = month_bounds(period)
    card = billing.rate_card(lo.date())
    tenants = billing.tenants()
    with warehouse_db.connect() as con:
        usage = warehouse.usage_hours_by_kind(con, tenants, lo, end_of(day))
        moves = [m for name in sorted(usage)
                 if (m := off_peak_move(tenants[name], card, period, usage[name])) is not None]
        rows = warehouse.replace_analysis(con, "off_peak_recommendations", moves_frame(moves),
                                          day)
    return dg.MaterializeResult(metadata={
        "rows": rows,
        "period": f"{period} up to {day}",
        "moves": "\n".join(f"{m.tenant}: saves {m.saving} {m.currency}" for m in moves)
        or "none",
        "rate_card_version": card.version,
    })
