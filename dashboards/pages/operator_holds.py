"""Operator: the Kueue queues budgets hold now (stopPolicy Hold: no new admissions, running
work continues) and every hold and release with its reason. Self-contained: it reads only
`budget_holds`."""

import streamlit as st

from dashboards import gate, ui

gate.require("operator")

st.title("Held queues")
holds = ui.audience_data(audience="operator", table="budget_holds")
if holds.empty:
    st.info("No budget has held or released a queue yet.")
    st.stop()
holds = holds.sort_values("changed_at")
# A queue is held while the last change in force (applied, or a manifest without a cluster)
# is a hold; dry runs and refusals change nothing.
in_force = holds[holds["outcome"].isin(["applied", "manifest"])]
last = in_force.groupby(["kind", "namespace", "name"], dropna=False).tail(1)
held = last[last["action"] == "hold"]
st.subheader("Held now")
if held.empty:
    st.caption("No queue is held by a budget.")
else:
    st.dataframe(held[["kind", "namespace", "name", "tenant", "period", "changed_at", "reason",
                       "outcome"]], hide_index=True, width="stretch")
refused = holds[holds["outcome"].str.startswith(("conflict", "error"))]
if not refused.empty:
    st.warning(f"{len(refused)} hold or release refused by the API server; see below.")
st.subheader("Every change")
st.dataframe(holds.sort_values("changed_at", ascending=False), hide_index=True,
             width="stretch")
