"""The code location: `dagster dev -m pipelines.definitions` (see the README)."""

import dagster as dg

from pipelines.analytics import assets as analytics_assets
from pipelines.analytics import budgets as analytics_budgets
from pipelines.analytics import checks as analytics_checks
from pipelines.analytics import forecast as analytics_forecast
from pipelines.analytics import inference as analytics_inference
from pipelines.analytics.schedules import daily_analytics
from pipelines.billing import assets as billing_assets
from pipelines.billing import checks as billing_checks
from pipelines.billing.schedules import monthly_close
from pipelines.ingest import assets as ingest_assets
from pipelines.ingest import checks as ingest_checks
from pipelines.ingest.schedules import (
    daily_aggregation,
    hourly_ingest,
    late_spool_files,
    rebill_after_ingest,
)
from pipelines.jobs import (
    budget_alerts_job,
    daily_analytics_job,
    daily_usage_job,
    monthly_billing_job,
    publish_marts_job,
)
from pipelines.publish import assets as publish_assets
from pipelines.publish.schedules import publish_after_runs
from pipelines.resources import default_resources
from pipelines.run_workers import dead_run_workers

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(
        [ingest_assets, billing_assets, analytics_assets, analytics_forecast, analytics_budgets,
         analytics_inference, publish_assets]
    ),
    asset_checks=dg.load_asset_checks_from_modules([ingest_checks, billing_checks,
                                                    analytics_checks, analytics_forecast]),
    jobs=[daily_usage_job, monthly_billing_job, daily_analytics_job, publish_marts_job,
          budget_alerts_job],
    schedules=[hourly_ingest, daily_aggregation, monthly_close, daily_analytics],
    sensors=[late_spool_files, rebill_after_ingest, publish_after_runs, dead_run_workers,
             analytics_budgets.raise_budget_alerts],
    resources=default_resources(),
)
