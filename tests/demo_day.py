"""A day of the demo cluster (2026-09-01, its shared endpoint with pixel's bursts, pixel's and
terra's batch in peak hours) in a real warehouse file, loaded by the pipeline's own load under
the demo's rate card: what the SLA, off-peak and inference-asset tests analyse."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from collectors.simulate import Simulation, default_cluster
from models.billing.rate_cards import load_rate_cards, rate_card_for
from models.ledger import warehouse

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"
START = datetime(2026, 9, 1, tzinfo=UTC)  # a Tuesday


def load_demo_day(path: Path, namespace: str | None = None) -> Path:
    """Write the day into a new warehouse at `path`; only `namespace`'s GPU usage if given."""
    sim = Simulation(default_cluster(), START, 1, 60, 7)
    usage = pa.concat_tables(sim.node_days(0).values())
    if namespace is not None:
        usage = usage.filter(pc.equal(usage["namespace"], namespace))
    con = warehouse.connect(path)
    try:
        warehouse.create_schema(con)
        card = rate_card_for(load_rate_cards(DEMO / "rate-card.yaml"), START.date())
        warehouse.load_rows(con, card, usage, sim.requests_day(0, 0))
    finally:
        con.close()
    return path
