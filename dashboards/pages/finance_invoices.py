"""Finance: a billing month's documents (invoices, credit and debit notes, statements) with
their totals as numbers, the notes beside the invoices they correct, and every download: one
document, the whole month as a ZIP, the invoice register, the journal, the FOCUS datasets."""

from decimal import Decimal

import pandas as pd
import streamlit as st

from dashboards import gate, ui
from dashboards.config import exports_dir
from models.billing.exports import journal_name, period_zip, register_name, zip_name
from models.billing.journal import rows_csv
from models.billing.register import register_csv

gate.require("finance")

st.title("Invoices and exports")
invoices = ui.audience_data(audience="finance", table="invoices")
months = ui.audience_data(audience="finance", table="period_documents")
if invoices.empty or months.empty:
    st.info("No invoices have been computed yet.")
    st.stop()
# A month's documents are its invoices and the notes issued during it (as in its register,
# journal and FOCUS export); the newest month with invoices comes first.
options = sorted(months["period"].unique())[::-1]
with_invoices = set(invoices[invoices["kind"] == "invoice"]["period"])
period = st.selectbox("Billing month", options, index=next(
    (i for i, p in enumerate(options) if p in with_invoices), 0))
shown = invoices[invoices["invoice_id"].isin(months[months["period"] == period]["invoice_id"])]
documents = ui.documents_of(shown)
types = [d.document_type for d in documents]
minor_unit = min((d.invoice.minor_unit for d in documents), default=2)

columns = st.columns(5)
for column, status in zip(columns[:3], ("draft", "final", "adjusted"), strict=True):
    rows = shown[(shown["display_status"] == status) & (shown["kind"] == "invoice")]
    column.metric(f"{status.capitalize()} invoices", len(rows))
columns[3].metric("Credit and debit notes", sum(t.value.endswith("_note") for t in types))
columns[4].metric("Showback statements", sum(not t.payable for t in types))
for currency in sorted({d.invoice.currency for d in documents}):
    billed = sum((d.invoice.total for d in documents
                  if d.invoice.currency == currency and d.document_type.payable), Decimal(0))
    st.metric(f"Billed in {period} ({currency}, invoices and notes)", ui.money(billed, currency))

table = ui.document_table(shown)
st.dataframe(table, hide_index=True, width="stretch",
             column_config=ui.money_columns(table, "total", minor_unit=minor_unit))

st.subheader("Credit and debit notes with the invoices they correct")
notes = invoices[invoices["kind"] == "adjustment"]
originals = invoices[(invoices["kind"] == "invoice")
                     & (invoices["number"].isin(notes["adjusts"])
                        | invoices["invoice_id"].isin(notes["adjusts"]))]
if originals.empty:
    st.caption("No invoice has been corrected yet.")
else:
    corrections = ui.documents_of(notes)
    pairs = []
    for original in ui.documents_of(originals):
        mine = sorted((n for n in corrections if n.adjusts == original.stem),
                      key=lambda n: n.invoice_id)
        in_all = original.invoice.total + sum((n.invoice.total for n in mine), Decimal(0))
        pairs += [{"invoice": original.stem, "tenant": original.invoice.tenant,
                   "period": original.invoice.period,
                   "invoice total": float(original.invoice.total), "note": n.stem,
                   "type": n.document_type.heading, "issued": n.issue_date,
                   "note total": float(n.invoice.total), "billed in all": float(in_all),
                   "currency": n.invoice.currency} for n in mine]
    frame = pd.DataFrame(pairs)
    st.dataframe(frame, hide_index=True, width="stretch", column_config=ui.money_columns(
        frame, "invoice total", "note total", "billed in all", minor_unit=minor_unit))

st.subheader("Downloads")
labels = {f"{d.stem} · {d.invoice.tenant} · {d.document_type.heading}": i
          for i, d in enumerate(documents)}
choice = st.selectbox("Document", list(labels))
ui.invoice_downloads(shown.iloc[labels[choice]], key="finance-invoice")

journal = ui.audience_data(audience="finance", table="journal")
journal = journal[journal["period"] == period]
problems = ui.audience_data(audience="finance", table="journal_problems")
problems = problems[problems["period"] == period]
journal_text = None if journal.empty and not problems.empty else rows_csv(
    journal.to_dict("records"))
a, b, c = st.columns(3)
with a:
    ui.download(f"All documents of {period} (ZIP)",
                lambda: period_zip(documents, period, journal_text), file_name=zip_name(period),
                mime="application/zip", key="finance-zip")
with b:
    ui.download(f"Invoice register {period} (CSV)", lambda: register_csv(documents),
                file_name=register_name(period), mime="text/csv", key="finance-register")
with c:
    if journal_text is not None:
        ui.download(f"Journal {period} (CSV)", lambda: journal_text or "",
                    file_name=journal_name(period), mime="text/csv", key="finance-journal")
if not problems.empty:
    st.warning("No journal for this month: " + "; ".join(problems["problem"]))
ui.download(f"All invoice lines of {period} (CSV)", lambda: ui.lines_of(shown),
            file_name=f"invoice-lines-{period}.csv", mime="text/csv", key="finance-lines")

st.subheader("FOCUS 1.4 datasets")
focus = sorted((exports_dir() / period).glob("focus*.*"))
if not focus:
    st.caption(f"No FOCUS export for {period} yet.")
for path in focus:
    ui.download(f"{path.name} ({path.stat().st_size:,} bytes)", path.read_bytes,
                file_name=path.name.replace("focus", f"focus-{period}", 1),
                mime="application/octet-stream", key=f"focus-{path.name}")
