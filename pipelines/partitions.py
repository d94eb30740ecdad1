"""Time partitions: UTC days for ingest and aggregation, UTC months for billing."""

import os

import dagster as dg

START_DATE = os.environ.get("CHARGEBACK_START_DATE", "2026-01-01")

DAILY = dg.DailyPartitionsDefinition(start_date=START_DATE, timezone="UTC")
MONTHLY = dg.MonthlyPartitionsDefinition(start_date=START_DATE, timezone="UTC")
