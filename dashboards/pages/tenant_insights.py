"""Tenant: detected usage shifts and the recommendations made for this tenant."""

import streamlit as st

from dashboards import gate, ui

tenant = gate.require("tenant").role.tenant
assert tenant is not None

st.title("Shifts and recommendations")
for table, title, empty in (
    ("usage_shifts", "Usage shifts", "No sustained change in your usage has been detected."),
    ("tier_change_recommendations", "Plan recommendations",
     "Your plan fits your projected usage."),
    ("reservation_recommendations", "Reservation recommendations",
     "No reservation recommendation has been published yet."),
):
    st.subheader(title)
    frame = ui.tenant_data(tenant=tenant, table=table)
    if frame.empty:
        st.caption(empty)
        continue
    if "day" in frame.columns:
        # The analytics rewrite one day's analysis per run: the latest day is the current one.
        latest = frame["day"].max()
        frame = frame[frame["day"] == latest]
        st.caption(f"Analysis of {latest:%Y-%m-%d}")
    st.dataframe(frame.drop(columns=["tenant"], errors="ignore"), hide_index=True,
                 width="stretch")
