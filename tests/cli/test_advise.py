"""`chargeback advise off-peak` on a real warehouse: a day of the demo cluster, loaded by the
pipeline's own load, under the demo's rate card (economy: nights and weekends at 35%)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main
from models.billing.rate_cards import load_rate_cards, load_tenants, rate_card_for
from tests.demo_day import DEMO, START, load_demo_day


@pytest.fixture(scope="module")
def demo_day(tmp_path_factory) -> Path:
    return load_demo_day(tmp_path_factory.mktemp("advise") / "warehouse.duckdb")


def test_batch_tenants_in_peak_hours_get_an_off_peak_move_with_its_saving(
        demo_day, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARGEBACK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CHARGEBACK_TENANTS", str(DEMO / "tenants.yaml"))
    monkeypatch.setenv("CHARGEBACK_RATE_CARD", str(DEMO / "rate-card.yaml"))
    out = tmp_path / "off-peak.json"
    result = CliRunner().invoke(main, ["advise", "off-peak", "--from-warehouse", str(demo_day),
                                       "--period", "2026-09", "--out", str(out)])
    assert result.exit_code == 0, result.output
    moves = {m["tenant"]: m for m in json.loads(out.read_text())}
    # pixel renders (batch) 08:00-20:00 on L4s, terra's batch worker runs around the clock
    # on T4s: both tiers are economy; inference tenants and nimbus's nightly fine-tuning
    # (01:00-06:00, already off-peak) get nothing.
    assert set(moves) == {"pixel", "terra"}
    cards = load_rate_cards(DEMO / "rate-card.yaml")
    card = rate_card_for(cards, START.date())
    economy = card.tier("economy")
    assert economy.time_of_use is not None
    tenants = load_tenants(DEMO / "tenants.yaml", cards)
    for name, move in moves.items():
        moved = Decimal(move["moved_gpu_hours"]["economy"])
        assert moved == Decimal(move["peak_gpu_hours"]["economy"])
        # Flat price, no reservation: each moved GPU-hour saves price x (1 - multiplier),
        # less the plan's discount (small models: multiplier 1).
        discount = card.plans[tenants[name].plan].discount_pct
        expected = (moved * economy.bands[0].price * (1 - economy.time_of_use.off_peak_multiplier)
                    * (100 - discount) / 100)
        assert Decimal(move["saving"]) == pytest.approx(expected, abs=Decimal("0.02"))
        assert Decimal(move["saving"]) == (Decimal(move["charges_as_run"])
                                           - Decimal(move["charges_moved"]))
    assert Decimal(moves["pixel"]["moved_gpu_hours"]["economy"]) == 36  # 12 h x 3 GPUs
    assert Decimal(moves["pixel"]["freed_peak_gpus"]["economy"]) == 3
    assert "pixel: saves" in result.output
