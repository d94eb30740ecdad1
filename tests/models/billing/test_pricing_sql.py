"""The set-wise engine (models.billing.pricing_sql) against the Decimal engine, its oracle:
random rate cards, reservations, bands, minimums, credits, token prices, time of use and
usage of several tenants priced at once; every invoice must be the same to the byte."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from models.billing.lifecycle import write_drafts
from models.billing.period import price_period
from models.billing.pricing import LineKind, ModelWork, UsageHour, price_invoice
from models.billing.pricing_sql import NettingCells, price_all
from models.billing.rate_cards import (
    Basis,
    CreditGrant,
    Isolation,
    Meter,
    Plan,
    RateCard,
    Reservation,
    SlaClass,
    Tenant,
    TimeOfUse,
    TokenPrice,
    load_rate_cards,
    load_tenants,
    month_bounds,
    rate_card_for,
)
from models.ledger import warehouse
from tests.demo_day import DEMO, START, load_demo_day
from tests.models.billing.engines import assert_same, price_set_wise, usage_table
from tests.models.billing.test_pricing_properties import DESIGN_CARD, SIZES, cards, cents, percent

D = Decimal
OCT = datetime(2026, 10, 1, tzinfo=UTC)
TIERS = ("premium", "standard", "economy")
MODELS = ("llama", "mistral", "qwen")


@st.composite
def time_of_use(draw: st.DrawFn) -> TimeOfUse | None:
    if draw(st.booleans()):
        return None
    start, end = draw(st.integers(0, 23)), draw(st.integers(0, 23))
    return TimeOfUse(
        draw(st.sampled_from(("UTC", "America/New_York", "Asia/Kolkata", "Australia/Sydney"))),
        ((start, end),) if start != end else (),
        tuple(draw(st.sets(st.sampled_from(("sat", "sun", "wed"))))),
        draw(st.integers(1, 150).map(lambda n: D(n).scaleb(-2))))


@st.composite
def full_cards(draw: st.DrawFn) -> RateCard:
    card = draw(cards())
    tiers = tuple(replace(t, time_of_use=draw(time_of_use())) for t in card.tiers)
    prices = {}
    for model in draw(st.sets(st.sampled_from(MODELS))):
        if draw(st.booleans()):
            prices[model] = TokenPrice(model, package_tokens=draw(st.integers(1, 10**6)),
                                       package_price=draw(cents))
        else:
            prices[model] = TokenPrice(model, draw(st.none() | cents), draw(st.none() | cents))
    plans = {name: replace(plan, meter=draw(st.sampled_from(tuple(Meter))))
             for name, plan in card.plans.items()}
    plans["q"] = Plan("q", draw(cents), draw(percent), draw(cents), (D(0), None),
                      draw(st.sampled_from(tuple(Meter))))
    return replace(card, tiers=tiers, token_prices=prices, plans=plans,
                   minor_unit=draw(st.sampled_from((2, 2, 0))))


# GPUs at 0-3 decimals mostly, sometimes at 7 (more than the netting's 6: priced by the
# Decimal engine); starts on the hour mostly, sometimes inside one (likewise).
gpus = st.one_of(st.integers(0, 40).map(lambda n: D(n).scaleb(-1)),
                 st.integers(0, 40).map(lambda n: D(n).scaleb(-1)),
                 st.integers(0, 9000).map(lambda n: D(n).scaleb(-3)),
                 st.integers(0, 9000).map(lambda n: D(n).scaleb(-3)),
                 st.integers(1, 10**7).map(lambda n: D(n).scaleb(-7)),
                 st.just(D("2.00")))
on_the_hour = st.integers(-30, 40).map(lambda h: OCT + timedelta(hours=h))
moment = st.one_of(on_the_hour, on_the_hour, on_the_hour,
                   st.integers(-3000, 40 * 3600).map(lambda s: OCT + timedelta(seconds=s)))


@st.composite
def tenants(draw: st.DrawFn, name: str) -> Tenant:
    reservations = []
    for _ in range(draw(st.integers(0, 3))):
        start = draw(moment)
        # Mostly whole hours after the start, sometimes any second.
        length = draw(st.integers(1, 50).map(lambda h: h * 3600) | st.integers(1, 50 * 3600))
        end = draw(st.none() | st.just(start + timedelta(seconds=length)))
        reservations.append(Reservation(draw(st.sampled_from(TIERS)), draw(gpus), start, end))
    credits = tuple(CreditGrant(draw(cents), OCT + timedelta(days=draw(st.integers(-40, 40))))
                    for _ in range(draw(st.integers(0, 2))))
    start = datetime(2026, 9, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 61 * 86400)))
    end = draw(st.none() | st.just(start + timedelta(days=draw(st.integers(1, 60)))))
    return Tenant(name, draw(st.sampled_from(("p", "q"))), Basis.ALLOCATION, Isolation.POOL,
                  SlaClass.STANDARD, start, end, (f"ns-{name}",), tuple(reservations), credits)


@st.composite
def months(draw: st.DrawFn) -> tuple[dict[str, Tenant], dict[str, list[UsageHour]],
                                     dict[str, Decimal], dict[str, list[ModelWork]]]:
    names = [f"t{n}" for n in range(draw(st.integers(1, 4)))]
    hours = draw(st.lists(st.integers(0, 743), min_size=1, max_size=5))
    hours += [h + 1 for h in hours if h < 743]  # neighbours: reservations span hours
    tenant_of = {name: draw(tenants(name)) for name in names}
    row = st.builds(
        UsageHour,
        hour=st.sampled_from(hours).map(lambda h: OCT + timedelta(hours=h)),
        hardware_tier=st.sampled_from(TIERS), size_class=st.sampled_from(SIZES),
        gpu_hours=st.one_of(st.integers(0, 3_000_000_000).map(lambda n: D(n).scaleb(-6)),
                            st.integers(0, 20).map(D),
                            st.integers(0, 10**9).map(lambda n: D(n).scaleb(-9))))
    usage = {name: draw(st.lists(row, max_size=14)) for name in names}
    credit = {name: draw(cents) for name in names if draw(st.booleans())}
    work = {name: [ModelWork(model, draw(st.integers(0, 10**8)), draw(st.integers(0, 10**8)),
                             D(draw(st.integers(0, 10**6))).scaleb(-6),
                             D(draw(st.integers(0, 10**9))).scaleb(-6))
                   for model in sorted(draw(st.sets(st.sampled_from(MODELS))))]
            for name in names}
    return tenant_of, usage, credit, work


@settings(max_examples=100, deadline=None)
@given(card=full_cards(), month=months())
def test_both_engines_give_the_same_invoices(
    card: RateCard, month: tuple[dict[str, Tenant], dict[str, list[UsageHour]],
                                 dict[str, Decimal], dict[str, list[ModelWork]]]
) -> None:
    tenant_of, usage, credit, work = month
    priced = price_set_wise(card, tenant_of, "2026-10", usage, credit_available=credit,
                            work=work)
    event(f"{priced.fallback} of {len(tenant_of)} tenants by the Decimal engine")
    assert sorted(priced.invoices) == sorted(tenant_of)
    for name, tenant in tenant_of.items():
        expected = price_invoice(tenant, card, "2026-10", usage[name],
                                 credit_available=credit.get(name), work=work[name])
        assert_same(expected, priced.invoices[name])


def test_many_reserved_hours_net_in_sql_not_in_the_fallback() -> None:
    # A month of two size classes under one reservation per tier, the bench's shape: no
    # tenant falls back, and each hour's covered GPU-hours split by largest remainder.
    tenant = Tenant("kite", "growth", Basis.ALLOCATION, Isolation.POOL, SlaClass.STANDARD, OCT,
                    None, ("ns",), (Reservation("premium", D(3), OCT, None),
                                    Reservation("standard", D("1.5"), OCT, None)))
    rows = [UsageHour(OCT + timedelta(hours=h), tier, size,
                      D(h * 7919 % 5_000_001 + n).scaleb(-6))
            for h in range(744) for tier in ("premium", "standard")
            for n, size in enumerate(("small", "large"))]
    card = replace(DESIGN_CARD, tiers=tuple(replace(t, reserved_price=t.reserved_price or D(1))
                                            for t in DESIGN_CARD.tiers))
    priced = price_set_wise(card, {"kite": tenant}, "2026-10", {"kite": rows})
    assert priced.fallback == 0
    assert_same(price_invoice(tenant, card, "2026-10", rows), priced.invoices["kite"])


def test_two_reservations_against_two_size_classes_fall_back_to_the_decimal_engine() -> None:
    tenant = Tenant("kite", "growth", Basis.ALLOCATION, Isolation.POOL, SlaClass.STANDARD, OCT,
                    None, ("ns",), (Reservation("premium", D(1), OCT, None),
                                    Reservation("premium", D(2), OCT + timedelta(hours=1),
                                                None)))
    rows = [UsageHour(OCT + timedelta(hours=1), "premium", "small", D("0.7")),
            UsageHour(OCT + timedelta(hours=1), "premium", "large", D("0.5"))]
    priced = price_set_wise(DESIGN_CARD, {"kite": tenant}, "2026-10", {"kite": rows})
    assert priced.fallback == 1
    assert_same(price_invoice(tenant, DESIGN_CARD, "2026-10", rows), priced.invoices["kite"])


def test_usage_outside_the_period_or_of_an_unknown_tier_is_refused() -> None:
    tenant = Tenant("kite", "growth", Basis.ALLOCATION, Isolation.POOL, SlaClass.STANDARD, OCT,
                    None, ("ns",))
    late = [UsageHour(OCT + timedelta(days=31), "premium", "small", D(1))]
    with pytest.raises(ValueError, match="usage hour 2026-11-01T00:00:00\\+00:00 is outside "
                                         "period 2026-10"):
        price_set_wise(DESIGN_CARD, {"kite": tenant}, "2026-10", {"kite": late})
    odd = [UsageHour(OCT, "quantum", "small", D(1))]
    with pytest.raises(Exception, match="no hardware tier 'quantum'"):
        price_set_wise(DESIGN_CARD, {"kite": tenant}, "2026-10", {"kite": odd})


def test_the_netting_cells_are_stored_as_the_decimal_engines_are() -> None:
    tenant = Tenant("kite", "growth", Basis.ALLOCATION, Isolation.POOL, SlaClass.STANDARD, OCT,
                    None, ("ns",), (Reservation("premium", D(2), OCT, None),))
    rows = [UsageHour(OCT + timedelta(hours=h), "premium", size, D(f"{h}.25"))
            for h in range(5) for size in ("small", "large")]
    set_wise = price_set_wise(DESIGN_CARD, {"kite": tenant}, "2026-10", {"kite": rows})
    invoice = set_wise.invoices["kite"]
    assert isinstance(invoice.hours, NettingCells)
    stored = []
    for priced in (price_invoice(tenant, DESIGN_CARD, "2026-10", rows), invoice):
        con = duckdb.connect()
        warehouse.create_schema(con)
        write_drafts(con, "2026-10", [priced], "inputs", OCT + timedelta(days=32))
        stored.append((con.execute("SELECT * EXCLUDE (invoice_id) FROM invoice_hours "
                                   "ORDER BY ALL").fetchall(),
                       con.execute("SELECT document FROM invoices").fetchall()))
        con.close()
    assert stored[0] == stored[1]
    assert len(stored[0][0]) == len(invoice.hours) > 0


def test_other_tenants_rows_are_left_out() -> None:
    tenant = Tenant("kite", "growth", Basis.ALLOCATION, Isolation.POOL, SlaClass.STANDARD, OCT,
                    None, ("ns",))
    rows = {"kite": [UsageHour(OCT, "premium", "small", D(2))],
            "pixel": [UsageHour(OCT, "premium", "small", D(5))]}
    con = duckdb.connect()
    con.register("usage_rows", usage_table(rows))
    priced = price_all(con, DESIGN_CARD, {"kite": tenant}, "2026-10", "usage_rows")
    assert list(priced.invoices) == ["kite"]
    assert_same(price_invoice(tenant, DESIGN_CARD, "2026-10", rows["kite"]),
                priced.invoices["kite"])


def test_a_warehouse_period_prices_as_the_decimal_engine_prices_it(tmp_path: Path) -> None:
    # price_period (the close) reads the warehouse in SQL and prices set-wise; the Decimal
    # path reads usage_hours row by row. A real demo day: reservations, a usage-metered
    # tenant, shared-endpoint work; plus a token plan for one tenant.
    cards_ = load_rate_cards(DEMO / "rate-card.yaml")
    card = rate_card_for(cards_, START.date())
    plans = dict(card.plans)
    plans["tokens"] = replace(plans["growth"], name="tokens", meter=Meter.TOKENS)
    card = replace(card, plans=plans, token_prices={
        model: TokenPrice(model, D("0.40"), D("1.60")) for model in ("llama-3-8b", "qwen2-7b")})
    tenants = load_tenants(DEMO / "tenants.yaml", cards_)
    first = sorted(tenants)[0]
    tenants = {**tenants, first: replace(tenants[first], plan="tokens")}
    con = warehouse.connect(load_demo_day(tmp_path / "warehouse.duckdb"))
    try:
        got = price_period(con, card, tenants, "2026-09")
        start, end = month_bounds("2026-09")
        token_models = {first: list(card.token_prices)}
        hours = warehouse.usage_hours(con, tenants, start, end, token_models)
        work = warehouse.model_work(con, tenants, start, end)
    finally:
        con.close()
    expected = [invoice for name in sorted(tenants)
                if (invoice := price_invoice(tenants[name], card, "2026-09", hours[name],
                                             work=work[name])).lines]
    assert [i.tenant for i in got] == [i.tenant for i in expected]
    assert sum(len(i.hours) for i in got) > 1000
    assert any(line.kind is LineKind.RESERVATION for i in got for line in i.lines)
    for invoice, oracle in zip(got, expected, strict=True):
        assert_same(oracle, invoice)
