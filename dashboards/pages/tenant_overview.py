"""Tenant: at a glance what changed, what the month will cost (the forecast with its range),
where the budget stands and what to do (the top advice card); then month-to-date cost,
forecast, and cost and GPU-hours by day, model, size and tier, and for any date range by
workload kind."""

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import cards, gate, ui
from models.planning.advice import describe_budget, describe_forecast, describe_shift

tenant = gate.require("tenant").role.tenant
assert tenant is not None

st.title("Costs and usage")
frames = ui.tenant_frames(tenant=tenant, tables=(
    "periods", "usage_daily", "cost_daily", "usage_shifts", "tenant_forecasts",
    *cards.ADVICE_TABLES))
periods = frames["periods"]
if periods.empty:
    st.info("No bill has been computed for you yet.")
    st.stop()

shifts = cards.latest(frames["usage_shifts"])
if not shifts.empty:
    # The latest confirmed change, a change in GPU-hours (what the bill counts) before one in
    # peak GPUs or model mix of the same day.
    shifts = shifts[shifts["confirmed"]].assign(
        hours=shifts["series_name"].str.startswith("gpu_hours[")).sort_values(
        ["change_date", "hours"])
plans = cards.latest(frames["tier_change_recommendations"])
advice = cards.advice_of(frames)
forecasts = cards.latest(frames["tenant_forecasts"])
budgets = cards.latest(frames["tenant_budgets"])
changed, next_month, budget, to_do = st.columns(4)
with changed.container(border=True, key="glance-changed"):
    st.markdown("**What changed**")
    if shifts.empty:
        st.markdown("Your usage has been steady: no lasting change detected.")
    else:
        st.markdown(describe_shift({str(k): v for k, v in shifts.iloc[-1].items()}))
with next_month.container(border=True, key="glance-next-month"):
    st.markdown("**What it will cost**")
    latest_period = periods.iloc[-1]
    if not forecasts.empty:
        st.markdown(describe_forecast(cards.records(forecasts)[0]))
    else:
        forecast = ui.money(latest_period["forecast_total"], latest_period["currency"])
        st.markdown(f"About **{forecast}** for {latest_period['period']} at this month's "
                    "rate.")
    if not plans.empty:
        plan = plans.iloc[0]
        st.markdown(f"About **{ui.money(plan['current_plan_total'], plan['currency'])}** in "
                    f"{plan['period']} on your {plan['current_plan']} plan, at your usage "
                    "since the change.")
with budget.container(border=True, key="glance-budget"):
    st.markdown("**Budget**")
    if budgets.empty:
        st.markdown("No budget is set for this month.")
    else:
        st.markdown(describe_budget(cards.records(budgets)[0]))
    st.page_link("pages/tenant_budget.py", label="Budget and forecast",
                 icon=":material/savings:")
with to_do.container(border=True, key="glance-to-do"):
    st.markdown("**What to do**")
    if not advice:
        st.markdown("Nothing: your plan and reservations fit your usage.")
    else:
        top = advice[0]
        st.markdown(f"{top.recommendation}: {cards.saving_label(top)}.")
        if len(advice) > 1:
            st.caption(f"{len(advice) - 1} more on the Advice page.")
        st.page_link("pages/tenant_insights.py", label="Advice and evidence",
                     icon=":material/trending_up:")

period = st.selectbox("Billing month", list(periods["period"])[::-1])
row = periods[periods["period"] == period].iloc[0]
currency = row["currency"]
open_month = not row["closed"] and row["elapsed_hours"] < row["period_hours"]

usage = frames["usage_daily"]
usage = usage[pd.to_datetime(usage["day"]).dt.strftime("%Y-%m") == period]
costs = frames["cost_daily"]
costs = costs[costs["period"] == period]

first, second, third, fourth = st.columns(4)
first.metric("Month to date" if open_month else "Billed for the month",
             ui.money(row["billed_total"], currency))
second.metric("Forecast to month end", ui.money(row["forecast_total"], currency),
              help="On-demand charges continue at the month-to-date rate; reservations, "
              "plan fees, minimum commitment and credit as billed.")
third.metric("GPU-hours", f"{usage['allocated_gpu_hours'].astype(float).sum():,.1f}")
fourth.metric("Data through", f"{row['elapsed_hours'] / 24:.1f} of "
              f"{row['period_hours'] / 24:.0f} days")
st.caption("Daily costs are estimates that add up to the month's bill: each tier's on-demand "
           "charge spread over its GPU-hours, fixed charges (reservations, base fee, minimum) "
           "evenly over the month's hours.")

costs = ui.as_float(costs, "cost", "gpu_hours")
costs["tier"] = costs["hardware_tier"].fillna("fixed charges")
# Every tier the tenant has used, not only this month's: a tier keeps its colour across
# months and between the two charts.
tiers = {*frames["usage_daily"]["hardware_tier"].dropna(),
         *frames["cost_daily"]["hardware_tier"].dropna()}
# Charts are Altair with declared types: Streamlit's st.bar_chart reshapes and re-infers a
# frame on every rerun, which made up most of this page's rerun time (sampled on the render
# benchmark's marts).
st.subheader("Cost by day")
by_day = costs.groupby(["day", "tier"], as_index=False)["cost"].sum()
st.altair_chart(alt.Chart(by_day).mark_bar().encode(
    x=alt.X("day:T", title=None), y=alt.Y("cost:Q", title=f"cost ({currency})"),
    color=alt.Color("tier:N", title=None, scale=ui.tier_scale(tiers, "fixed charges"))),
    width="stretch")

usage = ui.as_float(usage, "allocated_gpu_hours")
st.subheader("GPU-hours by day")
st.altair_chart(alt.Chart(usage.groupby(["day", "hardware_tier"], as_index=False)[
    "allocated_gpu_hours"].sum()).mark_bar().encode(
    x=alt.X("day:T", title=None), y=alt.Y("allocated_gpu_hours:Q", title="GPU-hours"),
    color=alt.Color("hardware_tier:N", title=None, scale=ui.tier_scale(tiers))),
    width="stretch")

# Tables without a bar chart each: the chart said what the sorted table says. Static tables,
# not st.dataframe: each data grid is a canvas widget of its own, and the three made up a
# quarter of the browser's work on this page (docs/benchmarks.md); a few rows sorted by cost
# need no sorting or scrolling.
on_demand = costs[costs["charge"] == "on-demand"]
cost_column = f"on-demand cost ({currency})"
columns = st.columns(3)
for column, field, label in zip(columns, ("model", "size_class", "hardware_tier"),
                                ("model", "model-size class", "hardware tier"), strict=True):
    with column:
        st.subheader(f"By {label}")
        grouped = on_demand.groupby(field)[["gpu_hours", "cost"]].sum().sort_values(
            "cost", ascending=False).rename(columns={"gpu_hours": "GPU-hours",
                                                     "cost": cost_column})
        st.table(grouped.style.format({"GPU-hours": "{:,.1f}", cost_column: "{:,.2f}"}))


@st.fragment
def date_range(period: str, currency: str, usage: pd.DataFrame, costs: pd.DataFrame) -> None:
    """Cost, GPU-hours and workload kinds for any days, and the daily cost as CSV. A
    fragment, drawn on request: picking days reruns only this part, and the first screen
    does without its chart, table and date picker (a quarter of the browser's work on it,
    docs/benchmarks.md)."""
    st.subheader("Any date range")
    if not st.toggle("Show costs, used against allocated GPU-hours and workload kinds for "
                     "any days, with the daily cost as CSV", key="overview-range-shown"):
        return
    days = pd.to_datetime(usage["day"]).dt.date
    month_days = days[pd.to_datetime(usage["day"]).dt.strftime("%Y-%m") == period]
    picked = st.date_input("Days", value=(month_days.min(), month_days.max()),
                           min_value=days.min(), max_value=days.max(), key="overview-range")
    if not (isinstance(picked, tuple) and len(picked) == 2):
        st.caption("Pick a first and a last day.")
        return
    first_day, last_day = picked
    in_range = pd.to_datetime(costs["day"]).dt.date.between(first_day, last_day)
    daily = ui.as_float(costs[in_range].copy(), "cost", "gpu_hours").groupby(
        ["day", "period"], as_index=False)[["cost", "gpu_hours"]].sum()
    daily["currency"] = currency
    st.caption(f"{first_day:%Y-%m-%d} to {last_day:%Y-%m-%d}: estimated cost "
               f"{daily['cost'].sum():,.2f} {currency} for {daily['gpu_hours'].sum():,.1f} "
               "billed GPU-hours.")
    ui.download("Daily cost (CSV)", lambda: daily.round({"cost": 2, "gpu_hours": 6}).to_csv(
        index=False), file_name=f"daily-cost-{first_day:%Y%m%d}-{last_day:%Y%m%d}.csv",
        mime="text/csv", key="overview-daily-csv")
    kinds = ui.as_float(costs[in_range & (costs["charge"] == "on-demand")].copy(),
                        "cost", "gpu_hours")
    kinds = kinds.assign(workload=kinds["workload_kind"].fillna("unknown")).groupby(
        "workload", as_index=False)[["gpu_hours", "cost"]].sum().sort_values(
        "cost", ascending=False)
    st.markdown("**By workload kind** (training, inference, batch, fine-tuning)")
    st.dataframe(kinds.rename(columns={"workload": "workload kind", "gpu_hours": "GPU-hours",
                                       "cost": f"on-demand cost ({currency})"}),
                 hide_index=True, width="stretch", column_config={
                     **ui.money_columns(kinds, f"on-demand cost ({currency})"),
                     "GPU-hours": ui.HOURS})
    used = usage[days.between(first_day, last_day)]
    used = ui.as_float(used.copy(), "allocated_gpu_hours", "used_gpu_hours").groupby(
        "day", as_index=False)[["allocated_gpu_hours", "used_gpu_hours"]].sum().rename(
        columns={"allocated_gpu_hours": "allocated", "used_gpu_hours": "used"}).melt(
        id_vars="day", var_name="GPU-hours", value_name="gpu_hours")
    # Altair with declared types: st.line_chart's own reshaping of the frame was the most
    # expensive element of the page's rerun (sampled on the render benchmark's marts).
    st.altair_chart(alt.Chart(used).mark_line().encode(
        x=alt.X("day:T", title=None), y=alt.Y("gpu_hours:Q", title="GPU-hours a day"),
        color=alt.Color("GPU-hours:N", scale=alt.Scale(
            domain=["allocated", "used"],
            range=[ui.COLOURS["billed"], ui.COLOURS["usage-used"]]))), width="stretch")
    st.caption("Allocated: GPU-hours your workloads held. Used: the part the GPUs were busy "
               "(utilization). Allocated but unused hours are billed under an allocation "
               "basis; see your plan's metering basis.")


date_range(period, currency, frames["usage_daily"], frames["cost_daily"])
