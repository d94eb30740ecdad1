"""Finance: every tenant's invoices for a period, statuses, totals, downloads, FOCUS export."""

from decimal import Decimal

import streamlit as st

from dashboards import gate, ui
from dashboards.config import exports_dir

gate.require("finance")

st.title("Invoices and exports")
invoices = ui.audience_data(audience="finance", table="invoices")
if invoices.empty:
    st.info("No invoices have been computed yet.")
    st.stop()
period = st.selectbox("Billing month", sorted(invoices["period"].unique())[::-1])
shown = invoices[invoices["period"] == period]

columns = st.columns(4)
for column, status in zip(columns[:3], ("draft", "final", "adjusted"), strict=True):
    rows = shown[(shown["display_status"] == status) & (shown["kind"] == "invoice")]
    column.metric(f"{status.capitalize()} invoices", len(rows))
adjustments = shown[shown["kind"] == "adjustment"]
columns[3].metric("Adjustment notes", len(adjustments))
for currency, group in shown.groupby("currency"):
    total = sum((Decimal(str(v)) for v in group["total"]), Decimal(0))
    st.metric(f"Billed in {period} ({currency}, invoices and adjustments)",
              ui.money(total, str(currency)))

st.dataframe(ui.invoice_table(shown), hide_index=True, width="stretch")

st.subheader("Downloads")
labels = {f"{row.number or '(draft)'} · {row.tenant} · {row.kind}": i
          for i, row in enumerate(shown.itertuples())}
choice = st.selectbox("Invoice", list(labels))
ui.invoice_downloads(shown.iloc[labels[choice]], key="finance-invoice")

ui.download(f"All invoice lines of {period} (CSV)", lambda: ui.lines_of(shown),
            file_name=f"invoice-lines-{period}.csv", mime="text/csv", key="finance-lines")

st.subheader("FOCUS cost-and-usage export")
focus = sorted((exports_dir() / period).glob("focus.*"))
if not focus:
    st.caption(f"No FOCUS export for {period} under {exports_dir() / period} yet.")
for path in focus:
    ui.download(f"{path.name} ({path.stat().st_size:,} bytes)", path.read_bytes,
                file_name=f"focus-{period}{path.suffix}", mime="application/octet-stream",
                key=f"focus-{path.name}")
