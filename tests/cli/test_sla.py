"""`chargeback quotas sla` on a real warehouse: a day of the demo's shared endpoint, loaded and
apportioned by the pipeline's own load, with the demo's tenants file (pixel declares 6 s)."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cli.main import main
from collectors.simulate import SHARED_NAMESPACE
from models.billing.rate_cards import load_rate_cards, rate_card_for
from models.planning.quotas import read_recommendations
from tests.demo_day import DEMO, START, load_demo_day


@pytest.fixture(scope="module")
def demo_day(tmp_path_factory) -> Path:
    return load_demo_day(tmp_path_factory.mktemp("sla") / "warehouse.duckdb", SHARED_NAMESPACE)


def _run(demo_day: Path, out: Path, monkeypatch, tenants: Path | None = None):
    monkeypatch.setenv("CHARGEBACK_HOME", str(out.parent / "home"))
    monkeypatch.setenv("CHARGEBACK_TENANTS", str(tenants or DEMO / "tenants.yaml"))
    monkeypatch.setenv("CHARGEBACK_RATE_CARD", str(DEMO / "rate-card.yaml"))
    return CliRunner().invoke(main, ["quotas", "sla", "--from-warehouse", str(demo_day),
                                     "--start", "2026-09-01", "--end", "2026-09-02",
                                     "--out", str(out)])


def test_pixel_breaches_its_sla_in_bursts_and_gets_a_dedicated_reservation(
        demo_day, tmp_path, monkeypatch):
    out = tmp_path / "sla"
    result = _run(demo_day, out, monkeypatch)
    assert result.exit_code == 0, result.output
    evidence = {e["tenant"]: e for e in json.loads((out / "sla-evidence.json").read_text())}
    assert set(evidence) == {"kite", "pixel", "sable"}
    pixel = evidence["pixel"]
    assert pixel["target_p95_s"] == "6"
    # Its bursts saturate the shared endpoint: in them it misses its target by more than 20%.
    assert pixel["p95_in_bursts_s"] > 6 * 1.2
    assert pixel["p95_in_bursts_s"] > pixel["p95_out_of_bursts_s"]
    assert pixel["breached"]
    assert pixel["episodes"]
    assert all(e["end"] > e["start"] for e in pixel["episodes"])
    reservation = pixel["dedicated_reservation"]
    card = rate_card_for(load_rate_cards(DEMO / "rate-card.yaml"), START.date())
    price = card.tier(pixel["hardware_tier"]).reserved_price
    assert price is not None
    assert reservation["gpus"] >= pixel["burst_demand_gpus_p95"]
    assert Decimal(reservation["monthly_cost"]) == reservation["gpus"] * 730 * price
    assert reservation["late_requests_per_month"] > 0
    # No target declared: no breach, whatever the latency.
    assert not evidence["kite"]["breached"]
    assert evidence["kite"]["dedicated_reservation"] is None
    # The recommendation goes through the quota path: a file `quotas apply` reads, and the
    # ResourceQuota manifest of pixel's namespace; nothing applied.
    with (out / "dedicated-reservations.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert (row["tenant"], row["namespace"], row["sla_class"]) == (
        "pixel", "team-pixel", "latency-sensitive")
    assert int(row["recommended_gpus"]) == reservation["gpus"]
    (read,) = read_recommendations(out / "dedicated-reservations.csv")
    assert (read.tenant, read.hardware_tier, read.mig_profile, read.recommended_gpus,
            read.sla_class) == ("pixel", pixel["hardware_tier"], None, reservation["gpus"],
                                "latency-sensitive")
    (manifest,) = (out / "manifests").glob("*.yaml")
    quota = yaml.safe_load(manifest.read_text())
    assert quota["kind"] == "ResourceQuota"
    assert quota["metadata"]["namespace"] == "team-pixel"
    assert quota["spec"]["hard"] == {"requests.nvidia.com/gpu": str(reservation["gpus"])}
    assert "nothing applied" in result.output


def test_a_bad_target_is_a_user_error_naming_the_field(demo_day, tmp_path, monkeypatch):
    tenants = tmp_path / "tenants.yaml"
    text = (DEMO / "tenants.yaml").read_text().replace(
        'p95_latency_seconds: "6"', "p95_latency_seconds: 6.0")
    tenants.write_text(text)
    out = tmp_path / "sla"
    result = _run(demo_day, out, monkeypatch, tenants)
    assert result.exit_code == 2
    assert "tenants.pixel.p95_latency_seconds" in result.output
    assert not out.exists()
