"""A billing period's invoice register: one row per issued invoice, credit note and debit note.

The documents are the period's (lifecycle.period_documents): its invoices, and the notes
issued during it. Showback statements have no number and are not payable, so they are not
registered; drafts are not issued yet. Every figure is the stored document's."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from decimal import Decimal

from models.billing.invoices import Status, StoredInvoice
from models.billing.pricing import LineKind

REGISTER_COLUMNS = (
    "document_number", "document_type", "billing_period", "issue_date", "due_date",
    "payment_terms", "tenant", "legal_name", "cost_center", "gl_account", "purchase_order",
    "currency", "net_amount", "tax_label", "tax_amount", "total", "adjusts", "content_hash")
"""`net_amount` + `tax_amount` = `total`; amounts are exact decimals at the currency's minor
unit; `adjusts` is the invoice a credit or debit note corrects; empty cells are nulls."""

ZERO = Decimal(0)


def registered(documents: Sequence[StoredInvoice]) -> list[StoredInvoice]:
    """The issued, payable documents among `documents`, by issue date and number."""
    issued = [s for s in documents
              if s.status is Status.FINAL and s.document_type.payable and s.number]
    return sorted(issued, key=lambda s: (s.issue_date.isoformat() if s.issue_date else "",
                                         s.number or ""))


def amount_text(value: Decimal, minor_unit: int) -> str:
    """An amount at the currency's minor unit, exactly: `-5.70`, `1200`."""
    return f"{value:.{minor_unit}f}"


def register_rows(documents: Sequence[StoredInvoice]) -> list[dict[str, str]]:
    rows = []
    for stored in registered(documents):
        invoice = stored.invoice
        minor = invoice.minor_unit
        tax = sum((x.amount for x in invoice.lines if x.kind is LineKind.TAX), ZERO)
        labels = sorted({x.description for x in invoice.lines if x.kind is LineKind.TAX})
        bill_to = stored.parties.bill_to if stored.parties else None
        rows.append({
            "document_number": stored.number or "",
            "document_type": stored.document_type.value,
            "billing_period": invoice.period,
            "issue_date": stored.issue_date.isoformat() if stored.issue_date else "",
            "due_date": stored.due_date.isoformat() if stored.due_date else "",
            "payment_terms": bill_to.payment_terms if bill_to else "",
            "tenant": invoice.tenant,
            "legal_name": bill_to.party.legal_name if bill_to else "",
            "cost_center": (bill_to and bill_to.cost_center) or "",
            "gl_account": (bill_to and bill_to.gl_account) or "",
            "purchase_order": (bill_to and bill_to.purchase_order) or "",
            "currency": invoice.currency,
            "net_amount": amount_text(invoice.total - tax, minor),
            "tax_label": "; ".join(labels),
            "tax_amount": amount_text(tax, minor),
            "total": amount_text(invoice.total, minor),
            "adjusts": stored.adjusts or "",
            "content_hash": stored.content_hash,
        })
    return rows


def register_csv(documents: Sequence[StoredInvoice]) -> str:
    """The register of a period's documents as CSV in the REGISTER_COLUMNS layout."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=REGISTER_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(register_rows(documents))
    return out.getvalue()
