"""The bill explained (models.billing.explain) on DESIGN.md's worked example: the path from
GPU-hours to units to lines is the invoice's own, figures reasoned from DESIGN.md."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from models.billing.explain import explain
from models.billing.pricing import LineKind, UsageHour, price_invoice
from models.billing.rate_cards import load_rate_cards, load_tenants

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "design-example"
OCT = datetime(2026, 10, 1, tzinfo=UTC)
D = Decimal


def hours(tier: str, size: str, gpus: int, count: int) -> list[UsageHour]:
    return [UsageHour(OCT + timedelta(hours=h), tier, size, D(gpus)) for h in range(count)]


@pytest.fixture(scope="module")
def acme():  # type: ignore[no-untyped-def]
    card = load_rate_cards(EXAMPLE / "rate-card.yaml")[0]
    tenant = load_tenants(EXAMPLE / "tenants.yaml", [card])["acme"]
    usage = (hours("premium", "large", 3, 744) + hours("standard", "medium", 2, 600)
             + hours("economy", "small", 1, 300))
    return price_invoice(tenant, card, "2026-10", usage)


def test_gpu_hours_to_units_to_lines(acme) -> None:  # type: ignore[no-untyped-def]
    bill = explain(acme)
    premium = next(u for u in bill.units if u.hardware_tier == "premium")
    # 3 GPUs x 744 h; 2 reserved GPUs cover 1,488; 744 on demand x 1.25 (large) = 930 units,
    # priced by lines 1 and 2 (bands 500 @ 4.00, 430 @ 3.50), the reservation by line 6.
    assert (premium.gpu_hours, premium.covered_gpu_hours, premium.on_demand_gpu_hours,
            premium.multiplier, premium.billable_units) == (D(2232), D(1488), D(744),
                                                            D("1.25"), D(930))
    assert premium.lines == (1, 2, 6)
    standard = next(u for u in bill.units if u.hardware_tier == "standard")
    assert (standard.billable_units, standard.lines) == (D(1320), (3,))  # 1,200 x 1.10
    # 2,232 + 1,200 + 300 GPU-hours; 930 + 1,320 + 300 units.
    assert (bill.gpu_hours, bill.billable_units) == (D(3732), D(2550))


def test_waterfall_runs_to_the_total(acme) -> None:  # type: ignore[no-untyped-def]
    bill = explain(acme)
    assert [s.line_no for s in bill.steps] == list(range(1, 8))
    assert [s.kind for s in bill.steps][4:] == [LineKind.DISCOUNT, LineKind.RESERVATION,
                                                LineKind.BASE_FEE]
    # 2,000 + 1,505 + 2,508 + 180 - 309.65 + 3,868.80 + 500.
    assert bill.steps[3].running_total == D("6193.00")
    assert bill.steps[-1].running_total == bill.total == D("10252.15")


def test_lines_that_do_not_price_the_units_are_refused(acme) -> None:  # type: ignore[no-untyped-def]
    first = acme.lines[0]
    tampered = replace(acme, lines=(replace(first, quantity=first.quantity - 1),
                                    *acme.lines[1:]))
    with pytest.raises(ValueError, match=r"premium has 930.000000 billable units but its band "
                                         r"lines price 929.000000"):
        explain(tampered)
