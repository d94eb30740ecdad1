"""Finance: revenue against GPU capacity, idle GPU cost by cause, unattributed GPU-hours."""

import altair as alt
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
money_fields = ("billed_total", "adjustments_total", "credit_applied")
revenue = ui.as_float(revenue.copy(), *money_fields)
st.dataframe(revenue, hide_index=True, width="stretch",
             column_config=ui.money_columns(revenue, *money_fields))
tenant_months = ui.audience_data(audience="finance", table="periods")
if not tenant_months.empty:
    st.subheader("Billed per tenant, month by month")
    trend = ui.as_float(tenant_months.copy(), "billed_total")
    currencies = sorted(set(tenant_months["currency"]))
    # Points on the lines: a tenant's first month is a point, not an invisible line.
    st.altair_chart(alt.Chart(trend).mark_line(point=True).encode(
        x=alt.X("period:O", title=None),
        y=alt.Y("billed_total:Q", title=f"billed ({', '.join(currencies)})"),
        color=alt.Color("tenant:N", title=None),
        tooltip=["tenant", "period", alt.Tooltip("billed_total:Q", format=",.2f")]),
        width="stretch")

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
             y_label="GPU-hours", x_label="hardware tier",
             color=[ui.COLOURS["billed"], ui.COLOURS["idle"], ui.COLOURS["shared idle"],
                    ui.COLOURS["unattributed"]])
st.subheader("Revenue against the value of idle and unattributed capacity")
st.bar_chart(shown.set_index("hardware_tier")[[
    "on_demand_revenue", "idle_value", "unattributed_value",
]].rename(columns={"on_demand_revenue": "on-demand revenue", "idle_value": "idle capacity",
                   "unattributed_value": "unattributed usage"}),
             stack=False, y_label="amount", x_label="hardware tier",
             color=[ui.COLOURS["billed"], ui.COLOURS["idle"], ui.COLOURS["unattributed"]])
st.caption("Idle (`__idle__`, `__shared_idle__`) and unattributed GPU-hours are valued at the "
           "tier's realized price: on-demand revenue per billed GPU-hour. Fixed charges "
           "(reservations, plan fees, minimum commitments) are in the monthly totals above.")
capacity_money = ("on_demand_revenue", "realized_price_per_gpu_hour", "idle_value",
                  "unattributed_value")
capacity_hours = ("capacity_gpu_hours", "tenant_gpu_hours", "idle_gpu_hours",
                  "shared_idle_gpu_hours", "unattributed_gpu_hours")
st.dataframe(ui.as_float(capacity[capacity["period"] == period].copy(), *capacity_money,
                         *capacity_hours),
             hide_index=True, width="stretch", column_config={
                 **ui.money_columns(capacity, *capacity_money),
                 **{column: ui.HOURS for column in capacity_hours}})

st.subheader("Idle GPU cost by cause")
causes = ui.audience_data(audience="finance", table="idle_by_cause")
causes = causes[causes["period"] == period]
if causes.empty:
    st.caption(f"No idle capacity recorded in {period}.")
else:
    unvalued = sorted(causes[causes["value"].isna()]["hardware_tier"].unique())
    if unvalued:
        st.warning("No value for the idle capacity of " + ", ".join(unvalued) + ": nobody was "
                   "billed for that tier this month, so it has no realized price. Its GPU-hours "
                   "are below; the values below leave it out.")
    causes = ui.as_float(causes.copy(), "gpu_hours", "value")
    by_cause = causes.groupby(["cause_order", "cause_label"], as_index=False)[
        ["gpu_hours", "value"]].sum().sort_values("cause_order")
    currency = str(causes["currency"].dropna().iloc[0]) if causes["currency"].notna().any() \
        else ""
    reserved = by_cause[by_cause["cause_label"].str.startswith("Reserved")]
    platform = by_cause.drop(reserved.index)
    a, b, c = st.columns(3)
    a.metric("Idle in all", f"{by_cause['gpu_hours'].sum():,.1f} GPU-h",
             f"{by_cause['value'].sum():,.2f} {currency}", delta_color="off", delta_arrow="off")
    b.metric("The platform's idle", f"{platform['gpu_hours'].sum():,.1f} GPU-h",
             f"{platform['value'].sum():,.2f} {currency}", delta_color="off",
             delta_arrow="off")
    c.metric("Reserved but unused (billed to its holders)",
             f"{reserved['gpu_hours'].sum():,.1f} GPU-h",
             f"{reserved['value'].sum():,.2f} {currency}", delta_color="off",
             delta_arrow="off")
    table = by_cause.drop(columns=["cause_order"]).rename(columns={
        "cause_label": "cause", "gpu_hours": "GPU-hours", "value": "value"})
    table["currency"] = currency
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config=ui.money_columns(table, "value"))
    st.bar_chart(causes.pivot_table(index="hardware_tier", columns="cause_label",
                                    values="gpu_hours", aggfunc="sum"),
                 y_label="GPU-hours", x_label="hardware tier")
    holders = ui.audience_data(audience="finance", table="idle_reserved_by_holder")
    holders = holders[holders["period"] == period]
    if not holders.empty:
        st.caption("Reserved but unused, by the tenant holding the reservation (its invoice's "
                   "reservation line pays for it):")
        holders = ui.as_float(holders.copy(), "gpu_hours", "value").groupby(
            ["tenant", "currency"], as_index=False)[["gpu_hours", "value"]].sum().rename(
            columns={"gpu_hours": "GPU-hours"})
        st.dataframe(holders, hide_index=True, width="stretch",
                     column_config=ui.money_columns(holders, "value"))
    st.caption("Each idle GPU-hour has one cause, the first that applies: a shared endpoint "
               "without requests; MIG slices no instance covers; a reservation its holder "
               "did not use (paid for by the reservation line); a queue's quota beyond what "
               "its tenant used or reserved; otherwise unreserved idle. The causes sum to the "
               "idle total exactly, in GPU-hours and in value (idle is valued at the tier's "
               "realized price, as above).")

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
    amount_fields = ("amount", "amount_lo80", "amount_hi80", "amount_lo95", "amount_hi95")
    st.dataframe(ui.as_float(rows.drop(columns=["period"]), *amount_fields), hide_index=True,
                 width="stretch", column_config=ui.money_columns(rows, *amount_fields))
