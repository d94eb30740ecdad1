"""Tenant: reserved GPUs against GPUs used, hour by hour."""

import pandas as pd
import streamlit as st

from dashboards import gate, ui

tenant = gate.require("tenant").role.tenant
assert tenant is not None

st.title("Reservations")
hours = ui.as_float(ui.tenant_data(tenant=tenant, table="reservations"), "reserved_gpus",
                    "used_gpus", "covered_gpus")
if hours.empty:
    st.info("You hold no capacity reservation. On-demand GPU-hours are billed at the rate "
            "card's band prices; see Advice for whether one would pay off.")
    st.stop()
hours["month"] = pd.to_datetime(hours["hour"]).dt.strftime("%Y-%m")
left, right = st.columns(2)
tier = left.selectbox("Hardware tier", sorted(hours["hardware_tier"].unique()))
month = right.selectbox("Month", sorted(hours["month"].unique())[::-1])
shown = hours[(hours["hardware_tier"] == tier) & (hours["month"] == month)]
reserved = shown["reserved_gpus"].sum()
covered = shown["covered_gpus"].sum()
a, b, c = st.columns(3)
a.metric("Reserved GPU-hours", f"{reserved:,.0f}")
b.metric("Used within the reservation", f"{covered:,.0f}")
c.metric("Reservation use", f"{covered / reserved:.1%}" if reserved else "-")
st.line_chart(shown.set_index("hour")[["reserved_gpus", "used_gpus"]].rename(
    columns={"reserved_gpus": "reserved", "used_gpus": "used"}), y_label="GPUs")
st.caption("Used GPUs above the reserved line overflow to on-demand prices; reserved GPUs "
           "above the used line are paid for and idle.")
