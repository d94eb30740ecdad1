"""Invoices as PDF for people: header, tenant, period, lines by tier and size class, totals."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from typing import Any

from fpdf import FPDF

from models.billing.rate_cards import month_bounds


def _money(value: str, currency: str) -> str:
    return f"{Decimal(value):,.2f} {currency}"


def render_pdf(doc: dict[str, Any], *, issuer: str = "GPU platform chargeback") -> bytes:
    """The invoice document (models.billing.invoices.invoice_document) as PDF bytes.

    The PDF's creation date is the end of the billing period, so the same document always
    renders to the same bytes."""
    _, period_end = month_bounds(doc["period"])
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_creation_date(period_end.astimezone(UTC))
    pdf.set_title(f"{doc.get('number') or 'Draft'} {doc['tenant']} {doc['period']}")
    pdf.set_author(issuer)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    kind = "Adjustment note" if doc.get("kind") == "adjustment" else "Invoice"
    number = doc.get("number") or "DRAFT (not final)"
    pdf.cell(0, 10, f"{kind} {number}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    header = [
        ("Issuer", issuer),
        ("Tenant", doc["tenant"]),
        ("Billing period", f"{doc['period']} (UTC)"),
        ("Plan", doc["plan"]),
        ("Metering basis", doc["basis"]),
        ("Rate card", doc["rate_card_version"]),
        ("Currency", doc["currency"]),
    ]
    if doc.get("adjusts"):
        header.append(("Adjusts invoice", doc["adjusts"]))
    for label, value in header:
        pdf.cell(40, 6, label)
        pdf.cell(0, 6, str(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)

    if doc.get("usage"):
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(0, 7, "Usage by hardware tier and model-size class", new_x="LMARGIN",
                 new_y="NEXT")
        pdf.set_font("Helvetica", "", 8)
        with pdf.table(col_widths=(26, 22, 26, 26, 26, 20, 26),
                       text_align=("LEFT", "LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT",
                                   "RIGHT")) as table:
            table.row(["Tier", "Size class", "GPU-hours", "Reserved", "On-demand",
                       "Multiplier", "Billable units"])
            for u in doc["usage"]:
                table.row([u["hardware_tier"], u["size_class"], f"{Decimal(u['gpu_hours']):,.3f}",
                           f"{Decimal(u['covered_gpu_hours']):,.3f}",
                           f"{Decimal(u['overflow_gpu_hours']):,.3f}", u["multiplier"],
                           f"{Decimal(u['billable_units']):,.3f}"])
        pdf.ln(4)

    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(0, 7, "Charges", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 8)
    currency = doc["currency"]
    with pdf.table(col_widths=(80, 22, 28, 20, 30),
                   text_align=("LEFT", "LEFT", "RIGHT", "RIGHT", "RIGHT")) as table:
        table.row(["Description", "Tier", "Quantity", "Unit price", "Amount"])
        for line in doc["lines"]:
            table.row([line["description"], line["hardware_tier"] or "",
                       f"{Decimal(line['quantity']):,.3f} {line['unit']}",
                       line["unit_price"], _money(line["amount"], currency)])
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(150, 8, "Total", align="R")
    pdf.cell(30, 8, _money(doc["total"], currency), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 8)
    if Decimal(doc.get("credit_applied", "0")):
        pdf.cell(0, 5, f"Prepaid credit applied: {_money(doc['credit_applied'], currency)}",
                 new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 5, "Amounts are rounded half-up per line; the total is the sum of the lines.",
             new_x="LMARGIN", new_y="NEXT")
    if doc.get("content_hash"):
        pdf.cell(0, 5, f"Content hash {doc['content_hash']}", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())

