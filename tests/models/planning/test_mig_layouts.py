"""MIG layouts: the A100/H100 geometry, packing, the mig-parted format, and the command on a
warehouse."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import yaml
from click.testing import CliRunner

from cli.main import main
from cli.quotas import quotas
from models.ledger import warehouse
from models.planning.mig_layouts import (
    TenantShare,
    family_of,
    geometry,
    mig_parted_config,
    mig_parted_problems,
    per_gpu_ceiling,
    placement,
    recommend_layout,
)

H100 = geometry("H100-80GB")
A100_40 = geometry("A100-40GB")


def test_instances_available_per_profile_match_the_user_guide():
    # "Number of Instances Available" of the MIG user guide's A100-40GB table (H100-80GB and
    # A100-80GB the same with their names): 7, 1 (+me), 4, 3, 2, 1, 1.
    assert {p: per_gpu_ceiling(p, A100_40) for p in A100_40} == {
        "1g.5gb": 7, "1g.5gb+me": 1, "1g.10gb": 4, "2g.10gb": 3, "3g.20gb": 2, "4g.20gb": 1,
        "7g.40gb": 1}
    assert {p: per_gpu_ceiling(p, H100) for p in H100} == {
        "1g.10gb": 7, "1g.10gb+me": 1, "1g.20gb": 4, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1,
        "7g.80gb": 1}


@pytest.mark.parametrize(("layout", "fits"), [
    ({"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2}, True),   # the demo's H100 MIG GPUs
    ({"4g.40gb": 1, "3g.40gb": 1}, True),
    ({"3g.40gb": 1, "1g.10gb": 4}, True),    # 3g at slice 4, four 1g on slices 0-3
    ({"3g.40gb": 2, "1g.10gb": 1}, False),   # both 3g take all 8 memory slices
    ({"2g.20gb": 3, "1g.10gb": 1}, True),    # 2g at 0, 2, 4 and 1g at 6
    ({"2g.20gb": 3, "1g.20gb": 1}, True),    # 2g at 0, 2, 4 and the 1g.20gb on slices 6-7
    ({"4g.40gb": 1, "1g.20gb": 3}, False),   # 1g.20gb starts at 0, 2, 4, 6: two left beside 4g
    ({"4g.40gb": 1, "2g.20gb": 2}, False),   # no 2g placement at 6
    ({"7g.80gb": 1, "1g.10gb": 1}, False),
    ({"1g.10gb+me": 2}, False),              # one media-extension instance per GPU
])
def test_what_fits_on_one_h100(layout, fits):
    assert (placement(layout, H100) is not None) is fits
    if fits:
        slots = placement(layout, H100)
        assert slots is not None
        used: set[int] = set()
        for name, start in slots:
            taken = set(range(start, start + H100[name].memory_slices))
            assert not used & taken
            used |= taken


def test_families():
    assert family_of("NVIDIA H100 80GB HBM3") == "H100-80GB"
    assert family_of("NVIDIA-H100-NVL") == "H100-94GB"
    assert family_of("NVIDIA A100-SXM4-40GB") == "A100-40GB"
    assert family_of("NVIDIA-A100-SXM4-80GB") == "A100-80GB"
    assert family_of("NVIDIA L4") is None


def _share(tenant: str, profile: str | None, n: int, sla: str = "standard") -> TenantShare:
    return TenantShare(tenant, profile, ("inference",), sla, n, Decimal("100.00"), "USD")


def test_a_layout_packs_the_needed_instances_and_keeps_the_rest_whole():
    # Guaranteed inference (2x 2g), fine-tuning (1x 3g), a pooled 1g: on two 4-GPU nodes.
    layout = recommend_layout(
        "premium", "NVIDIA-H100-80GB-HBM3", {"h100-a": 4, "h100-b": 4},
        {"2g.20gb": 2, "3g.40gb": 1, "1g.10gb": 1, None: 3},
        {"2g.20gb": [2, 1, 2, 2], "3g.40gb": [1, 1, 0, 1], "1g.10gb": [0, 1, 3, 1],
         None: [3, 2, 3, 3]}, [3, 2, 1, 0],
        [_share("zen", "2g.20gb", 2, "latency-sensitive")], mig_nodes=["h100-b"])
    # 3g + 2g + 2g take all 7 compute slices of one GPU; the 1g needs a second, whose rest
    # is filled with 1g instances (flexible overflow).
    assert layout.gpu_layouts == ((("2g.20gb", 2), ("3g.40gb", 1)), (("1g.10gb", 7),))
    gpu = layout.gpu_layouts[0]
    assert all(placement(dict(g), H100) is not None for g in layout.gpu_layouts)
    assert layout.provided[None] == 6
    assert layout.shortfall_gpus == 0
    # The MIG GPU goes to the node partitioned now.
    assert layout.configs[layout.nodes["h100-b"]][0] == {
        "devices": [0], "mig-enabled": True, "mig-devices": dict(gpu)}
    assert layout.configs[layout.nodes["h100-a"]] == [{"devices": "all", "mig-enabled": False}]
    # 2g: 2 provided, demand 2,1,2,2 -> 7/8 busy on average with equal weights near 1.
    assert layout.expected_utilization["2g.20gb"] == pytest.approx(7 / 8, abs=0.02)
    doc = mig_parted_config([layout])
    assert mig_parted_problems(doc, {n: layout.gpu_product for n in layout.configs}) == []


def test_not_enough_gpus_is_a_shortfall_not_a_silent_cut():
    layout = recommend_layout("premium", "NVIDIA H100 80GB HBM3", {"n": 2},
                              {"7g.80gb": 2, None: 1}, {}, [0])
    assert layout.shortfall_gpus == 1


def test_mig_parted_problems_follow_its_spec_and_the_geometry():
    bad = {"version": "v2", "mig-configs": {"x": [
        {"devices": [0], "mig-enabled": False, "mig-devices": {"1g.10gb": 1}},
        {"devices": [0, 1], "mig-enabled": True},
        {"devices": "some", "mig-enabled": True, "mig-devices": {"3g.40gb": 2, "1g.10gb": 1}},
    ]}}
    problems = "\n".join(mig_parted_problems(bad, {"x": "NVIDIA H100 80GB HBM3"}))
    assert "unknown version" in problems
    assert "MIG devices included when 'mig-enabled' is false" in problems
    assert "missing required field 'mig-devices'" in problems
    assert "[0] configured twice" in problems
    assert "must be 'all' or a list" in problems
    assert "do not fit on one H100-80GB" in problems


def test_the_command_writes_a_checked_layout_from_a_warehouse(tmp_path):
    con = warehouse.connect(tmp_path / "w.duckdb")
    warehouse.create_schema(con)
    day = "2026-09-30"
    for tenant, mig, units in (("zen", "2g.20gb", 2), ("vega", "1g.10gb", 3), ("acme", None, 4)):
        con.execute(
            "INSERT INTO reservation_recommendations BY NAME SELECT ?::DATE AS day, ? AS tenant, "
            "'premium' AS hardware_tier, ? AS mig_profile, 'standard' AS sla_class, "
            "1.0 AS unit_gpu_equivalents, ? AS recommended_gpus, ? AS cost_optimal_gpus, "
            "1.0 AS p95_demand_gpus, 0 AS current_reserved_gpus, 0.65 AS break_even_utilization, "
            "'USD' AS currency, 10.00 AS expected_monthly_cost_recommended, "
            "20.00 AS expected_monthly_cost_current, 30.00 AS expected_monthly_cost_none, "
            "0 AS expected_overflow_gpu_hours_per_month, 0.0 AS expected_overflow_hours_per_month, "
            "730 AS month_hours, 672 AS hours_observed, 168.0 AS half_life_hours, "
            "TIMESTAMPTZ '2026-10-01 00:00Z' AS as_of", [day, tenant, mig, units, units])
    con.execute("INSERT INTO reservation_overflow_pools VALUES (?, 'premium', '1g.10gb', 2, 3, "
                "0.95, 1)", [day])
    # Two 8-GPU H100 nodes, a whole hour each (idle), and an hour of zen's 2g instance.
    for node in ("h100-0", "h100-1"):
        con.execute(
            "INSERT INTO usage_hourly BY NAME SELECT ?::DATE AS day, "
            "TIMESTAMPTZ '2026-09-30 10:00Z' AS hour, 'c' AS cluster, ? AS node, "
            "'__idle__' AS tenant, 'premium' AS hardware_tier, 'unknown' AS size_class, "
            "'NVIDIA H100 80GB HBM3' AS gpu_product, NULL AS mig_profile, NULL AS model, "
            "'unknown' AS workload_kind, 8 * 3600 AS allocated_gpu_seconds, "
            "NULL AS used_gpu_seconds, 1 AS used_missing_rows, 8.0 AS peak_gpus, "
            "1 AS ledger_rows", [day, node])
    con.close()
    out = tmp_path / "mig"
    result = CliRunner().invoke(quotas, ["mig-layout", "--from-warehouse",
                                         str(tmp_path / "w.duckdb"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load((out / "mig-parted.yaml").read_text())
    report = json.loads((out / "mig-layout.json").read_text())
    (group,) = report["node_groups"]
    assert mig_parted_problems(doc, dict.fromkeys(doc["mig-configs"], group["gpu_product"])) == []
    provided = {p["mig_profile"]: (p["needed"], p["provided"]) for p in group["profiles"]}
    # zen's 2 x 2g and vega's 3 + pool 2 x 1g.10gb: 9 compute slices, two H100s (the second
    # filled with 1g); acme's 4 whole GPUs stay whole among the other 14.
    assert provided["2g.20gb"] == (2, 2)
    assert provided["1g.10gb"] == (5, 10)
    assert provided["whole GPU"] == (4, 14)
    assert group["partitioned_gpus"] == 2
    assert {t["tenant"] for t in group["tenants"]} == {"acme", "vega", "zen"}
    assert "kubectl label node h100-0 nvidia.com/mig.config=" in result.output


def test_cli_mig_layout_bad_input_exits_2(tmp_path):
    result = CliRunner().invoke(main, ["quotas", "mig-layout", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "--from-warehouse is required" in result.output
    empty = tmp_path / "w.duckdb"
    con = warehouse.connect(empty)
    warehouse.create_schema(con)
    con.close()
    result = CliRunner().invoke(main, ["quotas", "mig-layout", "--from-warehouse", str(empty),
                                       "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert f"{empty}: no reservation recommendations yet" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "m").exists()
