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
from datetime import UTC, datetime
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
)
from models.billing.rate_cards import PricingMode, Reservation
from models.errors import UserError


class DocumentKind(StrEnum):
    INVOICE = "invoice"
    ADJUSTMENT = "adjustment"
    """A credit or debit note: delta lines that correct a final invoice of a closed period."""


class Status(StrEnum):
    DRAFT = "draft"
    FINAL = "final"


@dataclass(frozen=True)
class StoredInvoice:
    """An invoice or adjustment note as the warehouse keeps it."""

    invoice_id: str
    number: str | None
    kind: DocumentKind
    status: Status
    adjusts: str | None
    """The number of the invoice an adjustment note corrects."""
    content_hash: str
    inputs_hash: str
    finalized_at: datetime | None
    invoice: Invoice

    @property
    def stem(self) -> str:
        """The name finance knows the document by: its number, or DRAFT-<period>-<tenant>."""
        return self.number or f"DRAFT-{self.invoice.period}-{self.invoice.tenant}"


LINE_COLUMNS = ("number", "tenant", "period", "currency", "minor_unit", "line_no", "kind",
                "description", "hardware_tier", "size_class", "pricing_mode", "band",
                "band_lower_units", "band_upper_units", "reservation_id", "quantity", "unit",
                "unit_price", "amount")
"""The one invoice-line CSV layout: per-invoice exports, `chargeback bill`, the finance
page's lines of a period. Empty cells are nulls; decimals exact."""


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def document(invoice: Invoice, *, kind: DocumentKind = DocumentKind.INVOICE,
             number: str | None = None, adjusts: str | None = None) -> dict[str, Any]:
    """The stored JSON document of an invoice (what its content hash covers). The hourly
    netting is not in it: it is stored beside it (models.billing.lifecycle)."""
    return {
        "kind": kind.value,
        "number": number,
        "adjusts": adjusts,
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


def export_document(stored: StoredInvoice) -> dict[str, Any]:
    """The JSON file finance gets: the stored document with its id, status and hashes."""
    return {
        **document(stored.invoice, kind=stored.kind, number=stored.number,
                   adjusts=stored.adjusts),
        "invoice_id": stored.invoice_id,
        "status": stored.status.value,
        "content_hash": stored.content_hash,
        "inputs_hash": stored.inputs_hash,
    }


def _decimal(value: Any) -> Decimal:
    if not isinstance(value, str):  # a float here would carry binary error into money
        raise TypeError(f"expected a decimal written as a string, got {value!r}")
    return Decimal(value)


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
                reservation_id=x["reservation_id"]) for x in doc["lines"]),
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
            minimum_commitment=_decimal(doc["minimum_commitment"]))
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

    return StoredInvoice(
        invoice_id=row["invoice_id"], number=value("number"), kind=DocumentKind(row["kind"]),
        status=Status(row["status"]), adjusts=value("adjusts"),
        content_hash=row["content_hash"], inputs_hash=row["inputs_hash"],
        finalized_at=value("finalized_at"),
        invoice=decode(json.loads(row["document"]), f"invoice {row['invoice_id']}"))


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
    return rows


def lines_csv(invoices: Iterable[tuple[str | None, Invoice]]) -> str:
    """The lines of (number, invoice) pairs as one CSV text in the LINE_COLUMNS layout."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=LINE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for number, invoice in invoices:
        writer.writerows(line_rows(invoice, number))
    return out.getvalue()
