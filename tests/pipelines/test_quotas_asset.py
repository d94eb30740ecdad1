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
from tests.kube_apply_server import (
    COHORT_PREFIX,
    CQ_PREFIX,
    LQ_PREFIX,
    RF_PREFIX,
    RQ_PREFIX,
    LoopbackApiServer,
)

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
    # The day's pooled overflow of premium whole GPUs, and an hour of an (idle) H100: the
    # product the premium ResourceFlavor selects nodes by.
    con.execute("INSERT INTO reservation_overflow_pools VALUES (?, 'premium', NULL, 2, 3, 0.95, 4)",
                [DAY])
    con.execute(
        "INSERT INTO usage_hourly BY NAME SELECT ?::DATE AS day, "
        "TIMESTAMPTZ '2026-09-21 10:00Z' AS hour, 'sim' AS cluster, 'sim-h100-0' AS node, "
        "'__idle__' AS tenant, 'premium' AS hardware_tier, 'unknown' AS size_class, "
        "'NVIDIA H100 80GB HBM3' AS gpu_product, NULL AS mig_profile, NULL AS model, "
        "'unknown' AS workload_kind, 3600 AS allocated_gpu_seconds, NULL AS used_gpu_seconds, "
        "1 AS used_missing_rows, 1.0 AS peak_gpus, 60 AS ledger_rows", [DAY])
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
        assert queue["spec"]["cohortName"] == "gpu-chargeback"
        # The flavor the queue names exists now, selecting the H100 nodes; the cohort holds
        # the pool, which acme (standard SLA) may borrow at most.
        assert server.objects[f"{RF_PREFIX}premium"]["spec"] == {
            "nodeLabels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}
        assert server.objects[f"{COHORT_PREFIX}gpu-chargeback"]["spec"]["resourceGroups"] == [{
            "coveredResources": ["nvidia.com/gpu"],
            "flavors": [{"name": "premium",
                         "resources": [{"name": "nvidia.com/gpu", "nominalQuota": 2}]}]}]
        assert queue["spec"]["resourceGroups"][0]["flavors"][0]["resources"] == [
            {"name": "nvidia.com/gpu", "nominalQuota": 3, "borrowingLimit": 2}]
        assert server.objects[f"{LQ_PREFIX}team-acme/localqueues/gpu-chargeback"]["spec"] == {
            "clusterQueue": "acme"}
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
                    (DAY, "Cohort", None, 2, 0, "recommended", False, "applied"),
                    (DAY, "ResourceQuota", 8, 5, 5, "in-use floor", False, "applied")]
