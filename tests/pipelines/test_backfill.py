"""Ingest of a range of days in one Dagster run (a backfill, `chargeback run`, the demo): the
same warehouse and invoices as one run a day, each day its own partition, and a failing day
stops the run as it stops a daily one."""

from __future__ import annotations

import math
from datetime import date

import dagster as dg

from pipelines.ingest.schedules import rebill_after_ingest
from tests.pipelines.conftest import (
    DAYS,
    PERIOD,
    Pipeline,
    assert_blocked_by_conservation,
    failure_text,
)
from tests.pipelines.test_pipeline import _second_source

INGEST_ASSETS = ("gpu_usage_ledger", "gpu_usage_hourly", "tenant_usage_daily")
TABLES = ("ledger", "request_work", "usage_hourly", "tenant_usage_daily", "collection_gaps")


def _tables(pipeline: Pipeline) -> dict[str, list[tuple[object, ...]]]:
    return {table: pipeline.query(f"SELECT * FROM {table} ORDER BY sample_id, window_start")
            if table in ("ledger", "request_work") else
            pipeline.query(f"SELECT * FROM {table} ORDER BY ALL") for table in TABLES}


def _same(a: dict[str, list[tuple[object, ...]]], b: dict[str, list[tuple[object, ...]]]
          ) -> None:
    """Equal, but for the last bits of the apportioned shares, which are doubles that DuckDB's
    parallel sums leave in any order (run to run too; every money figure sums them as
    DECIMAL(38, 6))."""
    assert a.keys() == b.keys()
    for table, rows in a.items():
        assert len(rows) == len(b[table]), table
        for x, y in zip(rows, b[table], strict=True):
            assert len(x) == len(y)
            for u, v in zip(x, y, strict=True):
                if isinstance(u, float) and isinstance(v, float):
                    assert math.isclose(u, v, rel_tol=1e-12), (table, x, y)
                else:
                    assert u == v, (table, x, y)


def test_one_run_over_the_days_equals_one_run_a_day(pipeline: Pipeline,
                                                    second_pipeline: Pipeline) -> None:
    result = pipeline.ingest_range(DAYS[0], DAYS[-1])
    assert result.success, failure_text(result)
    assert pipeline.bill().success
    second_pipeline.run()

    _same(_tables(pipeline), _tables(second_pipeline))
    assert pipeline.documents() == second_pipeline.documents()
    # Invoice files byte for byte (the FOCUS metadata carries the time it was made).
    drafts = {n: b for n, b in pipeline.export_bytes().items() if n.startswith("DRAFT-")}
    assert len(drafts) == 36
    assert drafts == {n: b for n, b in second_pipeline.export_bytes().items()
                      if n.startswith("DRAFT-")}
    assert all(e.passed for e in result.get_asset_check_evaluations())
    # Every day is materialized as its own partition, with its own figures.
    events = result.get_asset_materialization_events()
    for asset in INGEST_ASSETS:
        assert sorted(e.partition for e in events if e.asset_key.to_user_string() == asset
                      ) == [f"{d}" for d in DAYS]
    ledger_rows = {e.partition: e.materialization.metadata["ledger_rows"].value
                   for e in events if e.asset_key.to_user_string() == "gpu_usage_ledger"}
    assert ledger_rows == {f"{d}": n for d, n in pipeline.query(
        "SELECT day::VARCHAR, count(*) FROM ledger GROUP BY 1")}


def test_a_day_rerun_after_a_range_replaces_only_that_day(pipeline: Pipeline) -> None:
    assert pipeline.ingest_range(DAYS[0], DAYS[-1]).success
    before = _tables(pipeline)

    assert pipeline.ingest(DAYS[1]).success
    assert pipeline.ingest_range(DAYS[0], DAYS[-1]).success

    _same(_tables(pipeline), before)


def test_a_broken_day_in_the_range_blocks_the_rollups(pipeline: Pipeline) -> None:
    device = _second_source(pipeline.spool, hour=10)

    result = pipeline.ingest_range(DAYS[0], DAYS[-1])

    assert_blocked_by_conservation(result, device)
    assert pipeline.query("SELECT count(*) FROM usage_hourly") == [(0,)]


def test_rebill_sensor_requests_every_month_a_range_touched(pipeline: Pipeline) -> None:
    result = pipeline.ingest_range(date(2026, 8, 31), DAYS[0])
    assert result.success, failure_text(result)
    run = pipeline.instance.get_run_by_id(result.run_id)
    assert run is not None
    (entry,) = pipeline.instance.all_logs(result.run_id,
                                          of_type=dg.DagsterEventType.RUN_SUCCESS)
    assert entry.dagster_event is not None
    context = dg.build_run_status_sensor_context(
        sensor_name="rebill_after_ingest", dagster_event=entry.dagster_event,
        dagster_instance=pipeline.instance, dagster_run=run)

    requests = rebill_after_ingest(context)

    assert [r.partition_key for r in requests] == ["2026-08-01", f"{PERIOD}-01"]
    assert len({r.run_key for r in requests}) == 2
