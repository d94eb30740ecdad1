"""The one codec of invoices: the typed `Invoice` (models.billing.pricing) to and from its JSON
document, and its lines as CSV.

Every reader of a stored invoice (lifecycle, exports, PDF, FOCUS, marts, dashboards, the CLI)
decodes the document here into the same typed object pricing returned; nothing else parses a
document. Decimals are written as exact strings (never floats), datetimes as ISO 8601 UTC, and
the JSON is canonical (sorted keys), so a document and its hash are byte-stable."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from models.billing.pricing import (
    HeldReservation,
    Invoice,
    InvoiceLine,
    LineKind,
    PriceBand,
    TierUsage,
    TokenUsage,
)
from models.billing.rate_cards import (
    BillingMode,
    BillingProfile,
    Party,
    PricingMode,
    Reservation,
    TaxRate,
)
from models.errors import UserError


class DocumentKind(StrEnum):
    INVOICE = "invoice"
    ADJUSTMENT = "adjustment"
    """A credit or debit note: delta lines that correct a final invoice of a closed period."""


class Status(StrEnum):
    DRAFT = "draft"
    FINAL = "final"


class DocumentType(StrEnum):
    """What a document is to finance: the register's and the journal's document types."""

    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"
    """An adjustment note that lowers what was billed (its total is negative)."""
    DEBIT_NOTE = "debit_note"
    """An adjustment note that raises what was billed (or moves amounts between lines)."""
    STATEMENT = "statement"
    """A showback tenant's month: the same figures as an invoice, no number, not payable."""
    STATEMENT_CORRECTION = "statement_correction"

    @property
    def heading(self) -> str:
        """What the document calls itself: `Credit note`."""
        return self.value.replace("_", " ").capitalize()

    @property
    def payable(self) -> bool:
        """Issued under a number of its own, registered and posted to the journal."""
        return self not in (DocumentType.STATEMENT, DocumentType.STATEMENT_CORRECTION)


@dataclass(frozen=True)
class Parties:
    """Who issues a document and whom it is addressed to, as they were when it was made: a
    filed document does not change when the tenants file does."""

    issuer: Party
    bill_to: BillingProfile

    @property
    def showback(self) -> bool:
        return self.bill_to.mode is BillingMode.SHOWBACK


@dataclass(frozen=True)
class StoredInvoice:
    """An invoice, adjustment note or statement as the warehouse keeps it."""

    invoice_id: str
    number: str | None
    """The invoice, credit note or debit note number; None for drafts and statements."""
    kind: DocumentKind
    status: Status
    adjusts: str | None
    """The number (a statement's id) of the document an adjustment note corrects."""
    content_hash: str
    inputs_hash: str
    finalized_at: datetime | None
    invoice: Invoice
    parties: Parties | None = None
    """None when the tenants file had no `billing:` block for the tenant when it was made."""
    issue_date: date | None = None
    due_date: date | None = None
    """Issue date plus the payment terms; None for drafts and documents without terms."""

    @property
    def stem(self) -> str:
        """The name finance knows the document by: its number, a statement's id, or
        DRAFT-<period>-<tenant>."""
        if self.number:
            return self.number
        if self.status is Status.FINAL:
            return self.invoice_id
        return f"DRAFT-{self.invoice.period}-{self.invoice.tenant}"

    @property
    def document_type(self) -> DocumentType:
        showback = self.parties is not None and self.parties.showback
        if self.kind is DocumentKind.INVOICE:
            return DocumentType.STATEMENT if showback else DocumentType.INVOICE
        if showback:
            return DocumentType.STATEMENT_CORRECTION
        return DocumentType.CREDIT_NOTE if self.invoice.total < 0 else DocumentType.DEBIT_NOTE


LINE_COLUMNS = ("number", "tenant", "period", "currency", "minor_unit", "line_no", "kind",
                "description", "hardware_tier", "size_class", "pricing_mode", "band",
                "band_lower_units", "band_upper_units", "reservation_id", "quantity", "unit",
                "unit_price", "amount")
"""The one invoice-line CSV layout: per-invoice exports, `chargeback bill`, the finance
page's lines of a period. Empty cells are nulls; decimals exact. Rows of kind `token_memo`
are memos (tokens by model and their effective price per token; no amount, not a charge)."""


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _party(party: Party) -> dict[str, Any]:
    return {"legal_name": party.legal_name, "address": list(party.address),
            "tax_id": party.tax_id, "email": party.email}


def _parties(parties: Parties | None) -> dict[str, Any] | None:
    if parties is None:
        return None
    bill_to = parties.bill_to
    return {
        "issuer": _party(parties.issuer),
        "bill_to": {
            **_party(bill_to.party), "mode": bill_to.mode.value,
            "payment_terms_days": bill_to.payment_terms_days,
            "cost_center": bill_to.cost_center, "gl_account": bill_to.gl_account,
            "purchase_order": bill_to.purchase_order,
            "tax": None if bill_to.tax is None else {
                "label": bill_to.tax.label, "rate_pct": str(bill_to.tax.rate_pct)},
        },
    }


def document(invoice: Invoice, *, kind: DocumentKind = DocumentKind.INVOICE,
             number: str | None = None, adjusts: str | None = None,
             parties: Parties | None = None, issue_date: date | None = None,
             due_date: date | None = None) -> dict[str, Any]:
    """The stored JSON document of an invoice (what its content hash covers). The hourly
    netting is not in it: it is stored beside it (models.billing.lifecycle). `tokens` is
    there only when the tenant sent tokens, so GPU-only documents are as they always were."""
    doc: dict[str, Any] = {
        "kind": kind.value,
        "number": number,
        "adjusts": adjusts,
        "parties": _parties(parties),
        "issue_date": None if issue_date is None else issue_date.isoformat(),
        "due_date": None if due_date is None else due_date.isoformat(),
        "tenant": invoice.tenant,
        "period": invoice.period,
        "plan": invoice.plan,
        "currency": invoice.currency,
        "minor_unit": invoice.minor_unit,
        "rate_card_version": invoice.rate_card_version,
        "basis": invoice.basis,
        "active_fraction": str(invoice.active_fraction),
        "minimum_commitment": str(invoice.minimum_commitment),
        "lines": [
            {
                **({"model": line.model} if line.model is not None else {}),
                "kind": line.kind.value,
                "description": line.description,
                "hardware_tier": line.hardware_tier,
                "size_class": line.size_class,
                "band": None if line.band is None else {
                    "mode": line.band.mode.value,
                    "number": line.band.number,
                    "lower_units": str(line.band.lower_units),
                    "upper_units": (None if line.band.upper_units is None
                                    else str(line.band.upper_units)),
                },
                "reservation_id": line.reservation_id,
                "quantity": str(line.quantity),
                "unit": line.unit,
                "unit_price": str(line.unit_price),
                "amount": str(line.amount),
            }
            for line in invoice.lines
        ],
        "usage": [
            {
                "hardware_tier": u.hardware_tier,
                "size_class": u.size_class,
                "gpu_hours": str(u.gpu_hours),
                "covered_gpu_hours": str(u.covered_gpu_hours),
                "overflow_gpu_hours": str(u.overflow_gpu_hours),
                "multiplier": str(u.multiplier),
                "billable_units": str(u.billable_units),
            }
            for u in invoice.usage
        ],
        "reservations": [
            {
                "reservation_id": held.reservation_id,
                "hardware_tier": held.reservation.tier,
                "gpus": str(held.reservation.gpus),
                "start": _time(held.reservation.start),
                "end": _time(held.reservation.end),
            }
            for held in invoice.reservations
        ],
        "credit_available": str(invoice.credit_available),
        "credit_applied": str(invoice.credit_applied),
        "total": str(invoice.total),
    }
    if invoice.tokens:
        doc["tokens"] = [
            {
                "model": t.model,
                "input_tokens": t.input_tokens,
                "output_tokens": t.output_tokens,
                "gpu_hours": str(t.gpu_hours),
                "input_cost": str(t.input_cost),
                "output_cost": str(t.output_cost),
                "cost_per_million_input": _text(t.cost_per_million_input),
                "cost_per_million_output": _text(t.cost_per_million_output),
            }
            for t in invoice.tokens
        ]
    return doc


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def export_document(stored: StoredInvoice) -> dict[str, Any]:
    """The JSON file finance gets: the stored document with its id, status and hashes."""
    return {
        **document(stored.invoice, kind=stored.kind, number=stored.number,
                   adjusts=stored.adjusts, parties=stored.parties,
                   issue_date=stored.issue_date, due_date=stored.due_date),
        "document_type": stored.document_type.value,
        "invoice_id": stored.invoice_id,
        "status": stored.status.value,
        "content_hash": stored.content_hash,
        "inputs_hash": stored.inputs_hash,
    }


def _decimal(value: Any) -> Decimal:
    if not isinstance(value, str):  # a float here would carry binary error into money
        raise TypeError(f"expected a decimal written as a string, got {value!r}")
    return Decimal(value)


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"expected a token count, got {value!r}")
    return value


def _optional(value: Any) -> Decimal | None:
    return None if value is None else _decimal(value)


def _moment(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).astimezone(UTC)


def decode(doc: Mapping[str, Any], where: str = "invoice document") -> Invoice:
    """The typed invoice of a stored or exported document. A document this codec did not
    write (a missing key, a float, a total that is not the sum of its lines) is refused with
    a message naming it."""
    try:
        invoice = Invoice(
            tenant=doc["tenant"], plan=doc["plan"], period=doc["period"],
            currency=doc["currency"], minor_unit=int(doc["minor_unit"]),
            rate_card_version=doc["rate_card_version"], basis=doc["basis"],
            lines=tuple(InvoiceLine(
                kind=LineKind(x["kind"]), description=x["description"],
                quantity=_decimal(x["quantity"]), unit=x["unit"],
                unit_price=_decimal(x["unit_price"]), amount=_decimal(x["amount"]),
                hardware_tier=x["hardware_tier"], size_class=x["size_class"],
                band=None if x["band"] is None else PriceBand(
                    PricingMode(x["band"]["mode"]), x["band"]["number"],
                    _decimal(x["band"]["lower_units"]), _optional(x["band"]["upper_units"])),
                reservation_id=x["reservation_id"], model=x.get("model"))
                for x in doc["lines"]),
            usage=tuple(TierUsage(
                u["hardware_tier"], u["size_class"], _decimal(u["gpu_hours"]),
                _decimal(u["covered_gpu_hours"]), _decimal(u["overflow_gpu_hours"]),
                _decimal(u["multiplier"]), _decimal(u["billable_units"]))
                for u in doc["usage"]),
            reservations=tuple(HeldReservation(r["reservation_id"], Reservation(
                r["hardware_tier"], _decimal(r["gpus"]), datetime.fromisoformat(
                    r["start"]).astimezone(UTC), _moment(r["end"])))
                for r in doc["reservations"]),
            hours=(),
            credit_available=_decimal(doc["credit_available"]),
            credit_applied=_decimal(doc["credit_applied"]),
            active_fraction=_decimal(doc["active_fraction"]),
            minimum_commitment=_decimal(doc["minimum_commitment"]),
            tokens=tuple(TokenUsage(
                t["model"], _count(t["input_tokens"]), _count(t["output_tokens"]),
                _decimal(t["gpu_hours"]), _decimal(t["input_cost"]),
                _decimal(t["output_cost"]), _optional(t["cost_per_million_input"]),
                _optional(t["cost_per_million_output"]))
                for t in doc.get("tokens", ())))
        total = _decimal(doc["total"])
    except KeyError as error:
        raise UserError(f"{where}: no {error.args[0]!r}: not a document this version writes "
                        "(rebuild the drafts with `chargeback run`)") from None
    except (TypeError, ValueError, ArithmeticError) as error:
        raise UserError(f"{where}: {error}") from None
    if total != invoice.total:
        raise UserError(f"{where}: total {total} is not the sum of its lines "
                        f"({invoice.total}): the document was altered")
    return invoice


def _decode_party(doc: Mapping[str, Any]) -> Party:
    return Party(doc["legal_name"], tuple(doc["address"]), doc["tax_id"], doc["email"])


def decode_parties(doc: Mapping[str, Any], where: str = "invoice document"
                   ) -> tuple[Parties | None, date | None, date | None]:
    """The parties, issue date and due date of a stored or exported document. Documents made
    before they were recorded have none of them (null, or no key at all)."""
    try:
        raw = doc.get("parties")
        parties = None
        if raw is not None:
            bill_to, tax = raw["bill_to"], raw["bill_to"]["tax"]
            parties = Parties(_decode_party(raw["issuer"]), BillingProfile(
                _decode_party(bill_to), BillingMode(bill_to["mode"]),
                int(bill_to["payment_terms_days"]), bill_to["cost_center"],
                bill_to["gl_account"], bill_to["purchase_order"],
                None if tax is None else TaxRate(tax["label"], _decimal(tax["rate_pct"]))))
        issued, due = doc.get("issue_date"), doc.get("due_date")
        return (parties, None if issued is None else date.fromisoformat(issued),
                None if due is None else date.fromisoformat(due))
    except KeyError as error:
        raise UserError(f"{where}: parties: no {error.args[0]!r}: not a document this "
                        "version writes") from None
    except (TypeError, ValueError) as error:
        raise UserError(f"{where}: parties: {error}") from None


STORED_COLUMNS = ("invoice_id", "number", "kind", "status", "adjusts", "content_hash",
                  "inputs_hash", "finalized_at", "document")
"""The columns of the warehouse's `invoices` table (and the marts' copies) a StoredInvoice is
read from."""


def from_row(row: Mapping[str, Any]) -> StoredInvoice:
    """A stored invoice from a row of STORED_COLUMNS (a warehouse row, or a mart row read
    through pandas), its document decoded."""
    def value(name: str) -> Any:
        cell = row[name]
        return None if cell is None or cell != cell else cell  # pandas' NaN and NaT are nulls

    where = f"invoice {row['invoice_id']}"
    doc = json.loads(row["document"])
    parties, issued, due = decode_parties(doc, where)
    return StoredInvoice(
        invoice_id=row["invoice_id"], number=value("number"), kind=DocumentKind(row["kind"]),
        status=Status(row["status"]), adjusts=value("adjusts"),
        content_hash=row["content_hash"], inputs_hash=row["inputs_hash"],
        finalized_at=value("finalized_at"), invoice=decode(doc, where), parties=parties,
        issue_date=issued, due_date=due)


def canonical_json(doc: Any) -> str:
    """Byte-stable JSON: sorted keys, no floats (decimals are strings already)."""
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False, default=_no_float) + "\n"


def _no_float(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} into an invoice document")


def content_hash(doc: Any) -> str:
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def line_rows(invoice: Invoice, number: str | None = None) -> list[dict[str, str]]:
    """One CSV row per invoice line (LINE_COLUMNS), decimals as exact strings."""
    rows = []
    for line_no, line in enumerate(invoice.lines, start=1):
        band = line.band
        rows.append({
            "number": _cell(number), "tenant": invoice.tenant, "period": invoice.period,
            "currency": invoice.currency, "minor_unit": str(invoice.minor_unit),
            "line_no": str(line_no), "kind": line.kind.value, "description": line.description,
            "hardware_tier": _cell(line.hardware_tier), "size_class": _cell(line.size_class),
            "pricing_mode": _cell(band and band.mode.value),
            "band": _cell(band and band.number),
            "band_lower_units": _cell(band and band.lower_units),
            "band_upper_units": _cell(band and band.upper_units),
            "reservation_id": _cell(line.reservation_id), "quantity": str(line.quantity),
            "unit": line.unit, "unit_price": str(line.unit_price), "amount": str(line.amount),
        })
    # Tokens are memo rows (kind `token_memo`, no amount): their cost is already in the lines.
    for t in invoice.tokens:
        for side, count, per_million in (("input", t.input_tokens, t.cost_per_million_input),
                                         ("output", t.output_tokens, t.cost_per_million_output)):
            rows.append({
                **dict.fromkeys(LINE_COLUMNS, ""),
                "number": _cell(number), "tenant": invoice.tenant, "period": invoice.period,
                "currency": invoice.currency, "minor_unit": str(invoice.minor_unit),
                "kind": "token_memo",
                "description": f"{t.model} {side} tokens: {_cell(per_million)} "
                               f"{invoice.currency} per million (memo, in the lines above)",
                "quantity": str(count), "unit": f"{side} token",
                "unit_price": "" if per_million is None else format(per_million / 1_000_000, "f"),
            })
    return rows


def lines_csv(invoices: Iterable[tuple[str | None, Invoice]]) -> str:
    """The lines of (number, invoice) pairs as one CSV text in the LINE_COLUMNS layout."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=LINE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for number, invoice in invoices:
        writer.writerows(line_rows(invoice, number))
    return out.getvalue()
