"""Operator: usage shifts, tier-change and reservation recommendations, and what was applied."""

import streamlit as st

from dashboards import gate, ui

gate.require("operator")

st.title("Shifts and recommendations")
for table, title, empty in (
    ("usage_shifts", "Usage shifts", "No shift detection has been published yet."),
    ("tier_change_recommendations", "Tier-change recommendations",
     "No tier-change recommendation has been published yet."),
    ("reservation_recommendations", "Reservation recommendations",
     "No reservation recommendation has been published yet."),
    ("scheduler_quota_changes", "Scheduler quota changes (apply status)",
     "No quota change has been written or applied yet."),
):
    st.subheader(title)
    frame = ui.audience_data(audience="operator", table=table)
    if frame.empty:
        st.caption(empty)
        continue
    if "day" in frame.columns and table != "scheduler_quota_changes":
        # The analytics rewrite one day's analysis per run: the latest day is the current one.
        latest = frame["day"].max()
        frame = frame[frame["day"] == latest]
        st.caption(f"Analysis of {latest:%Y-%m-%d}")
    st.dataframe(frame, hide_index=True, width="stretch")

st.subheader("Collector coverage: nodes with missing hours")
nodes = ui.audience_data(audience="operator", table="node_days")
gaps = nodes[nodes["hours_reported"] < 24]
if gaps.empty:
    st.caption("Every node reported every hour of every day in range.")
else:
    st.dataframe(gaps, hide_index=True, width="stretch")
