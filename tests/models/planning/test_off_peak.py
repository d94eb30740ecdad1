"""Off-peak moves of batch and fine-tuning work, priced by the invoice engine."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from models.billing.pricing import UsageHour, price_invoice
from models.billing.rate_cards import TimeOfUse, load_rate_cards, load_tenants, rate_card_for
from models.planning.off_peak import charges, move_off_peak, off_peak_move

DEMO = Path(__file__).resolve().parents[3] / "examples" / "demo"
PERIOD = "2026-09"
CARDS = load_rate_cards(DEMO / "rate-card.yaml")
BASE = rate_card_for(CARDS, datetime(2026, 9, 1, tzinfo=UTC).date())
NIGHT = TimeOfUse("UTC", ((20, 8),), ("sat", "sun"), Decimal("0.40"))
CARD = replace(BASE, tiers=tuple(replace(t, time_of_use=NIGHT if t.name == "economy" else None)
                                 for t in BASE.tiers))
PIXEL = load_tenants(DEMO / "tenants.yaml", CARDS)["pixel"]  # growth: 5% discount


def _day(day: int, first: int, last: int, gpus: str, kind: str, tier: str = "economy"
         ) -> list[tuple[UsageHour, str]]:
    start = datetime(2026, 9, day, tzinfo=UTC)
    return [(UsageHour(start + timedelta(hours=h), tier, "small", Decimal(gpus)), kind)
            for h in range(first, last)]


def test_batch_in_peak_hours_moves_to_the_night_and_saves_what_the_bill_says():
    # Tuesday 2026-09-01: 12 peak hours of 3 GPUs of batch, and 2 GPUs of inference all day.
    usage = _day(1, 8, 20, "3", "batch") + _day(1, 0, 24, "2", "inference")
    move = off_peak_move(PIXEL, CARD, PERIOD, usage)
    assert move is not None
    assert move.kinds == ("batch",)
    assert move.peak_gpu_hours == {"economy": Decimal(36)}
    assert move.moved_gpu_hours == {"economy": Decimal(36)}
    assert move.unplaced_gpu_hours == {}
    assert move.freed_peak_gpus == {"economy": Decimal(3)}
    # 36 GPU-hours at 0.60 become 36 at 0.60 x 0.40, less the plan's 5%: 36 x 0.36 x 0.95.
    assert move.saving == Decimal("12.31")
    assert move.charges_as_run == charges(price_invoice(PIXEL, CARD, PERIOD,
                                                        [r for r, _ in usage]))


def test_moved_hours_keep_their_concurrency_and_inference_stays():
    usage = _day(1, 8, 20, "3", "batch") + _day(1, 8, 20, "2", "inference")
    kept, *_ = move_off_peak(usage, CARD, PERIOD)
    batch_hours = sorted(r.hour for r in kept if r.gpu_hours == 3)
    # The 12 peak hours go one to one to 20:00..07:00, never two into one hour.
    assert batch_hours == [datetime(2026, 9, 1, 20, tzinfo=UTC) + timedelta(hours=h)
                           for h in range(12)]
    assert sorted(r.hour for r in kept if r.gpu_hours == 2) == [
        datetime(2026, 9, 1, h, tzinfo=UTC) for h in range(8, 20)]
    assert sum(r.gpu_hours for r in kept) == sum(r.gpu_hours for r, _ in usage)


def test_nothing_to_move_without_peak_batch_or_without_time_of_use():
    assert off_peak_move(PIXEL, CARD, PERIOD, _day(1, 8, 20, "3", "inference")) is None
    assert off_peak_move(PIXEL, CARD, PERIOD, _day(1, 0, 6, "3", "fine-tuning")) is None
    assert off_peak_move(PIXEL, CARD, PERIOD, _day(1, 8, 20, "3", "batch", "standard")) is None


def test_work_with_no_off_peak_hour_left_in_the_period_stays():
    # Wednesday 30 September 08:00-20:00: four night hours are left in September.
    usage = _day(30, 8, 20, "1", "fine-tuning")
    kept, peak, moved, unplaced, _ = move_off_peak(usage, CARD, PERIOD)
    assert peak == {"economy": Decimal(12)}
    assert moved == {"economy": Decimal(4)}
    assert unplaced == {"economy": Decimal(8)}
    assert sorted(r.hour for r in kept) == [
        datetime(2026, 9, 30, h, tzinfo=UTC) for h in (*range(12, 20), 20, 21, 22, 23)]
