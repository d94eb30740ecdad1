"""Tenant: advice in words, one card per recommendation (what we saw, what to do, what it saves
or costs a month under the tenant's rate card, confidence, if nothing is done), with the usage
chart as evidence. The analytics' raw rows stay behind an expander."""

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

with st.expander("The analysis behind this advice (raw tables)"):
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
