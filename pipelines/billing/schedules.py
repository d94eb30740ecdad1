"""The monthly close: on the 1st (UTC), finalize the previous month."""

from datetime import UTC, timedelta

import dagster as dg

from pipelines.jobs import monthly_billing_job


@dg.schedule(job=monthly_billing_job, cron_schedule="0 6 1 * *", execution_timezone="UTC")
def monthly_close(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """On the 1st at 06:00 UTC, close the previous month (late data after this: adjustments)."""
    first = context.scheduled_execution_time.astimezone(UTC).replace(day=1)
    previous = (first - timedelta(days=1)).replace(day=1)
    return dg.RunRequest(
        partition_key=f"{previous:%Y-%m-%d}",
        run_key=f"close-{previous:%Y-%m}",
        run_config={"ops": {"invoices": {"config": {"close": True}}}},
    )
