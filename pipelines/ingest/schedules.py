"""Hourly ingest of today, daily re-aggregation of yesterday, and late data."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg

from collectors.spool import days, list_day
from pipelines.jobs import daily_usage_job, monthly_billing_job
from pipelines.partitions import run_days
from pipelines.resources import SpoolResource


@dg.schedule(job=daily_usage_job, cron_schedule="5 * * * *", execution_timezone="UTC")
def hourly_ingest(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Every hour, re-ingest today so far (the partition is rewritten, never appended)."""
    now = context.scheduled_execution_time.astimezone(UTC)
    return dg.RunRequest(partition_key=f"{now:%Y-%m-%d}", run_key=f"hourly-{now:%Y-%m-%dT%H}")


@dg.schedule(job=daily_usage_job, cron_schedule="30 0 * * *", execution_timezone="UTC")
def daily_aggregation(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Just after midnight UTC, finish yesterday with everything that arrived."""
    day = context.scheduled_execution_time.astimezone(UTC).date() - timedelta(days=1)
    return dg.RunRequest(partition_key=f"{day}", run_key=f"daily-{day}")


@dg.sensor(job=daily_usage_job, minimum_interval_seconds=300)
def late_spool_files(context: dg.SensorEvaluationContext, spool: SpoolResource
                     ) -> dg.SensorResult:
    """Spool files (usage, or gaps: a window nothing could be read of has only a gap) that
    arrived for a past day since it was last ingested: re-ingest it."""
    seen: dict[str, float] = json.loads(context.cursor) if context.cursor else {}
    today = datetime.now(UTC).date()
    requests = []
    for day in sorted({*days(spool.path), *days(spool.path, "gaps")}):
        if day >= today:
            continue
        newest = max((f.mtime_s for kind in ("usage", "gaps")
                      for f in list_day(spool.path, kind, day)), default=0.0)
        key = f"{day}"
        if key in seen and newest > seen[key]:
            requests.append(dg.RunRequest(partition_key=key, run_key=f"late-{key}-{newest}"))
        seen[key] = max(newest, seen.get(key, 0.0))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[daily_usage_job],
    request_job=monthly_billing_job,
)
def rebill_after_ingest(context: dg.RunStatusSensorContext) -> list[dg.RunRequest]:
    """After a day (or a backfill's range of days) is (re-)ingested, recompute each month it
    touched: drafts, or adjustments if closed."""
    months = sorted({f"{day:%Y-%m}" for day in run_days(context.dagster_run.tags)})
    return [dg.RunRequest(partition_key=f"{month}-01",
                          run_key=f"rebill-{context.dagster_run.run_id}-{month}")
            for month in months]
