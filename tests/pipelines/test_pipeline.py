"""The Dagster pipeline end to end in-process: materialize, checks, a broken partition, the
code location, schedules and sensors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from collectors.spool import day_files, write_batch
from models.billing.rate_cards import load_rate_cards, rate_card_for
from models.ledger import warehouse
from models.ledger.usage import make_sample_id
from pipelines.billing import assets as billing_assets
from pipelines.billing import checks as billing_checks
from pipelines.ingest import assets as ingest_assets
from pipelines.ingest import checks as ingest_checks
from pipelines.resources import SpoolResource
from tests.pipelines.conftest import (
    DAYS,
    PERIOD,
    Pipeline,
    assert_blocked_by_conservation,
    failure_text,
    resources_for,
)

REPO = Path(__file__).resolve().parents[2]
DEMO_CLUSTER_GPUS = 64
"""The simulator's default cluster: 64 physical GPUs (MIG instances of one GPU add up to 1)."""


def test_materialize_over_two_days(pipeline: Pipeline) -> None:
    assets = dg.load_assets_from_modules([ingest_assets, billing_assets])
    checks = dg.load_asset_checks_from_modules([ingest_checks, billing_checks])
    resources = resources_for(pipeline.home)
    for day in DAYS:
        result = dg.materialize([*assets, *checks], partition_key=f"{day}", resources=resources,
                                instance=pipeline.instance, selection=dg.AssetSelection.groups(
                                    "ingest"))
        assert result.success, failure_text(result)
        assert all(e.passed for e in result.get_asset_check_evaluations())
    result = dg.materialize([*assets, *checks], partition_key=f"{PERIOD}-01",
                            resources=resources, instance=pipeline.instance,
                            selection=dg.AssetSelection.groups("billing"))
    assert result.success, failure_text(result)

    # Idle is written as rows, so every day holds exactly the cluster's capacity.
    per_day = pipeline.query("SELECT day, sum(allocated_gpu_seconds) FROM ledger GROUP BY 1 "
                             "ORDER BY 1")
    assert [d for d, _ in per_day] == list(DAYS)
    for _, seconds in per_day:
        assert seconds == pytest.approx(DEMO_CLUSTER_GPUS * 86400, rel=1e-9)
    # acme runs a constant 3 H100s (premium): 3 x 48 h.
    (acme,) = pipeline.query("SELECT sum(allocated_gpu_seconds) / 3600 FROM usage_hourly "
                             "WHERE tenant = 'acme' AND hardware_tier = 'premium'")
    assert float(acme[0]) == pytest.approx(144.0, abs=1e-6)
    daily = pipeline.query("SELECT count(DISTINCT day), count(DISTINCT tenant) "
                           "FROM tenant_usage_daily")
    assert daily[0][0] == 2
    assert daily[0][1] >= 12

    documents = pipeline.documents()
    assert sorted(d["tenant"] for d in documents) == sorted(
        ["acme", "zen", "orbit", "nimbus", "helix", "quanta", "lumen", "vega", "kite", "pixel",
         "sable", "terra"])
    for doc in documents:
        assert doc["status"] == "draft"
        assert Decimal(doc["total"]) == sum(Decimal(x["amount"]) for x in doc["lines"])
    names = {p.name for p in pipeline.exports.iterdir()}
    assert {f"DRAFT-{PERIOD}-acme.{ext}" for ext in ("pdf", "csv", "json")} <= names


def _second_source(spool: Path, hour: int) -> str:
    """Copy one device's rows of one hour of DAYS[1] as if a second collector reported it."""
    folder = spool / "usage" / f"date={DAYS[1]}" / f"hour={hour:02d}"
    original = next(iter(sorted(folder.rglob("*.parquet"))))
    table = pq.read_table(original)
    device = table["gpu_uuid"][0].as_py()
    rows = [r for r in table.to_pylist() if r["gpu_uuid"] == device]
    for row in rows:
        row["source"] = "nvml"
        row["sample_id"] = make_sample_id("nvml", row["gpu_uuid"], row["window_start"],
                                          row["pod_uid"])
    write_batch(spool, pa.Table.from_pylist(rows), kind="usage", source="nvml",
                node=rows[0]["node"], batch="second-collector")
    return str(device)


def test_broken_partition_blocks_rollup_and_billing(pipeline: Pipeline) -> None:
    device = _second_source(pipeline.spool, hour=10)
    assert pipeline.ingest(DAYS[0]).success

    result = pipeline.ingest(DAYS[1])

    assert_blocked_by_conservation(result, device)
    assert pipeline.query("SELECT count(*) FROM usage_hourly WHERE day = ?", [DAYS[1]]) == [(0,)]
    assert pipeline.query("SELECT count(*) FROM usage_hourly WHERE day = ?", [DAYS[0]])[0][0] > 0

    bill = pipeline.bill()

    assert not bill.success
    message = failure_text(bill)
    assert f"GPU-seconds are not conserved in {PERIOD}" in message
    assert "re-ingested" in message
    assert pipeline.query("SELECT count(*) FROM invoices") == [(0,)]


def _rechecked_days(result: dg.ExecuteInProcessResult) -> int:
    (bills,) = [e.materialization for e in result.get_asset_materialization_events()
                if e.asset_key.to_user_string() == "tenant_bills"]
    return int(bills.metadata["days_rechecked_for_conservation"].value)  # type: ignore[arg-type]


def _ingest_both_days(pipeline: Pipeline) -> None:
    for day in DAYS:
        result = pipeline.ingest(day)
        assert result.success, failure_text(result)


def _assert_bill_blocked(pipeline: Pipeline) -> None:
    bill = pipeline.bill()
    assert not bill.success
    assert f"GPU-seconds are not conserved in {PERIOD}" in failure_text(bill)
    assert pipeline.query("SELECT count(*) FROM invoices") == [(0,)]


def test_close_trusts_the_ingest_check_of_an_unchanged_day(pipeline: Pipeline) -> None:
    _ingest_both_days(pipeline)
    assert pipeline.query("SELECT day FROM conservation_checks ORDER BY day") == [
        (d,) for d in DAYS]

    bill = pipeline.bill()

    assert bill.success, failure_text(bill)
    assert _rechecked_days(bill) == 0


def test_close_rechecks_a_day_edited_by_sql_after_its_check(pipeline: Pipeline) -> None:
    """One row of a checked day changed by hand: the close checks the day again and refuses."""
    _ingest_both_days(pipeline)
    con = warehouse.connect(pipeline.warehouse_path)
    try:
        con.execute("UPDATE ledger SET allocated_gpu_seconds = allocated_gpu_seconds + 1 "
                    "WHERE rowid = (SELECT min(rowid) FROM ledger WHERE day = ?)", [DAYS[0]])
    finally:
        con.close()

    _assert_bill_blocked(pipeline)


def test_close_rechecks_a_day_reloaded_through_the_warehouse_after_its_check(
        pipeline: Pipeline) -> None:
    """A checked day replaced by `load_day` (no check after it) with a second source for one
    device: the close checks it again and refuses."""
    _ingest_both_days(pipeline)
    _second_source(pipeline.spool, hour=10)
    con = warehouse.connect(pipeline.warehouse_path)
    try:
        files = day_files(pipeline.spool, "usage", DAYS[1])
        card = rate_card_for(load_rate_cards(REPO / "examples/demo/rate-card.yaml"), DAYS[1])
        warehouse.load_day(con, DAYS[1], card, usage=files)
        assert warehouse.unconfirmed_days(con, DAYS[0], DAYS[1]) == [DAYS[1]]
    finally:
        con.close()

    _assert_bill_blocked(pipeline)


def test_close_checks_a_day_never_checked(pipeline: Pipeline) -> None:
    _ingest_both_days(pipeline)
    con = warehouse.connect(pipeline.warehouse_path)
    try:
        con.execute("DELETE FROM conservation_checks WHERE day = ?", [DAYS[0]])
    finally:
        con.close()

    bill = pipeline.bill()

    assert bill.success, failure_text(bill)
    assert _rechecked_days(bill) == 1
    assert pipeline.query("SELECT day FROM conservation_checks ORDER BY day") == [
        (d,) for d in DAYS]


def test_fixed_partition_bills_again(pipeline: Pipeline) -> None:
    """Removing the bad file and re-ingesting the day is all an operator has to do."""
    _second_source(pipeline.spool, hour=3)
    assert not pipeline.ingest(DAYS[1]).success
    for path in day_files(pipeline.spool, "usage", DAYS[1]):
        if "source=nvml" in str(path):
            path.unlink()
    pipeline.run()
    assert len(pipeline.documents()) == 12


def test_code_location_loads() -> None:
    from pipelines.definitions import defs

    jobs = {j.name for j in defs.resolve_all_job_defs()}
    assert {"daily_usage_job", "monthly_billing_job"} <= jobs
    for name in ("hourly_ingest", "daily_aggregation", "monthly_close"):
        assert defs.resolve_schedule_def(name).name == name
    for name in ("late_spool_files", "rebill_after_ingest"):
        assert defs.resolve_sensor_def(name).name == name
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"gpu_usage_ledger", "gpu_usage_hourly", "tenant_usage_daily", "tenant_bills",
            "invoices", "invoice_exports"} <= keys
    checks = {k.name for k in graph.asset_check_keys}
    assert {"gpu_seconds_conserved", "every_row_has_a_tenant", "hourly_totals_equal_ledger",
            "invoice_total_equals_lines", "month_complete"} <= checks


def test_dagster_cli_validates_the_code_location(tmp_path: Path) -> None:
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "CHARGEBACK_HOME": str(tmp_path)}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate",
         "-m", "pipelines.definitions"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # Dagster logs the verdict only when its loggers reach the terminal; the exit status is it.
    assert "Traceback" not in done.stdout + done.stderr


def test_monthly_close_on_the_first_closes_the_previous_month() -> None:
    from pipelines.billing.schedules import monthly_close

    for when, month in ((datetime(2026, 10, 1, 6, tzinfo=UTC), "2026-09"),
                        (datetime(2027, 1, 1, 6, tzinfo=UTC), "2026-12"),
                        (datetime(2026, 3, 1, 6, tzinfo=UTC), "2026-02")):
        request = monthly_close(dg.build_schedule_context(scheduled_execution_time=when))
        assert isinstance(request, dg.RunRequest)
        assert request.partition_key == f"{month}-01"
        assert request.run_config == {"ops": {"invoices": {"config": {"close": True}}}}
    assert monthly_close.cron_schedule == "0 6 1 * *"
    assert monthly_close.execution_timezone == "UTC"


def test_ingest_schedules_name_the_right_days() -> None:
    from pipelines.ingest.schedules import daily_aggregation, hourly_ingest

    midnight = datetime(2026, 9, 1, 0, 30, tzinfo=UTC)
    assert daily_aggregation(
        dg.build_schedule_context(scheduled_execution_time=midnight)).partition_key == "2026-08-31"
    later = datetime(2026, 9, 1, 13, 5, tzinfo=UTC)
    request = hourly_ingest(dg.build_schedule_context(scheduled_execution_time=later))
    assert request.partition_key == "2026-09-01"
    # Two ticks in the same hour are one run; the next hour is another.
    again = hourly_ingest(dg.build_schedule_context(scheduled_execution_time=later))
    assert again.run_key == request.run_key
    next_hour = hourly_ingest(dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 9, 1, 14, 5, tzinfo=UTC)))
    assert next_hour.run_key != request.run_key


def test_late_spool_file_sensor_requests_the_past_day(
        tmp_path: Path, simulated_spool: Path) -> None:
    from pipelines.ingest.schedules import late_spool_files

    spool = tmp_path / "spool"
    shutil.copytree(simulated_spool, spool)
    resources = {"spool": SpoolResource(path=str(spool))}

    first = late_spool_files(dg.build_sensor_context(resources=resources))
    assert first.run_requests == []
    quiet = late_spool_files(dg.build_sensor_context(cursor=first.cursor, resources=resources))
    assert quiet.run_requests == []

    # A collector that was down uploads its buffered hour of DAYS[1]: newer than the cursor.
    late = _second_source(spool, hour=10)
    assert late
    moved = [p for p in day_files(spool, "usage", DAYS[1]) if "source=nvml" in str(p)]
    for path in moved:
        later = time.time() + 60
        os.utime(path, (later, later))
    seen = json.loads(quiet.cursor or "{}")
    assert set(seen) == {f"{d}" for d in DAYS}

    result = late_spool_files(dg.build_sensor_context(cursor=quiet.cursor, resources=resources))

    assert [r.partition_key for r in result.run_requests] == [f"{DAYS[1]}"]
    after = late_spool_files(dg.build_sensor_context(cursor=result.cursor, resources=resources))
    assert after.run_requests == []


def test_rebill_sensor_requests_the_month_of_an_ingested_day(pipeline: Pipeline) -> None:
    from pipelines.ingest.schedules import rebill_after_ingest

    result = pipeline.ingest(DAYS[1])
    assert result.success
    run = pipeline.instance.get_run_by_id(result.run_id)
    assert run is not None
    (entry,) = pipeline.instance.all_logs(result.run_id,
                                          of_type=dg.DagsterEventType.RUN_SUCCESS)
    event = entry.dagster_event
    assert event is not None
    context = dg.build_run_status_sensor_context(
        sensor_name="rebill_after_ingest", dagster_event=event,
        dagster_instance=pipeline.instance, dagster_run=run)

    (request,) = rebill_after_ingest(context)

    assert request.partition_key == f"{PERIOD}-01"
