"""The bill explained (models.billing.explain) on DESIGN.md's worked example: the path from
GPU-hours to units to lines is the invoice's own, figures reasoned from DESIGN.md."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from models.billing.explain import explain
from models.billing.pricing import LineKind, ModelWork, UsageHour, price_invoice
from models.billing.rate_cards import (
    Meter,
    TimeOfUse,
    TokenPrice,
    load_rate_cards,
    load_tenants,
)
from tests.models.billing.test_pricing import card_with, flat, plan, tenant

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


# ---------------------------------------------------------------------------------------------
# Time of use and tokens: the lines that price them are explained like any other, figures by
# hand from the rate card.


def test_off_peak_units_are_explained_with_their_own_line_and_price() -> None:
    tier = replace(flat("4.00"), time_of_use=TimeOfUse("UTC", ((22, 6),), (), D("0.40")))
    card = card_with(tier, plans=(plan(discount_pct="10"),))
    # One large-model GPU all of Thursday 2026-10-01 (UTC): 22:00-06:00 is 8 off-peak hours.
    invoice = price_invoice(tenant(), card, "2026-10", hours("gpu", "large", 1, 24))
    bill = explain(invoice)
    (gpu,) = bill.units
    # 24 GPU-hours x 1.25 (large) = 30 units: 16 x 1.25 = 20 peak, 8 x 1.25 = 10 off-peak.
    assert (gpu.gpu_hours, gpu.on_demand_gpu_hours, gpu.multiplier, gpu.billable_units) == (
        D(24), D(24), D("1.25"), D(30))
    assert gpu.lines == (1, 2)  # the peak and the off-peak line price these units
    assert [(s.line_no, s.kind, s.description, s.quantity, s.unit_price, s.amount,
             s.running_total) for s in bill.steps] == [
        (1, LineKind.USAGE, "gpu on-demand, flat, peak", D(20), D("4.00"), D("80.00"),
         D("80.00")),
        # 4.00 x 0.40 off-peak = 1.60 a unit: 10 x 1.60 = 16.00.
        (2, LineKind.USAGE, "gpu on-demand, flat, off-peak", D(10), D("1.6000"), D("16.00"),
         D("96.00")),
        # 10% of 96.00.
        (3, LineKind.DISCOUNT, "plan plain discount 10%", D("96.00"), D("-0.1"), D("-9.60"),
         D("86.40"))]
    assert bill.total == invoice.total == D("86.40")
    assert bill.billable_units == D(30)


def test_token_lines_are_steps_beside_the_gpu_time_they_do_not_price() -> None:
    card = replace(card_with(flat("4.00"), plans=(replace(plan(), meter=Meter.TOKENS),)),
                   token_prices={"llama-70b": TokenPrice("llama-70b", D("0.90"), D("3.60"))})
    work = [ModelWork("llama-70b", 12_345_678, 2_000_001, D("0.3"), D(50))]
    # 10 GPU-hours of models without a token price are billed as GPU time.
    invoice = price_invoice(tenant(), card, "2026-10", hours("gpu", "small", 1, 10),
                            work=work)
    bill = explain(invoice)
    (gpu,) = bill.units
    assert (gpu.gpu_hours, gpu.billable_units, gpu.lines) == (D(10), D(10), (1,))
    assert [(s.line_no, s.kind, s.quantity, s.unit, s.unit_price, s.amount, s.running_total)
            for s in bill.steps] == [
        (1, LineKind.USAGE, D(10), "unit", D("4.00"), D("40.00"), D("40.00")),
        # 12.345678 million input tokens x 0.90 = 11.1111102 -> 11.11.
        (2, LineKind.TOKENS, D("12.345678"), "million input tokens", D("0.90"), D("11.11"),
         D("51.11")),
        # 2.000001 million output tokens x 3.60 = 7.2000036 -> 7.20.
        (3, LineKind.TOKENS, D("2.000001"), "million output tokens", D("3.60"), D("7.20"),
         D("58.31"))]
    assert bill.total == invoice.total == D("58.31")
    # Tokens are not GPU-hours: the units stay those of the GPU time.
    assert (bill.gpu_hours, bill.billable_units) == (D(10), D(10))
