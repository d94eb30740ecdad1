"""The Kueue set of scheduler quotas: flavors from the tier map, the cohort and its overflow
pool, borrowing and lending limits; every object against Kueue 0.19's CRD files and admission
rules, and a dry-run and a real server-side apply against the loopback API server."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from kubernetes import client

from collectors.kube_apply import apply_plan, read_cluster_state
from models.errors import UserError
from models.planning.kueue import (
    PRODUCT_LABEL,
    TIER_LABEL,
    admission_problems,
    cohort_limits,
    flavor_node_labels,
    product_label_value,
)
from models.planning.quotas import (
    ApplyRefused,
    ClusterState,
    FlavorsMissing,
    KueueSetup,
    QuotaKey,
    QuotaKind,
    Recommendation,
    plan_quotas,
    run_quotas,
)
from tests.kube_apply_server import (
    COHORT_PREFIX,
    CQ_PREFIX,
    KUEUE_PREFIX,
    LQ_PREFIX,
    RF_PREFIX,
    LoopbackApiServer,
)
from tests.kueue_schema import crd, kueue_errors

RECS = [
    Recommendation("acme", "team-acme", "premium", None, 3),
    Recommendation("acme", "team-acme", "premium", "1g.10gb", 2),
    Recommendation("zen", "team-zen", "premium", None, 1, sla_class="latency-sensitive"),
    Recommendation("vega", "team-vega", "economy", None, 2, isolation="bridge"),
    Recommendation("orbit", "team-orbit", "standard", None, 4, isolation="silo"),
]
PRODUCTS = {"premium": ["NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb"],
            "standard": ["NVIDIA A100-SXM4-80GB"], "economy": ["NVIDIA L4", "Tesla T4"]}
POOLS = {("premium", None): 5, ("premium", "1g.10gb"): 3, ("economy", None): 2}


def _setup() -> KueueSetup:
    return KueueSetup.generated(PRODUCTS, POOLS)


def _by_kind(plan: Any, kind: QuotaKind) -> dict[str, dict[str, Any]]:
    return {o.where: o.manifest for o in plan.objects if o.kind is kind}


# --- flavors from the tier map ---------------------------------------------------------------

def test_product_label_values_are_what_gpu_feature_discovery_writes():
    assert product_label_value("NVIDIA H100 80GB HBM3") == "NVIDIA-H100-80GB-HBM3"
    assert product_label_value("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb") == "NVIDIA-A100-SXM4-40GB"
    assert product_label_value("Tesla T4") == "Tesla-T4"


def test_flavor_node_labels_from_the_products_of_each_tier():
    labels, notes = flavor_node_labels(PRODUCTS)
    # One product (NVML's name and the MIG node's label are the same H100): its GFD label.
    assert labels["premium"] == {PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"}
    assert labels["standard"] == {PRODUCT_LABEL: "NVIDIA-A100-SXM4-80GB"}
    # L4 and T4 cannot be one exact label value: the tier's own label, and how to set it.
    assert labels["economy"] == {TIER_LABEL: "economy"}
    (note,) = notes
    assert f"kubectl label nodes -l {PRODUCT_LABEL}=NVIDIA-L4 {TIER_LABEL}=economy" in note
    assert f"-l {PRODUCT_LABEL}=Tesla-T4 {TIER_LABEL}=economy" in note
    with pytest.raises(ValueError, match="no GPU product"):
        flavor_node_labels({"premium": []})


def test_a_tier_without_a_known_product_is_an_error_not_an_empty_flavor():
    setup = KueueSetup.generated({"premium": PRODUCTS["premium"]}, {})
    with pytest.raises(UserError, match=r"tier\(s\) economy"):
        plan_quotas([*RECS[:1], RECS[3]], setup=setup)


# --- the cohort and its limits ---------------------------------------------------------------

def test_limits_follow_sla_class_and_isolation():
    assert cohort_limits("standard", "pool", 5) == {"borrowingLimit": 5}
    assert cohort_limits("standard", "bridge", 5) == {"borrowingLimit": 5, "lendingLimit": 0}
    assert cohort_limits("latency-sensitive", "pool", 5) == {"lendingLimit": 0}
    assert cohort_limits("latency-sensitive", "silo", 5) is None
    assert cohort_limits("standard", "silo", 5) is None


def test_the_complete_set_passes_the_kueue_crds_and_admission():
    plan = plan_quotas(RECS, setup=_setup())
    assert plan.problems() == []
    kinds = [o.kind for o in plan.objects]
    # Applied in this order: what a queue names exists before the queue.
    assert kinds == sorted(kinds, key=[QuotaKind.RESOURCE_FLAVOR, QuotaKind.COHORT,
                                       QuotaKind.CLUSTER_QUEUE, QuotaKind.LOCAL_QUEUE,
                                       QuotaKind.RESOURCE_QUOTA].index)
    for o in plan.objects:
        if o.kind is not QuotaKind.RESOURCE_QUOTA:
            assert kueue_errors(o.manifest) == [], o.where
            assert admission_problems(o.manifest) == [], o.where

    assert set(_by_kind(plan, QuotaKind.RESOURCE_FLAVOR)) == {"economy", "premium", "standard"}
    (cohort,) = _by_kind(plan, QuotaKind.COHORT).values()
    (group,) = cohort["spec"]["resourceGroups"]
    assert group["coveredResources"] == ["nvidia.com/gpu", "nvidia.com/mig-1g.10gb"]
    pool = {(f["name"], r["name"]): r["nominalQuota"] for f in group["flavors"]
            for r in f["resources"]}
    assert pool == {("economy", "nvidia.com/gpu"): 2, ("economy", "nvidia.com/mig-1g.10gb"): 0,
                    ("premium", "nvidia.com/gpu"): 5, ("premium", "nvidia.com/mig-1g.10gb"): 3,
                    ("standard", "nvidia.com/gpu"): 0, ("standard", "nvidia.com/mig-1g.10gb"): 0}

    queues = _by_kind(plan, QuotaKind.CLUSTER_QUEUE)

    def quotas(queue: str) -> dict[tuple[str, str], dict[str, Any]]:
        (g,) = queues[queue]["spec"]["resourceGroups"]
        return {(f["name"], r["name"]): r for f in g["flavors"] for r in f["resources"]}

    # The reservation is the nominal quota; a standard pooled tenant borrows up to the pool.
    assert quotas("acme") == {
        ("premium", "nvidia.com/gpu"): {"name": "nvidia.com/gpu", "nominalQuota": 3,
                                        "borrowingLimit": 5},
        ("premium", "nvidia.com/mig-1g.10gb"): {"name": "nvidia.com/mig-1g.10gb",
                                                "nominalQuota": 2, "borrowingLimit": 3}}
    assert quotas("zen")[("premium", "nvidia.com/gpu")] == {
        "name": "nvidia.com/gpu", "nominalQuota": 1, "lendingLimit": 0}
    assert quotas("vega")[("economy", "nvidia.com/gpu")] == {
        "name": "nvidia.com/gpu", "nominalQuota": 2, "borrowingLimit": 2, "lendingLimit": 0}
    # A silo tenant stays out of the cohort: no limits, no preemption across tenants.
    assert "cohortName" not in queues["orbit"]["spec"]
    assert "preemption" not in queues["orbit"]["spec"]
    assert quotas("orbit") == {("standard", "nvidia.com/gpu"): {"name": "nvidia.com/gpu",
                                                                "nominalQuota": 4}}
    assert queues["acme"]["spec"]["preemption"] == {
        "reclaimWithinCohort": "Any", "borrowWithinCohort": {"policy": "Never"},
        "withinClusterQueue": "LowerPriority"}
    assert {ns: m["spec"]["clusterQueue"] for ns, m in
            _by_kind(plan, QuotaKind.LOCAL_QUEUE).items()} == {
        "team-acme/gpu-chargeback": "acme", "team-orbit/gpu-chargeback": "orbit",
        "team-vega/gpu-chargeback": "vega", "team-zen/gpu-chargeback": "zen"}


def test_the_pool_moves_by_max_step_and_never_below_what_is_borrowed():
    key = QuotaKey.cohort("gpu-chargeback", "premium", "nvidia.com/gpu")
    state = ClusterState(in_force={key: 12}, in_use={key: 9})
    change = next(c for c in plan_quotas(RECS, state, setup=_setup(), max_step=4).changes
                  if c.key == key)
    # 12 in force, 5 sized, 9 borrowed now: 12 - 4 = 8 would cut into what is borrowed.
    assert (change.current, change.recommended, change.target, change.rule) == (
        12, 5, 9, "in-use floor")


# --- admission rules, checked against Kueue's own webhook test cases -------------------------

def _cq(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
            "metadata": {"name": "cluster-queue"}, "spec": spec}


def _group(flavors: dict[str, list[tuple[str, Any]]], *, limits: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    names = [r for r, _ in next(iter(flavors.values()))]
    return {"coveredResources": names, "flavors": [
        {"name": f, "resources": [{"name": r, "nominalQuota": q, **(limits or {})}
                                  for r, q in resources]}
        for f, resources in flavors.items()]}


# Cases of kubernetes-sigs/kueue v0.19.0 pkg/webhooks/clusterqueue_webhook_test.go
# (TestValidateClusterQueue), same names, and whether Kueue admits them.
WEBHOOK_CASES = [
    ("built-in resources with qualified names",
     {"resourceGroups": [_group({"default": [("cpu", 0)]})]}, None),
    ("invalid resource name", {"resourceGroups": [_group({"default": [("@cpu", 0)]})]},
     "coveredResources[0]"),
    ("admissionCheckStrategy refers to a flavor that is not in quota",
     {"admissionChecksStrategy": {"admissionChecks": [{"name": "ac1", "onFlavors": ["flavor1"]}]}},
     "onFlavors[0]"),
    ("in cohort", {"cohortName": "prod"}, None),
    ("flavor quota with negative value", {"resourceGroups": [_group({"x86": [("cpu", "-1")]})]},
     "nominalQuota"),
    ("flavor quota with borrowingLimit 0", {"cohortName": "cohort", "resourceGroups": [
        _group({"x86": [("cpu", "1")]}, limits={"borrowingLimit": "0"})]}, None),
    ("flavor quota with negative borrowingLimit", {"cohortName": "cohort", "resourceGroups": [
        _group({"x86": [("cpu", "1")]}, limits={"borrowingLimit": "-1"})]}, "borrowingLimit"),
    ("flavor quota with lendingLimit and empty cohort", {"resourceGroups": [
        _group({"x86": [("cpu", "1")]}, limits={"lendingLimit": "1"})]},
     "must be nil when cohort is empty"),
    ("flavor quota with lendingLimit greater than nominalQuota", {"cohortName": "cohort",
     "resourceGroups": [_group({"x86": [("cpu", "1")]}, limits={"lendingLimit": "2"})]},
     "less than or equal to the nominalQuota"),
    ("namespaceSelector with invalid labels",
     {"namespaceSelector": {"matchLabels": {"nospecialchars^=@": "bar"}}}, "matchLabels"),
    ("namespaceSelector with invalid expressions",
     {"namespaceSelector": {"matchExpressions": [{"key": "key", "operator": "In"}]}},
     "values: must be specified"),
    ("resources in a flavor in different order", {"resourceGroups": [{
        "coveredResources": ["cpu", "memory"],
        "flavors": [{"name": "alpha", "resources": [{"name": "cpu", "nominalQuota": 0},
                                                    {"name": "memory", "nominalQuota": 0}]},
                    {"name": "beta", "resources": [{"name": "memory", "nominalQuota": 0},
                                                   {"name": "cpu", "nominalQuota": 0}]}]}]},
     "must match the name in coveredResources"),
    ("resource in more than one resource group", {"resourceGroups": [
        _group({"alpha": [("cpu", 0), ("memory", 0)]}), _group({"beta": [("memory", 0)]})]},
     "duplicate resource"),
    ("flavor in more than one resource group", {"resourceGroups": [
        _group({"alpha": [("cpu", 0)], "beta": [("cpu", 0)]}), _group({"beta": [("memory", 0)]})]},
     "duplicate flavor"),
    ("flavorFungibility preference set but whenCanPreempt != TryNextFlavor",
     {"flavorFungibility": {"whenCanBorrow": "TryNextFlavor", "whenCanPreempt": "MayStopSearch",
                            "preference": "BorrowingOverPreemption"}}, "preference"),
    ("flavorFungibility preference BorrowingOverPreemption with both TryNextFlavor is valid",
     {"flavorFungibility": {"whenCanBorrow": "TryNextFlavor", "whenCanPreempt": "TryNextFlavor",
                            "preference": "BorrowingOverPreemption"}}, None),
]


@pytest.mark.parametrize(("name", "spec", "error"), WEBHOOK_CASES,
                         ids=[c[0] for c in WEBHOOK_CASES])
def test_admission_rules_agree_with_kueues_webhook_tests(name, spec, error):
    problems = admission_problems(_cq(spec))
    if error is None:
        assert problems == []
    else:
        assert any(error in p for p in problems), problems


def test_other_kinds_admission():
    flavor = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
              "metadata": {"name": "premium"},
              "spec": {"nodeLabels": {PRODUCT_LABEL: "NVIDIA H100"}}}
    assert any("not a valid label value" in p for p in admission_problems(flavor))
    flavor["spec"] = {"nodeTaints": [{"key": "gpu", "effect": "Sometimes"}]}
    assert any("effect" in p for p in admission_problems(flavor))
    cohort = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Cohort",
              "metadata": {"name": "pool"},
              "spec": {"resourceGroups": [_group({"premium": [("nvidia.com/gpu", 4)]},
                                                 limits={"lendingLimit": 9})]}}
    # A cohort's lendingLimit needs a parent, but may exceed its own quota (unlike a queue's).
    assert [p for p in admission_problems(cohort) if "lendingLimit" in p] == [
        "spec.resourceGroups[0].flavors[0].resources[0].lendingLimit: must be nil when parent "
        "is empty"]
    cohort["spec"]["parentName"] = "org"
    assert admission_problems(cohort) == []


def test_fixtures_are_the_kueue_0_19_release_files():
    for kind in ("ClusterQueue", "Cohort", "ResourceFlavor", "LocalQueue"):
        versions = {v["name"]: v for v in crd(kind)["spec"]["versions"]}
        # v1beta2 became the storage version in 0.16: a file where v1beta1 still stores
        # predates it.
        assert versions["v1beta2"]["storage"] is True
        assert versions["v1beta1"]["storage"] is False
    spec = crd("ClusterQueue")["spec"]["versions"]
    (v1beta2,) = [v for v in spec if v["name"] == "v1beta2"]
    fields = v1beta2["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    # 0.19 dropped v1beta2's `admissionChecks` (admissionChecksStrategy only) and added
    # concurrentAdmissionPolicy.
    assert "admissionChecks" not in fields
    assert "concurrentAdmissionPolicy" in fields


# --- against the loopback API server ---------------------------------------------------------

@pytest.fixture
def server():
    srv = LoopbackApiServer().start()
    yield srv
    srv.stop()


def _api(server: LoopbackApiServer) -> client.ApiClient:
    return client.ApiClient(client.Configuration(host=server.url))


def _run(api: client.ApiClient, *, dry_run: bool, setup: KueueSetup | None = None) -> Any:
    setup = setup or _setup()
    state = read_cluster_state(api, RECS, cohort=setup.cohort)
    return run_quotas(RECS, state, now=datetime.now(UTC), setup=setup,
                      apply=partial(apply_plan, api, dry_run=dry_run))


def test_dry_run_of_the_complete_set_is_accepted_and_stores_nothing(server):
    with _api(server) as api:
        run = _run(api, dry_run=True)
    patched = [r.path for r in server.requests if r.method == "PATCH"]
    # Every object went through the server's checks (CRD schema and admission), in order.
    assert patched == [
        f"{RF_PREFIX}economy", f"{RF_PREFIX}premium", f"{RF_PREFIX}standard",
        f"{COHORT_PREFIX}gpu-chargeback",
        f"{CQ_PREFIX}acme", f"{CQ_PREFIX}orbit", f"{CQ_PREFIX}vega", f"{CQ_PREFIX}zen",
        *(f"{LQ_PREFIX}team-{t}/localqueues/gpu-chargeback"
          for t in ("acme", "orbit", "vega", "zen")),
        *(f"/api/v1/namespaces/team-{t}/resourcequotas/gpu-chargeback"
          for t in ("acme", "orbit", "vega", "zen"))]
    assert all(r.query.get("dryRun") == "All" for r in server.requests if r.method == "PATCH")
    assert server.objects == {}
    assert {r.outcome for r in run.records} == {"dry-run"}


def test_apply_creates_the_set_and_a_second_run_changes_nothing(server):
    with _api(server) as api:
        _run(api, dry_run=False)
        assert server.objects[f"{RF_PREFIX}economy"]["spec"] == {
            "nodeLabels": {TIER_LABEL: "economy"}}
        assert server.objects[f"{CQ_PREFIX}zen"]["spec"]["cohortName"] == "gpu-chargeback"
        again = _run(api, dry_run=False)
    assert {r.outcome for r in again.records} == {"unchanged"}
    # Read back from the cluster: the pool's figures are in force.
    assert QuotaKey.cohort("gpu-chargeback", "premium", "nvidia.com/gpu") in {
        r.key for r in again.records if r.before == 5}


def test_the_server_refuses_what_kueue_would(server):
    """The loopback server's checks are real: a ClusterQueue with v1beta1's `cohort` field
    (unknown to v1beta2), sent as it is, is refused with 422 and nothing is stored."""
    bad = copy.deepcopy(plan_quotas(RECS, setup=_setup()).objects)
    queue = next(o for o in bad if o.kind is QuotaKind.CLUSTER_QUEUE)
    queue.manifest["spec"]["cohort"] = "old-name"
    with _api(server) as api:
        custom = client.CustomObjectsApi(api)
        with pytest.raises(client.ApiException) as info:
            custom.patch_cluster_custom_object(
                "kueue.x-k8s.io", "v1beta2", "clusterqueues", queue.name, queue.manifest,
                field_manager="gpu-chargeback", _content_type="application/apply-patch+yaml")
    assert info.value.status == 422
    assert "cohort" in info.value.body
    assert server.objects == {}
    assert KUEUE_PREFIX in server.requests[-1].path


def test_operator_managed_flavors_are_checked_before_anything_is_applied(server):
    setup = KueueSetup(None, POOLS)
    server.put_resource_flavor("premium", {PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"})
    with _api(server) as api, pytest.raises(FlavorsMissing) as info:
        _run(api, dry_run=False, setup=setup)
    assert "ResourceFlavor(s) economy, standard do not exist" in str(info.value)
    assert "FlavorNotFound" in str(info.value)
    assert [r for r in server.requests if r.method == "PATCH"] == []
    server.put_resource_flavor("economy")
    server.put_resource_flavor("standard")
    with _api(server) as api:
        run = _run(api, dry_run=False, setup=setup)
    assert not any(o.kind is QuotaKind.RESOURCE_FLAVOR for o in run.plan.objects)
    # The operator's flavors are left as they were.
    assert server.objects[f"{RF_PREFIX}premium"]["spec"]["nodeLabels"] == {
        PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"}


def test_borrowed_capacity_holds_the_pool_up(server):
    server.put_cluster_queue(
        "acme", {"cohortName": "gpu-chargeback", "resourceGroups": []},
        usage=[{"name": "premium", "resources": [{"name": "nvidia.com/gpu", "total": "9",
                                                  "borrowed": "6"}]}])
    with _api(server) as api:
        state = read_cluster_state(api, RECS)
    key = QuotaKey.cohort("gpu-chargeback", "premium", "nvidia.com/gpu")
    assert state.in_use[key] == 6
    change = next(c for c in plan_quotas(RECS, state, setup=_setup()).changes if c.key == key)
    assert (change.recommended, change.target, change.rule) == (5, 6, "in-use floor")


def test_a_refused_object_stops_the_apply(server):
    # An operator's ClusterQueue owned by another manager: a conflict at the queues, after
    # the flavors and the cohort went through.
    server.put_cluster_queue("acme", {"resourceGroups": []}, manager="argocd-controller")
    with _api(server) as api, pytest.raises(ApplyRefused, match="ClusterQueue acme"):
        _run(api, dry_run=False)
    assert f"{COHORT_PREFIX}gpu-chargeback" in server.objects
    assert f"{CQ_PREFIX}zen" not in server.objects
