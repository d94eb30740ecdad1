"""Documents as PDF for people: invoices, credit and debit notes, showback statements.

Header with the document's title and number, the issuer and bill-to blocks, issue and due
dates with the payment terms, cost center, GL account and purchase order; then usage by tier
and size class, the charges and the total. Everything printed is in the stored document (the
parties as they were when it was made), so a filed document renders the same forever."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal

from fpdf import FPDF

from models.billing.invoices import DocumentType, StoredInvoice
from models.billing.rate_cards import Party, month_bounds

NOT_PAYABLE = ("Showback statement: the cost of your GPU usage for the period, "
               "for information. Nothing is due.")


def number_text(value: Decimal) -> str:
    """A quantity as people read it, exactly: grouped thousands, no trailing zeros."""
    text = f"{value.normalize():,f}"
    return "0" if text in ("-0", "0") else text


def money_text(value: Decimal, currency: str, minor_unit: int) -> str:
    return f"{value:,.{minor_unit}f} {currency}"


def _party_lines(party: Party) -> list[str]:
    lines = [party.legal_name, *party.address]
    if party.tax_id:
        lines.append(f"Tax ID {party.tax_id}")
    if party.email:
        lines.append(party.email)
    return lines


def render_pdf(stored: StoredInvoice) -> bytes:
    """The stored document as PDF bytes.

    The PDF's creation date is the end of the billing period, so the same document always
    renders to the same bytes."""
    invoice = stored.invoice
    kind = stored.document_type
    _, period_end = month_bounds(invoice.period)
    parties = stored.parties
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_creation_date(period_end.astimezone(UTC))
    pdf.set_title(f"{kind.heading} {stored.stem} {invoice.tenant} {invoice.period}")
    if parties is not None:
        pdf.set_author(parties.issuer.legal_name)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    if stored.number:
        title = f"{kind.heading} {stored.number}"
    elif stored.status.value == "final":
        title = f"{kind.heading} {stored.stem}"
    else:
        title = f"{kind.heading} DRAFT (not final)"
    pdf.cell(0, 10, title, new_x="LMARGIN", new_y="NEXT")

    # Issuer on the left, bill-to on the right.
    if parties is not None:
        pdf.set_font("Helvetica", "B", 9)
        top = pdf.get_y()
        pdf.cell(95, 5, "Issuer")
        pdf.cell(0, 5, "Bill to", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 9)
        left = _party_lines(parties.issuer)
        right = _party_lines(parties.bill_to.party)
        for i in range(max(len(left), len(right))):
            pdf.cell(95, 5, left[i] if i < len(left) else "")
            pdf.cell(0, 5, right[i] if i < len(right) else "", new_x="LMARGIN", new_y="NEXT")
        pdf.set_y(max(pdf.get_y(), top))
        pdf.ln(3)

    pdf.set_font("Helvetica", "", 10)
    header = [("Tenant", invoice.tenant), ("Billing period", f"{invoice.period} (UTC)")]
    if stored.issue_date is not None:
        header.append(("Issue date", stored.issue_date.isoformat()))
    if parties is not None and kind.payable:
        header.append(("Payment terms", parties.bill_to.payment_terms))
        if stored.due_date is not None:
            header.append(("Due date", stored.due_date.isoformat()))
    if parties is not None:
        bill_to = parties.bill_to
        for label, value in (("Cost center", bill_to.cost_center),
                             ("GL account", bill_to.gl_account),
                             ("Purchase order", bill_to.purchase_order)):
            if value:
                header.append((label, value))
    header += [("Plan", invoice.plan), ("Metering basis", invoice.basis),
               ("Rate card", invoice.rate_card_version), ("Currency", invoice.currency)]
    if stored.adjusts:
        corrected = "statement" if kind is DocumentType.STATEMENT_CORRECTION else "invoice"
        header.append((f"Corrects {corrected}", stored.adjusts))
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

    if invoice.tokens:
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(0, 7, "Tokens by model (memo: their cost is in the GPU charges below)",
                 new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 8)
        with pdf.table(col_widths=(44, 26, 26, 22, 31, 31),
                       text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT", "RIGHT")
                       ) as table:
            table.row(["Model", "Input tokens", "Output tokens", "GPU-hours",
                       f"{invoice.currency} / M input", f"{invoice.currency} / M output"])
            for t in invoice.tokens:
                table.row([t.model, f"{t.input_tokens:,}", f"{t.output_tokens:,}",
                           number_text(t.gpu_hours),
                           "" if t.cost_per_million_input is None
                           else number_text(t.cost_per_million_input),
                           "" if t.cost_per_million_output is None
                           else number_text(t.cost_per_million_output)])
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
    if not kind.payable:
        pdf.cell(0, 5, NOT_PAYABLE, new_x="LMARGIN", new_y="NEXT")
    if invoice.credit_applied:
        pdf.cell(0, 5, "Prepaid credit applied: "
                 + money_text(invoice.credit_applied, currency, minor),
                 new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 5, "Amounts are rounded half-up per line; the total is the sum of the lines.",
             new_x="LMARGIN", new_y="NEXT")
    if stored.content_hash:
        pdf.cell(0, 5, f"Content hash {stored.content_hash}", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
