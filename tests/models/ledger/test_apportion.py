"""A shared endpoint's GPU-seconds go to its tenants by the best measure of request work they
all have (prefill + decode seconds, request seconds, tokens at the cost model's per-token GPU
time); Σ over tenants and `__shared_idle__` is the endpoint's GPU-seconds."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from models.billing.rate_cards import load_rate_cards, rate_card_for
from models.ledger import warehouse
from models.ledger.usage import (
    DECODE_GPU_SECONDS_PER_TOKEN,
    LEDGER_SCHEMA,
    PREFILL_GPU_SECONDS_PER_TOKEN,
    REQUEST_WORK_SCHEMA,
    SHARED_IDLE_TENANT,
    SHARED_TENANT,
    make_sample_id,
)

ROOT = Path(__file__).resolve().parents[3]
CARD = rate_card_for(load_rate_cards(ROOT / "examples" / "demo" / "rate-card.yaml"),
                     date(2026, 9, 1))
START = datetime(2026, 9, 1, tzinfo=UTC)
STEP = 60.0
ENDPOINT = ("shared-inference", "llama-3.1-8b")


def _endpoint_rows(minutes: int) -> list[dict[str, Any]]:
    """Two whole H100s of the shared endpoint, every minute."""
    return [{"sample_id": make_sample_id(gpu, m), "window_start": START + timedelta(minutes=m),
             "duration_s": STEP, "cluster": "c", "node": "n", "gpu_uuid": gpu,
             "gpu_product": "NVIDIA H100 80GB HBM3", "mig_profile": None,
             "gpu_equivalents": 1.0, "tenant": SHARED_TENANT, "namespace": ENDPOINT[0],
             "pod": f"vllm-{gpu}", "pod_uid": None, "workload_kind": "inference",
             "model": ENDPOINT[1], "model_params_b": 8.0, "allocated_gpu_seconds": STEP,
             "used_gpu_seconds": STEP * 0.5, "memory_used_bytes": None, "source": "test"}
            for m in range(minutes) for gpu in ("GPU-a", "GPU-b")]


def _work(minute: int, tenant: str, **measures: float | None) -> dict[str, Any]:
    row = {name: None for name in REQUEST_WORK_SCHEMA.names}
    row.update(sample_id=make_sample_id("w", minute, tenant),
               window_start=START + timedelta(minutes=minute), duration_s=STEP, cluster="c",
               namespace=ENDPOINT[0], model=ENDPOINT[1], tenant=tenant, source="test",
               **measures)
    return row


def _shares_of(rows: list[dict[str, Any]], minutes: int = 4) -> dict[tuple[int, str], float]:
    con = warehouse.connect()
    warehouse.create_schema(con)
    warehouse.load_rows(con, CARD, pa.Table.from_pylist(_endpoint_rows(minutes),
                                                        schema=LEDGER_SCHEMA),
                        pa.Table.from_pylist(rows, schema=REQUEST_WORK_SCHEMA))
    got = con.execute(
        "SELECT minute(window_start), tenant, sum(allocated_gpu_seconds) FROM ledger "
        "GROUP BY ALL").fetchall()
    totals = con.execute("SELECT minute(window_start), sum(allocated_gpu_seconds) FROM ledger "
                         "GROUP BY 1").fetchall()
    # Conservation: each minute's rows sum to the endpoint's 2 GPUs x 60 s.
    assert {m: s for m, s in totals} == {m: pytest.approx(2 * STEP) for m in range(minutes)}
    return {(m, t): s for m, t, s in got}


def test_phase_time_wins_over_request_seconds_and_tokens():
    shares = _shares_of([
        _work(0, "kite", prefill_seconds=1.0, decode_seconds=2.0, request_seconds=100.0,
              input_tokens=10, output_tokens=10),
        _work(0, "pixel", prefill_seconds=0.5, decode_seconds=0.5, request_seconds=1.0,
              input_tokens=1000, output_tokens=1000),
    ])
    assert shares[0, "kite"] == pytest.approx(120 * 3 / 4)
    assert shares[0, "pixel"] == pytest.approx(120 * 1 / 4)


def test_request_seconds_when_a_tenant_has_no_phase_time():
    shares = _shares_of([
        _work(1, "kite", prefill_seconds=1.0, decode_seconds=2.0, request_seconds=2.0),
        _work(1, "pixel", request_seconds=6.0),
    ])
    assert shares[1, "kite"] == pytest.approx(120 * 2 / 8)
    assert shares[1, "pixel"] == pytest.approx(120 * 6 / 8)


def test_tokens_at_the_cost_model_when_nothing_else_is_known():
    kite = 2000 * PREFILL_GPU_SECONDS_PER_TOKEN + 30 * DECODE_GPU_SECONDS_PER_TOKEN
    pixel = 1000 * PREFILL_GPU_SECONDS_PER_TOKEN + 200 * DECODE_GPU_SECONDS_PER_TOKEN
    shares = _shares_of([
        _work(2, "kite", input_tokens=2000, output_tokens=30),
        _work(2, "pixel", input_tokens=1000, output_tokens=200),
    ])
    assert shares[2, "kite"] == pytest.approx(120 * kite / (kite + pixel))
    assert shares[2, "pixel"] == pytest.approx(120 * pixel / (kite + pixel))


def test_minutes_without_work_are_shared_idle():
    shares = _shares_of([_work(0, "kite", request_seconds=0.0),
                         _work(1, "kite", request_seconds=3.0)])
    assert shares[0, SHARED_IDLE_TENANT] == pytest.approx(120)
    assert shares[1, "kite"] == pytest.approx(120)
    assert shares[2, SHARED_IDLE_TENANT] == pytest.approx(120)
    assert (0, "kite") not in shares


def test_tenants_without_a_common_measure_fail_the_load_naming_the_endpoint():
    with pytest.raises(warehouse.MixedRequestWork) as caught:
        _shares_of([_work(3, "kite", request_seconds=3.0),
                    _work(3, "pixel", input_tokens=10, output_tokens=5),
                    _work(1, "kite", request_seconds=3.0),
                    _work(1, "sable", prefill_seconds=1.0, decode_seconds=1.0)])
    # Every such endpoint-interval at once, with the tenants to look at.
    assert [p.split(": tenants ")[1].split(" have")[0] for p in caught.value.problems] == [
        "kite, sable", "kite, pixel"]
    assert all("c/shared-inference/llama-3.1-8b" in p for p in caught.value.problems)



def test_a_month_prices_the_shared_endpoint_by_gpu_time_or_by_tokens():
    """kite is on a GPU-time plan, pixel on a token plan: from the same warehouse, kite's
    invoice bills its share of the endpoint as GPU-hours and shows its tokens with their
    effective cost; pixel's bills its tokens and no GPU-hours of that model."""
    from dataclasses import replace as changed
    from decimal import Decimal

    from models.billing.period import price_period
    from models.billing.pricing import LineKind
    from models.billing.rate_cards import Basis, Isolation, Meter, SlaClass, Tenant, TokenPrice

    con = warehouse.connect()
    warehouse.create_schema(con)
    warehouse.load_rows(
        con, CARD, pa.Table.from_pylist(_endpoint_rows(60), schema=LEDGER_SCHEMA),
        pa.Table.from_pylist([r for m in range(60) for r in (
            _work(m, "kite", input_tokens=3000, output_tokens=100),
            _work(m, "pixel", input_tokens=1000, output_tokens=300))],
            schema=REQUEST_WORK_SCHEMA))
    warehouse.rollup_hourly(con, START.date())
    gpu_plan = next(iter(CARD.plans.values()))
    card = changed(CARD, plans={"gpu": changed(gpu_plan, name="gpu"),
                                "tokens": changed(gpu_plan, name="tokens", meter=Meter.TOKENS)},
                   token_prices={ENDPOINT[1]: TokenPrice(ENDPOINT[1], Decimal("0.50"),
                                                         Decimal("2.00"))})
    tenants = {name: Tenant(name=name, plan=plan, basis=Basis.ALLOCATION,
                            isolation=Isolation.POOL, sla_class=SlaClass.STANDARD,
                            start=START.replace(month=1), end=None, namespaces=())
               for name, plan in (("kite", "gpu"), ("pixel", "tokens"))}
    kite, pixel = price_period(con, card, tenants, "2026-09")
    assert kite.tenant == "kite"
    assert sum(u.gpu_hours for u in kite.usage) > 0
    assert not [x for x in kite.lines if x.kind is LineKind.TOKENS]
    (kite_tokens,) = kite.tokens
    assert (kite_tokens.input_tokens, kite_tokens.output_tokens) == (180_000, 6_000)
    # The token view of kite's GPU bill reconciles with its GPU charges to the cent.
    gpu_charges = sum(x.amount for x in kite.lines if x.kind in (LineKind.USAGE,
                                                                  LineKind.BAND_FEE))
    assert kite_tokens.input_cost + kite_tokens.output_cost == gpu_charges
    assert pixel.usage == ()  # its endpoint GPU-hours are paid by its tokens
    assert [(x.quantity, x.amount) for x in pixel.lines if x.kind is LineKind.TOKENS] == [
        (Decimal("0.06"), Decimal("0.03")), (Decimal("0.018"), Decimal("0.04"))]

    # The same bills, with off-peak hours on every tier and pixel's model sold by the
    # package, through the FOCUS export: every row valid, each invoice's rows summing to it.
    from models.billing import lifecycle
    from models.billing.focus import Provider, focus_table
    from models.billing.focus_datasets import focus_datasets
    from models.billing.rate_cards import TimeOfUse
    from tests.focus_validator import OPERATING_MODEL, validate
    from tests.models.billing.test_focus import PARTIES

    night = TimeOfUse("Europe/Berlin", ((0, 6),), (), Decimal("0.5"))
    card = changed(card, tiers=tuple(changed(t, time_of_use=night) for t in card.tiers),
                   token_prices={ENDPOINT[1]: TokenPrice(ENDPOINT[1], package_tokens=50_000,
                                                         package_price=Decimal("0.10"))})
    invoices = price_period(con, card, tenants, "2026-09")
    assert [x.description for x in invoices[0].lines if x.kind is LineKind.USAGE][-1].endswith(
        "off-peak")  # 00:00-01:00 UTC is 02:00-03:00 in Berlin
    (package,) = [x for x in invoices[1].lines if x.kind is LineKind.TOKENS]
    # 60 minutes x 1,300 tokens = 78,000 tokens: 2 started packages of 50,000.
    assert (package.quantity, package.amount) == (Decimal(2), Decimal("0.20"))
    parties = {"kite": PARTIES["zen"], "pixel": PARTIES["acme"]}
    tenants = {name: changed(t, billing=parties[name].bill_to) for name, t in tenants.items()}
    lifecycle.write_drafts(con, "2026-09", invoices, "inputs", START.replace(month=10),
                           parties=parties)
    table = focus_table(con, "2026-09", tenants=tenants, cards=[card])
    datasets = {d.dataset_id: d.table for d in focus_datasets(
        con, "2026-09", table, tenants=tenants, provider=Provider(),
        created=START.replace(month=10))}
    assert validate(datasets, OPERATING_MODEL) == []
    for invoice in invoices:
        billed = sum(r["BilledCost"] for r in table.to_pylist()
                     if r["SubAccountId"] == invoice.tenant)
        assert billed == invoice.total


def test_a_warehouse_of_the_first_request_schema_is_upgraded_and_loads(tmp_path):
    path = tmp_path / "old.duckdb"
    con = warehouse.connect(path)
    schema = warehouse.sql("schema")
    start = schema.index("CREATE TABLE IF NOT EXISTS request_work (")
    end = schema.index(");", start) + 2
    old = ("CREATE TABLE request_work (sample_id VARCHAR NOT NULL, window_start TIMESTAMPTZ "
           "NOT NULL, duration_s DOUBLE NOT NULL, cluster VARCHAR NOT NULL, namespace VARCHAR "
           "NOT NULL, model VARCHAR NOT NULL, tenant VARCHAR NOT NULL, request_seconds DOUBLE "
           "NOT NULL, tokens DOUBLE, source VARCHAR NOT NULL, day DATE NOT NULL);")
    con.execute(old + schema[:start] + schema[end:])
    con.close()
    con = warehouse.connect(path)
    warehouse.create_schema(con)
    warehouse.load_rows(con, CARD, pa.Table.from_pylist(_endpoint_rows(1), schema=LEDGER_SCHEMA),
                        pa.Table.from_pylist([_work(0, "kite", input_tokens=5, output_tokens=1)],
                                             schema=REQUEST_WORK_SCHEMA))
    assert con.execute("SELECT tenant, input_tokens FROM request_work").fetchall() == [
        ("kite", 5)]


def test_request_files_of_an_older_collector_load_with_their_measures_unknown(tmp_path):
    import pyarrow.parquet as pq

    # Written before request work had tokens and phases: request seconds and `tokens` only.
    old = pa.table({"sample_id": ["a"], "window_start": pa.array(
        [START], pa.timestamp("us", tz="UTC")), "duration_s": [STEP], "cluster": ["c"],
        "namespace": [ENDPOINT[0]], "model": [ENDPOINT[1]], "tenant": ["kite"],
        "request_seconds": [2.0], "tokens": [5.0], "source": ["gateway"]})
    pq.write_table(old, tmp_path / "old.parquet")
    con = warehouse.connect()
    warehouse.create_schema(con)
    warehouse.load_rows(con, CARD, pa.Table.from_pylist(_endpoint_rows(1), schema=LEDGER_SCHEMA),
                        [tmp_path / "old.parquet"])
    assert con.execute("SELECT tenant, request_seconds, input_tokens FROM request_work"
                       ).fetchall() == [("kite", 2.0, None)]
    assert con.execute("SELECT DISTINCT tenant FROM ledger").fetchall() == [("kite",)]
