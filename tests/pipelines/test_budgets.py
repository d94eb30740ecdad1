"""Budgets through Dagster against real parts: a temp DuckDB warehouse, a real Alertmanager
(its v2 API) and the loopback Kubernetes API server for the Kueue holds.

The demo of issue 14: acme (a GPU-hours budget, enforcement on) spends its whole budget on
October 14 and its ClusterQueue is held (stopPolicy Hold applied, quota fields untouched), and
the hold is lifted on November 1; zen (a money budget) crosses 80% the same day. Each crossed
threshold reaches Alertmanager once, also when the day is rerun."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from models.ledger import warehouse
from pipelines.analytics.budgets import budget_alerts, tenant_budgets
from pipelines.analytics.forecast import tenant_forecasts
from pipelines.resources import (
    AlertmanagerResource,
    BillingConfigResource,
    KubernetesResource,
    OutputsResource,
    WarehouseResource,
)
from tests.alertmanager_server import active_alerts, alertmanager
from tests.kube_apply_server import CQ_PREFIX, LoopbackApiServer
from tests.kueue_schema import kueue_errors
from tests.prometheus_server import PROMTOOL

ROOT = Path(__file__).resolve().parents[2]
FIRST_DAY = date(2026, 9, 10)
DAY = date(2026, 10, 14)
NEXT_PERIOD = date(2026, 11, 1)
CQ_PATH = f"{CQ_PREFIX}acme"
QUOTA_SPEC = {"resourceGroups": [{"coveredResources": ["nvidia.com/gpu"], "flavors": [
    {"name": "premium", "resources": [{"name": "nvidia.com/gpu", "nominalQuota": 4}]}]}]}


def tenants_yaml(acme_dry_run: bool) -> str:
    return f"""\
tenants:
  acme:
    plan: growth
    namespaces: [team-acme]
    start: 2026-01-01
    budget:
      gpu_hours: 1000
      enforce: {{queue: ClusterQueue, dry_run: {str(acme_dry_run).lower()}}}
  zen:
    plan: enterprise
    namespaces: [team-zen]
    start: 2026-01-01
    budget: {{amount: "14000.00", currency: USD}}
"""


def write_usage(path: Path, last_day: date) -> None:
    """acme: 3 premium GPUs every hour (72 GPU-hours a day); zen: 6 standard GPUs."""
    con = warehouse.connect(path)
    try:
        warehouse.create_schema(con)
        start = datetime.combine(FIRST_DAY, datetime.min.time(), UTC)
        rows = []
        for i in range(((last_day - FIRST_DAY).days + 1) * 24):
            hour = start + timedelta(hours=i)
            for tenant, tier, size, product, gpus in (
                    ("acme", "premium", "large", "H100", 3),
                    ("zen", "standard", "medium", "A100", 6)):
                rows.append((hour.date(), hour, "c1", "n1", tenant, tier, size, product, None,
                             "m", "inference", Decimal(gpus * 3600), None, 0, gpus, 1))
        con.executemany("INSERT INTO usage_hourly VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    finally:
        con.close()


def kubeconfig_for(server: LoopbackApiServer, folder: Path) -> Path:
    path = folder / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "loop",
        "clusters": [{"name": "loop", "cluster": {"server": server.url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "loop", "context": {"cluster": "loop", "user": "u"}}],
    }))
    return path


def resources(home: Path, kubeconfig: Path | None, alertmanager_url: str = "") -> dict[str, Any]:
    return {
        "warehouse_db": WarehouseResource(path=str(home / "warehouse.duckdb")),
        "billing": BillingConfigResource(
            rate_card_path=str(ROOT / "examples" / "demo" / "rate-card.yaml"),
            tenants_path=str(home / "tenants.yaml")),
        "outputs": OutputsResource(exports_path=str(home / "exports"),
                                   marts_path=str(home / "marts")),
        "kubernetes": KubernetesResource(kubeconfig=str(kubeconfig or ""),
                                         apply=kubeconfig is not None),
        "alertmanager": AlertmanagerResource(url=alertmanager_url),
    }


def materialize(assets: list[Any], day: date, res: dict[str, Any]) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, partition_key=f"{day}", resources=res,
                          instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def query(home: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    con = warehouse.connect(home / "warehouse.duckdb", read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    write_usage(tmp_path / "warehouse.duckdb", NEXT_PERIOD)
    return tmp_path


@pytest.mark.slow
def test_the_demo_alerts_at_80_percent_holds_at_100_and_lifts_the_hold_next_period(home):
    (home / "tenants.yaml").write_text(tenants_yaml(acme_dry_run=False))
    server = LoopbackApiServer().start()
    try:
        server.put_cluster_queue("acme", QUOTA_SPEC)  # the quota path's, manager gpu-chargeback
        res = resources(home, kubeconfig_for(server, home))
        with alertmanager(home / "alertmanager") as url:
            res["alertmanager"] = AlertmanagerResource(url=url)
            result = materialize([tenant_forecasts, tenant_budgets], DAY, res)
            assert result.success

            budgets = query(home, "SELECT tenant, unit, limit_value, spent, used_pct, "
                            "enforcement FROM tenant_budgets WHERE day = ? ORDER BY tenant",
                            [DAY])
            # acme: 14 days x 72 GPU-hours. zen: the enterprise minimum (25,000.00) accrues
            # over October's 744 hours: 14/31 of it is 11,290.32, above its own usage.
            assert budgets == [
                ("acme", "gpu_hours", Decimal(1000), Decimal(1008), Decimal("100.80"), "on"),
                ("zen", "amount", Decimal(14000), Decimal("11290.32"), Decimal("80.65"), "off"),
            ]
            crossed = query(home, "SELECT tenant, basis, percent, crossed_on FROM "
                            "budget_thresholds WHERE day = ? ORDER BY ALL", [DAY])
            assert crossed == [
                ("acme", "actual", Decimal(50), date(2026, 10, 7)),
                ("acme", "actual", Decimal(80), date(2026, 10, 12)),
                ("acme", "actual", Decimal(100), date(2026, 10, 14)),
                ("acme", "forecast", Decimal(100), DAY),
                ("zen", "actual", Decimal(50), date(2026, 10, 9)),
                ("zen", "actual", Decimal(80), date(2026, 10, 14)),
                ("zen", "forecast", Decimal(100), DAY),
            ]

            # The hold: spec.stopPolicy alone, under its own manager, applied for real; the
            # quota path's resourceGroups untouched; the manifest valid against Kueue's CRD.
            (patch,) = [r for r in server.requests if r.method == "PATCH"]
            assert patch.query["fieldManager"] == "gpu-chargeback-budgets"
            assert "dryRun" not in patch.query
            assert patch.query["force"] == "false"
            live = server.objects[CQ_PATH]["spec"]
            assert live == {**QUOTA_SPEC, "stopPolicy": "Hold"}
            manifest = yaml.safe_load((home / "exports" / "budget-holds" / f"{DAY}"
                                       / "clusterqueue-acme.yaml").read_text())
            assert manifest == patch.body
            assert kueue_errors(manifest) == []  # Kueue 0.19's ClusterQueue CRD, strict
            holds = query(home, "SELECT tenant, period, kind, name, action, before_policy, "
                          "after_policy, reason, outcome FROM budget_holds ORDER BY changed_at")
            assert holds == [("acme", "2026-10", "ClusterQueue", "acme", "hold", "None", "Hold",
                              "100.80% of the 2026-10 budget spent by 2026-10-14", "applied")]

            # The alerts reach Alertmanager once each, also when the day is run again.
            sent = materialize([budget_alerts], DAY, res)
            assert sent.success
            alerts = active_alerts(url)
            keys = sorted((a["labels"]["tenant"], a["labels"]["basis"],
                           a["labels"]["threshold_pct"]) for a in alerts)
            assert keys == [("acme", "actual", "100"), ("acme", "actual", "50"),
                            ("acme", "actual", "80"), ("acme", "forecast", "100"),
                            ("zen", "actual", "50"), ("zen", "actual", "80"),
                            ("zen", "forecast", "100")]
            (zen80,) = [a for a in alerts if a["labels"]["tenant"] == "zen"
                        and a["labels"]["threshold_pct"] == "80"]
            assert zen80["labels"]["severity"] == "warning"
            assert zen80["annotations"]["summary"] == (
                "zen has spent 11,290.32 USD of its 14,000.00 USD budget for 2026-10 "
                "(80.65%, threshold 80%)")
            assert materialize([tenant_forecasts, tenant_budgets], DAY, res).success
            again = materialize([budget_alerts], DAY, res)
            assert again.success
            (m,) = again.asset_materializations_for_node("budget_alerts")
            assert m.metadata["sent"].value == 0
            assert query(home, "SELECT count(*) FROM budget_alerts") == [(7,)]
            assert len(active_alerts(url)) == 7

        # The hold is not applied twice, and the metrics say the queue is held.
        assert len([r for r in server.requests if r.method == "PATCH"]) == 1
        metrics = (home / "exports" / "metrics" / "budgets.prom").read_text()
        assert ('chargeback_budget_queue_held{kind="ClusterQueue",name="acme",namespace="",'
                'tenant="acme"} 1.0') in metrics
        assert 'chargeback_budget_used_ratio{period="2026-10",tenant="acme"} 1.008' in metrics
        if PROMTOOL:
            import subprocess
            checked = subprocess.run([PROMTOOL, "check", "metrics"], input=metrics, text=True,
                                     capture_output=True, check=False)
            assert checked.returncode == 0, checked.stdout + checked.stderr

        # November: nothing spent yet, so the hold is lifted.
        assert materialize([tenant_forecasts, tenant_budgets], NEXT_PERIOD, res).success
        assert server.objects[CQ_PATH]["spec"] == {**QUOTA_SPEC, "stopPolicy": "None"}
        assert query(home, "SELECT action, period, after_policy, reason, outcome FROM "
                     "budget_holds ORDER BY changed_at")[-1] == (
            "release", "2026-11", "None", "new period 2026-11", "applied")
        metrics = (home / "exports" / "metrics" / "budgets.prom").read_text()
        assert "chargeback_budget_queue_held{" not in metrics
        # A backfill of October 14 now rewrites its figures and holds nothing again.
        patches = len([r for r in server.requests if r.method == "PATCH"])
        again = materialize([tenant_forecasts, tenant_budgets], DAY, res)
        assert again.success
        assert len([r for r in server.requests if r.method == "PATCH"]) == patches
        assert server.objects[CQ_PATH]["spec"]["stopPolicy"] == "None"
        (m,) = again.asset_materializations_for_node("tenant_budgets")
        assert "not the latest analysed day" in m.metadata["notes"].value
    finally:
        server.stop()


@pytest.mark.slow
def test_dry_run_checks_the_hold_with_the_api_server_and_changes_nothing(home):
    (home / "tenants.yaml").write_text(tenants_yaml(acme_dry_run=True))
    server = LoopbackApiServer().start()
    try:
        server.put_cluster_queue("acme", QUOTA_SPEC)
        res = resources(home, kubeconfig_for(server, home))
        assert materialize([tenant_forecasts, tenant_budgets], DAY, res).success
        (patch,) = [r for r in server.requests if r.method == "PATCH"]
        assert patch.query["dryRun"] == "All"
        assert server.objects[CQ_PATH]["spec"] == QUOTA_SPEC
        assert (home / "exports" / "budget-holds" / f"{DAY}" / "dry-run"
                / "clusterqueue-acme.yaml").is_file()
        assert query(home, "SELECT action, outcome FROM budget_holds") == [("hold", "dry-run")]
        # Not in force, so the next day checks it again rather than lifting anything.
        assert materialize([tenant_forecasts, tenant_budgets], DAY + timedelta(days=1),
                           res).success
        assert query(home, "SELECT action, outcome FROM budget_holds ORDER BY changed_at") == [
            ("hold", "dry-run"), ("hold", "dry-run")]
    finally:
        server.stop()


@pytest.mark.slow
def test_a_stop_policy_owned_by_another_manager_is_a_clear_conflict_recorded(home):
    (home / "tenants.yaml").write_text(tenants_yaml(acme_dry_run=False))
    server = LoopbackApiServer().start()
    try:
        server.put_cluster_queue("acme", QUOTA_SPEC)
        server.set_spec_field(CQ_PATH, "stopPolicy", "None", manager="argocd-controller")
        res = resources(home, kubeconfig_for(server, home))
        result = materialize([tenant_forecasts, tenant_budgets], DAY, res)
        assert not result.success
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        message = failure.step_failure_data.error.to_string()  # type: ignore[union-attr]
        assert "ClusterQueue acme: hold for acme's budget refused: another field manager " \
               "owns spec.stopPolicy" in message
        assert 'conflict with "argocd-controller": .spec.stopPolicy' in message
        assert server.objects[CQ_PATH]["spec"]["stopPolicy"] == "None"
        assert query(home, "SELECT action, outcome FROM budget_holds") == [("hold", "conflict")]
    finally:
        server.stop()


@pytest.mark.slow
def test_without_a_cluster_the_hold_is_a_manifest_and_counts_as_in_force(home):
    (home / "tenants.yaml").write_text(tenants_yaml(acme_dry_run=False))
    res = resources(home, None)
    assert materialize([tenant_forecasts, tenant_budgets], DAY, res).success
    assert materialize([tenant_forecasts, tenant_budgets], DAY, res).success  # a rerun
    assert query(home, "SELECT day, action, before_policy, outcome FROM budget_holds") == [
        (DAY, "hold", None, "manifest")]
    assert materialize([tenant_forecasts, tenant_budgets], NEXT_PERIOD, res).success
    assert query(home, "SELECT action, reason, outcome FROM budget_holds ORDER BY changed_at"
                 )[-1] == ("release", "new period 2026-11", "manifest")
    released = yaml.safe_load((home / "exports" / "budget-holds" / f"{NEXT_PERIOD}"
                               / "clusterqueue-acme.yaml").read_text())
    assert released["spec"] == {"stopPolicy": "None"}


def test_the_sensor_runs_the_alerts_of_the_analysed_day_and_says_why_when_it_cannot():
    from pipelines.analytics.budgets import raise_budget_alerts
    from pipelines.partitions import DAILY

    @dg.asset(partitions_def=DAILY)
    def analysed() -> None:
        """Stands for the daily analytics run the sensor watches."""

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([analysed], partition_key=f"{DAY}", instance=instance)
    run = instance.get_run_by_id(result.run_id)
    assert run is not None

    def evaluate(url: str) -> Any:
        context = dg.build_run_status_sensor_context(
            sensor_name="raise_budget_alerts", dagster_event=result.get_run_success_event(),
            dagster_instance=instance, dagster_run=run,
            resources={"alertmanager": AlertmanagerResource(url=url)})
        return raise_budget_alerts(context)

    request = evaluate("http://127.0.0.1:9")
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == f"{DAY}"
    assert request.run_key == f"budget-alerts-{result.run_id}"
    skipped = evaluate("")
    assert isinstance(skipped, dg.SkipReason)
    assert "CHARGEBACK_ALERTMANAGER_URL" in (skipped.skip_message or "")


def test_local_queue_holds_read_and_apply_per_namespace(tmp_path):
    from collectors import kube_apply
    from models.billing.rate_cards import QueueKind
    from models.planning.budgets import MISSING, HoldChange, QueueRef

    server = LoopbackApiServer().start()
    try:
        path = server.put_local_queue("team-acme", "gpu-chargeback",
                                      {"clusterQueue": "acme"})
        held = QueueRef(QueueKind.LOCAL_QUEUE, "team-acme", "gpu-chargeback")
        absent = QueueRef(QueueKind.LOCAL_QUEUE, "team-acme-2", "gpu-chargeback")
        with kube_apply.api_client(str(kubeconfig_for(server, tmp_path))) as api:
            assert kube_apply.read_stop_policies(api, [held, absent]) == {
                held: "None", absent: MISSING}
            change = HoldChange("acme", "2026-10", held, "hold", "None", "Hold", "why",
                                dry_run=False)
            done, problems = kube_apply.apply_holds(api, [change], now=datetime.now(UTC))
        assert (done, problems) == ([(change, "applied")], [])
        (patch,) = [r for r in server.requests if r.method == "PATCH"]
        assert patch.path == path
        assert patch.body == {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                              "metadata": {"name": "gpu-chargeback", "namespace": "team-acme"},
                              "spec": {"stopPolicy": "Hold"}}
        # Kueue 0.19's LocalQueue CRD takes the hold as it stands and as it leaves the queue.
        assert kueue_errors(patch.body) == []
        assert kueue_errors({**patch.body, "spec": server.objects[path]["spec"]}) == []
        assert server.objects[path]["spec"] == {"clusterQueue": "acme", "stopPolicy": "Hold"}
    finally:
        server.stop()
