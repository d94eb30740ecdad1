"""Tokens on the invoice: each model's tokens carry the tenant's own GPU charges, so the token
view of a GPU-time bill reconciles with it to the cent, and every format shows them; token
prices (per million, per started package) for plans that meter tokens; time-of-use prices."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from models.billing.invoices import decode, document, lines_csv
from models.billing.pricing import Invoice, LineKind, ModelWork, price_invoice
from models.billing.rate_cards import (
    ConfigError,
    Meter,
    RateCard,
    TimeOfUse,
    TokenPrice,
    load_rate_cards,
)
from tests.models.billing.test_pricing import (
    EXAMPLE,
    D,
    amounts,
    card_with,
    flat,
    hours,
    plan,
    tenant,
)


def _invoice(work: list[ModelWork], *, discount: str = "0") -> Invoice:
    card = card_with(flat("4.00"), plans=(plan(discount_pct=discount),))
    # 100 GPU-hours at 4.00 = 400.00, less the discount.
    return price_invoice(tenant(), card, "2026-10", hours("gpu", "small", 1, 100), work=work)


def test_models_share_the_gpu_charges_by_gpu_hours_and_the_rest_keeps_its_part():
    invoice = _invoice([
        ModelWork("llama-70b", 3_000_000, 500_000, D("0.25"), D(60)),
        ModelWork("qwen-7b", 1_000_000, 0, D(1), D(30)),
    ], discount="5")
    charges = sum(line.amount for line in invoice.lines
                  if line.kind in (LineKind.USAGE, LineKind.DISCOUNT))
    assert charges == D("380.00")
    llama, qwen = invoice.tokens
    # 60 and 30 of the 100 GPU-hours: 228.00 and 114.00; the 10 GPU-hours without tokens
    # keep 38.00. Prefill is a quarter of llama's work: 57.00 input, 171.00 output.
    assert (llama.input_cost, llama.output_cost) == (D("57.00"), D("171.00"))
    assert (qwen.input_cost, qwen.output_cost) == (D("114.00"), D("0.00"))
    assert llama.cost_per_million_input == D("19.000000")  # 57.00 / 3 million
    assert llama.cost_per_million_output == D("342.000000")  # 171.00 / 0.5 million
    assert qwen.cost_per_million_output is None  # no output tokens: no price per token
    assert charges - sum(t.input_cost + t.output_cost for t in (llama, qwen)) == D("38.00")


def test_costs_are_whole_cents_that_add_up_exactly():
    invoice = _invoice([ModelWork(f"m{i}", 1_000 + i, 7 * i + 1, D("0.333333"), D(1) / 3)
                        for i in range(7)])
    costs = [t.input_cost + t.output_cost for t in invoice.tokens]
    assert all(c == c.quantize(Decimal("0.01")) for c in costs)
    # 7 x 1/3 of 100 GPU-hours: 7/300 of 400.00 = 9.33 (largest remainder), never 9.31 or 9.35.
    assert sum(costs) == D("9.33")


def test_tokens_travel_through_the_codec_and_show_in_the_csv():
    invoice = _invoice([ModelWork("llama-70b", 3_000_000, 500_000, D("0.25"), D(60))])
    doc = document(invoice)
    assert doc["tokens"][0]["input_tokens"] == 3_000_000
    assert decode(doc).tokens == invoice.tokens  # (the netting is stored beside the document)
    rows = list(csv.DictReader(io.StringIO(lines_csv([(None, invoice)]))))
    memo = [r for r in rows if r["kind"] == "token_memo"]
    assert [(r["quantity"], r["unit"], r["amount"]) for r in memo] == [
        ("3000000", "input token", ""), ("500000", "output token", "")]
    # 60 of 100 GPU-hours: 240.00, a quarter of it prefill: 60.00 over 3 million input tokens.
    assert memo[0]["unit_price"] == "0.000020"
    assert "20.000000 USD per million" in memo[0]["description"]
    # The memo rows are no charge: the amounts still sum to the total.
    assert sum(D(r["amount"]) for r in rows if r["amount"]) == invoice.total


def test_a_gpu_only_invoice_document_is_unchanged():
    invoice = _invoice([])
    assert invoice.tokens == ()
    assert "tokens" not in document(invoice)


# ---------------------------------------------------------------------------------------------
# Token prices: plans that meter tokens


def _token_card(**prices: TokenPrice) -> RateCard:
    card = card_with(flat("4.00"), plans=(replace(plan(), meter=Meter.TOKENS),))
    return replace(card, token_prices=prices)


def test_tokens_priced_per_million_input_and_output_beside_gpu_time():
    card = _token_card(**{"llama-70b": TokenPrice("llama-70b", D("0.90"), D("3.60"))})
    work = [ModelWork("llama-70b", 12_345_678, 2_000_001, D("0.3"), D(50)),
            ModelWork("sdxl", 0, 0, D(0), D(0))]
    # 10 GPU-hours on models without a token price are billed as GPU time beside the tokens.
    invoice = price_invoice(tenant(), card, "2026-10", hours("gpu", "small", 1, 10), work=work)
    tokens = [(x.description, x.quantity, x.unit_price, x.amount) for x in invoice.lines
              if x.kind is LineKind.TOKENS]
    assert tokens == [
        ("llama-70b input tokens", D("12.345678"), D("0.90"), D("11.11")),  # 11.1111102
        ("llama-70b output tokens", D("2.000001"), D("3.60"), D("7.20")),  # 7.2000036
    ]
    assert amounts(invoice, LineKind.USAGE) == [D("40.00")]
    assert invoice.total == D("58.31")
    (llama,) = invoice.tokens
    assert (llama.input_cost, llama.output_cost) == (D("11.11"), D("7.20"))
    assert llama.cost_per_million_input == D("0.899910")  # 11.11 / 12.345678 million


def test_each_started_package_is_billed_whole():
    card = _token_card(qwen=TokenPrice("qwen", package_tokens=1_000_000,
                                       package_price=D("3.00")))
    for used, packages in ((2_000_000, 2), (2_000_001, 3), (1, 1), (0, 0)):
        work = [ModelWork("qwen", used, 0, D(1), D(1))]
        invoice = price_invoice(tenant(), card, "2026-10", [], work=work)
        lines = [x for x in invoice.lines if x.kind is LineKind.TOKENS]
        assert [x.quantity for x in lines] == ([D(packages)] if packages else [])
        assert invoice.total == D(3 * packages)


def test_token_prices_are_validated_all_at_once(tmp_path):
    text = (EXAMPLE / "rate-card.yaml").read_text()
    bad = text.replace("    plans:", "    token_prices:\n"
                       "      llama-70b: {input_per_million: '0.9'}\n"
                       "      qwen: {package: {tokens: 0, price: '-1'}}\n"
                       "      mixed: {input_per_million: '1', output_per_million: 2.5,"
                       " package: {tokens: 10, price: '1'}}\n"
                       "      empty: {}\n"
                       "    plans:", 1)
    path = tmp_path / "rate-card.yaml"
    path.write_text(bad)
    with pytest.raises(ConfigError) as caught:
        load_rate_cards(path)
    problems = caught.value.problems
    for expected in ("token_prices.llama-70b.output_per_million: missing",
                     "token_prices.qwen.package.tokens: must be a whole number",
                     "token_prices.qwen.package.price: must be at least 0",
                     "token_prices.mixed: either prices per million",
                     "token_prices.mixed.output_per_million: must be a decimal number",
                     "token_prices.empty: give input_per_million"):
        assert any(expected in problem for problem in problems), expected
    assert all(problem.startswith(f"{path}: ") for problem in problems)


# ---------------------------------------------------------------------------------------------
# Time of use: off-peak hours of a tier, in UTC or a named zone


def _tou_card(zone: str = "UTC", days: tuple[str, ...] = ()) -> RateCard:
    tier = replace(flat("4.00"), time_of_use=TimeOfUse(zone, ((22, 6),), days, D("0.40")))
    return card_with(tier)


def test_off_peak_hours_are_priced_at_the_multiplier_hour_by_hour():
    # One GPU all of Thursday 2026-10-01 (UTC): 22:00-06:00 is 8 off-peak hours.
    invoice = price_invoice(tenant(), _tou_card(), "2026-10", hours("gpu", "small", 1, 24))
    usage = [(x.description, x.quantity, x.unit_price, x.amount) for x in invoice.lines
             if x.kind is LineKind.USAGE]
    assert usage == [("gpu on-demand, flat, peak", D(16), D("4.00"), D("64.00")),
                     ("gpu on-demand, flat, off-peak", D(8), D("1.6000"), D("12.80"))]


def test_a_named_zone_moves_the_window_and_whole_days_are_off_peak():
    berlin = _tou_card("Europe/Berlin").tiers[0].time_of_use
    assert berlin is not None
    # 20:00 UTC is 22:00 in Berlin (CEST, UTC+2, on 2026-10-01): off-peak there, not in UTC.
    at = datetime(2026, 10, 1, 20, tzinfo=UTC)
    assert berlin.off_peak(at)
    utc = _tou_card().tiers[0].time_of_use
    assert utc is not None
    assert not utc.off_peak(at)
    # After the change to CET (2026-10-25) 21:00 UTC is 22:00 local.
    assert berlin.off_peak(datetime(2026, 10, 26, 21, tzinfo=UTC))
    assert not berlin.off_peak(datetime(2026, 10, 26, 20, tzinfo=UTC))
    weekend = _tou_card(days=("sat", "sun")).tiers[0].time_of_use
    assert weekend is not None
    assert weekend.off_peak(datetime(2026, 10, 3, 12, tzinfo=UTC))  # a Saturday noon


def test_time_of_use_is_validated_all_at_once(tmp_path):
    text = (EXAMPLE / "rate-card.yaml").read_text()
    bad = text.replace("        mode: graduated\n", "        mode: graduated\n"
                       "        time_of_use:\n"
                       "          zone: Mars/Olympus\n"
                       "          off_peak_hours: [[22, 6], [5, 5], [1, 24]]\n"
                       "          off_peak_days: [saturday]\n"
                       "          off_peak_multiplier: '1.5'\n", 1)
    path = tmp_path / "rate-card.yaml"
    path.write_text(bad)
    with pytest.raises(ConfigError) as caught:
        load_rate_cards(path)
    text = "\n".join(caught.value.problems)
    for expected in ("time_of_use.zone: must be an IANA time zone",
                     "time_of_use.off_peak_hours[1]: must be [start, end]",
                     "time_of_use.off_peak_hours[2]: must be [start, end]",
                     "time_of_use.off_peak_days: must list days among mon",
                     "time_of_use.off_peak_multiplier: must be at most 1"):
        assert expected in text
