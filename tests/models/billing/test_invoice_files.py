"""The invoice codec and the files finance gets: JSON, CSV and PDF all say what pricing said.

The PDF is read back as text (pypdf) and compared, line by line, with DESIGN.md's worked
example."""

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pypdf import PdfReader

from models.billing.exports import FORMATS, file_name, render, write_invoice_files
from models.billing.invoices import (
    LINE_COLUMNS,
    DocumentKind,
    Status,
    StoredInvoice,
    canonical_json,
    decode,
    document,
    export_document,
    lines_csv,
)
from models.billing.pricing import Invoice, UsageHour, price_invoice
from models.billing.rate_cards import load_rate_cards, load_tenants
from models.errors import UserError

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "design-example"
CARDS = load_rate_cards(EXAMPLE / "rate-card.yaml")
TENANTS = load_tenants(EXAMPLE / "tenants.yaml", CARDS)
OCT = datetime(2026, 10, 1, tzinfo=UTC)
D = Decimal


def hours(tier: str, size: str, gpus: int, count: int) -> list[UsageHour]:
    return [UsageHour(OCT + timedelta(hours=h), tier, size, D(gpus)) for h in range(count)]


def acme() -> Invoice:
    usage = (hours("premium", "large", 3, 744) + hours("standard", "medium", 2, 600)
             + hours("economy", "small", 1, 300))
    return price_invoice(TENANTS["acme"], CARDS[0], "2026-10", usage)


def stored(invoice: Invoice, number: str | None = "INV-2026-10-0001",
           kind: DocumentKind = DocumentKind.INVOICE, adjusts: str | None = None
           ) -> StoredInvoice:
    return StoredInvoice(number or f"draft:2026-10:{invoice.tenant}", number, kind,
                         Status.FINAL if number else Status.DRAFT, adjusts, "c0ffee",
                         "inputs", None, invoice)


def pdf_lines(data: bytes) -> list[str]:
    reader = PdfReader(io.BytesIO(data))
    return [line for page in reader.pages for line in page.extract_text().splitlines()]


def test_the_document_decodes_to_the_same_invoice() -> None:
    invoice = acme()
    doc = json.loads(canonical_json(document(invoice)))
    # Everything but the hourly netting, which is stored beside the document.
    assert decode(doc) == replace(invoice, hours=())
    assert canonical_json(document(decode(doc))) == canonical_json(document(invoice))
    # Bands and the currency's minor unit are data, not words in a description.
    premium = [x for x in doc["lines"] if x["kind"] == "usage" and x["hardware_tier"] == "premium"]
    assert [x["band"] for x in premium] == [
        {"mode": "graduated", "number": 1, "lower_units": "0", "upper_units": "500"},
        {"mode": "graduated", "number": 2, "lower_units": "500", "upper_units": "5000"}]
    assert doc["minor_unit"] == 2
    (reservation,) = [x for x in doc["lines"] if x["kind"] == "reservation"]
    assert reservation["reservation_id"] == "acme/reservations/premium/2026-10-01T00:00:00Z"
    assert doc["reservations"] == [{
        "reservation_id": "acme/reservations/premium/2026-10-01T00:00:00Z",
        "hardware_tier": "premium", "gpus": "2", "start": "2026-10-01T00:00:00Z", "end": None}]


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("minor_unit"), "no 'minor_unit'"),
    (lambda d: d["lines"][0].update(amount=2000.0), "expected a decimal written as a string"),
    (lambda d: d.update(total="1.00"), "not the sum of its lines"),
    (lambda d: d["lines"][0]["band"].update(mode="tiered"), "'tiered' is not a valid"),
])
def test_a_document_it_did_not_write_is_refused(change, message) -> None:
    doc = json.loads(canonical_json(document(acme())))
    change(doc)
    with pytest.raises(UserError, match=message) as error:
        decode(doc, "invoice INV-9")
    assert str(error.value).startswith("invoice INV-9: ")


def test_csv_lines_carry_band_reservation_and_minor_unit() -> None:
    invoice = acme()
    rows = list(csv.DictReader(io.StringIO(lines_csv([("INV-2026-10-0001", invoice)]))))
    assert tuple(rows[0]) == LINE_COLUMNS
    assert [(r["kind"], r["pricing_mode"], r["band"], r["band_lower_units"],
             r["band_upper_units"], r["quantity"], r["unit_price"], r["amount"])
            for r in rows[:4]] == [
        ("usage", "graduated", "1", "0", "500", "500.000000", "4.00", "2000.00"),
        ("usage", "graduated", "2", "500", "5000", "430.000000", "3.50", "1505.00"),
        ("usage", "volume", "2", "1000", "10000", "1320.000000", "1.90", "2508.00"),
        ("usage", "flat", "", "0", "", "300.000000", "0.60", "180.00")]
    assert {r["number"] for r in rows} == {"INV-2026-10-0001"}
    assert {r["minor_unit"] for r in rows} == {"2"}
    assert [r["reservation_id"] for r in rows if r["kind"] == "reservation"] == [
        "acme/reservations/premium/2026-10-01T00:00:00Z"]
    assert sum(D(r["amount"]) for r in rows) == D("10252.15")


def test_pdf_text_is_the_invoice() -> None:
    invoice = acme()
    text = pdf_lines(render(stored(invoice), "pdf"))
    assert text[0] == "Invoice INV-2026-10-0001"
    assert "Tenant acme" in text
    assert "Billing period 2026-10 (UTC)" in text
    # DESIGN.md's worked example, as a person reads it: description, tier, quantity and unit,
    # unit price, amount.
    charges = text[text.index("Description Tier Quantity Unit price Amount") + 1:]
    assert charges[:8] == [
        "premium on-demand, graduated band 1 (0-500 units) premium 500 unit 4.00 2,000.00 USD",
        "premium on-demand, graduated band 2 (500-5000 units) premium 430 unit 3.50 "
        "1,505.00 USD",
        "standard on-demand, volume band 2 (1000-10000 units) standard 1,320 unit 1.90 "
        "2,508.00 USD",
        "economy on-demand, flat economy 300 unit 0.60 180.00 USD",
        "plan growth discount 5% 6,193 USD -0.05 -309.65 USD",
        "premium reservation, 2 GPUs x 744 h premium 1,488 GPU-hour 2.60 3,868.80 USD",
        "plan growth base fee 1 month 500.00 500.00 USD",
        "Total 10,252.15 USD",
    ]
    # Every line of the invoice is in the PDF, in order, with its amount.
    assert len(invoice.lines) == 7
    for line, shown in zip(invoice.lines, charges, strict=False):
        assert shown.startswith(line.description)
        assert shown.endswith(f"{line.amount:,} USD")
    usage = text[text.index("Tier Size class GPU-hours Reserved On-demand Multiplier "
                            "Billable units") + 1:]
    assert usage[:3] == ["economy small 300 0 300 1 300",
                         "premium large 2,232 1,488 744 1.25 930",
                         "standard medium 1,200 0 1,200 1.1 1,320"]
    assert "Content hash c0ffee" in text


def test_pdf_of_a_zero_decimal_currency_and_of_an_adjustment_note() -> None:
    yen = replace(CARDS[0], currency="JPY", minor_unit=0)
    invoice = price_invoice(TENANTS["zen"], yen, "2026-10", hours("premium", "small", 2, 500))
    text = pdf_lines(render(stored(invoice, "INV-2026-10-0002"), "pdf"))
    assert "Total 25,000 JPY" in text
    note = replace(invoice, lines=(replace(invoice.lines[0], quantity=D("12.5"),
                                           amount=D("50"), description="adjustment: late"),),
                   usage=())
    text = pdf_lines(render(stored(note, "DN-2026-0001", DocumentKind.ADJUSTMENT,
                                   "INV-2026-10-0002"), "pdf"))
    assert text[0] == "Debit note DN-2026-0001"
    assert "Corrects invoice INV-2026-10-0002" in text
    assert "adjustment: late premium 12.5 unit 4.00 50 JPY" in text
    assert "Total 50 JPY" in text
    credit = replace(note, lines=(replace(note.lines[0], amount=D("-50")),))
    text = pdf_lines(render(stored(credit, "CN-2026-0001", DocumentKind.ADJUSTMENT,
                                   "INV-2026-10-0002"), "pdf"))
    assert text[0] == "Credit note CN-2026-0001"
    assert "Total -50 JPY" in text


def test_every_format_is_written_atomically_under_a_safe_name(tmp_path: Path) -> None:
    evil = replace(acme(), tenant="../../etc/x")
    draft = stored(evil, None)
    paths = write_invoice_files([draft, stored(acme())], tmp_path)
    assert len(paths) == 2 * len(FORMATS)
    assert all(p.parent == tmp_path for p in paths)
    assert {file_name(draft, fmt) for fmt in FORMATS} <= {p.name for p in paths}
    assert all(file_name(draft, f).startswith("DRAFT-2026-10-") for f in FORMATS)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    exported = json.loads((tmp_path / "INV-2026-10-0001.json").read_text())
    assert exported == export_document(stored(acme()))
    assert (exported["status"], exported["content_hash"]) == ("final", "c0ffee")
    assert decode(exported) == replace(acme(), hours=())
    assert (tmp_path / "INV-2026-10-0001.csv").read_text() == lines_csv(
        [("INV-2026-10-0001", acme())])
    # The draft closes: its files go, the numbered invoice's stay.
    write_invoice_files([stored(acme())], tmp_path, prune_drafts=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"INV-2026-10-0001.{fmt}" for fmt in ("csv", "json", "pdf")]
