"""Tenant: invoices and adjustment notes, with PDF, CSV and JSON downloads."""

import streamlit as st

from dashboards import gate, ui

tenant = gate.require("tenant").role.tenant
assert tenant is not None

st.title("Invoices")
invoices = ui.tenant_data(tenant=tenant, table="invoices")
if invoices.empty:
    st.info("No invoices yet.")
    st.stop()
st.dataframe(ui.invoice_table(invoices).drop(columns=["tenant"]), hide_index=True,
             width="stretch")
labels = {
    f"{row.number or '(draft)'!s} · {row.period} · {row.kind} · {row.display_status}": i
    for i, row in enumerate(invoices.itertuples())
}
choice = st.selectbox("Download", list(labels)[::-1])
chosen = invoices.iloc[labels[choice]]
st.metric(f"Total of {chosen['number'] or 'the draft'}",
          ui.money(chosen["total"], chosen["currency"]))
ui.invoice_downloads(chosen, key="tenant-invoice")
