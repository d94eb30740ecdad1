"""Tenant: this month's forecast (a fan chart of GPU-hours with its 80% and 95% ranges), the
budget's burn-down, the day the budget runs out at this rate, and the holds a budget put on the
tenant's queues. Self-contained: it reads only the forecast and budget tables of the mart."""

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import gate, ui

tenant = gate.require("tenant").role.tenant
assert tenant is not None

st.title("Budget and forecast")
frames = ui.tenant_frames(tenant=tenant, tables=(
    "tenant_forecasts", "tenant_budgets", "tenant_budget_days", "tenant_forecast_days",
    "budget_holds"))
forecasts = frames["tenant_forecasts"]
budgets = frames["tenant_budgets"]
if forecasts.empty and budgets.empty:
    st.info("No forecast or budget has been computed for you yet.")
    st.stop()


def _band(frame: pd.DataFrame, lo: str, hi: str, opacity: float) -> alt.Chart:
    band: alt.Chart = alt.Chart(frame).mark_area(opacity=opacity).encode(
        x=alt.X("day:T", title=None), y=alt.Y(f"{lo}:Q"), y2=f"{hi}:Q")
    return band


if not budgets.empty:
    latest = budgets["day"].max()
    row = budgets[budgets["day"] == latest].iloc[0]
    money = row["unit"] == "amount"
    unit = row["currency"] if money else "GPU-hours"

    def fmt(value: object) -> str:
        return ui.money(value, unit) if money else f"{float(str(value)):,.1f} GPU-hours"

    st.subheader(f"Budget for {row['period']}")
    st.caption(f"Data through {latest:%Y-%m-%d}. A money budget counts what you are invoiced: "
               "on-demand charges so far, and fixed charges and any minimum evenly over the "
               "month's hours, less credit.")
    first, second, third = st.columns(3)
    first.metric("Spent", fmt(row["spent"]),
                 f"{float(row['used_pct']):.1f}% of {fmt(row['limit_value'])}",
                 delta_color="off")
    if pd.notna(row["forecast"]):
        second.metric("Forecast for the month", fmt(row["forecast"]),
                      f"95% range {fmt(row['forecast_lo95'])} to {fmt(row['forecast_hi95'])}",
                      delta_color="off")
    runs_out = row["runs_out_on"]
    third.metric("At this rate the budget runs out on",
                 f"{pd.Timestamp(runs_out):%Y-%m-%d}" if pd.notna(runs_out)
                 else "not this month")
    if row["enforcement"] != "off":
        st.caption("When the budget is spent, new work on your queue waits (Kueue stopPolicy "
                   "Hold; running work continues) until the next month or a raised budget"
                   + (" (dry run: checked, not applied)." if row["enforcement"] == "dry-run"
                      else "."))

    days = frames["tenant_budget_days"]
    days = ui.as_float(days[days["day"] == latest].drop(columns=["day"])
                       .rename(columns={"budget_day": "day"}),
                       "actual", "forecast", "forecast_lo80", "forecast_hi80", "forecast_lo95",
                       "forecast_hi95")
    limit = float(str(row["limit_value"]))
    remaining = days.copy()
    for column in ("actual", "forecast", "forecast_lo80", "forecast_hi80", "forecast_lo95",
                   "forecast_hi95"):
        remaining[column] = limit - remaining[column]
    st.subheader("Burn-down: budget left at each day's end")
    chart = (_band(remaining, "forecast_hi95", "forecast_lo95", 0.15)
             + _band(remaining, "forecast_hi80", "forecast_lo80", 0.3)
             + alt.Chart(remaining).mark_line().encode(
                 x="day:T", y=alt.Y("actual:Q", title=f"budget left ({unit})"))
             + alt.Chart(remaining).mark_line(strokeDash=[4, 4]).encode(x="day:T", y="forecast:Q")
             + alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color="red").encode(y="y:Q"))
    st.altair_chart(chart, width="stretch")

if not forecasts.empty:
    latest = forecasts["day"].max()
    row = forecasts[forecasts["day"] == latest].iloc[0]
    st.subheader(f"Forecast GPU-hours for {row['period']}")
    st.caption(f"Month-to-date GPU-hours by each day's end: {float(row['actual_gpu_hours']):,.1f} "
               f"by {latest:%Y-%m-%d}, then the forecast with its 80% (darker) and 95% ranges. "
               f"Month-end spend {ui.money(row['amount'], row['currency'])} (95% range "
               f"{ui.money(row['amount_lo95'], row['currency'])} to "
               f"{ui.money(row['amount_hi95'], row['currency'])}).")
    fan = frames["tenant_forecast_days"]
    fan = fan[fan["day"] == latest].drop(columns=["day"]).rename(columns={"forecast_day": "day"})
    start = {"day": latest, **{c: row["actual_gpu_hours"] for c in (
        "gpu_hours", "gpu_hours_lo80", "gpu_hours_hi80", "gpu_hours_lo95", "gpu_hours_hi95")}}
    fan = ui.as_float(pd.concat([pd.DataFrame([start]), fan], ignore_index=True), "gpu_hours",
                      "gpu_hours_lo80", "gpu_hours_hi80", "gpu_hours_lo95", "gpu_hours_hi95")
    chart = (_band(fan, "gpu_hours_lo95", "gpu_hours_hi95", 0.15)
             + _band(fan, "gpu_hours_lo80", "gpu_hours_hi80", 0.3)
             + alt.Chart(fan).mark_line().encode(
                 x="day:T", y=alt.Y("gpu_hours:Q", title="month-to-date GPU-hours")))
    st.altair_chart(chart, width="stretch")

holds = frames["budget_holds"]
st.subheader("Queue holds by your budget")
if holds.empty:
    st.caption("Your budget has not held any of your queues.")
else:
    st.dataframe(holds[["changed_at", "kind", "namespace", "name", "action", "reason",
                        "outcome"]].sort_values("changed_at", ascending=False),
                 hide_index=True, width="stretch")
