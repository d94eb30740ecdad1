"""The tenant's advice: cards built by models.planning.advice from the latest analysis in the
tenant's mart, and how a card is drawn (words first, the evidence chart beside them)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import ui
from models.planning.advice import (
    Advice,
    AdviceKind,
    budget_advice,
    dedicated_capacity_advice,
    off_peak_advice,
    order,
    plan_advice,
    reservation_advice,
)
from models.planning.tier_changes import GPU_HOURS_SERIES


def latest(frame: pd.DataFrame) -> pd.DataFrame:
    """The analytics rewrite one day's analysis per run: the latest day is the current one."""
    if frame.empty or "day" not in frame.columns:
        return frame
    current: pd.DataFrame = frame[frame["day"] == frame["day"].max()]
    return current


def records(frame: pd.DataFrame) -> list[dict[str, object]]:
    """Rows as dicts by column name, missing values as None: what the card builders read."""
    return [{str(k): (None if v is pd.NaT else v) for k, v in row.items()}
            for row in frame.to_dict("records")]


ADVICE_TABLES = ("tier_change_recommendations", "reservation_recommendations",
                 "tenant_budgets", "dedicated_reservation_recommendations",
                 "off_peak_recommendations")


def advice_of(frames: dict[str, pd.DataFrame]) -> list[Advice]:
    """Every card the tenant's latest analysis makes (`frames`: its ADVICE_TABLES), savings
    first."""
    cards: list[Advice] = [
        plan_advice(row) for row in records(latest(frames["tier_change_recommendations"]))]
    cards += [card for row in records(latest(frames["reservation_recommendations"]))
              if (card := reservation_advice(row)) is not None]
    cards += [card for row in records(latest(frames["tenant_budgets"]))
              if (card := budget_advice(row)) is not None]
    cards += [dedicated_capacity_advice(row)
              for row in records(latest(frames["dedicated_reservation_recommendations"]))]
    off_peak = off_peak_advice(records(latest(frames["off_peak_recommendations"])))
    if off_peak is not None:
        cards.append(off_peak)
    return order(cards)


def saving_label(card: Advice) -> str:
    if card.monthly_saving is None:
        return "no price change"
    if card.monthly_saving >= 0:
        return f"saves {ui.money(card.monthly_saving, card.currency)} a month"
    return f"costs {ui.money(-card.monthly_saving, card.currency)} more a month"


def _evidence(card: Advice, usage: pd.DataFrame) -> None:
    name = card.series_name or ""
    if not name.startswith(f"{GPU_HOURS_SERIES}[") or usage.empty:
        return
    tier = name[len(GPU_HOURS_SERIES) + 1:-1]
    daily: pd.DataFrame = usage[usage["hardware_tier"] == tier].groupby(
        "day", as_index=False)[["allocated_gpu_hours"]].sum()
    if daily.empty:
        return
    daily = ui.as_float(daily.tail(60).copy(), "allocated_gpu_hours")
    chart = alt.Chart(daily).mark_bar(color=ui.COLOURS["usage"]).encode(
        x=alt.X("day:T", title=None),
        y=alt.Y("allocated_gpu_hours:Q", title=f"{tier} GPU-h/day"))
    if card.since is not None and card.kind is AdviceKind.PLAN:
        chart = chart + alt.Chart(pd.DataFrame({"day": [pd.Timestamp(card.since)]})).mark_rule(
            color=ui.COLOURS["change"], strokeWidth=2).encode(x="day:T")
    st.altair_chart(chart.properties(height=160), width="stretch")


_BASIS = {AdviceKind.DEDICATED_CAPACITY: "from measured latency in your bursts",
          AdviceKind.OFF_PEAK: "your bill priced as run and with the work moved"}
"""What a card without a confidence rests on, where it is not an expected value."""


def draw(card: Advice, usage: pd.DataFrame, *, key: str) -> None:
    with st.container(border=True, key=key):
        words, chart = st.columns([3, 2])
        with words:
            st.markdown(f"**{card.recommendation}** · {saving_label(card)}")
            st.markdown(f"*What we saw:* {card.saw}")
            if card.why:
                st.markdown(f"*Why, although it costs more:* {card.why}")
            st.markdown(f"*If you do nothing:* {card.if_nothing}")
            sure = (f"confidence {card.confidence:.0%}" if card.confidence is not None
                    else _BASIS.get(card.kind, "expected value over recent usage"))
            # A plan card's date is when its shift began; the others', their analysis.
            since = "since" if card.kind is AdviceKind.PLAN else "as of"
            st.caption(f"{card.kind.value.capitalize()} advice · {sure}"
                       + (f" · {since} {card.since:%Y-%m-%d}" if card.since else ""))
        with chart:
            _evidence(card, usage)
