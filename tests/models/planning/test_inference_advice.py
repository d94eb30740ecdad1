"""Dedicated-capacity and off-peak advice cards: built from the rows the analytics store in the
warehouse (a real DuckDB file), their money the engines' own results, never a new estimate."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from models.ledger import warehouse
from models.planning.advice import AdviceKind, dedicated_capacity_advice, off_peak_advice
from models.planning.latency import (
    BurstRule,
    LatencyReport,
    dedicated_reservation,
    endpoint_latency,
    report_frames,
)
from models.planning.off_peak import moves_frame, off_peak_move
from tests.models.planning.test_latency import _intervals
from tests.models.planning.test_off_peak import CARD, PERIOD, PIXEL, _day

DAY = date(2026, 9, 1)


def _stored(tmp_path: Path, table: str, frame: Any) -> list[dict[str, Any]]:
    """`frame` written by the analytics' named load and read back as the marts read it."""
    con = warehouse.connect(tmp_path / "warehouse.duckdb")
    warehouse.create_schema(con)
    warehouse.replace_analysis(con, table, frame, DAY)
    warehouse.replace_analysis(con, table, frame, DAY)  # a rerun replaces, never adds
    rows: list[dict[str, Any]] = con.execute(f"SELECT * FROM {table}").df().to_dict("records")
    con.close()
    return rows


def test_dedicated_capacity_card_costs_what_the_sla_rule_priced_and_says_why(tmp_path):
    finding = endpoint_latency("pixel", "shared", "llama", "h100", Decimal("4"),
                               _intervals(3.0, 8.0), BurstRule())
    reservation = dedicated_reservation(finding, "team-pixel", {"h100": Decimal("2.10")}, "EUR")
    assert reservation is not None
    report = LatencyReport([finding], [reservation], [])
    frames = report_frames(report, [], datetime(2026, 9, 1, tzinfo=UTC),
                           datetime(2026, 9, 2, tzinfo=UTC))
    (row,) = _stored(tmp_path, "dedicated_reservation_recommendations",
                     frames["dedicated_reservation_recommendations"])
    card = dedicated_capacity_advice(row)
    assert card.kind is AdviceKind.DEDICATED_CAPACITY
    assert card.monthly_saving == -reservation.monthly_cost == Decimal("-3066.00")
    assert card.currency == "EUR"
    assert card.recommendation == "Reserve 2 dedicated h100 GPUs for llama"
    assert "8.0 s against your 4 s target" in card.saw
    assert card.why is not None
    assert "latency target" in card.why
    assert f"{reservation.cost_per_late_request:,.2f} EUR per request" in card.why
    assert f"About {reservation.late_requests_per_month:,} requests a month" in card.if_nothing
    assert card.since == DAY


def test_off_peak_card_saves_what_the_invoice_engine_priced(tmp_path):
    usage = _day(1, 8, 20, "3", "batch") + _day(1, 0, 24, "2", "inference")
    move = off_peak_move(PIXEL, CARD, PERIOD, usage)
    assert move is not None
    rows = _stored(tmp_path, "off_peak_recommendations", moves_frame([move]))
    assert [r["hardware_tier"] for r in rows] == ["economy"]
    card = off_peak_advice(rows)
    assert card is not None
    assert card.kind is AdviceKind.OFF_PEAK
    assert card.monthly_saving == move.saving == Decimal("12.31")
    assert card.recommendation == "Run your batch work off peak: 36 economy GPU-hours"
    assert "frees 3 economy GPUs at peak" in card.saw
    assert f"{move.charges_as_run:,.2f} USD" in card.if_nothing
    assert off_peak_advice([]) is None


@pytest.mark.parametrize("missing", ["p95_out_of_bursts_s", "cost_per_late_request"])
def test_a_dedicated_card_without_optional_evidence_says_less_not_zero(tmp_path, missing):
    finding = endpoint_latency("pixel", "shared", "llama", "h100", Decimal("4"),
                               _intervals(3.0, 8.0), BurstRule())
    reservation = dedicated_reservation(finding, "team-pixel", {"h100": Decimal("2.10")}, "EUR")
    assert reservation is not None
    frames = report_frames(LatencyReport([finding], [reservation], []), [],
                           datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 9, 2, tzinfo=UTC))
    (row,) = _stored(tmp_path, "dedicated_reservation_recommendations",
                     frames["dedicated_reservation_recommendations"])
    row[missing] = None
    card = dedicated_capacity_advice(row)
    text = " ".join([card.saw, card.why or ""])
    assert "0.00" not in text
    assert "nan" not in text.lower()
