"""Documents finance can file: issuer and bill-to blocks, issue and due dates, cost center, GL
account, purchase order and tax on the invoice (read back from the PDF's text); credit and
debit notes numbered in gapless sequences of their own, citing the invoice they correct;
showback statements with no number; the period's register, journal and ZIP, reconciled to
the cent. A real DuckDB warehouse holds the documents (models.billing.lifecycle)."""

import csv
import io
import zipfile
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pypdf import PdfReader

from models.billing import lifecycle
from models.billing.books import load_books
from models.billing.exports import period_zip, render
from models.billing.invoices import DocumentType, Parties, Status
from models.billing.journal import JOURNAL_COLUMNS, journal_csv
from models.billing.pricing import LineKind, UsageHour, price_invoice
from models.billing.rate_cards import (
    BillingMode,
    BillingProfile,
    ConfigError,
    Party,
    TaxRate,
    load_rate_cards,
    load_tenants,
)
from models.billing.register import REGISTER_COLUMNS, register_csv
from models.errors import UserError
from models.ledger import warehouse

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "design-example"
CARDS = load_rate_cards(EXAMPLE / "rate-card.yaml")
BOOKS = load_books(ROOT / "examples" / "demo" / "finance.yaml", CARDS)
OCT = datetime(2026, 10, 1, tzinfo=UTC)
CLOSED = datetime(2026, 11, 2, 9, tzinfo=UTC)
D = Decimal

ACME = BillingProfile(
    Party("Acme Corporation Ltd.", ("42 Industrial Park", "Manchester M1 1AA"), "GB987654321",
          "ap@acme.example"),
    BillingMode.CHARGEBACK, 30, "CC-1100-ACME", "6100", "PO-ACME-0042",
    TaxRate("VAT", D(20)))
ZEN = BillingProfile(Party("Zen Research GmbH"), BillingMode.CHARGEBACK, 45, "CC-1200-ZEN",
                     "6100")
LUMEN = BillingProfile(Party("Lumen Platform Team"), BillingMode.SHOWBACK, 0)


def hours(tier: str, size: str, gpus: str, count: int, first: datetime = OCT) -> list[UsageHour]:
    return [UsageHour(first + timedelta(hours=h), tier, size, D(gpus)) for h in range(count)]


def tenants():
    base = load_tenants(EXAMPLE / "tenants.yaml", CARDS)
    return {"acme": replace(base["acme"], billing=ACME),
            "zen": replace(base["zen"], billing=ZEN),
            "lumen": replace(base["zen"], name="lumen", plan="growth", billing=LUMEN)}


USAGE = {
    "acme": hours("premium", "large", "3", 744) + hours("standard", "medium", "2", 600),
    "zen": hours("premium", "small", "1", 1000 - 256) + hours("premium", "small", "1", 256),
    "lumen": hours("economy", "small", "1", 300),
}


def price(usage=USAGE):
    return [price_invoice(t, CARDS[0], "2026-10", usage[name])
            for name, t in sorted(tenants().items())]


PARTIES = {name: Parties(BOOKS.issuer, t.billing) for name, t in tenants().items()
           if t.billing is not None}


@pytest.fixture
def closed():
    """October billed and closed on Nov 2; then two rounds of late changes: acme's standard
    usage drops (a credit note), zen's grows (a debit note); then acme's grows again (a
    second debit note); lumen's changes make statement corrections."""
    con = warehouse.connect(":memory:")
    warehouse.create_schema(con)
    lifecycle.write_drafts(con, "2026-10", price(), "inputs", OCT, parties=PARTIES)
    finalized = lifecycle.close_period(con, "2026-10", CLOSED)
    yield con, finalized
    con.close()


def pdf_lines(data: bytes) -> list[str]:
    reader = PdfReader(io.BytesIO(data))
    return [line for page in reader.pages for line in page.extract_text().splitlines()]


def test_close_numbers_invoices_and_gives_showback_tenants_a_statement(closed) -> None:
    con, finalized = closed
    assert finalized == ["INV-2026-10-0001", "STATEMENT-2026-10-lumen", "INV-2026-10-0002"]
    documents = {s.stem: s for s in lifecycle.stored(con, "2026-10")}
    acme, lumen, zen = (documents[n] for n in finalized)
    assert (acme.number, acme.document_type) == ("INV-2026-10-0001", DocumentType.INVOICE)
    assert (lumen.number, lumen.document_type, lumen.status) == (
        None, DocumentType.STATEMENT, Status.FINAL)
    # Issue date is the close; due date the issue date plus the tenant's payment terms.
    assert (acme.issue_date, acme.due_date) == (date(2026, 11, 2), date(2026, 12, 2))
    assert (zen.issue_date, zen.due_date) == (date(2026, 11, 2), date(2026, 12, 17))
    assert acme.parties == Parties(BOOKS.issuer, ACME)
    # 20% VAT on what is due after credits, one line, rounded half-up like every line.
    (tax,) = [x for x in acme.invoice.lines if x.kind is LineKind.TAX]
    base = sum((x.amount for x in acme.invoice.lines if x.kind is not LineKind.TAX), D(0))
    assert (tax.description, tax.quantity, tax.amount) == (
        "VAT 20%", base, (base * D("0.2")).quantize(D("0.01")))
    assert acme.invoice.total == base + tax.amount


def test_the_pdf_shows_issuer_bill_to_dates_cost_center_gl_account_and_po(closed) -> None:
    con, _ = closed
    (acme,) = [s for s in lifecycle.stored(con, "2026-10") if s.invoice.tenant == "acme"]
    text = pdf_lines(render(acme, "pdf"))
    assert text[0] == "Invoice INV-2026-10-0001"
    assert text[1] == "Issuer Bill to"
    # The two blocks side by side, line by line.
    issuer = ["GPU Platform Ltd.", "1 Compute Way", "London EC1A 1AA", "United Kingdom",
              "Tax ID GB123456789", "billing@gpu-platform.example"]
    bill_to = ["Acme Corporation Ltd.", "42 Industrial Park", "Manchester M1 1AA",
               "Tax ID GB987654321", "ap@acme.example"]
    assert text[2:8] == [f"{left} {right}".strip()
                         for left, right in zip(issuer, [*bill_to, ""], strict=True)]
    for expected in ("Issue date 2026-11-02", "Payment terms Net 30", "Due date 2026-12-02",
                     "Cost center CC-1100-ACME", "GL account 6100",
                     "Purchase order PO-ACME-0042"):
        assert expected in text
    assert any(line.startswith("VAT 20%") for line in text)


def test_a_statement_has_no_number_and_asks_for_nothing(closed) -> None:
    con, _ = closed
    (lumen,) = [s for s in lifecycle.stored(con, "2026-10") if s.invoice.tenant == "lumen"]
    text = pdf_lines(render(lumen, "pdf"))
    assert text[0] == "Statement STATEMENT-2026-10-lumen"
    assert not [line for line in text if "Due date" in line or "Payment terms" in line]
    assert any("Nothing is due" in line for line in text)
    assert f"{lumen.invoice.total:,.2f}" in " ".join(text)


def test_credit_and_debit_notes_have_gapless_sequences_and_cite_the_invoice(closed) -> None:
    con, _ = closed
    late = dict(USAGE)
    late["acme"] = hours("premium", "large", "3", 744) + hours("standard", "medium", "2", 500)
    late["zen"] = USAGE["zen"] + hours("premium", "small", "1", 10, datetime(2026, 10, 31,
                                                                         tzinfo=UTC))
    late["lumen"] = hours("economy", "small", "1", 310)
    nov_5 = datetime(2026, 11, 5, tzinfo=UTC)
    counts = lifecycle.write_drafts(con, "2026-10", price(late), "late", nov_5,
                                    parties=PARTIES)
    assert counts == {"drafts": 0, "adjustments": 3}
    late["acme"] = hours("premium", "large", "3", 744) + hours("standard", "medium", "2", 520)
    jan = datetime(2027, 1, 3, tzinfo=UTC)
    lifecycle.write_drafts(con, "2026-10", price(late), "later", jan, parties=PARTIES)
    notes = sorted((s for s in lifecycle.stored(con, "2026-10")
                    if s.document_type not in (DocumentType.INVOICE, DocumentType.STATEMENT)),
                   key=lambda s: (s.finalized_at, s.invoice_id))
    assert [(s.stem, s.document_type, s.adjusts, s.issue_date) for s in notes] == [
        ("CN-2026-0001", DocumentType.CREDIT_NOTE, "INV-2026-10-0001", date(2026, 11, 5)),
        ("DN-2026-0001", DocumentType.DEBIT_NOTE, "INV-2026-10-0002", date(2026, 11, 5)),
        ("STATEMENT-2026-10-lumen-C1", DocumentType.STATEMENT_CORRECTION,
         "STATEMENT-2026-10-lumen", date(2026, 11, 5)),
        # A new year starts each sequence at 1.
        ("DN-2027-0001", DocumentType.DEBIT_NOTE, "INV-2026-10-0001", date(2027, 1, 3))]
    assert notes[0].invoice.total < 0
    # zen stays under its minimum: more usage, a smaller true-up, nothing more to pay; the
    # note still records the change of each line.
    zen = {kind: sum((x.amount for x in notes[1].invoice.lines if x.kind is kind), D(0))
           for kind in LineKind}
    assert zen[LineKind.USAGE] > 0 > zen[LineKind.TRUE_UP]
    assert notes[1].invoice.total == 0
    assert notes[0].due_date == date(2026, 12, 5)
    text = pdf_lines(render(notes[0], "pdf"))
    assert text[0] == "Credit note CN-2026-0001"
    assert "Corrects invoice INV-2026-10-0001" in text
    # What was billed in all is what pricing says now, to the cent.
    for tenant in ("acme", "zen", "lumen"):
        billed = sum((s.invoice.total for s in lifecycle.stored(con, "2026-10")
                      if s.invoice.tenant == tenant), D(0))
        (now,) = [i for i in price(late) if i.tenant == tenant]
        assert billed == now.total


def _period_with_notes(con):
    late = dict(USAGE)
    late["acme"] = hours("premium", "large", "3", 744) + hours("standard", "medium", "2", 500)
    late["zen"] = USAGE["zen"] + hours("premium", "small", "1", 10, datetime(2026, 10, 31,
                                                                         tzinfo=UTC))
    lifecycle.write_drafts(con, "2026-10", price(late), "late",
                           datetime(2026, 11, 5, tzinfo=UTC), parties=PARTIES)


def test_register_lists_issued_documents_and_reconciles(closed) -> None:
    con, _ = closed
    _period_with_notes(con)
    october = list(csv.DictReader(io.StringIO(
        register_csv(lifecycle.period_documents(con, "2026-10")))))
    november = list(csv.DictReader(io.StringIO(
        register_csv(lifecycle.period_documents(con, "2026-11")))))
    assert tuple(october[0]) == REGISTER_COLUMNS
    # October's invoices (not the statement); the notes issued in November are November's.
    assert [r["document_number"] for r in october] == ["INV-2026-10-0001", "INV-2026-10-0002"]
    assert [(r["document_number"], r["document_type"], r["adjusts"], r["billing_period"])
            for r in november] == [
        ("CN-2026-0001", "credit_note", "INV-2026-10-0001", "2026-10"),
        ("DN-2026-0001", "debit_note", "INV-2026-10-0002", "2026-10")]
    acme = october[0]
    assert (acme["legal_name"], acme["cost_center"], acme["gl_account"],
            acme["purchase_order"], acme["payment_terms"], acme["due_date"]) == (
        "Acme Corporation Ltd.", "CC-1100-ACME", "6100", "PO-ACME-0042", "Net 30",
        "2026-12-02")
    for row in october + november:
        assert D(row["net_amount"]) + D(row["tax_amount"]) == D(row["total"])
    documents = {s.stem: s.invoice.total for s in lifecycle.stored(con, "2026-10")}
    assert {r["document_number"]: D(r["total"]) for r in october + november} == {
        k: v for k, v in documents.items() if not k.startswith("STATEMENT")}


def test_journal_is_balanced_and_equals_the_documents_to_the_cent(closed) -> None:
    con, _ = closed
    _period_with_notes(con)
    for period in ("2026-10", "2026-11"):
        documents = lifecycle.period_documents(con, period)
        lines = list(csv.DictReader(io.StringIO(journal_csv(documents, period,
                                                            BOOKS.accounts))))
        assert tuple(lines[0]) == JOURNAL_COLUMNS
        registered = list(csv.DictReader(io.StringIO(register_csv(documents))))
        debits = sum(D(x["debit"]) for x in lines)
        credits = sum(D(x["credit"]) for x in lines)
        assert debits == credits == sum(D(r["total"]) for r in registered) != 0
        # Balanced per document too, and one of debit and credit is always zero.
        for number in {x["document_number"] for x in lines}:
            mine = [x for x in lines if x["document_number"] == number]
            assert sum(D(x["debit"]) for x in mine) == sum(D(x["credit"]) for x in mine)
        assert all(D(x["debit"]) == 0 or D(x["credit"]) == 0 for x in lines)
    october = list(csv.DictReader(io.StringIO(journal_csv(
        lifecycle.period_documents(con, "2026-10"), "2026-10", BOOKS.accounts))))
    acme = [x for x in october if x["document_number"] == "INV-2026-10-0001"]
    by_account = {x["account"]: (D(x["debit"]), D(x["credit"]), x["cost_center"]) for x in acme}
    (invoice,) = [s.invoice for s in lifecycle.stored(con, "2026-10")
                  if s.number == "INV-2026-10-0001"]
    amounts = {kind: sum((x.amount for x in invoice.lines if x.kind is kind), D(0))
               for kind in LineKind}
    # The tenant's GL account and cost center are debited the total.
    assert by_account["6100"] == (invoice.total, D(0), "CC-1100-ACME")
    # Revenue per tier, reservations, base fee, tax on their own accounts; the discount
    # reduces the credit side of its own account (storno).
    premium = sum((x.amount for x in invoice.lines
                   if x.kind is LineKind.USAGE and x.hardware_tier == "premium"), D(0))
    assert by_account["4010"] == (D(0), premium, "CC-9000-GPU-PLATFORM")
    assert by_account["4100"][1] == amounts[LineKind.RESERVATION]
    assert by_account["4200"][1] == amounts[LineKind.BASE_FEE]
    assert by_account["4900"][1] == amounts[LineKind.DISCOUNT] < 0
    assert by_account["2200"][1] == amounts[LineKind.TAX] > 0
    # The statement of the showback tenant posts nothing; a note posts to adjustments.
    assert not [x for x in october if x["tenant"] == "lumen"]
    november = list(csv.DictReader(io.StringIO(journal_csv(
        lifecycle.period_documents(con, "2026-11"), "2026-11", BOOKS.accounts))))
    assert {x["account"] for x in november if D(x["credit"])} == {"4800"}


def test_journal_refuses_tenants_it_cannot_debit(closed) -> None:
    con = warehouse.connect(":memory:")
    warehouse.create_schema(con)
    no_books = {"acme": PARTIES["acme"]}  # zen has no billing block recorded
    lifecycle.write_drafts(con, "2026-10", price(), "inputs", OCT, parties=no_books)
    lifecycle.close_period(con, "2026-10", CLOSED)
    with pytest.raises(UserError) as error:
        journal_csv(lifecycle.period_documents(con, "2026-10"), "2026-10", BOOKS.accounts)
    assert error.value.problems == [
        "INV-2026-10-0002: tenant lumen has no `billing:` block recorded; the journal cannot "
        "debit it",
        "INV-2026-10-0003: tenant zen has no `billing:` block recorded; the journal cannot "
        "debit it"]


def test_the_zip_holds_every_document_the_register_and_the_journal(closed) -> None:
    con, _ = closed
    documents = lifecycle.period_documents(con, "2026-10")
    journal = journal_csv(documents, "2026-10", BOOKS.accounts)
    data = period_zip(documents, "2026-10", journal)
    assert data == period_zip(documents, "2026-10", journal)  # byte-stable
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        assert names == sorted(
            [f"2026-10/{stem}.{fmt}" for stem in ("INV-2026-10-0001", "INV-2026-10-0002",
                                                  "STATEMENT-2026-10-lumen")
             for fmt in ("csv", "json", "pdf")]
            + ["2026-10/journal-2026-10.csv", "2026-10/register-2026-10.csv"])
        assert archive.read("2026-10/INV-2026-10-0001.pdf") == render(
            next(s for s in documents if s.number == "INV-2026-10-0001"), "pdf")
        assert archive.read("2026-10/register-2026-10.csv").decode() == register_csv(documents)
        assert archive.read("2026-10/journal-2026-10.csv").decode() == journal
        assert archive.testzip() is None


BILLING = """
tenants:
  acme:
    plan: growth
    start: 2026-01-01
    billing:
      legal_name: Acme Corporation Ltd.
      payment_terms_days: 30
      cost_center: CC-1
      gl_account: "6100"
{extra}
"""


@pytest.mark.parametrize(("extra", "problems"), [
    ("      tax: {label: VAT, rate_pct: 20.5}",
     ["tenants.acme.billing.tax.rate_pct: must be a decimal number written as a string or "
      "integer, got 20.5"]),
    ("      mode: invoice\n      payment_terms_days_x: 3",
     ["tenants.acme.billing.payment_terms_days_x: unknown key (a typo?)",
      "tenants.acme.billing.mode: must be one of chargeback, showback, got 'invoice'"]),
])
def test_billing_blocks_are_validated_all_at_once(tmp_path, extra, problems) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(BILLING.format(extra=extra))
    with pytest.raises(ConfigError) as error:
        load_tenants(path, CARDS)
    assert error.value.problems == [f"{path}: {p}" for p in problems]


def test_a_chargeback_tenant_needs_terms_cost_center_and_gl_account(tmp_path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  acme:\n    plan: growth\n    start: 2026-01-01\n"
                    "    billing:\n      legal_name: \"Acme\\u2122 \\u5de5\"\n"
                    "      payment_terms_days: 400\n      email: nobody\n"
                    "      address: [\"\"]\n")
    with pytest.raises(ConfigError) as error:
        load_tenants(path, CARDS)
    assert [p.split(": ", 1)[1] for p in error.value.problems] == [
        "tenants.acme.billing.legal_name: must be Latin-1 text (the documents' font has no "
        "other letters): 'Acme\u2122 \u5de5'",
        "tenants.acme.billing.address[0]: must be non-empty text, got ''",
        "tenants.acme.billing.email: not an e-mail address: 'nobody'",
        "tenants.acme.billing.payment_terms_days: must be a whole number of days from 0 to 365 "
        "(30 for Net 30), got 400",
        "tenants.acme.billing.cost_center: missing",
        "tenants.acme.billing.gl_account: missing"]


def test_the_finance_file_needs_an_issuer_and_a_revenue_account_per_tier(tmp_path) -> None:
    path = tmp_path / "finance.yaml"
    path.write_text("issuer: {address: [a]}\nledger:\n  platform_cost_center: CC\n"
                    "  accounts:\n    revenue: {premium: '4010'}\n    reservations: '4100'\n")
    with pytest.raises(UserError) as error:
        load_books(path, CARDS)
    assert [p.split(": ", 1)[1] for p in error.value.problems] == [
        "issuer.legal_name: missing",
        *(f"ledger.accounts.{key}: missing" for key in (
            "base_fees", "true_ups", "discounts", "prepaid_credits", "adjustments", "tax")),
        "ledger.accounts.revenue.economy: missing: every hardware tier of the rate cards "
        "needs a revenue account",
        "ledger.accounts.revenue.standard: missing: every hardware tier of the rate cards "
        "needs a revenue account"]
