"""Operator: utilization and idle by hardware tier over time; hour-of-day demand per tenant."""

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import gate, ui

gate.require("operator")

st.title("Utilization and idle")
hourly = ui.audience_data(audience="operator", table="utilization_hourly")
if hourly.empty:
    st.info("No usage has been ingested yet.")
    st.stop()
tiers = sorted(hourly["hardware_tier"].unique())
tier = st.selectbox("Hardware tier", tiers)
shown = hourly[hourly["hardware_tier"] == tier].set_index("hour").sort_index()
# Hours with no rows at all (a collector gap) are drawn as zero, not bridged by a line.
full = pd.date_range(shown.index.min(), shown.index.max(), freq="h")
series = shown[["capacity_gpus", "allocated_gpus", "used_gpus", "idle_gpus",
                "shared_idle_gpus"]].reindex(full, fill_value=0.0)
series.columns = ["capacity", "allocated to tenants", "used (SM activity)", "idle",
                  "shared endpoint idle"]
# A year of hours is more points than a chart can show; daily means keep the shape.
if len(series) > 62 * 24:
    series = series.resample("D").mean()
capacity = shown["capacity_gpus"].sum()
a, b, c = st.columns(3)
a.metric("Allocated", f"{shown['allocated_gpus'].sum() / capacity:.1%}" if capacity else "-")
b.metric("Used (SM activity)", f"{shown['used_gpus'].sum() / capacity:.1%}" if capacity else "-")
c.metric("Idle", f"{(shown['idle_gpus'].sum() + shown['shared_idle_gpus'].sum()) / capacity:.1%}"
         if capacity else "-")
st.line_chart(series, y_label="GPUs")

st.subheader("Demand by hour of day (UTC) and tenant")
demand = ui.audience_data(audience="operator", table="demand_hour_of_day")
heatmap = alt.Chart(demand).mark_rect().encode(
    x=alt.X("hour_of_day:O", title="hour of day (UTC)"),
    y=alt.Y("tenant:N", title=None),
    color=alt.Color("mean_gpus:Q", title="mean GPUs", scale=alt.Scale(scheme="blues")),
    tooltip=["tenant", "hour_of_day", alt.Tooltip("mean_gpus", format=".2f"),
             alt.Tooltip("peak_gpus", format=".2f")],
)
st.altair_chart(heatmap, width="stretch")
