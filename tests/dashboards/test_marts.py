"""The published marts: contents per audience, isolation by file, atomic publish, estimates."""

import hashlib
import re
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from dashboards.marts import PAGE_TABLES, tenant_tables
from models import marts
from models.billing import lifecycle
from models.billing.pricing import price_invoice
from models.billing.rate_cards import load_rate_cards, load_tenants, month_bounds
from models.ledger import warehouse
from models.ledger.usage import ledger_table, make_sample_id
from models.marts import (
    finance_mart_path,
    operator_mart_path,
    publish_marts,
    tenant_mart_path,
)
from tests.dashboards.demo_warehouse import ADJUSTMENT, ADJUSTMENT_TOTAL, DEMO_CARD, EVIL, TOTALS


def _open(path: Path) -> duckdb.DuckDBPyConnection:
    return warehouse.connect(path, read_only=True)


def _all_text(con: duckdb.DuckDBPyConnection) -> str:
    """Every value of every table, as text: what a query on this file could ever return."""
    parts = []
    for (table,) in con.execute("SHOW TABLES").fetchall():
        for row in con.execute(f"SELECT * FROM {table}").fetchall():
            parts.append(" ".join(str(v) for v in row))
    return "\n".join(parts)


def test_finance_mart_holds_the_design_example_invoices(demo_home):
    con = _open(finance_mart_path(demo_home / "marts"))
    rows = con.execute("SELECT tenant, kind, display_status, total FROM invoices").fetchall()
    invoices = {t: (status, total) for t, kind, status, total in rows if kind == "invoice"}
    assert {t: str(total.quantize(Decimal("0.01"))) for t, (_, total) in invoices.items()} \
        == TOTALS
    assert invoices["acme"][0] == "adjusted"
    assert invoices["zen"][0] == "final"
    (adjustment,) = [(t, total) for t, kind, _, total in rows if kind == "adjustment"]
    assert adjustment == ("acme", Decimal(ADJUSTMENT_TOTAL))


def test_finance_mart_has_each_months_documents_a_balanced_journal_and_idle_by_cause(
        demo_home):
    con = _open(finance_mart_path(demo_home / "marts"))
    # The debit note issued in November for October is November's document, like in the
    # November register, journal and FOCUS export.
    months = dict(con.execute(
        "SELECT d.period, list(i.number ORDER BY i.number) FROM period_documents d "
        "JOIN invoices i USING (invoice_id) GROUP BY ALL").fetchall())
    assert months["2026-11"] == [ADJUSTMENT]
    assert ADJUSTMENT not in months["2026-10"]
    assert con.execute("SELECT count(*) FROM journal_problems").fetchone() == (0,)
    for period, debit, credit in con.execute(
            "SELECT period, sum(debit::DECIMAL(18, 2)), sum(credit::DECIMAL(18, 2)) "
            "FROM journal GROUP BY ALL").fetchall():
        (billed,) = con.execute(
            "SELECT sum(i.total) FROM period_documents d JOIN invoices i USING (invoice_id) "
            "WHERE d.period = ?", [period]).fetchone()
        assert debit == credit == billed, period
    # Per month and tier the causes sum to the idle GPU-hours and the idle value exactly.
    split = {(p, t): (h, v) for p, t, h, v in con.execute(
        "SELECT period, hardware_tier, sum(gpu_hours), sum(value) FROM idle_by_cause "
        "GROUP BY ALL").fetchall()}
    idle = {(p, t): (h, v) for p, t, h, v in con.execute(
        "SELECT period, hardware_tier, idle_gpu_hours + shared_idle_gpu_hours, idle_value "
        "FROM revenue_vs_capacity WHERE idle_gpu_hours + shared_idle_gpu_hours > 0"
        ).fetchall()}
    assert split == idle
    # Reserved but unused is shown apart, per holder, and adds up to its cause.
    reserved = dict(((p, t), (h, v)) for p, t, h, v in con.execute(
        "SELECT period, hardware_tier, gpu_hours, value FROM idle_by_cause "
        "WHERE cause = 'reserved_unused' AND gpu_hours > 0").fetchall())
    assert dict(((p, t), (h, v)) for p, t, h, v in con.execute(
        "SELECT period, hardware_tier, sum(gpu_hours), sum(value) "
        "FROM idle_reserved_by_holder GROUP BY ALL HAVING sum(gpu_hours) > 0").fetchall()
    ) == reserved
    assert set(c for (c,) in con.execute("SELECT DISTINCT cause FROM idle_by_cause"
                                         ).fetchall()) == {
        "shared_endpoint_idle", "unpartitioned_mig", "reserved_unused", "queue_held",
        "unreserved_idle"}


@pytest.mark.parametrize("tenant", ["acme", "zen", EVIL])
def test_a_tenant_mart_holds_only_that_tenant(demo_home, tenant):
    con = _open(tenant_mart_path(demo_home / "marts", tenant))
    assert con.execute("SELECT kind, tenant FROM meta").fetchone() == ("tenant", tenant)
    tables = [t for (t,) in con.execute("SHOW TABLES").fetchall()]
    for table in tables:
        columns = [c[0] for c in con.execute(f"DESCRIBE {table}").fetchall()]
        assert "node" not in columns
        assert "cluster" not in columns
        if "tenant" in columns:
            others = con.execute(f"SELECT DISTINCT tenant FROM {table} WHERE tenant <> ?",
                                 [tenant]).fetchall()
            assert others == [], table
    finance = _open(finance_mart_path(demo_home / "marts"))
    foreign = finance.execute("SELECT number, total FROM invoices WHERE tenant <> ?",
                              [tenant]).fetchall()
    text = _all_text(con)
    # zen's bill is exactly the enterprise plan's minimum, a price-list figure that every
    # tenant's projected bill on that plan carries (tier_change_recommendations).
    minimums = {f"{plan.minimum:.2f}" for plan in load_rate_cards(DEMO_CARD)[0].plans.values()}
    for number, total in foreign:
        assert number not in text
        if f"{total:.2f}" not in minimums:
            assert f"{total:.2f}" not in text
    for other in {"acme", "zen", EVIL} - {tenant}:
        assert other not in text


def test_tenant_file_names_are_keyed_and_not_guessable(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        marts._names_key(folder, create=True)
    evil = tenant_mart_path(first, EVIL)
    assert evil.parent == first / "tenants"
    assert re.fullmatch(r"[0-9a-f]{32}\.duckdb", evil.name)
    assert tenant_mart_path(first, "/etc/passwd").parent == first / "tenants"
    assert tenant_mart_path(first, "a.b") != tenant_mart_path(first, "a-b")
    assert tenant_mart_path(first, "acme") == tenant_mart_path(first, "acme")
    # The name is an HMAC under the secret beside the marts: nothing of the tenant's name,
    # nor of its plain hash, and another key gives another name.
    name = tenant_mart_path(first, "acme").name
    assert "acme" not in name
    assert hashlib.sha256(b"acme").hexdigest()[:16] not in name
    assert tenant_mart_path(second, "acme").name != name
    with pytest.raises(FileNotFoundError):
        tenant_mart_path(tmp_path / "never-published", "acme")


def test_marts_are_readable_by_their_owner_only(demo_home):
    root = demo_home / "marts"
    path = tenant_mart_path(root, "acme")
    modes = {p.relative_to(root): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")}
    modes[Path(".")] = stat.S_IMODE(root.stat().st_mode)
    assert modes[Path(".")] == modes[Path("tenants")] == 0o700
    assert modes[Path(marts.NAMES_KEY)] == 0o600
    files = [p for p in modes if p.suffix == ".duckdb"]
    assert len(files) == 5  # three tenants, finance, operator
    assert {modes[p] for p in files} == {0o400}
    con = _open(path)
    with pytest.raises(duckdb.Error):
        con.execute("DELETE FROM invoices")
    assert not list(root.rglob(".tmp-*"))


def test_daily_cost_estimates_add_up_to_what_was_billed(demo_home):
    con = _open(tenant_mart_path(demo_home / "marts", "acme"))
    (estimated,) = con.execute("SELECT sum(cost) FROM cost_daily").fetchone()
    billed = Decimal(TOTALS["acme"]) + Decimal(ADJUSTMENT_TOTAL)
    assert abs(estimated - billed) < Decimal("0.05")
    (period_billed, forecast) = con.execute(
        "SELECT billed_total, forecast_total FROM periods").fetchone()
    # A complete month: nothing to extrapolate.
    assert period_billed == billed == forecast


def test_reservation_use_per_hour(demo_home):
    # DESIGN.md: 2 reserved premium GPUs all October, 3 used every hour -> 1,488 covered.
    con = _open(tenant_mart_path(demo_home / "marts", "acme"))
    row = con.execute("SELECT count(*), sum(reserved_gpus), sum(used_gpus), sum(covered_gpus) "
                      "FROM reservations WHERE hardware_tier = 'premium'").fetchone()
    assert row == (744, 1488.0, 2232.0, 1488.0)
    con = _open(tenant_mart_path(demo_home / "marts", "zen"))
    assert con.execute("SELECT count(*) FROM reservations").fetchone() == (0,)


def test_operator_mart_has_no_money(demo_home):
    con = _open(operator_mart_path(demo_home / "marts"))
    tables = {t for (t,) in con.execute("SHOW TABLES").fetchall()}
    assert not tables & {"invoices", "invoice_lines", "revenue", "periods", "cost_daily"}
    # A plan recommendation reaches operators without the tenant's projected bills (acme's
    # growth -> starter, 7,103.12 against 6,803.60 USD, stays in acme's own mart).
    plans = con.execute("SELECT * FROM tier_change_recommendations").df()
    assert list(plans["recommended_plan"]) == ["starter"]
    assert list(plans["projected_gpu_hours"]) == [1440]
    # Reservation options reach them in GPUs, without their expected costs; no table holds
    # money.
    reservations = con.execute("SELECT * FROM reservation_recommendations").df()
    premium = reservations[reservations["hardware_tier"] == "premium"].iloc[0]
    assert (premium["current_reserved_gpus"], premium["recommended_gpus"]) == (2, 3)
    for table in tables:
        # cost_optimal_gpus counts GPUs: the one column that says cost without being money
        columns = " ".join(c[0] for c in con.execute(f"DESCRIBE {table}").fetchall()
                           if c[0] != "cost_optimal_gpus")
        assert "total" not in columns
        assert "revenue" not in columns
        assert "cost" not in columns
        assert "bill" not in columns
        assert "currency" not in columns


def test_coverage_counts_unattributed_gpu_seconds(demo_home):
    con = _open(finance_mart_path(demo_home / "marts"))
    # 3 October: acme 6 GPUs and zen 2 all day (192 GPU-h) and one unattributed L4 (24 GPU-h).
    share = con.execute("SELECT attributed_share FROM coverage_daily "
                        "WHERE day = DATE '2026-10-03'").fetchone()[0]
    assert share == pytest.approx(192 / 216)
    # l4-pool reported on 3 October (unattributed, hours 48-71) and on 5-6 October (EVIL,
    # hours 100-123): the other 28 days of the month are listed as missing.
    missing = con.execute("SELECT count(*) FROM node_days WHERE node = 'l4-pool' "
                          "AND hours_reported = 0").fetchone()[0]
    assert missing == 28


def _flat_warehouse(tmp_path: Path, days: int, kind: Callable[[int], str] = lambda h: "batch"
                    ) -> tuple[duckdb.DuckDBPyConnection, dict]:
    """One tenant on a flat 0.60 tier with no fees: 1 L4 GPU all day for `days` days, the
    workload kind of hour `h` of the month `kind(h)`."""
    (tmp_path / "rate-card.yaml").write_text("""
version: t
effective_from: 2026-01-01
currency: USD
tiers:
  economy: {products: ["L4"], mode: flat, price: "0.60"}
size_classes:
  - {name: small, multiplier: "1.00"}
unknown_size_multiplier: "1.00"
plans:
  plain: {usage_range_gpu_hours: [0, null]}
""")
    (tmp_path / "tenants.yaml").write_text(
        "tenants:\n  solo: {plan: plain, start: 2026-01-01}\n")
    cards = load_rate_cards(tmp_path / "rate-card.yaml")
    tenants = load_tenants(tmp_path / "tenants.yaml", cards)
    start = datetime(2026, 10, 1, tzinfo=UTC)
    rows = [{"sample_id": make_sample_id(h), "window_start": start + timedelta(hours=h),
             "duration_s": 3600.0, "cluster": "c", "node": "n", "gpu_uuid": "GPU-1",
             "gpu_product": "NVIDIA L4", "mig_profile": None, "gpu_equivalents": 1.0,
             "tenant": "solo", "namespace": None, "pod": None, "pod_uid": None,
             "workload_kind": kind(h), "model": "m", "model_params_b": 1.0,
             "allocated_gpu_seconds": 3600.0, "used_gpu_seconds": 1800.0,
             "memory_used_bytes": None, "source": "test"} for h in range(24 * days)]
    con = warehouse.connect(tmp_path / "w.duckdb")
    warehouse.create_schema(con)
    warehouse.load_rows(con, cards[0], ledger_table(rows))
    lo, hi = month_bounds("2026-10")
    invoice = price_invoice(tenants["solo"], cards[0], "2026-10",
                            warehouse.tenant_usage_hours(con, tenants["solo"], lo, hi))
    lifecycle.write_drafts(con, "2026-10", [invoice], "x", lo)
    return con, tenants


def test_forecast_extrapolates_month_to_date_usage(tmp_path):
    con, tenants = _flat_warehouse(tmp_path, days=10)
    publish_marts(con, tmp_path / "marts", tenants)
    mart = _open(tenant_mart_path(tmp_path / "marts", "solo"))
    row = mart.execute("SELECT billed_total, forecast_total, elapsed_hours, period_hours "
                       "FROM periods").fetchone()
    # 240 GPU-hours x 0.60 = 144.00 so far; at that rate, 744 hours -> 446.40.
    assert row == (Decimal("144.00"), Decimal("446.40"), 240, 744)


def test_daily_cost_by_workload_kind_adds_up_to_the_bill(tmp_path):
    con, tenants = _flat_warehouse(tmp_path, days=10,
                                   kind=lambda h: "training" if h < 96 else "fine-tuning")
    publish_marts(con, tmp_path / "marts", tenants)
    mart = _open(tenant_mart_path(tmp_path / "marts", "solo"))
    rows = mart.execute("SELECT workload_kind, sum(gpu_hours), sum(cost) FROM cost_daily "
                        "GROUP BY ALL ORDER BY ALL").fetchall()
    # 4 days of training, 6 of fine-tuning at 0.60 a GPU-hour: 57.60 + 86.40 = 144.00 billed.
    assert rows == [("fine-tuning", Decimal(144), Decimal("86.40")),
                    ("training", Decimal(96), Decimal("57.60"))]
    (billed,) = mart.execute("SELECT billed_total FROM periods").fetchone()
    assert billed == Decimal("144.00")


def test_publish_replaces_atomically_and_keeps_the_old_mart_on_failure(tmp_path, monkeypatch):
    con, tenants = _flat_warehouse(tmp_path, days=2)
    root = tmp_path / "marts"
    publish_marts(con, root, tenants)
    path = tenant_mart_path(root, "solo")
    before = path.read_bytes()

    def broken(present):
        return [("usage_hourly", "SELECT * FROM no_such_table WHERE tenant = $tenant")]

    monkeypatch.setattr(marts, "_tenant_tables", broken)
    with pytest.raises(duckdb.Error):
        publish_marts(con, root, tenants)
    assert path.read_bytes() == before
    assert sorted(p.name for p in (root / "tenants").iterdir()) == [path.name]


def test_analytics_tables_are_published_filtered_when_present(tmp_path):
    con, tenants = _flat_warehouse(tmp_path, days=2)
    con.execute("INSERT INTO usage_shifts BY NAME SELECT * FROM (VALUES "
                "('solo', DATE '2026-10-02', 1.0, 3.0), ('other', DATE '2026-10-02', 2.0, 1.0))"
                " t(tenant, change_date, level_before, level_after), "
                "(SELECT DATE '2026-10-02' AS day, 'gpu_hours/economy' AS series_name, "
                "0.9 AS confidence, true AS confirmed, 3 AS days_at_new_level)")
    con.execute("INSERT INTO scheduler_quota_changes BY NAME SELECT "
                "TIMESTAMPTZ '2026-10-03 00:00Z' AS changed_at, 'ResourceQuota' AS kind, "
                "'ns-other' AS namespace, 'gpu-chargeback' AS name, "
                "'requests.nvidia.com/gpu' AS resource, 2 AS after_gpus, 0 AS in_use_gpus, "
                "2 AS recommended_gpus, 'recommended' AS rule, false AS dry_run, "
                "'applied' AS outcome")
    publish_marts(con, tmp_path / "marts", tenants)
    mart = _open(tenant_mart_path(tmp_path / "marts", "solo"))
    assert mart.execute("SELECT tenant FROM usage_shifts").fetchall() == [("solo",)]
    tables = {t for (t,) in mart.execute("SHOW TABLES").fetchall()}
    assert "scheduler_quota_changes" not in tables  # no tenant column: operators only
    operator = _open(operator_mart_path(tmp_path / "marts"))
    assert operator.execute("SELECT count(*) FROM usage_shifts").fetchone() == (2,)
    assert operator.execute("SELECT outcome FROM scheduler_quota_changes").fetchone() == (
        "applied",)


def test_reserved_names_have_no_mart(tmp_path):
    con = warehouse.connect()
    warehouse.create_schema(con)
    with pytest.raises(ValueError, match="reserved"):
        publish_marts(con, tmp_path, ["__idle__"])


def test_a_closed_month_forecasts_its_bill(tmp_path):
    con, tenants = _flat_warehouse(tmp_path, days=10)
    lifecycle.close_period(con, "2026-10", datetime(2026, 11, 1, tzinfo=UTC))
    publish_marts(con, tmp_path / "marts", tenants)
    mart = _open(tenant_mart_path(tmp_path / "marts", "solo"))
    assert mart.execute("SELECT closed, billed_total, forecast_total FROM periods").fetchone() \
        == (True, Decimal("144.00"), Decimal("144.00"))


def test_the_page_cache_serves_each_tenant_its_own_tables(dashboard_env):
    # One tenant's page fills the shared cache with all its page tables; the next tenant
    # (an attacker signed in as zen right after acme) gets its own rows, and asking for a
    # subset of the cached tables never returns the cached tenant's.
    acme = tenant_tables(tenant="acme", tables=("periods", "invoices"))
    assert set(acme["invoices"]["tenant"]) == {"acme"}
    for tables in (("invoices",), PAGE_TABLES, ("invoices", "reservations")):
        zen = tenant_tables(tenant="zen", tables=tables)
        assert set(zen) == set(tables)
        assert set(zen["invoices"]["tenant"]) == {"zen"}
        assert not set(zen["invoices"]["invoice_id"]) & set(acme["invoices"]["invoice_id"])
    again = tenant_tables(tenant="acme", tables=("invoices",))
    assert set(again["invoices"]["tenant"]) == {"acme"}
