"""The scheduler_quotas asset applying to a cluster (the loopback API server): the manifests it
writes for GitOps are the plan it applies, planned from what the cluster holds, and the day's
rows pass quotas_never_drop_below_use."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import yaml

from models.ledger import warehouse
from pipelines.analytics.assets import scheduler_quotas
from pipelines.analytics.checks import quotas_never_drop_below_use
from pipelines.resources import (
    BillingConfigResource,
    KubernetesResource,
    OutputsResource,
    WarehouseResource,
)
from tests.kube_apply_server import CQ_PREFIX, RQ_PREFIX, LoopbackApiServer

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
DAY = date(2026, 9, 21)
RQ_PATH = f"{RQ_PREFIX}team-acme/resourcequotas/gpu-chargeback"


def test_the_asset_applies_the_plan_it_writes(tmp_path):
    con = warehouse.connect(tmp_path / "warehouse.duckdb")
    warehouse.create_schema(con)
    # acme: 3 premium GPUs recommended for the day.
    con.execute(
        "INSERT INTO reservation_recommendations BY NAME SELECT ?::DATE AS day, "
        "'acme' AS tenant, 'premium' AS hardware_tier, 'standard' AS sla_class, "
        "1.0 AS unit_gpu_equivalents, 3 AS recommended_gpus, 3 AS cost_optimal_gpus, "
        "3.0 AS p95_demand_gpus, 2 AS current_reserved_gpus, 0.65 AS break_even_utilization, "
        "'USD' AS currency, 1.0 AS expected_monthly_cost_recommended, "
        "2.0 AS expected_monthly_cost_current, 3.0 AS expected_monthly_cost_none, "
        "0 AS expected_overflow_gpu_hours_per_month, 0.0 AS expected_overflow_hours_per_month, "
        "730 AS month_hours, 672 AS hours_observed, 168.0 AS half_life_hours, "
        "TIMESTAMPTZ '2026-09-22 00:00Z' AS as_of", [DAY])
    con.close()
    server = LoopbackApiServer().start()
    try:
        # In force 8, and 5 in use now: the step (4) would allow 4, the use holds it at 5.
        server.put_resource_quota("team-acme", "gpu-chargeback",
                                  {"requests.nvidia.com/gpu": "8"},
                                  {"requests.nvidia.com/gpu": "5"})
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "loop",
            "clusters": [{"name": "loop", "cluster": {"server": server.url}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "loop", "context": {"cluster": "loop", "user": "u"}}],
        }))
        resources = {
            "warehouse_db": WarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
            "billing": BillingConfigResource(rate_card_path=str(DEMO / "rate-card.yaml"),
                                             tenants_path=str(DEMO / "tenants.yaml")),
            "outputs": OutputsResource(exports_path=str(tmp_path / "exports"),
                                       marts_path=str(tmp_path / "marts")),
            "kubernetes": KubernetesResource(kubeconfig=str(kubeconfig), apply=True),
        }
        result = dg.materialize([scheduler_quotas, quotas_never_drop_below_use],
                                partition_key=f"{DAY}", resources=resources,
                                instance=dg.DagsterInstance.ephemeral())
        assert result.success
        assert all(e.passed for e in result.get_asset_check_evaluations())
        (materialization,) = result.asset_materializations_for_node("scheduler_quotas")
        assert materialization.metadata["mode"].value == "applied"

        folder = tmp_path / "exports" / "quotas" / f"{DAY}"
        written = yaml.safe_load(
            (folder / "resourcequota-team-acme.gpu-chargeback.yaml").read_text())
        assert written["spec"] == server.objects[RQ_PATH]["spec"] == {
            "hard": {"requests.nvidia.com/gpu": "5"}}
        queue = yaml.safe_load((folder / "clusterqueue-acme.yaml").read_text())
        assert queue["spec"]["resourceGroups"] == (
            server.objects[f"{CQ_PREFIX}acme"]["spec"]["resourceGroups"])
    finally:
        server.stop()
    con = warehouse.connect(tmp_path / "warehouse.duckdb", read_only=True)
    try:
        rows = con.execute("SELECT day, kind, before_gpus, after_gpus, in_use_gpus, rule, "
                           "dry_run, outcome FROM scheduler_quota_changes ORDER BY kind"
                           ).fetchall()
    finally:
        con.close()
    assert rows == [(DAY, "ClusterQueue", None, 3, 0, "recommended", False, "applied"),
                    (DAY, "ResourceQuota", 8, 5, 5, "in-use floor", False, "applied")]
