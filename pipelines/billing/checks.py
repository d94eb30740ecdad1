"""Checks on billing: each tests one property."""

from datetime import timedelta

import dagster as dg

from models.billing.rate_cards import month_bounds
from pipelines.billing.assets import invoices, tenant_bills
from pipelines.partitions import partition_period
from pipelines.resources import WarehouseResource


@dg.asset_check(asset=invoices, blocking=True)
def invoice_total_equals_lines(
    context: dg.AssetCheckExecutionContext, warehouse_db: WarehouseResource
) -> dg.AssetCheckResult:
    """Every invoice's total is exactly the sum of its rounded lines."""
    period = partition_period(context)
    with warehouse_db.connect() as con:
        mismatches = con.execute(
            "SELECT i.invoice_id, i.total, coalesce(sum(l.amount), 0) FROM invoices i "
            "LEFT JOIN invoice_lines l USING (invoice_id) WHERE i.period = ? "
            "GROUP BY ALL HAVING i.total <> coalesce(sum(l.amount), 0)", [period]).fetchall()
    return dg.AssetCheckResult(
        passed=not mismatches,
        metadata={"mismatches": "\n".join(f"{i}: total {t}, lines {s}"
                                          for i, t, s in mismatches) or "none"},
    )


@dg.asset_check(asset=tenant_bills)
def month_complete(
    context: dg.AssetCheckExecutionContext, warehouse_db: WarehouseResource
) -> dg.AssetCheckResult:
    """Every day of the month has usage, and every node that reported reported every day."""
    period = partition_period(context)
    start, end = month_bounds(period)
    with warehouse_db.connect() as con:
        days = {d for (d,) in con.execute(
            "SELECT DISTINCT day FROM ledger WHERE window_start >= ? AND window_start < ?",
            [start, end]).fetchall()}
        node_days = con.execute(
            "SELECT cluster || '/' || node, count(DISTINCT day), min(day), max(day) FROM ledger "
            "WHERE window_start >= ? AND window_start < ? GROUP BY 1 ORDER BY 1",
            [start, end]).fetchall()
    all_days = {(start + timedelta(days=i)).date() for i in range((end - start).days)}
    missing_days = sorted(all_days - days)
    silent = [f"{node}: {n} of {len(all_days)} days ({first}..{last})"
              for node, n, first, last in node_days if n < len(all_days)]
    return dg.AssetCheckResult(
        passed=not missing_days and not silent,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "missing_days": ", ".join(map(str, missing_days)) or "none",
            "nodes_not_reporting_every_day": "\n".join(silent) or "none",
        },
    )
