"""The inference analytics assets on a real DuckDB warehouse: a day of the demo cluster (its
shared endpoint, pixel's bursts, pixel's and terra's batch in peak hours) loaded by the
pipeline's own load, the assets run by Dagster, their rows published into the marts."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from models.billing.rate_cards import load_rate_cards, load_tenants, rate_card_for
from models.ledger import warehouse
from models.marts import OPERATOR_WITHHELD, operator_mart_path, publish_marts, tenant_mart_path
from models.planning.latency import latency_report
from models.planning.off_peak import off_peak_move
from pipelines.analytics.inference import (
    LATENCY_TABLES,
    latency_slas,
    off_peak_recommendations,
)
from pipelines.resources import BillingConfigResource, WarehouseResource
from tests.demo_day import DEMO, START, load_demo_day

DAY = date(2026, 9, 1)
CARDS = load_rate_cards(DEMO / "rate-card.yaml")
CARD = rate_card_for(CARDS, DAY)
TENANTS = load_tenants(DEMO / "tenants.yaml", CARDS)
TABLES = (*LATENCY_TABLES, "off_peak_recommendations")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> Path:
    path = load_demo_day(tmp_path_factory.mktemp("inference") / "warehouse.duckdb")
    resources = {
        "warehouse_db": WarehouseResource(path=str(path)),
        "billing": BillingConfigResource(rate_card_path=str(DEMO / "rate-card.yaml"),
                                         tenants_path=str(DEMO / "tenants.yaml")),
    }
    instance = dg.DagsterInstance.ephemeral()
    for _ in range(2):  # a rerun of the day replaces its rows
        result = dg.materialize([latency_slas, off_peak_recommendations], partition_key=f"{DAY}",
                                resources=resources, instance=instance)
        assert result.success
    return path


def _rows(con, table: str, where: str = "true") -> list[dict]:  # type: ignore[no-untyped-def]
    cursor = con.execute(f"SELECT * FROM {table} WHERE {where}")
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_the_assets_store_what_the_cli_engines_compute_once_per_day(analysed):
    con = warehouse.connect(analysed, read_only=True)
    try:
        report = latency_report(con, TENANTS, CARD, START, START + timedelta(days=1))
        usage = warehouse.usage_hours_by_kind(con, TENANTS, START, START + timedelta(days=1))
        findings = _rows(con, "latency_findings")
        dedicated = _rows(con, "dedicated_reservation_recommendations")
        episodes = _rows(con, "burst_episodes", "tenant = 'pixel'")
        rates = _rows(con, "request_rates", "tenant = 'pixel'")
        moves = _rows(con, "off_peak_recommendations")
        days = {t: con.execute(f"SELECT DISTINCT day FROM {t}").fetchall() for t in TABLES}
    finally:
        con.close()
    assert all(found == [(DAY,)] for found in days.values()), days
    # One row per tenant and endpoint, as the engine found them (twice run, stored once).
    assert sorted((f["tenant"], f["namespace"], f["model"]) for f in findings) == sorted(
        (f.tenant, f.namespace, f.model) for f in report.findings)
    pixel = next(f for f in findings if f["tenant"] == "pixel")
    engine = next(f for f in report.findings if f.tenant == "pixel")
    assert pixel["breached"]
    assert engine.breached
    assert pixel["target_p95_s"] == 6
    assert pixel["p95_in_bursts_s"] == engine.p95_in_bursts_s > 6 * 1.2
    assert pixel["burst_episodes"] == len(engine.episodes) == len(episodes) > 0
    assert [(e["episode_start"], e["episode_end"]) for e in episodes] == [
        (e.start, e.end) for e in engine.episodes]
    # Every interval of pixel's request work, at the rate the burst rule read.
    assert sum(r["requests_per_s"] * r["duration_s"] for r in rates) == pytest.approx(
        _requests(analysed, "pixel"), rel=1e-9)
    (reservation,) = report.reservations
    (stored,) = dedicated
    assert (stored["tenant"], stored["namespace"], stored["recommended_gpus"],
            stored["monthly_cost"], stored["late_requests_per_month"]) == (
        "pixel", "team-pixel", reservation.gpus, reservation.monthly_cost,
        reservation.late_requests_per_month)
    # Off-peak: pixel's renders and terra's batch worker, saving what the engine prices.
    expected = {name: m for name in sorted(usage)
                if (m := off_peak_move(TENANTS[name], CARD, "2026-09", usage[name]))}
    assert {m["tenant"] for m in moves} == set(expected) == {"pixel", "terra"}
    for m in moves:
        move = expected[m["tenant"]]
        assert m["saving"] == move.saving > 0
        assert m["moved_gpu_hours"] == move.moved_gpu_hours[m["hardware_tier"]]
        assert m["freed_peak_gpus"] == move.freed_peak_gpus[m["hardware_tier"]]


def _requests(path: Path, tenant: str) -> float:
    con = warehouse.connect(path, read_only=True)
    try:
        row = con.execute("SELECT sum(requests) FROM request_work WHERE tenant = ?", [tenant]
                          ).fetchone()
    finally:
        con.close()
    assert row is not None
    return float(row[0])


def test_each_tenant_mart_holds_its_own_inference_rows_and_operators_no_money(analysed,
                                                                              tmp_path):
    con = warehouse.connect(analysed)
    try:
        publish_marts(con, tmp_path / "marts", TENANTS, now=START + timedelta(days=2))
    finally:
        con.close()
    for name in TENANTS:
        mart = warehouse.connect(tenant_mart_path(tmp_path / "marts", name), read_only=True)
        try:
            for table in TABLES:
                tenants = {t for (t,) in mart.execute(f"SELECT DISTINCT tenant FROM {table}"
                                                      ).fetchall()}
                assert tenants <= {name}, (name, table, tenants)
            if name == "pixel":
                assert mart.execute("SELECT count(*) FROM dedicated_reservation_recommendations "
                                    "WHERE monthly_cost > 0").fetchone() == (1,)
                assert mart.execute("SELECT count(*) FROM off_peak_recommendations "
                                    "WHERE saving > 0").fetchone() == (1,)
        finally:
            mart.close()
    operator = warehouse.connect(operator_mart_path(tmp_path / "marts"), read_only=True)
    try:
        for table in ("dedicated_reservation_recommendations", "off_peak_recommendations"):
            columns = {c for (c,) in operator.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                [table]).fetchall()}
            assert columns, table
            assert not columns & set(OPERATOR_WITHHELD[table]), table
        assert operator.execute("SELECT tenant, recommended_gpus > 0 FROM "
                                "dedicated_reservation_recommendations").fetchall() == [
            ("pixel", True)]
        assert operator.execute("SELECT tenant FROM latency_findings WHERE breached"
                                ).fetchall() == [("pixel",)]
    finally:
        operator.close()
