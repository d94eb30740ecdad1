"""Idle GPU capacity by cause, on a real warehouse: each idle GPU-second gets one cause, the
split sums to the idle total exactly, and claims beyond what is idle are capped.

The hours (premium tier, 2026-10-12 00:00-05:00), reasoned from the causes' order:
- every hour: acme and zen each run 1 GPU and reserved 2 (reservations 00:00-05:00), so
  1 GPU-hour of each reservation is unused.
- hours 0-3: 4 whole GPUs idle, a MIG-mode GPU with 1/3 of it unpartitioned (1,200 s), and a
  shared endpoint idle for half the hour (1,800 s, `__shared_idle__`).
- hours 2-3: zen's ClusterQueue holds 3 premium GPUs (applied at 02:00): 1 beyond what zen
  reserved (2), which is more than it used (1).
- hour 4: only half a GPU-hour idle, less than the 2 unused reserved hours: the reservations
  take it all, half each, and the queue (still 3) gets nothing.
So: shared 4 x 1,800 s = 2 h; unpartitioned 4 x 1,200 s = 1.333333 h; reserved unused
4 x 7,200 + 1,800 s = 8.5 h (4.25 h each holder's); queue 2 x 3,600 s = 2 h; unreserved
2 x 7,200 + 2 x 3,600 s = 6 h; idle in all 64,200 + 7,200 s = 19.833333 h."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from models.billing import lifecycle
from models.billing.books import load_books
from models.billing.idle import IdleCause, idle_by_cause, split_value
from models.billing.pricing import price_invoice
from models.billing.rate_cards import Reservation, load_rate_cards, load_tenants, month_bounds
from models.ledger import warehouse
from models.ledger.usage import IDLE_TENANT, SHARED_IDLE_TENANT, ledger_table, make_sample_id
from models.marts import finance_mart_path, publish_marts

EXAMPLE = Path(__file__).parents[3] / "examples" / "design-example"
FINANCE = Path(__file__).parents[3] / "examples" / "demo" / "finance.yaml"
D = Decimal
FIRST = datetime(2026, 10, 12, tzinfo=UTC)
H100 = "NVIDIA H100 80GB HBM3"


def _row(tenant: str, gpu: str, hour: int, seconds: int, **extra: Any) -> dict[str, Any]:
    start = FIRST + timedelta(hours=hour)
    return {
        "sample_id": make_sample_id(tenant, gpu, start.isoformat()), "window_start": start,
        "duration_s": 3600.0, "cluster": "c1", "node": gpu.split("/")[0], "gpu_uuid": gpu,
        "gpu_product": H100, "mig_profile": None, "gpu_equivalents": 1.0, "tenant": tenant,
        "namespace": f"team-{tenant}" if not tenant.startswith("__") else None,
        "pod": None, "pod_uid": None,
        "workload_kind": "idle" if tenant.startswith("__") else "batch", "model": "llama-8b",
        "model_params_b": 8.0, "allocated_gpu_seconds": float(seconds),
        "used_gpu_seconds": None, "memory_used_bytes": None, "source": "test", **extra}


def _ledger() -> list[dict[str, Any]]:
    rows = []
    for hour in range(5):
        rows += [_row("acme", "n1/gpu0", hour, 3600), _row("zen", "n1/gpu1", hour, 3600)]
        if hour < 4:
            rows += [_row(IDLE_TENANT, f"n1/gpu{g}", hour, 3600) for g in range(2, 6)]
            rows += [_row(IDLE_TENANT, "n2/gpu0-unpartitioned", hour, 1200,
                          gpu_equivalents=1 / 3),
                     _row(SHARED_IDLE_TENANT, "n2/mig-3g.40gb-0", hour, 1800,
                          mig_profile="3g.40gb", gpu_equivalents=3 / 7)]
        else:
            rows.append(_row(IDLE_TENANT, "n1/gpu2", hour, 1800))
        # An economy GPU idle all along: a second tier, with unreserved idle only.
        rows.append(_row(IDLE_TENANT, "n3/gpu0", hour, 3600, gpu_product="NVIDIA L4"))
    return rows


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("idle")
    cards = load_rate_cards(EXAMPLE / "rate-card.yaml")
    tenants = load_tenants(EXAMPLE / "tenants.yaml", cards)
    for name in ("acme", "zen"):
        tenants[name] = replace(tenants[name], reservations=(
            Reservation("premium", D(2), FIRST, FIRST + timedelta(hours=5)),))
    db = warehouse.connect(tmp / "warehouse.duckdb")
    warehouse.create_schema(db)
    pq.write_table(ledger_table(_ledger()), tmp / "usage.parquet")
    warehouse.load_rows(db, cards[0], [tmp / "usage.parquet"])
    start, end = month_bounds("2026-10")
    invoices = [price_invoice(t, cards[0], "2026-10",
                              warehouse.tenant_usage_hours(db, t, start, end))
                for _, t in sorted(tenants.items())]
    lifecycle.write_drafts(db, "2026-10", invoices, "inputs", FIRST + timedelta(days=1))
    quota = ("ClusterQueue", None, "zen", "premium", "nvidia.com/gpu", None)
    tail = (0, 3, "recommended", False)
    warehouse.record_quota_changes(db, [
        (FIRST + timedelta(hours=2), *quota, 3, *tail, "applied"),
        # Neither a dry run nor another tier's figure holds premium capacity.
        (FIRST, *quota, 40, *tail[:-1], True, "dry-run"),
        (FIRST, "ClusterQueue", None, "zen", "economy", "nvidia.com/gpu", None, 9, *tail,
         "applied"),
    ])
    yield db, sorted(tenants), tenants, cards
    db.close()


def test_each_idle_second_has_one_cause_and_the_split_is_exact(con) -> None:
    db, tenants, *_ = con
    start, end = month_bounds("2026-10")
    economy, split = idle_by_cause(db, start, end, tenants)
    assert (economy.period, economy.hardware_tier) == ("2026-10", "economy")
    # zen's economy queue holds 9 GPUs it does not use: all of that tier's idle is held.
    assert economy.gpu_hours[IdleCause.QUEUE_HELD] == economy.total_gpu_hours == D(5)
    assert (split.period, split.hardware_tier) == ("2026-10", "premium")
    assert split.gpu_hours == {
        IdleCause.SHARED_ENDPOINT_IDLE: D("2.000000"),
        IdleCause.UNPARTITIONED_MIG: D("1.333333"),
        IdleCause.RESERVED_UNUSED: D("8.500000"),
        IdleCause.QUEUE_HELD: D("2.000000"),
        IdleCause.UNRESERVED_IDLE: D("6.000000"),
    }
    # Shown apart: whose reservations the unused hours were.
    assert split.reserved_by_holder == {"acme": D("4.250000"), "zen": D("4.250000")}
    idle = db.execute(
        "SELECT sum(allocated_gpu_seconds) / 3600 FROM usage_hourly WHERE list_contains(?, "
        "tenant) AND hardware_tier = 'premium'", [[IDLE_TENANT, SHARED_IDLE_TENANT]]).fetchone()
    assert split.total_gpu_hours == D(idle[0]).quantize(D("0.000001"))


def test_reserved_unused_is_the_invoice_netting(con) -> None:
    """The reservations' unused GPU-hours are what the invoices' netting stored (5 hours x 1
    GPU each); the idle split takes only the 8.5 of them the GPUs were idle."""
    db, *_ = con
    assert dict(db.execute(
        "SELECT i.tenant, sum(h.gpu_hours) FROM invoice_hours h JOIN invoices i "
        "USING (invoice_id) WHERE h.hour_use = 'unused' GROUP BY ALL").fetchall()) == {
        "acme": D(5), "zen": D(5)}


def test_a_window_holds_only_its_own_hours(con) -> None:
    db, tenants, *_ = con
    _, split = idle_by_cause(db, FIRST + timedelta(hours=4), FIRST + timedelta(hours=5),
                             tenants)
    assert split.gpu_hours[IdleCause.RESERVED_UNUSED] == D("0.5")
    assert split.total_gpu_hours == D("0.5")
    assert split.reserved_by_holder == {"acme": D("0.25"), "zen": D("0.25")}
    assert idle_by_cause(db, FIRST + timedelta(days=1), FIRST + timedelta(days=2),
                         tenants) == []


def test_the_value_splits_to_the_cent_and_sums_to_the_idle_value(con) -> None:
    db, tenants, *_ = con
    start, end = month_bounds("2026-10")
    _, split = idle_by_cause(db, start, end, tenants)
    worth = split_value(D("100.00"), split, D("0.01"))
    assert sum(worth.values()) == D("100.00")
    assert all(v == v.quantize(D("0.01")) for v in worth.values())
    # In cents: shared 1,008.40, unpartitioned 672.27, reserved 4,285.71, queue 1,008.40,
    # unreserved 3,025.21; the 2 cents left go to the largest remainders (reserved, then the
    # first of the two equal ones, shared).
    assert worth == {
        IdleCause.SHARED_ENDPOINT_IDLE: D("10.09"), IdleCause.UNPARTITIONED_MIG: D("6.72"),
        IdleCause.RESERVED_UNUSED: D("42.86"), IdleCause.QUEUE_HELD: D("10.08"),
        IdleCause.UNRESERVED_IDLE: D("30.25")}


def test_the_finance_mart_shows_each_tier_split_to_its_idle_value(con, tmp_path) -> None:
    db, _, tenants, cards = con
    publish_marts(db, tmp_path, tenants, now=FIRST + timedelta(days=2),
                  books=load_books(FINANCE, cards))
    mart = warehouse.connect(finance_mart_path(tmp_path), read_only=True)
    try:
        split = {(t, c): (h, v) for t, c, h, v in mart.execute(
            "SELECT hardware_tier, cause, gpu_hours, value FROM idle_by_cause").fetchall()}
        idle = dict(mart.execute(
            "SELECT hardware_tier, idle_value FROM revenue_vs_capacity").fetchall())
        holders = {t: (h, v) for t, h, v in mart.execute(
            "SELECT tenant, gpu_hours, value FROM idle_reserved_by_holder").fetchall()}
    finally:
        mart.close()
    assert {t for t, _ in split} == {"economy", "premium"}
    assert sum(v for (t, _), (_, v) in split.items() if t == "premium") == idle["premium"]
    # Nobody was billed for economy: no realized price, so its idle has GPU-hours and no value.
    assert idle["economy"] is None
    assert {v for (t, _), (_, v) in split.items() if t == "economy"} == {None}
    assert split["economy", "queue_held"][0] == D(5)
    assert {t: h for t, (h, _) in holders.items()} == {"acme": D("4.25"), "zen": D("4.25")}
    assert sum(v for _, v in holders.values()) == split["premium", "reserved_unused"][1]
