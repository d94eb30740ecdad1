"""Time partitions: UTC days for ingest and aggregation, UTC months for billing."""

import os
from datetime import date

import dagster as dg

START_DATE = os.environ.get("CHARGEBACK_START_DATE", "2026-01-01")

DAILY = dg.DailyPartitionsDefinition(start_date=START_DATE, timezone="UTC")
MONTHLY = dg.MonthlyPartitionsDefinition(start_date=START_DATE, timezone="UTC")


def partition_key(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> str:
    """The run's partition, for assets and for the checks that run beside them (a check's
    context has no partition key of its own)."""
    if isinstance(context, dg.AssetExecutionContext):
        return str(context.partition_key)
    return str(context.run.tags["dagster/partition"])


def partition_day(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> date:
    return date.fromisoformat(partition_key(context))


def partition_period(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> str:
    """`YYYY-MM` of a monthly partition (its key is the month's first day)."""
    return partition_key(context)[:7]
