"""Invoices as PDF for people: header, tenant, period, lines by tier and size class, totals."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal

from fpdf import FPDF

from models.billing.invoices import DocumentKind, StoredInvoice
from models.billing.rate_cards import month_bounds


def number_text(value: Decimal) -> str:
    """A quantity as people read it, exactly: grouped thousands, no trailing zeros."""
    text = f"{value.normalize():,f}"
    return "0" if text in ("-0", "0") else text


def money_text(value: Decimal, currency: str, minor_unit: int) -> str:
    return f"{value:,.{minor_unit}f} {currency}"


def render_pdf(stored: StoredInvoice, *, issuer: str = "GPU platform chargeback") -> bytes:
    """The stored invoice or adjustment note as PDF bytes.

    The PDF's creation date is the end of the billing period, so the same document always
    renders to the same bytes."""
    invoice = stored.invoice
    _, period_end = month_bounds(invoice.period)
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_creation_date(period_end.astimezone(UTC))
    pdf.set_title(f"{stored.number or 'Draft'} {invoice.tenant} {invoice.period}")
    pdf.set_author(issuer)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    kind = "Adjustment note" if stored.kind is DocumentKind.ADJUSTMENT else "Invoice"
    number = stored.number or "DRAFT (not final)"
    pdf.cell(0, 10, f"{kind} {number}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    header = [
        ("Issuer", issuer),
        ("Tenant", invoice.tenant),
        ("Billing period", f"{invoice.period} (UTC)"),
        ("Plan", invoice.plan),
        ("Metering basis", invoice.basis),
        ("Rate card", invoice.rate_card_version),
        ("Currency", invoice.currency),
    ]
    if stored.adjusts:
        header.append(("Adjusts invoice", stored.adjusts))
    for label, value in header:
        pdf.cell(40, 6, label)
        pdf.cell(0, 6, value, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)

    if invoice.usage:
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(0, 7, "Usage by hardware tier and model-size class", new_x="LMARGIN",
                 new_y="NEXT")
        pdf.set_font("Helvetica", "", 8)
        with pdf.table(col_widths=(26, 22, 26, 26, 26, 20, 26),
                       text_align=("LEFT", "LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT",
                                   "RIGHT")) as table:
            table.row(["Tier", "Size class", "GPU-hours", "Reserved", "On-demand",
                       "Multiplier", "Billable units"])
            for u in invoice.usage:
                table.row([u.hardware_tier, u.size_class, number_text(u.gpu_hours),
                           number_text(u.covered_gpu_hours), number_text(u.overflow_gpu_hours),
                           number_text(u.multiplier), number_text(u.billable_units)])
        pdf.ln(4)

    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(0, 7, "Charges", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 8)
    currency, minor = invoice.currency, invoice.minor_unit
    with pdf.table(col_widths=(80, 22, 28, 20, 30),
                   text_align=("LEFT", "LEFT", "RIGHT", "RIGHT", "RIGHT")) as table:
        table.row(["Description", "Tier", "Quantity", "Unit price", "Amount"])
        for line in invoice.lines:
            table.row([line.description, line.hardware_tier or "",
                       f"{number_text(line.quantity)} {line.unit}", str(line.unit_price),
                       money_text(line.amount, currency, minor)])
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(150, 8, "Total", align="R")
    pdf.cell(30, 8, money_text(invoice.total, currency, minor), align="R", new_x="LMARGIN",
             new_y="NEXT")
    pdf.set_font("Helvetica", "", 8)
    if invoice.credit_applied:
        pdf.cell(0, 5, "Prepaid credit applied: "
                 + money_text(invoice.credit_applied, currency, minor),
                 new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 5, "Amounts are rounded half-up per line; the total is the sum of the lines.",
             new_x="LMARGIN", new_y="NEXT")
    if stored.content_hash:
        pdf.cell(0, 5, f"Content hash {stored.content_hash}", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
