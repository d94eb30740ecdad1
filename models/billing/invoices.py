"""Invoices as documents: JSON and CSV shapes, content hashes."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

from models.billing.pricing import Invoice

LINE_COLUMNS = ("tenant", "period", "currency", "line_no", "kind", "description",
                "hardware_tier", "size_class", "quantity", "unit", "unit_price", "amount")


def invoice_document(invoice: Invoice, **extra: Any) -> dict[str, Any]:
    """The JSON document of an invoice; every decimal written as a string, exactly."""
    doc: dict[str, Any] = {
        "tenant": invoice.tenant,
        "period": invoice.period,
        "plan": invoice.plan,
        "currency": invoice.currency,
        "rate_card_version": invoice.rate_card_version,
        "basis": invoice.basis,
        "active_fraction": str(invoice.active_fraction),
        "lines": [
            {
                "kind": line.kind.value,
                "description": line.description,
                "hardware_tier": line.hardware_tier,
                "size_class": line.size_class,
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
        "credit_available": str(invoice.credit_available),
        "credit_applied": str(invoice.credit_applied),
        "total": str(invoice.total),
    }
    doc.update(extra)
    return doc


def canonical_json(doc: Any) -> str:
    """Byte-stable JSON: sorted keys, no floats (decimals are strings already)."""
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False, default=_no_float) + "\n"


def _no_float(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} into an invoice document")


def content_hash(doc: Any) -> str:
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()


def line_rows(invoice: Invoice) -> list[dict[str, str]]:
    """One CSV row per invoice line, decimals as exact strings."""
    return [
        {
            "tenant": invoice.tenant,
            "period": invoice.period,
            "currency": invoice.currency,
            "line_no": str(number),
            "kind": line.kind.value,
            "description": line.description,
            "hardware_tier": line.hardware_tier or "",
            "size_class": line.size_class or "",
            "quantity": str(line.quantity),
            "unit": line.unit,
            "unit_price": str(line.unit_price),
            "amount": str(line.amount),
        }
        for number, line in enumerate(invoice.lines, start=1)
    ]
