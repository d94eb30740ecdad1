"""Jobs: what a schedule, a sensor or the CLI runs. In-process: DuckDB has one writer."""

import dagster as dg

from pipelines.partitions import DAILY, MONTHLY

# DuckDB has one writer: the run queue admits one run with this tag at a time (dagster.yaml
# and deploy/dagster-values.yaml), so runs wait instead of failing on the file lock.
WRITES_WAREHOUSE = {"chargeback/warehouse": "write"}
# A writer that hangs, or whose killed process cannot be seen from the sensor that fails such
# runs (pipelines/run_workers.py), would hold that one place for good: run monitoring ends any
# run after 6 hours (docs/scale-out.md sizes a day's ingest to stay within the hour).
MAX_RUNTIME = {"dagster/max_runtime": str(6 * 3600)}

daily_usage_job = dg.define_asset_job(
    "daily_usage_job",
    selection=dg.AssetSelection.groups("ingest"),
    partitions_def=DAILY,
    executor_def=dg.in_process_executor,
    tags={**WRITES_WAREHOUSE, **MAX_RUNTIME},
    description="Spool -> ledger -> hourly and daily usage for one UTC day.",
)

monthly_billing_job = dg.define_asset_job(
    "monthly_billing_job",
    selection=dg.AssetSelection.groups("billing"),
    partitions_def=MONTHLY,
    executor_def=dg.in_process_executor,
    tags={**WRITES_WAREHOUSE, **MAX_RUNTIME},
    description="Drafts (or adjustments after close), exports and marts for one month.",
)

daily_analytics_job = dg.define_asset_job(
    "daily_analytics_job",
    selection=dg.AssetSelection.groups("analytics"),
    partitions_def=DAILY,
    executor_def=dg.in_process_executor,
    tags={**WRITES_WAREHOUSE, **MAX_RUNTIME},
    description="Usage shifts, tier-change and reservation recommendations, scheduler quotas, "
    "latency SLAs and bursts, off-peak moves for the look-back window ending one UTC day.",
)

budget_alerts_job = dg.define_asset_job(
    "budget_alerts_job",
    selection=dg.AssetSelection.groups("alerts"),
    partitions_def=DAILY,
    executor_def=dg.in_process_executor,
    tags={**WRITES_WAREHOUSE, **MAX_RUNTIME},
    description="Send the budget alerts of one UTC day's analysis to Alertmanager, once each.",
)

publish_marts_job = dg.define_asset_job(
    "publish_marts_job",
    selection=dg.AssetSelection.groups("publish"),
    executor_def=dg.in_process_executor,
    tags={**WRITES_WAREHOUSE, **MAX_RUNTIME},
    description="Publish the read-only tenant, finance and operator marts for the dashboards.",
)
