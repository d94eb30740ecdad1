"""Tenant: one month's bill explained, from GPU-hours to billable units to invoice lines
(models.billing.explain), each figure with the number of the invoice line it makes up."""

from decimal import Decimal

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import gate, ui
from models.billing.explain import explain
from models.billing.invoices import DocumentKind

tenant = gate.require("tenant").role.tenant
assert tenant is not None

st.title("Your bill, explained")
documents = ui.tenant_data(tenant=tenant, table="invoices")
invoices = documents[documents["kind"] == DocumentKind.INVOICE.value] if not documents.empty \
    else documents
if invoices.empty:
    st.info("No bill has been computed for you yet.")
    st.stop()
periods = list(invoices["period"])[::-1]
period = st.selectbox("Billing month", periods)
row = invoices[invoices["period"] == period].iloc[-1]
stored = ui.stored_invoice(row)
bill = explain(stored.invoice)
currency = bill.currency

first, second, third, fourth = st.columns(4)
first.metric("GPU-hours", f"{bill.gpu_hours:,.1f}")
second.metric("Covered by reservations",
              f"{sum((u.covered_gpu_hours for u in bill.units), Decimal(0)):,.1f} GPU-hours")
third.metric("Billable on-demand units", f"{bill.billable_units:,.1f}")
fourth.metric(f"Total of {stored.stem}", ui.money(bill.total, currency))
st.caption("GPU-hours inside a reservation are paid by the reservation line; the rest are "
           "on demand. On-demand GPU-hours times the model-size multiplier are billable units, "
           "priced by the tier's bands. Line numbers are those of the invoice (PDF and CSV).")
notes = documents[(documents["period"] == period)
                  & (documents["kind"] != DocumentKind.INVOICE.value)]
if not notes.empty:
    st.info(f"{period} also has {len(notes)} adjustment note(s) for usage that arrived after "
            "the invoice: see Invoices. They are not part of the figures below.")

st.subheader("From GPU-hours to billable units")
units = pd.DataFrame([{
    "hardware tier": u.hardware_tier, "model size": u.size_class,
    "GPU-hours": float(u.gpu_hours), "covered by reservation": float(u.covered_gpu_hours),
    "on demand": float(u.on_demand_gpu_hours), "size multiplier": float(u.multiplier),
    "billable units": float(u.billable_units),
    "on invoice lines": ", ".join(str(n) for n in u.lines) or "-",
} for u in bill.units])
# Static tables, not st.dataframe: a data grid is a canvas widget of its own, the two were
# most of the browser's work on a switch to this page (docs/benchmarks.md), and these rows are
# read in line order (a running total), never re-sorted.
hours = "{:,.1f}"
st.table(units.style.format({
    "GPU-hours": hours, "covered by reservation": hours, "on demand": hours,
    "billable units": hours, "size multiplier": "x {:.2f}"}), hide_index=True)

st.subheader("From units to the total")
steps = pd.DataFrame([{
    "line": s.line_no, "what": s.description, "kind": s.kind.value,
    "quantity": float(s.quantity), "unit": s.unit, "unit price": float(s.unit_price),
    "amount": float(s.amount), "running total": float(s.running_total),
} for s in bill.steps])
st.table(steps.style.format({"quantity": "{:,.2f}", "unit price": "{:.4f}",
                             "amount": f"{{:,.2f}} {currency}",
                             "running total": f"{{:,.2f}} {currency}"}), hide_index=True)
waterfall = steps.assign(start=steps["running total"] - steps["amount"],
                         label=steps["line"].astype(str) + ". " + steps["what"],
                         direction=steps["amount"].map(lambda a: "adds" if a >= 0
                                                       else "takes off"))
st.altair_chart(alt.Chart(waterfall).mark_bar().encode(
    y=alt.Y("label:N", sort=None, title=None, axis=alt.Axis(labelLimit=400)),
    x=alt.X("start:Q", title=f"running total ({currency})"), x2="running total:Q",
    color=alt.Color("direction:N", title=None, scale=alt.Scale(
        domain=["adds", "takes off"],
        range=[ui.COLOURS["billed"], ui.COLOURS["reserved"]])),
    # Typed tooltips: shorthand strings in a list make Altair match each against the
    # schema's alternatives, a tenth of this page's run.
    tooltip=[alt.Tooltip("line:O"), alt.Tooltip("what:N"),
             alt.Tooltip("amount:Q", format=",.2f")]),
    width="stretch")
