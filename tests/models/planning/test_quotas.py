"""Scheduler quotas: the step rules, manifests against the real schemas and Kueue's admission
rules, and server-side apply against a loopback API server."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from kubernetes import client

from cli.main import main
from collectors.kube_apply import APPLY_PATCH, apply_plan, read_cluster_state
from models.errors import UserError
from models.ledger import warehouse
from models.planning.kueue import admission_problems
from models.planning.quotas import (
    ApplyConflict,
    ChangeRecord,
    ClusterState,
    KueueSetup,
    QuotaKey,
    QuotaKind,
    QuotaObject,
    QuotaPlan,
    QuotaPlanRejected,
    Recommendation,
    RecommendationsError,
    last_written_state,
    parse_quantity,
    plan_quotas,
    read_recommendations,
    run_quotas,
    step_target,
)
from tests.kube_apply_server import CQ_PREFIX, RQ_PREFIX, LoopbackApiServer
from tests.kueue_schema import FIXTURES, errors, kueue_schema, strict

RQ_PATH = f"{RQ_PREFIX}acme/resourcequotas/gpu-chargeback"


# --- schemas ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster_queue_schema() -> dict[str, Any]:
    return kueue_schema("ClusterQueue")


@pytest.fixture(scope="module")
def resource_quota_schema() -> dict[str, Any]:
    spec = json.loads((FIXTURES / "k8s-openapi" / "resourcequota-v1.openapi.json").read_text())
    return {"$ref": "#/components/schemas/io.k8s.api.core.v1.ResourceQuota",
            "components": strict(spec["components"])}


_errors = errors


# --- inputs ----------------------------------------------------------------------------------

RECS = [
    Recommendation("acme", "acme", "premium", None, 6),
    Recommendation("acme", "acme", "standard", None, 2),
    Recommendation("acme", "acme", "premium", "1g.10gb", 3),
    Recommendation("zen", "zen-a", "economy", None, 1),
]


def _rq(plan: QuotaPlan) -> dict[tuple[str | None, str], Any]:
    return {(c.key.namespace, c.key.resource): c for c in plan.changes
            if c.key.kind is QuotaKind.RESOURCE_QUOTA}


def _manifests(plan: QuotaPlan, kind: QuotaKind) -> list[dict[str, Any]]:
    return [o.manifest for o in plan.objects if o.kind is kind]


# --- rules -----------------------------------------------------------------------------------

def test_step_moves_toward_the_recommendation_by_at_most_max_step():
    assert step_target(10, 0, 2, 4) == (6, "max-step")
    assert step_target(2, 0, 20, 4) == (6, "max-step")
    assert step_target(5, 0, 7, 4) == (7, "recommended")


def test_step_never_drops_below_use():
    # 10 -> 6 by the step, but 8 GPUs are in use: held at 8.
    assert step_target(10, 8, 2, 4) == (8, "in-use floor")
    # Already over-used (quota 5, use 8): a decrease is refused, the quota stays at 5 rather
    # than being raised against the recommendation's direction.
    assert step_target(5, 8, 2, 4) == (5, "in-use floor")
    # A new quota has no step to limit, but is still no lower than the use.
    assert step_target(None, 3, 1, 4) == (3, "in-use floor")
    assert step_target(None, 0, 9, 4) == (9, "recommended")
    with pytest.raises(UserError, match="at least 1"):
        step_target(1, 0, 2, 0)


def test_resource_quota_adds_up_tiers_and_keeps_mig_profiles_apart():
    plan = plan_quotas(RECS, kueue=False)
    changes = _rq(plan)
    # acme: 6 premium + 2 standard whole GPUs are one resource to a ResourceQuota.
    assert changes[("acme", "requests.nvidia.com/gpu")].target == 8
    assert changes[("acme", "requests.nvidia.com/mig-1g.10gb")].target == 3
    assert changes[("zen-a", "requests.nvidia.com/gpu")].target == 1
    assert len(plan.changes) == 3
    assert [o.kind for o in plan.objects] == [QuotaKind.RESOURCE_QUOTA] * 2


def test_plan_keys_are_typed_and_cluster_state_is_read_by_key():
    state = ClusterState(
        in_force={QuotaKey.resource_quota("acme", "requests.nvidia.com/gpu"): 14,
                  QuotaKey.cluster_queue("acme", "premium", "nvidia.com/gpu"): 10},
        in_use={QuotaKey.cluster_queue("acme", "premium", "nvidia.com/gpu"): 9})
    plan = plan_quotas(RECS, state, max_step=4)
    by_key = {c.key: c for c in plan.changes}
    rq = by_key[QuotaKey(QuotaKind.RESOURCE_QUOTA, "acme", "gpu-chargeback", None,
                         "requests.nvidia.com/gpu")]
    assert (rq.current, rq.target, rq.rule) == (14, 10, "max-step")
    premium = by_key[QuotaKey(QuotaKind.CLUSTER_QUEUE, None, "acme", "premium",
                              "nvidia.com/gpu")]
    # 10 in force, 6 recommended, 9 in use: held at the use.
    assert (premium.current, premium.in_use, premium.target, premium.rule) == (
        10, 9, 9, "in-use floor")
    # Every flavor of acme's queue lists every resource of the queue, in the same order.
    acme = [c.key for c in plan.changes if c.key.name == "acme"
            and c.key.kind is QuotaKind.CLUSTER_QUEUE]
    assert [(k.flavor, k.resource) for k in acme] == [
        ("premium", "nvidia.com/gpu"), ("premium", "nvidia.com/mig-1g.10gb"),
        ("standard", "nvidia.com/gpu"), ("standard", "nvidia.com/mig-1g.10gb")]


def test_quantities_parse_exactly():
    assert parse_quantity("1500m") == parse_quantity("1.5")
    assert parse_quantity("2k") == 2000
    assert parse_quantity("1Ki") == 1024
    assert parse_quantity("3e2") == 300
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity("two")


def test_recommendations_file_reports_every_bad_row(tmp_path):
    good = tmp_path / "ok.csv"
    good.write_text("tenant,namespace,hardware_tier,mig_profile,recommended_gpus,in_use_gpus\n"
                    "acme,acme,premium,,6,2\nacme,acme,premium,1g.10gb,3,\n")
    recs = read_recommendations(good)
    assert recs[0] == Recommendation("acme", "acme", "premium", None, 6, 2, None)
    assert recs[1].mig_profile == "1g.10gb"
    assert recs[1].in_use_gpus is None
    bad = tmp_path / "bad.csv"
    bad.write_text("tenant,namespace,hardware_tier,mig_profile,recommended_gpus\n"
                   "acme,Acme_NS,premium,,2.5\n__idle__,idle,premium,9g.1gb,-1\n")
    with pytest.raises(RecommendationsError) as info:
        read_recommendations(bad)
    text = "\n".join(info.value.problems)
    assert "row 0: namespace" in text
    assert "row 0: recommended_gpus: must be a whole number" in text
    assert "row 1: tenant: __idle__ is a reserved bucket" in text
    assert "row 1: mig_profile" in text
    assert "row 1: recommended_gpus: must not be negative" in text


# --- manifests against the real schemas ------------------------------------------------------

def _both():
    plan = plan_quotas(RECS, max_step=4)
    return (_manifests(plan, QuotaKind.RESOURCE_QUOTA),
            _manifests(plan, QuotaKind.CLUSTER_QUEUE))


def test_resource_quotas_match_the_kubernetes_openapi(resource_quota_schema):
    rq, _ = _both()
    assert len(rq) == 2
    for manifest in rq:
        assert _errors(resource_quota_schema, manifest) == []
        assert manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "gpu-chargeback"
    bad = copy.deepcopy(rq[0])
    bad["spec"]["hard"]["requests.nvidia.com/gpu"] = {"value": 8}
    bad["spec"]["hardLimits"] = {}
    problems = _errors(resource_quota_schema, bad)
    assert any("hard.requests.nvidia.com/gpu" in p for p in problems)
    assert any("hardLimits" in p for p in problems)


def test_cluster_queues_match_kueue_v1beta2_crd_and_webhook(cluster_queue_schema):
    _, cq = _both()
    acme = next(m for m in cq if m["metadata"]["name"] == "acme")
    assert acme["apiVersion"] == "kueue.x-k8s.io/v1beta2"
    (group,) = acme["spec"]["resourceGroups"]
    assert group["coveredResources"] == ["nvidia.com/gpu", "nvidia.com/mig-1g.10gb"]
    assert [f["name"] for f in group["flavors"]] == ["premium", "standard"]
    # standard has no MIG recommendation; Kueue still needs the resource listed, at 0.
    # In the cohort without a pool: a standard tenant may borrow nothing (borrowingLimit 0).
    assert group["flavors"][1]["resources"] == [
        {"name": "nvidia.com/gpu", "nominalQuota": 2, "borrowingLimit": 0},
        {"name": "nvidia.com/mig-1g.10gb", "nominalQuota": 0, "borrowingLimit": 0}]
    for manifest in cq:
        assert _errors(cluster_queue_schema, manifest) == []
        assert admission_problems(manifest) == []


def test_a_budgets_no_borrowing_sets_borrowing_limit_0_on_every_resource_nothing_else(
        cluster_queue_schema):
    recs = [*RECS, Recommendation("lat", "lat", "premium", None, 2,
                                  sla_class="latency-sensitive")]
    setup = KueueSetup(pools={("premium", None): 3})
    before = plan_quotas(recs, max_step=4, setup=setup)
    held = plan_quotas(recs, max_step=4, setup=setup, no_borrowing={"acme", "lat"})

    def queue(plan: QuotaPlan, name: str) -> QuotaObject:
        return next(o for o in plan.objects
                    if o.kind is QuotaKind.CLUSTER_QUEUE and o.name == name)

    for name in ("acme", "lat"):
        resources = [r for f in queue(held, name).manifest["spec"]["resourceGroups"][0][
            "flavors"] for r in f["resources"]]
        assert resources
        assert all(r["borrowingLimit"] == 0 for r in resources)
        assert _errors(cluster_queue_schema, queue(held, name).manifest) == []
        assert admission_problems(queue(held, name).manifest) == []
        # Never below what is running: the nominal quotas are the plan's as ever.
        assert queue(held, name).changes == queue(before, name).changes
        assert queue(held, name).restated
        assert not queue(before, name).restated
    # A latency-sensitive queue borrows without limit otherwise.
    assert "borrowingLimit" not in queue(before, "lat").manifest["spec"]["resourceGroups"][0][
        "flavors"][0]["resources"][0]
    assert queue(held, "zen").manifest == queue(before, "zen").manifest
    assert not queue(held, "zen").restated
    # In force already: planned the same, nothing to restate; lifted: restated once.
    state = ClusterState(no_borrowing=frozenset({"acme"}))
    assert not queue(plan_quotas(recs, state, max_step=4, setup=setup, no_borrowing={"acme"}),
                     "acme").restated
    assert queue(plan_quotas(recs, state, max_step=4, setup=setup), "acme").restated


def test_bad_cluster_queues_are_rejected(cluster_queue_schema):
    _, cq = _both()
    good = next(m for m in cq if m["metadata"]["name"] == "acme")

    v1beta1_cohort = copy.deepcopy(good)
    v1beta1_cohort["spec"]["cohort"] = "gpus"  # renamed cohortName in v1beta2
    assert any("cohort" in p for p in _errors(cluster_queue_schema, v1beta1_cohort))

    too_many = copy.deepcopy(good)
    too_many["spec"]["resourceGroups"] *= 17
    assert any("too long" in p for p in _errors(cluster_queue_schema, too_many))

    bad_quantity = copy.deepcopy(good)
    bad_quantity["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["nominalQuota"] = "4 "
    assert _errors(cluster_queue_schema, bad_quantity)

    swapped = copy.deepcopy(good)
    swapped["spec"]["resourceGroups"][0]["flavors"][0]["resources"].reverse()
    assert any("must match the name in coveredResources" in p
               for p in admission_problems(swapped))

    negative = copy.deepcopy(good)
    negative["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["nominalQuota"] = -1
    assert _errors(cluster_queue_schema, negative) == []  # the schema allows it; Kueue doesn't
    assert any("greater than or equal to 0" in p for p in admission_problems(negative))

    borrowing = copy.deepcopy(good)
    del borrowing["spec"]["cohortName"]
    assert any("must be nil when cohort is empty" in p
               for p in admission_problems(borrowing))
    borrowing["spec"]["cohortName"] = "gpus"
    assert admission_problems(borrowing) == []

    short = copy.deepcopy(good)
    short["spec"]["resourceGroups"][0]["flavors"][0]["resources"].pop()
    assert any("same number of resources" in p for p in admission_problems(short))

    duplicate = copy.deepcopy(good)
    duplicate["spec"]["resourceGroups"].append(copy.deepcopy(good["spec"]["resourceGroups"][0]))
    problems = admission_problems(duplicate)
    assert any("duplicate resource" in p for p in problems)
    assert any("duplicate flavor" in p for p in problems)


# --- server-side apply against the loopback API server ---------------------------------------

@pytest.fixture
def server():
    srv = LoopbackApiServer().start()
    yield srv
    srv.stop()


def _api(server: LoopbackApiServer) -> client.ApiClient:
    return client.ApiClient(client.Configuration(host=server.url))


ACME = [Recommendation("acme", "acme", "premium", None, 2)]


def _apply(api: client.ApiClient, recommendations: list[Recommendation], *, dry_run: bool = True,
           kueue: bool = False, con: Any = None) -> list[ChangeRecord]:
    """What `chargeback quotas apply` and the asset run: read, plan, validate, apply, record."""
    state = read_cluster_state(api, recommendations, kueue=kueue)
    return run_quotas(recommendations, state, now=datetime.now(UTC), max_step=4, kueue=kueue,
                      apply=partial(apply_plan, api, dry_run=dry_run), con=con).records


def _patches(server):
    return [r for r in server.requests if r.method == "PATCH"]


def test_dry_run_sends_apply_patch_and_changes_nothing(server):
    server.put_resource_quota("acme", "gpu-chargeback", {"requests.nvidia.com/gpu": "3"},
                              {"requests.nvidia.com/gpu": "1"})
    before = copy.deepcopy(server.objects)
    with _api(server) as api:
        records = _apply(api, ACME)
    (patch,) = _patches(server)
    assert patch.content_type == APPLY_PATCH
    assert patch.query["fieldManager"] == "gpu-chargeback"
    assert patch.query["dryRun"] == "All"
    assert patch.query["force"] == "false"
    assert patch.body["spec"]["hard"] == {"requests.nvidia.com/gpu": "2"}
    assert server.objects == before
    (record,) = records
    assert (record.before, record.after, record.dry_run, record.outcome) == (3, 2, True, "dry-run")
    assert record.changed_at.tzinfo is not None


def test_apply_changes_the_object_and_records_it(server, tmp_path):
    server.put_resource_quota("acme", "gpu-chargeback", {"requests.nvidia.com/gpu": "3"},
                              {"requests.nvidia.com/gpu": "1"})
    con = warehouse.connect(tmp_path / "w.duckdb")
    warehouse.create_schema(con)
    with _api(server) as api:
        records = _apply(api, ACME, dry_run=False, con=con)
        assert records[0].outcome == "applied"
        (patch,) = _patches(server)
        assert "dryRun" not in patch.query
        assert server.objects[RQ_PATH]["spec"]["hard"] == {"requests.nvidia.com/gpu": "2"}
        # A second run finds the figure in force: recorded again (history), not applied again.
        assert [r.outcome for r in _apply(api, ACME, dry_run=False, con=con)] == ["unchanged"]
    assert len(_patches(server)) == 1
    rows = con.execute("SELECT kind, namespace, name, flavor, resource, before_gpus, after_gpus, "
                       "dry_run, outcome FROM scheduler_quota_changes ORDER BY changed_at"
                       ).fetchall()
    assert rows == [
        ("ResourceQuota", "acme", "gpu-chargeback", None, "requests.nvidia.com/gpu", 3, 2,
         False, "applied"),
        ("ResourceQuota", "acme", "gpu-chargeback", None, "requests.nvidia.com/gpu", 2, 2,
         False, "unchanged")]


def test_never_below_current_use_and_max_step_against_the_server(server):
    # In force 12, 9 in use ("9000m" as the quota controller may write it), recommended 2,
    # step 4: 12 - 4 = 8 would cut into the 9 in use, so 9.
    server.put_resource_quota("acme", "gpu-chargeback", {"requests.nvidia.com/gpu": "12"},
                              {"requests.nvidia.com/gpu": "9000m"})
    with _api(server) as api:
        (record,) = _apply(api, ACME, dry_run=False)
    assert (record.before, record.after, record.rule) == (12, 9, "in-use floor")
    # With use at 1, the step alone limits: 9 -> 5, then 5 -> 2 (within one step).
    server.objects[RQ_PATH]["status"]["used"] = {"requests.nvidia.com/gpu": "1"}
    with _api(server) as api:
        (record,) = _apply(api, ACME, dry_run=False)
    assert (record.before, record.after, record.rule) == (9, 5, "max-step")
    with _api(server) as api:
        (record,) = _apply(api, ACME, dry_run=False)
    assert (record.before, record.after, record.rule) == (5, 2, "recommended")
    with _api(server) as api:
        (record,) = _apply(api, ACME, dry_run=False)
    assert record.outcome == "unchanged"
    assert len(_patches(server)) == 3


def test_cluster_queue_applied_with_usage_floor_and_cpu_group_kept(server):
    cpu_group = {"coveredResources": ["cpu"],
                 "flavors": [{"name": "default", "resources": [{"name": "cpu",
                                                                "nominalQuota": "64"}]}]}
    server.put_resource_flavor("premium")
    server.put_cluster_queue(
        "acme",
        {"resourceGroups": [cpu_group, {"coveredResources": ["nvidia.com/gpu"], "flavors": [
            {"name": "premium", "resources": [{"name": "nvidia.com/gpu", "nominalQuota": 8}]}]}]},
        usage=[{"name": "premium", "resources": [{"name": "nvidia.com/gpu", "total": "7"}]}])
    with _api(server) as api:
        records = _apply(api, ACME, dry_run=False, kueue=True)
    cq = {r.key.kind: r for r in records}[QuotaKind.CLUSTER_QUEUE]
    assert cq.key == QuotaKey.cluster_queue("acme", "premium", "nvidia.com/gpu")
    assert (cq.before, cq.after, cq.in_use, cq.rule) == (8, 7, 7, "in-use floor")
    groups = server.objects[f"{CQ_PREFIX}acme"]["spec"]["resourceGroups"]
    assert groups[0] == cpu_group
    assert groups[1]["flavors"][0]["resources"][0]["nominalQuota"] == 7


def test_a_plan_kueue_would_reject_writes_and_applies_nothing(server, tmp_path):
    # The live queue's CPU group already uses a flavor named like a tier: two groups with one
    # flavor is what Kueue's webhook refuses.
    clash = {"coveredResources": ["cpu"],
             "flavors": [{"name": "premium", "resources": [{"name": "cpu", "nominalQuota": 8}]}]}
    server.put_cluster_queue("acme", {"resourceGroups": [clash]})
    con = warehouse.connect(tmp_path / "w.duckdb")
    warehouse.create_schema(con)
    folder = tmp_path / "manifests"
    with _api(server) as api:
        state = read_cluster_state(api, ACME, kueue=True)
        assert state.other_groups == {"acme": [clash]}
        with pytest.raises(QuotaPlanRejected, match="duplicate flavor 'premium'"):
            run_quotas(ACME, state, now=datetime.now(UTC), folder=folder, con=con,
                       apply=partial(apply_plan, api, dry_run=False))
    assert _patches(server) == []
    assert not folder.exists()
    assert con.execute("SELECT count(*) FROM scheduler_quota_changes").fetchone() == (0,)


def test_conflict_gives_a_clear_error(server, tmp_path):
    server.put_resource_quota("acme", "gpu-chargeback", {"requests.nvidia.com/gpu": "3"},
                              {}, manager="argocd-controller")
    with _api(server) as api, pytest.raises(ApplyConflict, match="--force-conflicts") as info:
        _apply(api, ACME, dry_run=False)
    assert "argocd-controller" in str(info.value)
    assert [r.outcome for r in info.value.records] == ["conflict"]
    assert server.objects[RQ_PATH]["spec"]["hard"] == {"requests.nvidia.com/gpu": "3"}

    recs = tmp_path / "recs.csv"
    recs.write_text("tenant,namespace,hardware_tier,mig_profile,recommended_gpus\n"
                    "acme,acme,premium,,2\n")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "loop",
        "clusters": [{"name": "loop", "cluster": {"server": server.url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "loop", "context": {"cluster": "loop", "user": "u"}}],
    }))
    runner = CliRunner()
    args = ["apply", "--recommendations", str(recs), "--no-kueue", "--apply",
            "--kubeconfig", str(kubeconfig), "--warehouse", str(tmp_path / "w.duckdb")]
    result = runner.invoke(main, ["quotas", *args])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "--force-conflicts" in result.output
    result = runner.invoke(main, ["quotas", *args, "--force-conflicts"])
    assert result.exit_code == 0, result.output
    assert "3 -> 2" in result.output
    assert server.objects[RQ_PATH]["spec"]["hard"] == {"requests.nvidia.com/gpu": "2"}
    con = warehouse.connect(tmp_path / "w.duckdb", read_only=True)
    assert con.execute("SELECT outcome, day FROM scheduler_quota_changes ORDER BY outcome"
                       ).fetchall() == [("applied", None), ("conflict", None)]


def test_manifests_without_a_cluster_step_from_the_last_written_figures(tmp_path):
    """The asset's path without a cluster: each day's manifests are recorded, and the next day
    moves from them by at most max-step; a rerun of a day replaces its rows."""
    con = warehouse.connect(tmp_path / "w.duckdb")
    warehouse.create_schema(con)
    day = datetime(2026, 9, 1, tzinfo=UTC)
    big = [Recommendation("acme", "acme", "premium", None, 10)]

    def run(recs: list[Recommendation], n: int) -> list[ChangeRecord]:
        end = day + timedelta(days=n + 1)
        return run_quotas(recs, last_written_state(con, end), now=end, max_step=4, con=con,
                          folder=tmp_path / f"day{n}", day=(day + timedelta(days=n)).date()
                          ).records

    # No pool was sized: the cohort's own quota is 0.
    assert {r.key.kind: r.after for r in run(big, 0)} == {
        QuotaKind.RESOURCE_QUOTA: 10, QuotaKind.CLUSTER_QUEUE: 10, QuotaKind.COHORT: 0}
    second = run([Recommendation("acme", "acme", "premium", None, 1)], 1)
    assert {(r.key.kind, r.before, r.after, r.rule) for r in second} == {
        (QuotaKind.RESOURCE_QUOTA, 10, 6, "max-step"), (QuotaKind.CLUSTER_QUEUE, 10, 6, "max-step"),
        (QuotaKind.COHORT, 0, 0, "recommended")}
    count = con.execute("SELECT count(*) FROM scheduler_quota_changes").fetchone()
    run([Recommendation("acme", "acme", "premium", None, 1)], 1)
    assert con.execute("SELECT count(*) FROM scheduler_quota_changes").fetchone() == count == (6,)
    assert last_written_state(con, day + timedelta(days=3)).in_force == {
        QuotaKey.resource_quota("acme", "requests.nvidia.com/gpu"): 6,
        QuotaKey.cluster_queue("acme", "premium", "nvidia.com/gpu"): 6,
        QuotaKey.cohort("gpu-chargeback", "premium", "nvidia.com/gpu"): 0}
    assert sorted(p.name for p in (tmp_path / "day1").iterdir()) == [
        "clusterqueue-acme.yaml", "cohort-gpu-chargeback.yaml",
        "localqueue-acme.gpu-chargeback.yaml", "resourcequota-acme.gpu-chargeback.yaml"]


def test_cli_write_and_bad_input(tmp_path, resource_quota_schema, cluster_queue_schema):
    recs = tmp_path / "recs.csv"
    recs.write_text("tenant,namespace,hardware_tier,mig_profile,recommended_gpus,current_gpus\n"
                    "acme,acme,premium,,9,2\nacme,acme,premium,3g.40gb,1,\n")
    out = tmp_path / "out"
    (out).mkdir()
    (out / "resourcequota-gone.gpu-chargeback.yaml").write_text("stale: true\n")
    args = ["quotas", "write", "--recommendations", str(recs), "--out", str(out),
            "--max-step", "3"]
    # A file cannot say which GPUs a tier has: no flavor can be generated from it.
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "--flavors existing" in result.output
    result = CliRunner().invoke(main, [*args, "--flavors", "existing"])
    assert result.exit_code == 0, result.output
    assert "expects the ResourceFlavors premium to exist" in result.output
    files = sorted(p.name for p in out.iterdir())
    assert files == ["clusterqueue-acme.yaml", "cohort-gpu-chargeback.yaml",
                     "localqueue-acme.gpu-chargeback.yaml",
                     "resourcequota-acme.gpu-chargeback.yaml"]
    rq = yaml.safe_load((out / files[3]).read_text())
    # current 2, recommended 9, step 3 -> 5; the MIG quota is new -> as recommended.
    assert rq["spec"]["hard"] == {"requests.nvidia.com/gpu": "5",
                                  "requests.nvidia.com/mig-3g.40gb": "1"}
    assert _errors(resource_quota_schema, rq) == []
    cq = yaml.safe_load((out / files[0]).read_text())
    assert _errors(cluster_queue_schema, cq) == []

    bad = tmp_path / "bad.csv"
    bad.write_text("tenant,namespace\nacme,acme\n")
    result = CliRunner().invoke(main, ["quotas", "write", "--recommendations", str(bad),
                                         "--out", str(tmp_path / "o2")])
    assert result.exit_code == 2
    assert f"{bad}: missing column(s) hardware_tier" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o2").exists()
