"""`action: no-borrowing` through Dagster against the loopback Kubernetes API server: the quota
path, the one writer of a ClusterQueue's resourceGroups, sets borrowingLimit 0 on every resource
of the tenant's flavors once its budget is spent (nominal quota unchanged), records it in
budget_holds, and lifts it at the next period; in dry-run the API server checks the held queue
and the applied one keeps its borrowing."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from models.ledger import warehouse
from pipelines.analytics.assets import scheduler_quotas
from pipelines.analytics.budgets import tenant_budgets
from pipelines.analytics.forecast import tenant_forecasts
from tests.kube_apply_server import CQ_PREFIX, LoopbackApiServer
from tests.kueue_schema import kueue_errors
from tests.pipelines.test_budgets import (
    DAY,
    NEXT_PERIOD,
    kubeconfig_for,
    query,
    resources,
    write_usage,
)

CQ_PATH = f"{CQ_PREFIX}acme"
QUOTAS_CONFIG = {"ops": {"scheduler_quotas": {"config": {"generate_flavors": False}}}}


def tenants_yaml(dry_run: bool) -> str:
    return f"""\
tenants:
  acme:
    plan: growth
    namespaces: [team-acme]
    start: 2026-01-01
    budget:
      gpu_hours: 1000
      enforce: {{action: no-borrowing, dry_run: {str(dry_run).lower()}}}
"""


def recommend(path: Path, days: list[date]) -> None:
    """acme: 3 premium GPUs recommended each day, and a pooled overflow of 2 to borrow from."""
    con = warehouse.connect(path)
    try:
        for day in days:
            con.execute(
                "INSERT INTO reservation_recommendations BY NAME SELECT ?::DATE AS day, "
                "'acme' AS tenant, 'premium' AS hardware_tier, 'standard' AS sla_class, "
                "1.0 AS unit_gpu_equivalents, 3 AS recommended_gpus, 3 AS cost_optimal_gpus, "
                "3.0 AS p95_demand_gpus, 3 AS current_reserved_gpus, "
                "0.65 AS break_even_utilization, 'USD' AS currency, "
                "1.0 AS expected_monthly_cost_recommended, 2.0 AS expected_monthly_cost_current, "
                "3.0 AS expected_monthly_cost_none, 0 AS expected_overflow_gpu_hours_per_month, "
                "0.0 AS expected_overflow_hours_per_month, 730 AS month_hours, "
                "672 AS hours_observed, 168.0 AS half_life_hours, "
                "(?::DATE + 1)::TIMESTAMPTZ AS as_of", [day, day])
            con.execute("INSERT INTO reservation_overflow_pools VALUES "
                        "(?, 'premium', NULL, 2, 3, 0.95, 4)", [day])
    finally:
        con.close()


def run_day(day: date, res: dict[str, Any]) -> dg.ExecuteInProcessResult:
    return dg.materialize([tenant_forecasts, tenant_budgets, scheduler_quotas],
                          partition_key=f"{day}", resources=res, run_config=QUOTAS_CONFIG,
                          instance=dg.DagsterInstance.ephemeral())


def acme_resources(server: LoopbackApiServer, home: Path) -> list[dict[str, Any]]:
    spec = server.objects[CQ_PATH]["spec"]
    assert spec["cohortName"] == "gpu-chargeback"
    (group,) = spec["resourceGroups"]
    return [r for flavor in group["flavors"] for r in flavor["resources"]]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, LoopbackApiServer, dict[str, Any]]:
    write_usage(tmp_path / "warehouse.duckdb", NEXT_PERIOD)
    recommend(tmp_path / "warehouse.duckdb", [DAY, NEXT_PERIOD])
    server = LoopbackApiServer().start()
    server.put_resource_flavor("premium", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"})
    return tmp_path, server, resources(tmp_path, kubeconfig_for(server, tmp_path))


@pytest.mark.slow
def test_no_borrowing_at_100_percent_is_set_by_the_quota_path_and_lifted_next_period(setup):
    home, server, res = setup
    (home / "tenants.yaml").write_text(tenants_yaml(dry_run=False))
    try:
        # October 14: 1,008 of 1,000 GPU-hours spent.
        assert run_day(DAY, res).success
        assert acme_resources(server, home) == [
            {"name": "nvidia.com/gpu", "nominalQuota": 3, "borrowingLimit": 0}]
        manifest = yaml.safe_load((home / "exports" / "quotas" / f"{DAY}"
                                   / "clusterqueue-acme.yaml").read_text())
        assert manifest["spec"] == server.objects[CQ_PATH]["spec"]
        assert kueue_errors(manifest) == []  # Kueue 0.19's ClusterQueue CRD, strict
        # One writer of resourceGroups: the quota path's manager; the budget path sent nothing.
        patches = [r for r in server.requests if r.method == "PATCH" and r.path == CQ_PATH]
        assert {r.query["fieldManager"] for r in patches} == {"gpu-chargeback"}
        assert "stopPolicy" not in server.objects[CQ_PATH]["spec"]
        assert query(home, "SELECT tenant, period, kind, name, action, before_policy, "
                     "after_policy, reason, outcome FROM budget_holds") == [
            ("acme", "2026-10", "ClusterQueue", "acme", "no-borrowing", "cohort limits",
             "borrowingLimit 0", "100.80% of the 2026-10 budget spent", "applied")]

        metrics = (home / "exports" / "metrics" / "budgets.prom").read_text()
        assert 'chargeback_budget_borrowing_stopped{name="acme",tenant="acme"} 1.0' in metrics

        # A rerun of the day keeps the hold and records nothing new.
        assert run_day(DAY, res).success
        assert acme_resources(server, home)[0]["borrowingLimit"] == 0
        assert query(home, "SELECT count(*) FROM budget_holds") == [(1,)]

        # November 1: nothing spent yet in the new period, so the cohort limit is back.
        assert run_day(NEXT_PERIOD, res).success
        assert acme_resources(server, home) == [
            {"name": "nvidia.com/gpu", "nominalQuota": 3, "borrowingLimit": 2}]
        assert query(home, "SELECT action, period, after_policy, reason, outcome FROM "
                     "budget_holds ORDER BY changed_at")[-1] == (
            "restore-borrowing", "2026-11", "cohort limits", "new period 2026-11", "applied")
        metrics = (home / "exports" / "metrics" / "budgets.prom").read_text()
        assert "chargeback_budget_borrowing_stopped{" not in metrics
    finally:
        server.stop()


@pytest.mark.slow
def test_no_borrowing_in_dry_run_is_checked_by_the_api_server_and_changes_nothing(setup):
    home, server, res = setup
    (home / "tenants.yaml").write_text(tenants_yaml(dry_run=True))
    try:
        assert run_day(DAY, res).success
        assert acme_resources(server, home) == [
            {"name": "nvidia.com/gpu", "nominalQuota": 3, "borrowingLimit": 2}]
        checks = [r for r in server.requests if r.method == "PATCH" and r.path == CQ_PATH
                  and r.query.get("dryRun") == "All"]
        (check,) = checks
        (group,) = check.body["spec"]["resourceGroups"]
        assert group["flavors"][0]["resources"] == [
            {"name": "nvidia.com/gpu", "nominalQuota": 3, "borrowingLimit": 0}]
        assert kueue_errors(check.body) == []
        written = yaml.safe_load((home / "exports" / "budget-holds" / f"{DAY}" / "dry-run"
                                  / "borrowing" / "clusterqueue-acme.yaml").read_text())
        assert written == check.body
        assert query(home, "SELECT action, outcome FROM budget_holds") == [
            ("no-borrowing", "dry-run")]
    finally:
        server.stop()
