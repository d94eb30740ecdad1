"""Tokens on the invoice: each model's tokens carry the tenant's own GPU charges, so the token
view of a GPU-time bill reconciles with it to the cent, and every format shows them."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from models.billing.invoices import decode, document, lines_csv
from models.billing.pricing import Invoice, LineKind, ModelWork, price_invoice
from tests.models.billing.test_pricing import D, card_with, flat, hours, plan, tenant


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
    memo = [r for r in rows if r["kind"] == "tokens"]
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
