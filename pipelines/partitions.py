"""Time partitions: UTC days for ingest and aggregation, UTC months for billing."""

import os
from collections.abc import Mapping
from datetime import date, timedelta

import dagster as dg

START_DATE = os.environ.get("CHARGEBACK_START_DATE", "2026-01-01")

DAILY = dg.DailyPartitionsDefinition(start_date=START_DATE, timezone="UTC")
MONTHLY = dg.MonthlyPartitionsDefinition(start_date=START_DATE, timezone="UTC")

DAYS_PER_RUN = 31
"""Most days one ingest run takes (a backfill, `chargeback run`): a run costs Dagster about
3 s of its own (run creation, event log, one warehouse opening per step), so a month of days
goes in one run; a longer range goes in runs of a month each, so that a run stays well within
the jobs' maximum runtime and a failure redoes one month, not a year."""
INGEST_BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=DAYS_PER_RUN)


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


# The tags Dagster gives a run of a partition range (dagster/_core/storage/tags.py, not
# exported); a one-partition run has `dagster/partition`.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def run_days(tags: Mapping[str, str]) -> list[date]:
    """The days of a daily run, in order, from its tags: its one day, or the range of a
    backfill run (`INGEST_BACKFILL`); none for a run without partitions."""
    first = tags.get("dagster/partition") or tags.get(RANGE_START_TAG)
    last = tags.get("dagster/partition") or tags.get(RANGE_END_TAG)
    if not first or not last:
        return []
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def partition_days(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext
                   ) -> list[date]:
    """The days the running asset or check covers (`run_days`)."""
    return run_days(context.run.tags)
