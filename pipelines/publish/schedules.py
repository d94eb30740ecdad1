"""Marts are republished after every successful pipeline run, so dashboards stay current."""

import dagster as dg

from pipelines.jobs import (
    daily_analytics_job,
    daily_usage_job,
    monthly_billing_job,
    publish_marts_job,
)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[daily_usage_job, monthly_billing_job, daily_analytics_job],
    request_job=publish_marts_job,
)
def publish_after_runs(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    """After ingest, billing or analytics succeeds, publish the marts again."""
    return dg.RunRequest(run_key=f"publish-{context.dagster_run.run_id}")
