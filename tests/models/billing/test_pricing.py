"""The pricing engine, rule by rule (DESIGN.md, "Billing: exact semantics").

Every expected figure is worked out by hand in the comment beside it, from the rule, not
copied from the engine's output."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from models.billing.pricing import (
    Invoice,
    LineKind,
    PriceBand,
    UsageHour,
    active_hours,
    money,
    price_bands,
    price_invoice,
)
from models.billing.rate_cards import (
    Band,
    Basis,
    ConfigError,
    CreditGrant,
    Isolation,
    Plan,
    PricingMode,
    RateCard,
    Reservation,
    SlaClass,
    Tenant,
    Tier,
    load_rate_cards,
    load_tenants,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "design-example"
OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
D = Decimal


@pytest.fixture(scope="module")
def design_card() -> RateCard:
    return load_rate_cards(EXAMPLE / "rate-card.yaml")[0]


@pytest.fixture(scope="module")
def design_tenants(design_card: RateCard) -> dict[str, Tenant]:
    return load_tenants(EXAMPLE / "tenants.yaml", [design_card])


def hours(tier: str, size: str, gpus: str | int | Decimal, count: int, start: datetime = OCT
          ) -> list[UsageHour]:
    return [UsageHour(start + timedelta(hours=h), tier, size, D(gpus)) for h in range(count)]


def tenant(plan: str = "plain", **changes: object) -> Tenant:
    base = Tenant(name="t", plan=plan, basis=Basis.ALLOCATION, isolation=Isolation.POOL,
                  sla_class=SlaClass.STANDARD, start=datetime(2026, 1, 1, tzinfo=UTC), end=None,
                  namespaces=("ns",))
    return replace(base, **changes)  # type: ignore[arg-type]


def plan(name: str = "plain", *, base_fee: str = "0", discount_pct: str = "0",
         minimum: str = "0") -> Plan:
    return Plan(name, D(base_fee), D(discount_pct), D(minimum), (D(0), None))


def card_with(*tiers: Tier, plans: tuple[Plan, ...] = (), minor_unit: int = 2,
              base: RateCard | None = None) -> RateCard:
    """A rate card with these tiers, size multipliers small 1, large 1.25, and these plans."""
    source = base or load_rate_cards(EXAMPLE / "rate-card.yaml")[0]
    return replace(source, tiers=tiers, minor_unit=minor_unit,
                   plans={p.name: p for p in (plans or (plan(),))})


def graduated(*bands: Band, reserved: str | None = None) -> Tier:
    return Tier("gpu", ("H100*",), PricingMode.GRADUATED, bands,
                None if reserved is None else D(reserved))


def volume(*bands: Band) -> Tier:
    return Tier("gpu", ("H100*",), PricingMode.VOLUME, bands, None)


def flat(price: str, name: str = "gpu", reserved: str | None = None) -> Tier:
    return Tier(name, (name.upper(),), PricingMode.FLAT, (Band(None, D(price)),),
                None if reserved is None else D(reserved))


# Bands up to 1,000 and up to 10,000, then open: the edge of DESIGN.md's step 4.
EDGE_BANDS = (Band(D(1000), D("2.00")), Band(D(10000), D("1.00")), Band(None, D("0.50")))


def amounts(invoice: Invoice, kind: LineKind) -> list[Decimal]:
    return [line.amount for line in invoice.lines if line.kind is kind]


# ---------------------------------------------------------------------------------------------
# DESIGN.md's worked example


def test_worked_example_acme(design_card: RateCard, design_tenants: dict[str, Tenant]) -> None:
    usage = (hours("premium", "large", 3, 744)           # 70B model, 3 GPUs every hour
             + hours("standard", "medium", 2, 600)       # 13B model, 1,200 GPU-hours
             + hours("economy", "small", 1, 300))        # 8B model, 300 GPU-hours
    invoice = price_invoice(design_tenants["acme"], design_card, "2026-10", usage)
    got = [(line.kind, line.quantity, line.unit_price, line.amount) for line in invoice.lines]
    assert got == [
        # premium: 2,232 GPU-hours, 2 x 744 covered, 744 overflow x 1.25 = 930 units.
        (LineKind.USAGE, D(500), D("4.00"), D("2000.00")),
        (LineKind.USAGE, D(430), D("3.50"), D("1505.00")),
        # standard: 1,200 x 1.10 = 1,320 units, all at band 2's 1.90 (volume).
        (LineKind.USAGE, D(1320), D("1.90"), D("2508.00")),
        # economy: 300 x 0.60.
        (LineKind.USAGE, D(300), D("0.60"), D("180.00")),
        # 5% of the usage amount 6,193.00.
        (LineKind.DISCOUNT, D("6193.00"), D("-0.05"), D("-309.65")),
        # 2 GPUs x 744 h x 2.60.
        (LineKind.RESERVATION, D(1488), D("2.60"), D("3868.80")),
        (LineKind.BASE_FEE, D(1), D("500.00"), D("500.00")),
    ]
    assert invoice.total == D("10252.15")
    premium = next(u for u in invoice.usage if u.hardware_tier == "premium")
    assert (premium.gpu_hours, premium.covered_gpu_hours, premium.overflow_gpu_hours,
            premium.billable_units) == (D(2232), D(1488), D(744), D(930))


def test_worked_example_zen(design_card: RateCard, design_tenants: dict[str, Tenant]) -> None:
    invoice = price_invoice(design_tenants["zen"], design_card, "2026-10",
                            hours("premium", "small", 2, 500))  # 1,000 GPU-hours of a 7B model
    assert [(line.kind, line.amount) for line in invoice.lines] == [
        (LineKind.USAGE, D("2000.00")),      # 500 x 4.00
        (LineKind.USAGE, D("1750.00")),      # 500 x 3.50
        (LineKind.DISCOUNT, D("-450.00")),   # 12% of 3,750.00
        (LineKind.TRUE_UP, D("21700.00")),   # 25,000.00 - 3,300.00
    ]
    assert invoice.total == D("25000.00")


# ---------------------------------------------------------------------------------------------
# Step 4: bands


def test_band_up_to_is_inclusive_and_continuous() -> None:
    def priced(mode: PricingMode, units: str) -> list[tuple[Decimal, Decimal]]:
        return [(p.quantity, p.unit_price) for p in price_bands(mode, EDGE_BANDS, D(units))]

    # Exactly 1,000 units are all in the first band, whose bounds are data on the line ...
    (first,) = price_bands(PricingMode.GRADUATED, EDGE_BANDS, D(1000))
    assert first.band == PriceBand(PricingMode.GRADUATED, 1, D(0), D(1000))
    assert first.band.label == "graduated band 1 (0-1000 units)"
    assert (first.quantity, first.unit_price, first.flat_fee) == (D(1000), D("2.00"), D(0))
    # ... and of 1,000.5 units, the half unit is in the second: no gap between bands.
    assert priced(PricingMode.GRADUATED, "1000.5") == [(D(1000), D("2.00")), (D("0.5"), D("1.00"))]
    assert priced(PricingMode.VOLUME, "1000") == [(D(1000), D("2.00"))]
    assert priced(PricingMode.VOLUME, "1000.5") == [(D("1000.5"), D("1.00"))]
    assert price_bands(PricingMode.VOLUME, EDGE_BANDS, D("1000.5"))[0].band == PriceBand(
        PricingMode.VOLUME, 2, D(1000), D(10000))
    # Past the last bound, graduated prices every band; volume the open band only.
    assert priced(PricingMode.GRADUATED, "12000") == [
        (D(1000), D("2.00")), (D(9000), D("1.00")), (D(2000), D("0.50"))]
    (last,) = price_bands(PricingMode.VOLUME, EDGE_BANDS, D(12000))
    assert (last.quantity, last.unit_price) == (D(12000), D("0.50"))
    assert last.band == PriceBand(PricingMode.VOLUME, 3, D(10000), None)
    assert last.band.label == "volume band 3 (over 10000 units)"


def test_band_edges_through_the_invoice() -> None:
    grad = card_with(graduated(*EDGE_BANDS))
    vol = card_with(volume(*EDGE_BANDS))
    at_edge = hours("gpu", "small", 1000, 1)
    past_edge = hours("gpu", "small", "1000.5", 1)
    # Graduated: 1,000 x 2.00; then + 0.5 x 1.00.
    assert price_invoice(tenant(), grad, "2026-10", at_edge).total == D("2000.00")
    assert price_invoice(tenant(), grad, "2026-10", past_edge).total == D("2000.50")
    # Volume: 1,000 x 2.00; then all 1,000.5 at 1.00.
    assert price_invoice(tenant(), vol, "2026-10", at_edge).total == D("2000.00")
    assert price_invoice(tenant(), vol, "2026-10", past_edge).total == D("1000.50")


def test_flat_is_one_price_at_any_quantity() -> None:
    card = card_with(flat("0.60"))
    # 12,345.5 units x 0.60 = 7,407.30 (no band ever changes the price).
    invoice = price_invoice(tenant(), card, "2026-10", hours("gpu", "small", "12345.5", 1))
    assert amounts(invoice, LineKind.USAGE) == [D("7407.30")]


FEE_BANDS = (Band(D(1000), D("2.00"), D("10.00")), Band(D(10000), D("1.00"), D("20.00")),
             Band(None, D("0.50"), D("30.00")))


@pytest.mark.parametrize(
    ("mode", "units", "fees"),
    [
        # Never a fee at zero quantity: a charge due with no usage belongs in the base fee.
        (PricingMode.GRADUATED, "0", []),
        (PricingMode.VOLUME, "0", []),
        # Graduated: every band reached.
        (PricingMode.GRADUATED, "0.000001", ["10.00"]),
        (PricingMode.GRADUATED, "1000", ["10.00"]),
        (PricingMode.GRADUATED, "1000.5", ["10.00", "20.00"]),
        (PricingMode.GRADUATED, "10000.000001", ["10.00", "20.00", "30.00"]),
        # Volume: only the band the total falls in.
        (PricingMode.VOLUME, "1000", ["10.00"]),
        (PricingMode.VOLUME, "1000.5", ["20.00"]),
        (PricingMode.VOLUME, "50000", ["30.00"]),
    ],
)
def test_band_flat_fees(mode: PricingMode, units: str, fees: list[str]) -> None:
    card = card_with(Tier("gpu", ("H100*",), mode, FEE_BANDS, None))
    usage = hours("gpu", "small", units, 1) if D(units) else []
    invoice = price_invoice(tenant(), card, "2026-10", usage)
    assert amounts(invoice, LineKind.BAND_FEE) == [D(f) for f in fees]
    if not D(units):
        assert invoice.lines == ()
        assert invoice.total == 0


def test_size_multiplier_makes_billable_units(design_card: RateCard) -> None:
    card = card_with(flat("1.00"), base=design_card)
    # 10 GPU-hours each: small 10, medium 11, large 12.5, xlarge 15, unknown 10 units.
    usage = [u for size in ("small", "medium", "large", "xlarge", "unknown")
             for u in hours("gpu", size, 10, 1)]
    invoice = price_invoice(tenant(), card, "2026-10", usage)
    assert {u.size_class: u.billable_units for u in invoice.usage} == {
        "small": D(10), "medium": D(11), "large": D("12.5"), "xlarge": D(15), "unknown": D(10)}
    assert amounts(invoice, LineKind.USAGE) == [D("58.50")]


# ---------------------------------------------------------------------------------------------
# Step 2: reservations


def test_reservation_costs_gpus_times_active_hours_times_price_used_or_not() -> None:
    card = card_with(flat("4.00", reserved="2.60"))
    # Active 2026-10-11 00:00 to 2026-10-21 00:00: 240 h x 2 GPUs x 2.60 = 1,248.00.
    held = Reservation("gpu", D(2), datetime(2026, 10, 11, tzinfo=UTC),
                       datetime(2026, 10, 21, tzinfo=UTC))
    invoice = price_invoice(tenant(reservations=(held,)), card, "2026-10", [])
    (line,) = invoice.lines
    assert (line.kind, line.quantity, line.amount) == (LineKind.RESERVATION, D(480),
                                                       D("1248.00"))
    # A reservation that starts in September counts only October's 744 hours.
    since_sept = Reservation("gpu", D(1), datetime(2026, 9, 15, tzinfo=UTC), None)
    invoice = price_invoice(tenant(reservations=(since_sept,)), card, "2026-10", [])
    assert amounts(invoice, LineKind.RESERVATION) == [D("1934.40")]  # 744 x 2.60


def test_reservation_covers_only_its_tier_and_hours() -> None:
    card = card_with(flat("4.00", name="gpu", reserved="2.60"), flat("1.00", name="other"))
    held = Reservation("gpu", D(2), datetime(2026, 10, 1, 2, tzinfo=UTC),
                       datetime(2026, 10, 1, 4, tzinfo=UTC))
    # Hours 0-5, 3 GPUs each of both tiers; the reservation covers 2 GPUs in hours 2 and 3.
    usage = hours("gpu", "small", 3, 6) + hours("other", "small", 3, 6)
    invoice = price_invoice(tenant(reservations=(held,)), card, "2026-10", usage)
    by_tier = {u.hardware_tier: u for u in invoice.usage}
    assert by_tier["gpu"].covered_gpu_hours == D(4)
    assert by_tier["gpu"].overflow_gpu_hours == D(14)
    assert by_tier["other"].covered_gpu_hours == 0
    assert by_tier["other"].overflow_gpu_hours == D(18)


def test_sizes_sharing_an_hour_are_covered_by_the_same_fraction() -> None:
    card = card_with(flat("4.00", reserved="2.60"))
    held = Reservation("gpu", D(2), OCT, None)
    # One hour: 1 small + 3 large GPUs against 2 reserved: each covered by 2/4 = 1/2.
    usage = hours("gpu", "small", 1, 1) + hours("gpu", "large", 3, 1)
    invoice = price_invoice(tenant(reservations=(held,)), card, "2026-10", usage)
    by_size = {u.size_class: u for u in invoice.usage}
    assert (by_size["small"].covered_gpu_hours, by_size["small"].overflow_gpu_hours) == (
        D("0.5"), D("0.5"))
    assert (by_size["large"].covered_gpu_hours, by_size["large"].overflow_gpu_hours) == (
        D("1.5"), D("1.5"))
    # Billable: 0.5 x 1.00 + 1.5 x 1.25 = 2.375 units x 4.00 = 9.50.
    assert amounts(invoice, LineKind.USAGE) == [D("9.50")]


def test_unused_reserved_hours_are_not_carried_over() -> None:
    card = card_with(flat("4.00", reserved="2.60"))
    held = Reservation("gpu", D(2), OCT, None)
    # Hour 0: nothing; hour 1: 1 GPU; hour 2: 4 GPUs. Netted hour by hour, only hour 2
    # overflows (4 - 2 = 2), although the month's 5 GPU-hours are far below 2 x 744.
    usage = hours("gpu", "small", 1, 1, OCT + timedelta(hours=1)) + hours(
        "gpu", "small", 4, 1, OCT + timedelta(hours=2))
    invoice = price_invoice(tenant(reservations=(held,)), card, "2026-10", usage)
    (u,) = invoice.usage
    assert (u.gpu_hours, u.covered_gpu_hours, u.overflow_gpu_hours) == (D(5), D(3), D(2))
    assert amounts(invoice, LineKind.USAGE) == [D("8.00")]


def test_reservation_on_a_tier_without_reserved_price_is_an_error() -> None:
    card = card_with(flat("4.00"))
    held = Reservation("gpu", D(1), OCT, None)
    with pytest.raises(ConfigError, match=r"tiers\.gpu\.reserved_price: missing"):
        price_invoice(tenant(reservations=(held,)), card, "2026-10", [])


# ---------------------------------------------------------------------------------------------
# Steps 5-8: discount, base fee, minimum, credits


def test_discount_is_one_negative_line_on_on_demand_usage_only() -> None:
    card = card_with(flat("1.00", reserved="2.60"),
                     plans=(plan(base_fee="100.00", discount_pct="7"),))
    held = Reservation("gpu", D(1), OCT, None)
    # 1,234.56 GPU-hours in hour 0 beyond the 1 reserved: 1,234.56 on-demand at 1.00.
    usage = hours("gpu", "small", "1235.56", 1)
    invoice = price_invoice(tenant(reservations=(held,)), card, "2026-10", usage)
    # 7% of 1,234.56 = 86.4192 -> -86.42; not of the reservation (1,934.40) nor the base fee.
    assert amounts(invoice, LineKind.DISCOUNT) == [D("-86.42")]
    assert invoice.total == D("1234.56") - D("86.42") + D("1934.40") + D("100.00")


def test_no_discount_line_without_usage() -> None:
    card = card_with(flat("1.00"), plans=(plan(base_fee="100.00", discount_pct="7"),))
    invoice = price_invoice(tenant(), card, "2026-10", [])
    assert [line.kind for line in invoice.lines] == [LineKind.BASE_FEE]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        # Whole month: the fee itself.
        (datetime(2026, 1, 1, tzinfo=UTC), None, "500.00"),
        # Starting 2026-10-16: 16 of 31 days = 384 / 744 h; 500 x 384 / 744 = 258.0645...
        (datetime(2026, 10, 16, tzinfo=UTC), None, "258.06"),
        # Ending 2026-10-11: 240 / 744 h; 500 x 240 / 744 = 161.2903...
        (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 10, 11, tzinfo=UTC), "161.29"),
        # Starting 2026-10-31 12:00: 12 / 744 h; 500 x 12 / 744 = 8.0645...
        (datetime(2026, 10, 31, 12, tzinfo=UTC), None, "8.06"),
    ],
)
def test_base_fee_is_prorated_by_active_hours(start: datetime, end: datetime | None,
                                              expected: str) -> None:
    card = card_with(flat("1.00"), plans=(plan(base_fee="500.00"),))
    invoice = price_invoice(tenant(start=start, end=end), card, "2026-10", [])
    assert amounts(invoice, LineKind.BASE_FEE) == [D(expected)]


def test_minimum_commitment_is_prorated_and_trued_up() -> None:
    card = card_with(flat("4.00"),
                     plans=(plan(base_fee="500.00", discount_pct="5", minimum="1000.00"),))
    t = tenant(start=datetime(2026, 10, 16, tzinfo=UTC))
    usage = hours("gpu", "small", 100, 1, datetime(2026, 10, 20, tzinfo=UTC))
    invoice = price_invoice(t, card, "2026-10", usage)
    # Minimum 1,000 x 384/744 = 516.13; usage 400.00 - 20.00 discount = 380.00;
    # true-up 136.13. The base fee (258.06) does not count toward the minimum.
    assert amounts(invoice, LineKind.TRUE_UP) == [D("136.13")]
    assert invoice.total == D("400.00") - D("20.00") + D("258.06") + D("136.13")


def test_reservation_fees_count_toward_the_minimum() -> None:
    card = card_with(flat("4.00", reserved="1.00"), plans=(plan(minimum="1000.00"),))
    held = Reservation("gpu", D(1), OCT, None)
    # 744.00 reservation + 100 x 4.00 usage = 1,144.00: above the minimum, no true-up.
    usage = hours("gpu", "small", 101, 1)
    invoice = price_invoice(tenant(reservations=(held,)), card, "2026-10", usage)
    assert amounts(invoice, LineKind.TRUE_UP) == []
    assert invoice.total == D("1144.00")


def test_credit_reduces_the_total_and_the_rest_carries_forward() -> None:
    card = card_with(flat("4.00"))
    usage = hours("gpu", "small", 100, 1)  # 400.00
    partial = price_invoice(tenant(), card, "2026-10", usage, credit_available=D("150.00"))
    assert amounts(partial, LineKind.CREDIT) == [D("-150.00")]
    assert (partial.total, partial.credit_applied) == (D("250.00"), D("150.00"))
    assert partial.credit_available - partial.credit_applied == 0

    more = price_invoice(tenant(), card, "2026-10", usage, credit_available=D("1000.00"))
    # Never below zero: 400.00 used, 600.00 left for next month.
    assert (more.total, more.credit_applied) == (D("0.00"), D("400.00"))
    assert more.credit_available - more.credit_applied == D("600.00")

    nothing_due = price_invoice(tenant(), card, "2026-10", [], credit_available=D("50"))
    assert (nothing_due.lines, nothing_due.credit_applied) == ((), D(0))


def test_credit_by_default_is_what_was_granted_before_the_period_ends() -> None:
    card = card_with(flat("4.00"))
    grants = (CreditGrant(D("30.00"), datetime(2026, 9, 1, tzinfo=UTC)),
              CreditGrant(D("20.00"), datetime(2026, 10, 31, 23, tzinfo=UTC)),
              CreditGrant(D("999.00"), NOV))  # granted after October: not October's
    invoice = price_invoice(tenant(credits=grants), card, "2026-10",
                            hours("gpu", "small", 100, 1))
    assert invoice.credit_applied == D("50.00")
    assert invoice.total == D("350.00")


# ---------------------------------------------------------------------------------------------
# Step 9: money


def test_every_line_is_rounded_half_up() -> None:
    card = card_with(flat("0.25"), plans=(plan(discount_pct="10"),))
    # 0.5 units x 0.25 = 0.125 -> 0.13 (half-even would give 0.12);
    # 10% of 0.13 = 0.013 -> -0.01.
    invoice = price_invoice(tenant(), card, "2026-10", hours("gpu", "small", "0.5", 1))
    assert amounts(invoice, LineKind.USAGE) == [D("0.13")]
    card = card_with(flat("0.25"), plans=(plan(discount_pct="10"),))
    # 1 unit x 0.25 = 0.25; 10% = 0.025 -> -0.03 (half-even: -0.02).
    invoice = price_invoice(tenant(), card, "2026-10", hours("gpu", "small", 1, 1))
    assert amounts(invoice, LineKind.DISCOUNT) == [D("-0.03")]
    assert money(D("2.5"), 0) == D(3)
    assert money(D("-0.125"), 2) == D("-0.13")


def test_total_is_the_sum_of_rounded_lines_not_the_rounded_sum() -> None:
    tiers = tuple(flat("0.01", name=n) for n in ("a", "b", "c"))
    card = card_with(*tiers)
    # Each tier: 0.5 units x 0.01 = 0.005 -> 0.01. Three lines: 0.03, whereas rounding the
    # unrounded sum 0.015 would give 0.02.
    usage = [u for n in ("a", "b", "c") for u in hours(n, "small", "0.5", 1)]
    invoice = price_invoice(tenant(), card, "2026-10", usage)
    assert amounts(invoice, LineKind.USAGE) == [D("0.01")] * 3
    assert invoice.total == D("0.03")


def test_currency_minor_unit_zero_rounds_to_whole_units() -> None:
    card = replace(card_with(flat("150"), minor_unit=0), currency="JPY")
    invoice = price_invoice(tenant(), card, "2026-10", hours("gpu", "small", "0.01", 1))
    assert invoice.total == D(2)  # 1.5 yen -> 2


def test_quantities_keep_six_decimals_of_a_gpu_hour() -> None:
    card = card_with(flat("1000000"))
    # 1 GPU-second is 0.000277... GPU-hours: kept as 0.000278.
    invoice = price_invoice(tenant(), card, "2026-10",
                            hours("gpu", "small", D(1) / 3600, 1))
    assert invoice.usage[0].gpu_hours == D("0.000278")
    assert amounts(invoice, LineKind.USAGE) == [D("278.00")]


# ---------------------------------------------------------------------------------------------
# Bad input


def test_usage_outside_the_period_is_refused() -> None:
    card = card_with(flat("1.00"))
    with pytest.raises(ValueError, match="outside period 2026-10"):
        price_invoice(tenant(), card, "2026-10", hours("gpu", "small", 1, 1, NOV))


def test_unknown_tier_in_usage_is_a_clear_error() -> None:
    card = card_with(flat("1.00"))
    with pytest.raises(ConfigError, match="'mystery'"):
        price_invoice(tenant(), card, "2026-10", hours("mystery", "small", 1, 1))


def test_plan_missing_from_the_rate_card_is_an_error() -> None:
    card = card_with(flat("1.00"))
    with pytest.raises(ConfigError, match="plan 'gold' is not in rate card"):
        price_invoice(tenant(plan="gold"), card, "2026-10", [])


def test_active_hours() -> None:
    assert active_hours(OCT, None, OCT, NOV) == 744
    assert active_hours(datetime(2026, 10, 31, 23, 30, tzinfo=UTC), None, OCT, NOV) == D("0.5")
    assert active_hours(NOV, None, OCT, NOV) == 0
    assert active_hours(datetime(2026, 1, 1, tzinfo=UTC), OCT, OCT, NOV) == 0


def test_reservation_active_for_part_of_an_hour_covers_that_part() -> None:
    card = card_with(flat("4.00", reserved="2.60"))
    # 2 GPUs reserved from 00:30 to 02:30; 3 GPUs used in hours 0, 1 and 2. Charged
    # 2 x 2 h = 4 GPU-hours; covered 2 x 0.5 in hour 0, 2 in hour 1, 2 x 0.5 in hour 2.
    held = Reservation("gpu", D(2), OCT + timedelta(minutes=30),
                       OCT + timedelta(hours=2, minutes=30))
    invoice = price_invoice(tenant(reservations=(held,)), card, "2026-10",
                            hours("gpu", "small", 3, 3))
    (u,) = invoice.usage
    assert (u.covered_gpu_hours, u.overflow_gpu_hours) == (D(4), D(5))
    assert amounts(invoice, LineKind.RESERVATION) == [D("10.40")]  # 4 x 2.60
    assert amounts(invoice, LineKind.USAGE) == [D("20.00")]  # 5 x 4.00
