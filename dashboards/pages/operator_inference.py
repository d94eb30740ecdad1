"""Operator: latency SLA breaches across tenants, the dedicated reservations they call for in
GPUs, and off-peak moves in GPU-hours and the GPUs they free at peak. No money: the marts
withhold the costs and savings (models.marts.OPERATOR_WITHHELD)."""

import streamlit as st

from dashboards import cards, gate, ui

gate.require("operator")

st.title("SLAs and inference")
findings = cards.latest(ui.audience_data(audience="operator", table="latency_findings"))
st.subheader("P95 latency against declared targets")
if findings.empty:
    st.caption("No latency analysis has been published yet.")
else:
    window = findings.iloc[0]
    st.caption(f"Analysis of {window['day']:%Y-%m-%d}: requests from "
               f"{window['window_start']:%Y-%m-%d} to {window['window_end']:%Y-%m-%d %H:%M} "
               "UTC. A breach: P95 in bursts above the target x 1.2.")
    breaches = findings[findings["breached"]]
    if breaches.empty:
        st.success("No tenant breaches its P95 target in bursts.")
    else:
        st.warning("SLA breaches: " + "; ".join(
            f"{r['tenant']} on {r['model']}: P95 in bursts {float(r['p95_in_bursts_s']):.2f} s "
            f"against {float(r['target_p95_s']):g} s" for r in breaches.to_dict("records")))
    st.dataframe(findings[[
        "tenant", "namespace", "model", "hardware_tier", "target_p95_s", "p95_in_bursts_s",
        "p95_out_of_bursts_s", "p95_s", "breached", "burst_episodes", "requests_in_bursts",
        "late_requests_in_bursts", "burst_demand_gpus"]].sort_values(
        ["breached", "tenant"], ascending=[False, True]), hide_index=True, width="stretch")

st.subheader("Dedicated reservations for breached SLAs (GPUs)")
dedicated = cards.latest(ui.audience_data(audience="operator",
                                          table="dedicated_reservation_recommendations"))
if dedicated.empty:
    st.caption("No dedicated reservation is recommended.")
else:
    st.dataframe(dedicated.drop(columns=["day"]), hide_index=True, width="stretch")
    st.caption("Latency-sensitive: with Kueue these GPUs are lent to no cohort. Apply through "
               "`chargeback quotas sla` and `quotas apply` (a dry run unless --apply).")

st.subheader("Batch and fine-tuning work to move off peak (GPU-hours)")
moves = cards.latest(ui.audience_data(audience="operator", table="off_peak_recommendations"))
if moves.empty:
    st.caption("No batch or fine-tuning work runs in peak hours.")
else:
    st.dataframe(moves.drop(columns=["day"]).rename(columns={
        "freed_peak_gpus": "GPUs freed at peak"}), hide_index=True, width="stretch")
    st.caption("GPUs freed at peak: the most GPU-hours moved out of one peak hour, free for "
               "inference then.")
