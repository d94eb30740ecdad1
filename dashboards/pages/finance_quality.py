"""Finance: data-quality coverage: GPU-seconds attributed, nodes with missing days, and what
the collectors could not read."""

import streamlit as st

from dashboards import gate, ui
from models.ledger.gaps import REASON_TEXT, GapReason

gate.require("finance")

st.title("Data quality")
coverage = ui.audience_data(audience="finance", table="coverage_daily")
if coverage.empty:
    st.info("No usage has been ingested yet.")
    st.stop()
coverage = ui.as_float(coverage, "capacity_gpu_hours", "tenant_gpu_hours",
                       "unattributed_gpu_hours")
allocated = coverage["tenant_gpu_hours"].sum() + coverage["unattributed_gpu_hours"].sum()
nodes = ui.audience_data(audience="finance", table="node_days")
gaps = nodes[nodes["hours_reported"] < 24]
unread = ui.audience_data(audience="finance", table="collection_gaps")
a, b, c, d = st.columns(4)
a.metric("GPU-seconds attributed to a tenant",
         f"{coverage['tenant_gpu_hours'].sum() / allocated:.2%}" if allocated else "-")
b.metric("Rows without utilization", f"{int(coverage['rows_without_utilization'].sum()):,}")
c.metric("Node-days with missing hours", f"{len(gaps):,}")
d.metric("Collection gaps", f"{len(unread):,}")
st.subheader("What the collectors could not read")
if unread.empty:
    st.caption("Every collector read its whole source: no usage is missing for that reason.")
else:
    st.caption("No usage rows exist for these times and places: their GPU-seconds are "
               "neither billed to a tenant nor counted as idle.")
    st.dataframe(unread.assign(
        node=unread["node"].fillna("every node"),
        device=unread["gpu_uuid"].fillna("every device"),
        what=[f"{source} {REASON_TEXT[GapReason(reason)]}"
              for source, reason in zip(unread["source"], unread["reason"], strict=True)],
    )[["cluster", "node", "device", "gap_start", "gap_end", "what", "first_detail"]],
        hide_index=True, width="stretch")
st.subheader("Share attributed, by day")
st.line_chart(coverage.set_index("day")[["attributed_share"]], y_label="share")
st.subheader("Nodes with missing hours")
if gaps.empty:
    st.caption("Every node reported every hour of every day in range.")
else:
    st.dataframe(gaps, hide_index=True, width="stretch")
st.subheader("Daily coverage")
st.dataframe(coverage, hide_index=True, width="stretch")
st.subheader("Spool files set aside")
quarantine = ui.audience_data(audience="finance", table="spool_quarantine")
if quarantine.empty:
    st.caption("Every spool file could be read.")
else:
    st.warning(f"{len(quarantine):,} spool file(s) could not be read and were moved to the "
               "spool's quarantine folder: their usage is missing from the days below until "
               "they are repaired and put back.")
    st.dataframe(quarantine, hide_index=True, width="stretch")
