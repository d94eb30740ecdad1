"""The gap path end to end: the real pod collector and agent against the loopback Kubernetes
API (one pod with an unreadable field, then two minutes of HTTP 500s) write rows and gaps to a
spool; a real Dagster ingest loads both, passes conservation only because the gaps say why
rows are missing, and warns with the day's gaps; the finance mart holds them as ranges; the
finance data-quality page shows "node gpu-l4-ts, 01:00-01:03: ... Pod stray/job-0 ...".

Minute by minute, as the agent runs: at each window's end the collector syncs, then the agent
writes that window.
- 01:00-01:03 and 01:05-01:06: job-0 is unreadable: gpu-l4-ts has its readable pods' rows but
  no idle rows, and a gap; every other node is whole.
- 01:03-01:05: the pods watch answers HTTP 500 at 01:04; the API is read whole again at 01:05
  (a relist): both windows overlap that outage and are one cluster-wide gap, with no rows."""

from __future__ import annotations

import os
import shutil
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
from kubernetes import client as k8s

from collectors.agent import Agent
from collectors.pods import PodCollector
from collectors.spool import write_batch
from dashboards.auth import User, hash_password, parse_role, save_users
from models.ledger import warehouse
from models.ledger.gaps import Gap, GapReason, gap_table
from models.marts import finance_mart_path
from tests.collectors.test_pods import NAMESPACE_TENANTS, WINDOW, Clock, by_name, cluster_objects
from tests.dashboards.conftest import PASSWORD
from tests.kube_api import serve
from tests.pipelines.conftest import Pipeline, definitions_for, failure_text

DAY = date(2026, 11, 1)
OUTAGE = (3, 5)  # minutes after WINDOW


def collect(home: Path) -> None:
    with serve(idle_close_s=0.1) as kube:
        for obj in cluster_objects():
            kube.put(obj)
        bad = by_name("job-0")
        bad["status"]["conditions"][0]["lastTransitionTime"] = "yesterday"
        kube.put(bad)
        clock = Clock(WINDOW)
        collector = PodCollector(k8s.ApiClient(k8s.Configuration(host=kube.url)),
                                 cluster="test", namespace_tenants=NAMESPACE_TENANTS,
                                 watch_timeout_s=2, request_timeout_s=5, clock=clock)
        agent = Agent(collector, home / "spool", "pods", "pods-collector", 60, cluster="test",
                      log=lambda _message: None)
        collector.sync()
        for minute in range(6):
            start = WINDOW + timedelta(minutes=minute)
            clock.now = start + timedelta(seconds=60)
            if minute == OUTAGE[0]:
                kube.fail_next("pods", "status-500")
            collector.sync()
            agent.collect(start)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("gaps")
    collect(home)
    return home


def ingest(home: Path) -> dg.ExecuteInProcessResult:
    with dg.DagsterInstance.ephemeral() as instance:
        pipeline = Pipeline(home, definitions_for(home), instance)
        result = pipeline.ingest(DAY)
        pipeline.execute("publish_marts_job", None)
        return result


def test_ingest_conserves_with_the_gaps_and_warns_with_them(home: Path) -> None:
    result = ingest(home)
    assert result.success, failure_text(result)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["gpu_seconds_conserved"].passed
    warning = checks["no_collection_gaps"]
    assert not warning.passed
    assert warning.severity == dg.AssetCheckSeverity.WARN
    assert warning.metadata["gaps"].value == 3
    assert warning.metadata["gap_records"].value == 6
    text = warning.metadata["first_gaps"].value
    assert ("pods, node gpu-l4-ts, 2026-11-01 01:00:00-01:03:00 UTC: object with unreadable "
            "fields (quarantined): Pod stray/job-0: status.conditions[0].lastTransitionTime: "
            "'yesterday' is not an RFC 3339 time (3 records)") in text
    assert ("pods, every node of cluster test, 2026-11-01 01:03:00-01:05:00 UTC: source "
            "unreadable: Kubernetes API http://127.0.0.1:") in text
    assert "HTTP 500 Internal Server Error: etcdserver: request timed out (2 records)" in text
    assert "pods, node gpu-l4-ts, 2026-11-01 01:05:00-01:06:00 UTC" in text

    con = warehouse.connect(home / "warehouse.duckdb", read_only=True)
    try:
        minutes = con.execute(
            "SELECT DISTINCT date_diff('minute', ?::TIMESTAMPTZ, window_start) FROM ledger "
            "ORDER BY 1", [WINDOW]).fetchall()
        l4 = con.execute(
            "SELECT sum(allocated_gpu_seconds), count(*) FILTER (WHERE tenant = '__idle__') "
            "FROM ledger WHERE node = 'gpu-l4-ts'").fetchone()
        h100 = con.execute("SELECT sum(allocated_gpu_seconds) FROM ledger "
                           "WHERE node = 'gpu-h100-a'").fetchone()
    finally:
        con.close()
    assert [m for (m,) in minutes] == [0, 1, 2, 5]  # the outage's windows have no rows
    # The L4 (4 time-slicing replicas): svc-0 and milli-0 hold a quarter each, 4 windows of
    # 60 s; job-0's quarter and the idle quarter are the gap's, never idle.
    assert l4 == (pytest.approx(4 * 60 * 2 / 4), 0)
    assert h100 == (pytest.approx(4 * 60 * 2),)

    mart = warehouse.connect(finance_mart_path(home / "marts"), read_only=True)
    try:
        ranges = mart.execute("SELECT node, date_diff('minute', ?::TIMESTAMPTZ, gap_start), "
                              "date_diff('minute', ?::TIMESTAMPTZ, gap_end), reason, records "
                              "FROM collection_gaps", [WINDOW, WINDOW]).fetchall()
    finally:
        mart.close()
    assert ranges == [("gpu-l4-ts", 0, 3, "malformed_object", 3),
                      (None, 3, 5, "source_unreadable", 2),
                      ("gpu-l4-ts", 5, 6, "malformed_object", 1)]


def test_finance_sees_the_gaps_on_the_data_quality_page(home: Path, monkeypatch) -> None:
    ingest(home)
    save_users(home / "users.yaml", {"fiona": User("fiona", parse_role("finance"),
                                                   hash_password(PASSWORD))})
    for name in ("CHARGEBACK_MARTS", "CHARGEBACK_EXPORTS", "CHARGEBACK_USERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHARGEBACK_HOME", str(home))
    from tests.dashboards.test_app import _text, signed_in

    at = signed_in("fiona").switch_page("pages/finance_quality.py").run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Collection gaps"] == "3"
    assert "What the collectors could not read" in [s.value for s in at.subheader]
    [table] = [d.value for d in at.dataframe if "first_detail" in d.value.columns]
    shown = table[["node", "device", "what"]].values.tolist()
    assert shown == [["gpu-l4-ts", "every device", "pods object with unreadable fields "
                      "(quarantined)"],
                     ["every node", "every device", "pods source unreadable"],
                     ["gpu-l4-ts", "every device", "pods object with unreadable fields "
                      "(quarantined)"]]
    assert [(start.strftime("%H:%M"), end.strftime("%H:%M"))
            for start, end in zip(table["gap_start"], table["gap_end"], strict=True)] == [
        ("01:00", "01:03"), ("01:03", "01:05"), ("01:05", "01:06")]
    assert "Pod stray/job-0" in _text(at)


def test_without_its_gap_records_the_same_day_fails_conservation(home: Path,
                                                                 tmp_path: Path) -> None:
    # The same spool minus the gap files: rows are missing and nothing says why.
    copy = tmp_path / "copy"
    shutil.copytree(home / "spool", copy / "spool", ignore=shutil.ignore_patterns("gaps"))
    result = ingest(copy)
    assert not result.success
    [check] = [e for e in result.get_asset_check_evaluations()
               if e.check_name == "gpu_seconds_conserved"]
    assert not check.passed
    assert "gpu-l4-ts/gpu0" in check.metadata["first_violations"].value


def test_a_late_gap_file_alone_re_ingests_its_day(home: Path, tmp_path: Path) -> None:
    from pipelines.ingest.schedules import late_spool_files
    from pipelines.resources import SpoolResource

    spool_root = tmp_path / "spool"
    shutil.copytree(home / "spool", spool_root)
    resources = {"spool": SpoolResource(path=str(spool_root))}
    first = late_spool_files(dg.build_sensor_context(resources=resources))
    assert first.run_requests == []
    # An agent that could not write its spool for a while uploads a window it could not read:
    # a gap file, and no usage file, for that day.
    write_batch(spool_root, gap_table([Gap(
        "pods", "test", None, None, WINDOW + timedelta(hours=5),
        WINDOW + timedelta(hours=5, minutes=1), GapReason.SOURCE_UNREADABLE, "HTTP 503")]),
        kind="gaps", source="pods", node="pods-collector", batch="late")
    later = time.time() + 60
    for path in spool_root.rglob("late.parquet"):
        os.utime(path, (later, later))
    result = late_spool_files(dg.build_sensor_context(cursor=first.cursor, resources=resources))
    assert [r.partition_key for r in result.run_requests] == [f"{DAY}"]
