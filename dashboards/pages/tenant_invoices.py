"""Tenant: invoices, credit and debit notes (or statements), with PDF, CSV and JSON downloads."""

import streamlit as st

from dashboards import gate, ui

tenant = gate.require("tenant").role.tenant
assert tenant is not None

st.title("Invoices")
invoices = ui.tenant_data(tenant=tenant, table="invoices")
if invoices.empty:
    st.info("No invoices yet.")
    st.stop()
table = ui.document_table(invoices).drop(columns=["tenant"])
st.dataframe(table, hide_index=True, width="stretch",
             column_config=ui.money_columns(table, "total"))
labels = {
    f"{row.document} · {row.period} · {row.type} · {row.status}": i
    for i, row in enumerate(table.itertuples())
}
choice = st.selectbox("Download", list(labels)[::-1])
chosen = invoices.iloc[labels[choice]]
st.metric(f"Total of {table.iloc[labels[choice]]['document']}",
          ui.money(chosen["total"], chosen["currency"]))
ui.invoice_downloads(chosen, key="tenant-invoice")
