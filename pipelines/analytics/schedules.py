"""The daily analytics run, after the night's aggregation of yesterday has finished."""

from datetime import UTC, timedelta

import dagster as dg

from pipelines.jobs import daily_analytics_job


@dg.schedule(job=daily_analytics_job, cron_schedule="30 1 * * *", execution_timezone="UTC")
def daily_analytics(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """At 01:30 UTC (an hour after `daily_aggregation` finishes yesterday), analyse yesterday."""
    day = context.scheduled_execution_time.astimezone(UTC).date() - timedelta(days=1)
    return dg.RunRequest(partition_key=f"{day}", run_key=f"analytics-{day}")
