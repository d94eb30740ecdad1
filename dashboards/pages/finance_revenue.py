"""Finance: revenue against GPU capacity, with idle and unattributed GPU-hours valued."""

import streamlit as st

from dashboards import gate, ui

gate.require("finance")

st.title("Revenue and GPU capacity")
revenue = ui.audience_data(audience="finance", table="revenue")
capacity = ui.audience_data(audience="finance", table="revenue_vs_capacity")
if revenue.empty and capacity.empty:
    st.info("Nothing has been billed yet.")
    st.stop()
st.subheader("Billed per month")
st.dataframe(revenue, hide_index=True, width="stretch")

period = st.selectbox("Month", sorted(capacity["period"].unique())[::-1])
shown = ui.as_float(capacity[capacity["period"] == period].copy(), "capacity_gpu_hours",
                    "tenant_gpu_hours", "idle_gpu_hours", "shared_idle_gpu_hours",
                    "unattributed_gpu_hours", "on_demand_revenue", "idle_value",
                    "unattributed_value")
totals = shown[["capacity_gpu_hours", "idle_gpu_hours", "shared_idle_gpu_hours",
                "unattributed_gpu_hours", "on_demand_revenue", "idle_value",
                "unattributed_value"]].sum()
a, b, c, d = st.columns(4)
a.metric("GPU capacity (GPU-hours)", f"{totals['capacity_gpu_hours']:,.0f}")
idle = totals["idle_gpu_hours"] + totals["shared_idle_gpu_hours"]
b.metric("Idle", f"{idle:,.0f} GPU-h",
         f"{idle / totals['capacity_gpu_hours']:.1%} of capacity",
         delta_color="off", delta_arrow="off")
c.metric("Unattributed", f"{totals['unattributed_gpu_hours']:,.0f} GPU-h",
         f"{totals['unattributed_value']:,.2f} at realized price",
         delta_color="off", delta_arrow="off")
d.metric("On-demand revenue", f"{totals['on_demand_revenue']:,.2f}",
         f"idle worth {totals['idle_value']:,.2f}",
         delta_color="off", delta_arrow="off")
st.subheader("Where the GPU-hours went, by hardware tier")
st.bar_chart(shown.set_index("hardware_tier")[[
    "tenant_gpu_hours", "idle_gpu_hours", "shared_idle_gpu_hours", "unattributed_gpu_hours",
]].rename(columns={"tenant_gpu_hours": "billed to tenants", "idle_gpu_hours": "idle",
                   "shared_idle_gpu_hours": "shared endpoint idle",
                   "unattributed_gpu_hours": "unattributed"}),
             y_label="GPU-hours", x_label="hardware tier")
st.subheader("Revenue against the value of idle and unattributed capacity")
st.bar_chart(shown.set_index("hardware_tier")[[
    "on_demand_revenue", "idle_value", "unattributed_value",
]].rename(columns={"on_demand_revenue": "on-demand revenue", "idle_value": "idle capacity",
                   "unattributed_value": "unattributed usage"}),
             stack=False, y_label="amount", x_label="hardware tier")
st.caption("Idle (`__idle__`, `__shared_idle__`) and unattributed GPU-hours are valued at the "
           "tier's realized price: on-demand revenue per billed GPU-hour. Fixed charges "
           "(reservations, plan fees, minimum commitments) are in the monthly totals above.")
st.dataframe(capacity[capacity["period"] == period], hide_index=True, width="stretch")

# --- forecast revenue (self-contained: reads only `revenue_forecast`) ---
forecast = ui.audience_data(audience="finance", table="revenue_forecast")
st.subheader("Forecast revenue for the month")
if forecast.empty:
    st.caption("No forecast has been computed yet.")
else:
    month = forecast["period"].max()
    rows = forecast[forecast["period"] == month]
    for currency, group in rows.groupby("currency"):
        amounts = ui.as_float(group.copy(), "amount", "amount_lo95", "amount_hi95")
        st.metric(f"{month}: forecast invoiced ({currency})",
                  ui.money(group["amount"].sum(), str(currency)),
                  f"range {amounts['amount_lo95'].sum():,.2f} to "
                  f"{amounts['amount_hi95'].sum():,.2f}", delta_color="off")
    st.caption(f"Forecast of {rows['forecast_of'].max():%Y-%m-%d}, each tenant's invoice total "
               "priced by the rate card. The range adds up each tenant's 95% range, as if every "
               "tenant landed at the same end of it: wider than the total's own 95% range.")
    st.dataframe(rows.drop(columns=["period"]), hide_index=True, width="stretch")
