"""The hourly reservation netting (DESIGN.md billing step 2) is pricing's output, and the
invoice, the FOCUS export and the marts all report the same covered GPU-hours from it."""

from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.billing import lifecycle
from models.billing.focus import focus_table
from models.billing.invoices import Status
from models.billing.period import price_period
from models.billing.pricing import (
    QUANTITY,
    HourUse,
    Invoice,
    LineKind,
    UsageHour,
    active_hours,
    allocate,
    price_invoice,
)
from models.billing.rate_cards import (
    Basis,
    Isolation,
    Plan,
    Reservation,
    SlaClass,
    Tenant,
    load_rate_cards,
    load_tenants,
)
from models.ledger import warehouse
from models.ledger.usage import ledger_table, make_sample_id
from models.marts import publish_marts, tenant_mart_path

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "design-example"
CARD = load_rate_cards(EXAMPLE / "rate-card.yaml")[0]
FREE = replace(
    CARD, plans={"p": Plan("p", Decimal(0), Decimal(0), Decimal(0), (Decimal(0), None))},
    tiers=tuple(replace(t, reserved_price=t.reserved_price or Decimal("1.00"))
                for t in CARD.tiers))
OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
D = Decimal


def tenant(*reservations: Reservation) -> Tenant:
    return Tenant("t", "p", Basis.ALLOCATION, Isolation.POOL, SlaClass.STANDARD, OCT, None,
                  ("ns",), reservations)


def test_allocate_largest_remainder_sums_exactly() -> None:
    cent = D("0.01")
    assert allocate(D("1.00"), [D(1)] * 3, cent) == [D("0.34"), D("0.33"), D("0.33")]
    # 0.05 over 1:3 is 0.0125 and 0.0375: floors 0.01 and 0.03, the last cent to the larger
    # remainder (0.0075 > 0.0025).
    assert allocate(D("0.05"), [D(1), D(3)], cent) == [D("0.01"), D("0.04")]
    assert allocate(D("-0.05"), [D(1), D(3)], cent) == [D("-0.01"), D("-0.04")]
    # Weights of any precision are compared exactly: 1/3 of a GPU-hour written with 40
    # digits against 2/3 gets no quantum it should not.
    third = D("0." + "3" * 40)
    assert allocate(D("1.000000"), [third, third * 2], QUANTITY) == [D("0.333333"),
                                                                   D("0.666667")]
    with pytest.raises(ValueError, match="all weigh zero"):
        allocate(D("1.00"), [D(0)], cent)
    with pytest.raises(ValueError, match="not a multiple"):
        allocate(D("1.001"), [D(1)], cent)


def test_three_size_classes_share_two_reserved_gpus_exactly() -> None:
    # One GPU each of a small, medium and large model; 2 GPUs reserved. Each class is covered
    # by 2/3: 0.666666..., which rounded alone is 0.666667 three times = 2.000001 GPU-hours, a
    # millionth billed twice every hour. Largest remainder gives 0.666667 + 0.666667 +
    # 0.666666 = 2 exactly, and 1/3 of each class on demand.
    usage = [UsageHour(OCT + h * HOUR, "premium", size, D(1))
             for h in range(744) for size in ("small", "medium", "large")]
    invoice = price_invoice(tenant(Reservation("premium", D(2), OCT, None)), FREE, "2026-10",
                            usage)
    covered = {u.size_class: u.covered_gpu_hours for u in invoice.usage}
    assert sum(covered.values()) == D(1488)  # 2 GPUs x 744 h, as the reservation line bills
    assert [x.quantity for x in invoice.lines if x.kind is LineKind.RESERVATION] == [D(1488)]
    for size, gpu_hours in covered.items():
        assert abs(gpu_hours - D(496)) <= D("0.000001") * 744, size  # 744 x 2/3 each
    assert sum(u.overflow_gpu_hours for u in invoice.usage) == D(744)


def cells_by_hour(invoice: Invoice) -> dict[tuple[datetime, str], list]:
    found = defaultdict(list)
    for cell in invoice.hours:
        found[(cell.hour, cell.hardware_tier)].append(cell)
    return found


minutes = st.integers(0, 6 * 60)


@st.composite
def reservations(draw: st.DrawFn) -> tuple[Reservation, ...]:
    """Up to three reservations starting and ending anywhere in the first 6 hours, on the
    minute (a start at :20 holds 2/3 of its hour: a fraction no decimal writes exactly)."""
    held = []
    for tier, gpus, start, length in draw(st.lists(st.tuples(
            st.sampled_from(("premium", "standard")), st.integers(0, 40), minutes,
            st.none() | st.integers(1, 6 * 60)), max_size=3)):
        begin = OCT + timedelta(minutes=start)
        held.append(Reservation(tier, D(gpus).scaleb(-1), begin,
                                None if length is None else begin + timedelta(minutes=length)))
    return tuple(held)


usage_rows = st.lists(st.builds(
    UsageHour,
    hour=st.integers(0, 7).map(lambda h: OCT + h * HOUR),
    hardware_tier=st.sampled_from(("premium", "standard")),
    size_class=st.sampled_from(("small", "medium", "large", "xlarge", "unknown")),
    gpu_hours=st.integers(0, 6_000_000).map(lambda n: D(n).scaleb(-6))), max_size=20)


@settings(max_examples=300, deadline=None)
@given(held=reservations(), usage=usage_rows)
def test_covered_quantities_sum_exactly_to_what_the_reservations_cover(
    held: tuple[Reservation, ...], usage: list[UsageHour]
) -> None:
    invoice = price_invoice(tenant(*held), FREE, "2026-10", usage)
    used: dict[tuple[datetime, str], Decimal] = defaultdict(Decimal)
    used_by_size: dict[tuple[datetime, str, str], Decimal] = defaultdict(Decimal)
    for row in usage:
        used[(row.hour, row.hardware_tier)] += row.gpu_hours
        used_by_size[(row.hour, row.hardware_tier, row.size_class)] += row.gpu_hours
    ids = {x.reservation_id: x.reservation for x in invoice.reservations}
    capacity_total: dict[str, Decimal] = defaultdict(Decimal)
    for (hour, tier), cells in cells_by_hour(invoice).items():
        assert all(c.gpu_hours > 0 for c in cells)
        covered = sum(c.gpu_hours for c in cells if c.use is HourUse.COVERED)
        reserved = sum(c.gpu_hours for c in cells if c.reservation_id is not None)
        # What the reservations hold in the hour, to the 6th decimal, exactly as charged.
        exact = sum(r.gpus * active_hours(r.start, r.end, hour, hour + HOUR)
                    for r in ids.values() if r.tier == tier)
        assert abs(reserved - exact) <= D("0.000002") * max(1, len(ids))
        # Covered: exactly min(R, usage) of the hour, however many size classes share it.
        assert covered == min(reserved, used[(hour, tier)])
        for c in cells:
            if c.size_class is not None:
                assert c.hardware_tier == tier
        for (h, t, size), gpu_hours in used_by_size.items():
            if (h, t) == (hour, tier):
                assert sum(c.gpu_hours for c in cells if c.size_class == size) == gpu_hours
        for rid in {c.reservation_id for c in cells if c.reservation_id}:
            mine = [c for c in cells if c.reservation_id == rid]
            assert all(c.hardware_tier == ids[rid].tier for c in mine)
            capacity_total[rid] += sum(c.gpu_hours for c in mine)
    # Every reservation's hours add up to the quantity its line charges, to the millionth.
    for line in invoice.lines:
        if line.kind is LineKind.RESERVATION:
            assert line.reservation_id is not None
            assert capacity_total.get(line.reservation_id, D(0)) == line.quantity
    # The invoice's usage table is the netting summed.
    for u in invoice.usage:
        cells = [c for c in invoice.hours
                 if (c.hardware_tier, c.size_class) == (u.hardware_tier, u.size_class)]
        assert u.covered_gpu_hours == sum(c.gpu_hours for c in cells
                                          if c.use is HourUse.COVERED)
        assert u.overflow_gpu_hours == sum(c.gpu_hours for c in cells
                                           if c.use is HourUse.ON_DEMAND)


# ---------------------------------------------------------------------------------------------
# The verified defect: a reservation starting at :30 was covered on the invoice for hours the
# FOCUS export, netting again from the ledger, reported on demand.

RESERVED = (
    # 2 GPUs from Oct 10 10:30 to Oct 20 14:30: 10 days 4 hours = 244 h -> 488 GPU-hours.
    Reservation("premium", D(2), datetime(2026, 10, 10, 10, 30, tzinfo=UTC),
                datetime(2026, 10, 20, 14, 30, tzinfo=UTC)),
    # 1 GPU from Oct 15 00:20 to the end of the month: 407 h 40 min -> 407.666667 GPU-hours.
    Reservation("premium", D(1), datetime(2026, 10, 15, 0, 20, tzinfo=UTC), None),
)
COVERED = D("895.666667")
"""488 + 407.666667: acme runs 3 premium GPUs every hour, never fewer than reserved (at most
3), so every reserved GPU-hour is used."""


def ledger_rows() -> list[dict[str, object]]:
    """acme: one H100 each for a 70B (large), a 13B (medium) and a 7B (small) model, every
    hour of October 2026: three size classes share every hour."""
    rows = []
    for hour in range(744):
        start = OCT + hour * HOUR
        for gpu, (model, params) in enumerate((("llama-3.1-70b", 70.0), ("llama-2-13b", 13.0),
                                               ("mistral-7b", 7.0))):
            uuid = f"GPU-acme-{gpu}"
            rows.append({
                "sample_id": make_sample_id("netting", uuid, start.isoformat()),
                "window_start": start, "duration_s": 3600.0, "cluster": "example",
                "node": "acme-h100", "gpu_uuid": uuid, "gpu_product": "NVIDIA H100 80GB HBM3",
                "mig_profile": None, "gpu_equivalents": 1.0, "tenant": "acme",
                "namespace": "team-acme", "pod": f"pod-{gpu}", "pod_uid": f"uid-{gpu}",
                "workload_kind": "inference", "model": model, "model_params_b": params,
                "allocated_gpu_seconds": 3600.0, "used_gpu_seconds": 1800.0,
                "memory_used_bytes": None, "source": "test"})
    return rows


@pytest.fixture(scope="module")
def mid_hour(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("netting")
    tenants = load_tenants(EXAMPLE / "tenants.yaml", [CARD])
    tenants = {"acme": replace(tenants["acme"], reservations=RESERVED)}
    con = warehouse.connect(home / "warehouse.duckdb")
    warehouse.create_schema(con)
    warehouse.load_rows(con, CARD, ledger_table(ledger_rows()))
    (invoice,) = price_period(con, CARD, tenants, "2026-10")
    lifecycle.write_drafts(con, "2026-10", [invoice], "inputs", NOV)
    publish_marts(con, home / "marts", tenants, now=NOV)
    yield con, tenants, invoice, home
    con.close()


def premium_covered(invoice: Invoice) -> Decimal:
    return sum((u.covered_gpu_hours for u in invoice.usage if u.hardware_tier == "premium"),
               D(0))


def test_invoice_covers_the_reservations_to_the_millionth(mid_hour) -> None:
    _, _, invoice, _ = mid_hour
    assert premium_covered(invoice) == COVERED
    assert [x.quantity for x in invoice.lines if x.kind is LineKind.RESERVATION] == [
        D(488), D("407.666667")]
    assert {u.hardware_tier for u in invoice.usage} == {"premium"}
    assert sum(u.gpu_hours for u in invoice.usage) == 3 * 744
    assert sum(u.overflow_gpu_hours for u in invoice.usage) == 3 * 744 - COVERED
    # The netting stored with the draft is the one pricing returned.
    (stored,) = lifecycle.stored(mid_hour[0], "2026-10", Status.DRAFT, with_hours=True)
    assert stored.invoice == invoice


def test_focus_reports_the_invoices_covered_hours(mid_hour) -> None:
    con, tenants, invoice, _ = mid_hour
    rows = focus_table(con, "2026-10", tenants=tenants, cards=[CARD]).to_pylist()
    used = [r for r in rows if r["CommitmentDiscountStatus"] == "Used"]
    assert sum(r["ConsumedQuantity"] for r in used) == COVERED
    assert not [r for r in rows if r["CommitmentDiscountStatus"] == "Unused"]
    # Per reservation, and on its first (partial) hour's day.
    by_id = defaultdict(Decimal)
    for r in used:
        by_id[r["CommitmentDiscountId"]] += r["ConsumedQuantity"]
    assert dict(by_id) == {
        "acme/reservations/premium/2026-10-10T10:30:00Z": D(488),
        "acme/reservations/premium/2026-10-15T00:20:00Z": D("407.666667")}
    first_day = [r for r in used if r["ChargePeriodStart"] == datetime(2026, 10, 10, tzinfo=UTC)]
    # Oct 10: 13.5 hours of 2 GPUs (10:30 to midnight).
    assert sum(r["ConsumedQuantity"] for r in first_day) == D(27)
    on_demand = [r for r in rows if r["PricingCategory"] == "Standard"
                 and r["ChargeCategory"] == "Usage"]
    assert sum(r["ConsumedQuantity"] for r in on_demand) == 3 * 744 - COVERED
    assert sum(r["BilledCost"] for r in rows) == invoice.total


def test_marts_report_the_invoices_covered_hours(mid_hour) -> None:
    _, _, invoice, home = mid_hour
    mart = duckdb.connect(str(tenant_mart_path(home / "marts", "acme")), read_only=True)
    try:
        total = mart.execute("SELECT sum(covered_gpus), sum(reserved_gpus) FROM reservations "
                             "WHERE hardware_tier = 'premium'").fetchone()
        first, last, shared = (mart.execute(
            "SELECT reserved_gpus, covered_gpus FROM reservations WHERE hour = ?",
            [moment]).fetchone() for moment in (
                datetime(2026, 10, 10, 10, tzinfo=UTC), datetime(2026, 10, 20, 14, tzinfo=UTC),
                datetime(2026, 10, 15, 0, tzinfo=UTC)))
    finally:
        mart.close()
    assert total == (COVERED, COVERED)
    assert first == (D(1), D(1))                   # 2 GPUs for the half hour from 10:30
    assert last == (D(2), D(2))                    # 2 x 0.5 until 14:30, + the 1 GPU of Oct 15
    assert shared == (D("2.666667"), D("2.666667"))  # 2 + 1 x 40/60 from 00:20
    assert premium_covered(invoice) == total[0]
