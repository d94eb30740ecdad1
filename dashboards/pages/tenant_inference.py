"""Tenant: tokens in and out and their effective cost per million by model (the invoice's own
figures, `Invoice.tokens`), P95 latency against the tenant's target in and out of its bursts,
the burst episodes marked on its request rate, and the dedicated-capacity and off-peak advice."""

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import cards, gate, ui
from models.billing.invoices import DocumentKind
from models.planning.advice import AdviceKind
from models.planning.latency import SLA_MARGIN

tenant = gate.require("tenant").role.tenant
assert tenant is not None

st.title("Tokens and latency")
frames = ui.tenant_frames(tenant=tenant, tables=(
    "invoices", "latency_findings", "burst_episodes", "request_rates", "usage_daily",
    *cards.ADVICE_TABLES))

st.header("Tokens by model")
documents = frames["invoices"]
invoices = (documents[documents["kind"] == DocumentKind.INVOICE.value] if not documents.empty
            else documents)
if invoices.empty:
    st.info("No bill has been computed for you yet.")
else:
    period = st.selectbox("Billing month", list(invoices["period"])[::-1])
    invoice = ui.stored_invoice(invoices[invoices["period"] == period].iloc[-1]).invoice
    if not invoice.tokens:
        st.caption(f"No tokens were metered for you in {period}.")
    else:
        # Amounts as numbers (sortable, thousands separated); the invoice keeps the decimals.
        costs = (f"input cost ({invoice.currency})", f"output cost ({invoice.currency})")
        per_million = (f"{invoice.currency} per million input",
                       f"{invoice.currency} per million output")
        tokens = pd.DataFrame([{
            "model": t.model, "input tokens": t.input_tokens, "output tokens": t.output_tokens,
            "GPU-hours": float(t.gpu_hours), costs[0]: float(t.input_cost),
            costs[1]: float(t.output_cost),
            per_million[0]: None if t.cost_per_million_input is None
            else float(t.cost_per_million_input),
            per_million[1]: None if t.cost_per_million_output is None
            else float(t.cost_per_million_output),
        } for t in invoice.tokens])
        st.dataframe(tokens, hide_index=True, width="stretch", column_config={
            "input tokens": st.column_config.NumberColumn(format="localized"),
            "output tokens": st.column_config.NumberColumn(format="localized"),
            "GPU-hours": ui.HOURS,
            **ui.money_columns(tokens, *costs, minor_unit=invoice.minor_unit),
            # A price per million carries 4 more decimals than the currency (TokenUsage).
            **ui.money_columns(tokens, *per_million, minor_unit=invoice.minor_unit + 4)})
        st.caption("Cost per million tokens is what your invoice shows: the GPU charges your "
                   "GPU-hours on each model carry (or its token lines, on a token plan), "
                   "split into prefill (input) and decode (output).")
        st.altair_chart(alt.Chart(tokens.melt(
            id_vars="model", value_vars=["input tokens", "output tokens"],
            var_name="direction", value_name="tokens")).mark_bar().encode(
            x=alt.X("tokens:Q", title=f"tokens in {period}"), y=alt.Y("model:N", title=None),
            color=alt.Color("direction:N", title=None),
            yOffset="direction:N"), width="stretch")

st.header("Latency against your target")
findings = cards.latest(frames["latency_findings"])
if findings.empty:
    st.info("No request latency has been measured for you yet.")
else:
    window = findings.iloc[0]
    st.caption(f"Requests from {window['window_start']:%Y-%m-%d} to "
               f"{window['window_end']:%Y-%m-%d %H:%M} UTC, per endpoint. P95: 95% of "
               "requests finished within it. Bursts: your request rate or GPU demand at "
               "least twice its median of the hour before.")
    episodes = cards.latest(frames["burst_episodes"])
    rates = cards.latest(frames["request_rates"])
    for number, f in enumerate(findings.to_dict("records")):
        st.subheader(f"{f['model']} ({f['namespace']})")
        # No observations is no P95 (a gap), never zero.
        target, inside, outside = (None if pd.isna(f[key]) else float(f[key]) for key in (
            "target_p95_s", "p95_in_bursts_s", "p95_out_of_bursts_s"))
        a, b, c = st.columns(3)
        a.metric("P95 in bursts", "-" if inside is None else f"{inside:.2f} s",
                 delta=("breach" if f["breached"] else "within target x 1.2")
                 if target is not None and inside is not None else None,
                 delta_color="inverse" if f["breached"] else "off")
        b.metric("P95 outside bursts", "-" if outside is None else f"{outside:.2f} s")
        c.metric("Your P95 target", "none declared" if target is None else f"{target:g} s")
        p95 = pd.DataFrame([
            {"when": "in bursts", "p95_s": inside},
            {"when": "outside bursts", "p95_s": outside},
            {"when": "all requests", "p95_s": f["p95_s"]}]).dropna()
        chart = alt.Chart(p95).mark_bar().encode(
            x=alt.X("p95_s:Q", title="P95 latency (s)"), y=alt.Y("when:N", title=None,
                                                                  sort=None),
            color=alt.Color("when:N", legend=None, scale=alt.Scale(
                domain=["in bursts", "outside bursts", "all requests"],
                range=[ui.COLOURS["on-demand"], ui.COLOURS["usage"], ui.COLOURS["idle"]])))
        if target is not None:
            lines = pd.DataFrame({"p95_s": [target, target * float(SLA_MARGIN)],
                                  "line": ["target", "target x 1.2"]})
            chart = chart + alt.Chart(lines).mark_rule(
                color=ui.COLOURS["change"], strokeWidth=2).encode(
                x="p95_s:Q", strokeDash=alt.StrokeDash("line:N", title=None))
        st.altair_chart(chart.properties(height=140), width="stretch")
        mine = episodes[(episodes["namespace"] == f["namespace"])
                        & (episodes["model"] == f["model"])] if not episodes.empty else episodes
        rate = rates[(rates["namespace"] == f["namespace"])
                     & (rates["model"] == f["model"])] if not rates.empty else rates
        if not rate.empty:
            line = alt.Chart(rate).mark_line(color=ui.COLOURS["usage"]).encode(
                x=alt.X("window_start:T", title=None),
                y=alt.Y("requests_per_s:Q", title="requests / s"))
            chart = line
            if not mine.empty:
                chart = alt.Chart(mine).mark_rect(
                    color=ui.COLOURS["change"], opacity=0.25).encode(
                    x="episode_start:T", x2="episode_end:T") + line
            st.altair_chart(chart.properties(height=180), width="stretch")
        if mine.empty:
            st.caption("No burst episode in this window.")
        else:
            st.caption(f"{len(mine)} burst episode(s), shaded above.")
            st.dataframe(mine[["episode_start", "episode_end", "intervals",
                               "peak_requests_per_s", "peak_gpus"]].rename(columns={
                "episode_start": "start (UTC)", "episode_end": "end (UTC)",
                "peak_requests_per_s": "peak requests/s", "peak_gpus": "peak GPUs"}),
                hide_index=True, width="stretch", key=f"episodes-{number}")

st.header("Advice for your inference and batch work")
advice = [card for card in cards.advice_of(frames)
          if card.kind in (AdviceKind.DEDICATED_CAPACITY, AdviceKind.OFF_PEAK)]
if not advice:
    st.caption("Nothing to change: your latency target holds in bursts and no batch work runs "
               "in peak hours.")
for number, card in enumerate(advice):
    cards.draw(card, frames["usage_daily"], key=f"advice-inference-{number}")
