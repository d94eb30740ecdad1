"""Properties of the pricing engine that must hold for any usage (hypothesis)."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from models.billing.pricing import Invoice, LineKind, UsageHour, price_invoice
from models.billing.rate_cards import (
    Band,
    Basis,
    Isolation,
    Plan,
    PricingMode,
    RateCard,
    Reservation,
    SlaClass,
    Tenant,
    Tier,
    load_rate_cards,
    month_bounds,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "design-example"
DESIGN_CARD = load_rate_cards(EXAMPLE / "rate-card.yaml")[0]
OCT = datetime(2026, 10, 1, tzinfo=UTC)
SIZES = ("small", "medium", "large", "xlarge", "unknown")
D = Decimal

gpu_hours = st.integers(0, 3_000_000_000).map(lambda n: D(n).scaleb(-6))  # 0..3,000, 6 dp
cents = st.integers(0, 100_000).map(lambda n: D(n).scaleb(-2))
percent = st.integers(0, 10_000).map(lambda n: D(n).scaleb(-2))


def usage_rows(tiers: tuple[str, ...], max_hour: int = 6) -> st.SearchStrategy[list[UsageHour]]:
    row = st.builds(
        UsageHour,
        hour=st.integers(0, max_hour).map(lambda h: OCT + timedelta(hours=h)),
        hardware_tier=st.sampled_from(tiers),
        size_class=st.sampled_from(SIZES),
        gpu_hours=gpu_hours,
    )
    return st.lists(row, max_size=12)


@st.composite
def band_lists(draw: st.DrawFn, *, falling: bool = False, fees: bool = True
               ) -> tuple[Band, ...]:
    bounds = sorted(draw(st.sets(st.integers(1, 4000), max_size=3)))
    prices = draw(st.lists(cents, min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    if falling:
        prices = sorted(prices, reverse=True)
    fee = cents if fees else st.just(D(0))
    uppers: list[Decimal | None] = [*map(D, bounds), None]
    return tuple(Band(up, price, draw(fee)) for up, price in zip(uppers, prices, strict=True))


@st.composite
def cards(draw: st.DrawFn, modes: tuple[PricingMode, ...] = tuple(PricingMode)) -> RateCard:
    tiers = []
    for name in ("premium", "standard", "economy"):
        mode = draw(st.sampled_from(modes))
        bands = draw(band_lists()) if mode is not PricingMode.FLAT else (Band(None, draw(cents)),)
        tiers.append(Tier(name, (name,), mode, bands, draw(cents)))
    plan = Plan("p", draw(cents), draw(percent), draw(cents), (D(0), None))
    return replace(DESIGN_CARD, tiers=tuple(tiers), plans={"p": plan})


@st.composite
def tenants(draw: st.DrawFn) -> Tenant:
    # Start anywhere from September to the end of October, on the second.
    start = datetime(2026, 9, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 61 * 86400)))
    reservations = tuple(
        Reservation(tier, D(draw(st.integers(0, 40))).scaleb(-1), OCT + timedelta(hours=h), None)
        for tier, h in draw(st.lists(st.tuples(st.sampled_from(("premium", "standard",
                                                                  "economy")),
                                               st.integers(0, 6)), max_size=3))
    )
    return Tenant("t", "p", Basis.ALLOCATION, Isolation.POOL, SlaClass.STANDARD, start, None,
                  ("ns",), reservations)


TIERS = ("premium", "standard", "economy")


@settings(max_examples=200, deadline=None)
@given(card=cards(), tenant=tenants(), usage=usage_rows(TIERS),
       credit=st.none() | cents)
def test_total_is_the_sum_of_rounded_lines(card: RateCard, tenant: Tenant,
                                           usage: list[UsageHour], credit: Decimal | None
                                           ) -> None:
    invoice = price_invoice(tenant, card, "2026-10", usage, credit_available=credit)
    for line in invoice.lines:
        assert line.amount == line.amount.quantize(D("0.01")), line
    assert invoice.total == sum((line.amount for line in invoice.lines), D(0))
    assert invoice.total >= 0
    assert invoice.credit_applied <= invoice.credit_available


def total(card: RateCard, tenant: Tenant, usage: list[UsageHour],
          credit: Decimal | None) -> Decimal:
    return price_invoice(tenant, card, "2026-10", usage, credit_available=credit).total


@settings(max_examples=200, deadline=None)
@given(card=cards(modes=(PricingMode.GRADUATED, PricingMode.FLAT)), tenant=tenants(),
       usage=usage_rows(TIERS), more=usage_rows(TIERS), credit=st.none() | cents)
def test_graduated_and_flat_bills_never_decrease_when_usage_grows(
    card: RateCard, tenant: Tenant, usage: list[UsageHour], more: list[UsageHour],
    credit: Decimal | None
) -> None:
    # Band fees, discount, reservations, minimum and credits all included.
    assert total(card, tenant, usage + more, credit) >= total(card, tenant, usage, credit)


def test_volume_bill_drops_at_a_band_edge() -> None:
    # DESIGN.md's standard tier: volume, up to 1,000 at 2.20, up to 10,000 at 1.90.
    # 1,000 units: 2,200.00. Half a unit more moves every unit to 1.90: 1,900.95.
    card = replace(DESIGN_CARD, plans={"p": Plan("p", D(0), D(0), D(0), (D(0), None))})
    tenant = Tenant("t", "p", Basis.ALLOCATION, Isolation.POOL, SlaClass.STANDARD, OCT, None,
                    ("ns",))
    at_edge = price_invoice(tenant, card, "2026-10", [UsageHour(OCT, "standard", "small",
                                                                D(1000))])
    beyond = price_invoice(tenant, card, "2026-10", [UsageHour(OCT, "standard", "small",
                                                               D("1000.5"))])
    assert at_edge.total == D("2200.00")
    assert beyond.total == D("1900.95")
    assert beyond.total < at_edge.total


@settings(max_examples=300, deadline=None)
@given(bands=band_lists(falling=True, fees=False), usage=usage_rows(("premium",)))
def test_volume_never_costs_more_than_graduated_with_falling_prices(
    bands: tuple[Band, ...], usage: list[UsageHour]
) -> None:
    tenant = Tenant("t", "p", Basis.ALLOCATION, Isolation.POOL, SlaClass.STANDARD, OCT, None,
                    ("ns",))
    plan = {"p": Plan("p", D(0), D(0), D(0), (D(0), None))}
    by_mode = {
        mode: price_invoice(tenant, replace(DESIGN_CARD, plans=plan, tiers=(
            Tier("premium", ("H100*",), mode, bands, None),)), "2026-10", usage).total
        for mode in (PricingMode.GRADUATED, PricingMode.VOLUME)
    }
    assert by_mode[PricingMode.VOLUME] <= by_mode[PricingMode.GRADUATED]


@settings(max_examples=300, deadline=None)
@given(usage=usage_rows(("premium", "standard")),
       reserved=st.integers(0, 3_000_000).map(lambda n: D(n).scaleb(-3)))
def test_reservation_netting_never_bills_a_covered_hour_twice(
    usage: list[UsageHour], reserved: Decimal
) -> None:
    tenant = Tenant("t", "p", Basis.ALLOCATION, Isolation.POOL, SlaClass.STANDARD, OCT, None,
                    ("ns",), (Reservation("premium", reserved, OCT, None),))
    card = replace(DESIGN_CARD, plans={"p": Plan("p", D(0), D(0), D(0), (D(0), None))})
    invoice = price_invoice(tenant, card, "2026-10", usage)
    for u in invoice.usage:
        assert u.covered_gpu_hours + u.overflow_gpu_hours == u.gpu_hours
        assert u.overflow_gpu_hours >= 0
        assert u.covered_gpu_hours >= 0
        if u.hardware_tier == "standard":  # no reservation of that tier
            assert u.covered_gpu_hours == 0

    # Independently: in each hour, min(R, usage) is covered and the rest overflows.
    per_hour: dict[datetime, Decimal] = {}
    for row in usage:
        if row.hardware_tier == "premium":
            per_hour[row.hour] = per_hour.get(row.hour, D(0)) + row.gpu_hours
    covered = sum((min(reserved, used) for used in per_hour.values()), D(0))
    premium = [u for u in invoice.usage if u.hardware_tier == "premium"]
    engine_covered = sum((u.covered_gpu_hours for u in premium), D(0))
    # Each size's covered share is kept at 6 decimals, and the shares of an hour still sum to
    # min(R, usage) exactly: nothing of the reservation lost or billed twice.
    assert engine_covered == covered
    assert sum((u.gpu_hours for u in premium), D(0)) == sum(per_hour.values(), D(0))


@settings(max_examples=100, deadline=None)
@given(year=st.integers(2000, 2100), month=st.integers(1, 12),
       before=st.integers(0, 10**8), after=st.none() | st.integers(0, 10**8),
       fee=cents, minimum=cents)
def test_proration_of_a_full_period_is_the_identity(
    year: int, month: int, before: int, after: int | None, fee: Decimal, minimum: Decimal
) -> None:
    lo, hi = month_bounds(f"{year:04d}-{month:02d}")
    tenant = Tenant("t", "p", Basis.ALLOCATION, Isolation.POOL, SlaClass.STANDARD,
                    lo - timedelta(seconds=before),
                    None if after is None else hi + timedelta(seconds=after), ("ns",))
    card = replace(DESIGN_CARD, effective_from=lo.date(),
                   plans={"p": Plan("p", fee, D(0), minimum, (D(0), None))})
    invoice = price_invoice(tenant, card, f"{year:04d}-{month:02d}", [])
    assert invoice.active_fraction == 1
    assert amounts(invoice, LineKind.BASE_FEE) == ([fee] if fee else [])
    # No usage: the true-up is the whole (unprorated) minimum.
    assert amounts(invoice, LineKind.TRUE_UP) == ([minimum] if minimum else [])


def amounts(invoice: Invoice, kind: LineKind) -> list[Decimal]:
    return [line.amount for line in invoice.lines if line.kind is kind]
