"""Tenant: advice in words, one card per recommendation (what we saw, what to do, what it saves
or costs a month under the tenant's rate card, confidence, if nothing is done), with the usage
chart as evidence. The analytics' raw rows are drawn on request."""

import pandas as pd
import streamlit as st

from dashboards import cards, gate, ui

tenant = gate.require("tenant").role.tenant
assert tenant is not None

st.title("Advice")
frames = ui.tenant_frames(tenant=tenant, tables=(*cards.ADVICE_TABLES, "usage_daily",
                                                 "usage_shifts"))
advice = cards.advice_of(frames)
usage = frames["usage_daily"]
if not advice:
    st.info("Nothing to change: your plan and reservations fit your recent usage.")
for number, card in enumerate(advice):
    cards.draw(card, usage, key=f"advice-{number}")



@st.fragment
def raw_tables(frames: dict[str, pd.DataFrame]) -> None:
    """The analytics' rows, drawn on request: an expander draws its content even while closed,
    and three data grids nobody opened were built on every visit of this page. A fragment, so
    showing them reruns only this part."""
    if not st.toggle("Show the analysis behind this advice (raw tables)",
                     key="raw-tables-shown"):
        return
    for table, title in (("usage_shifts", "Usage shifts"),
                         ("tier_change_recommendations", "Plan recommendations"),
                         ("reservation_recommendations", "Reservation recommendations")):
        frame = cards.latest(frames[table])
        st.subheader(title)
        if frame.empty:
            st.caption("None.")
        else:
            st.dataframe(frame.drop(columns=["tenant"], errors="ignore"), hide_index=True,
                         width="stretch")


raw_tables(frames)
