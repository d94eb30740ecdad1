"""Scheduler quotas: the step rules, manifests against the real schemas and Kueue's admission
rules, and server-side apply against a loopback API server."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import duckdb
import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from kubernetes import client

from cli.main import main
from collectors.kube_apply import (
    APPLY_PATCH,
    ApplyConflict,
    apply_quotas,
    record_changes,
)
from models.planning.quotas import (
    KUEUE_API_VERSION,
    Recommendation,
    RecommendationsError,
    cluster_queue_manifests,
    kueue_admission_problems,
    parse_quantity,
    plan_cluster_queues,
    plan_resource_quotas,
    read_recommendations,
    resource_quota_manifests,
    step_target,
)
from tests.kube_apply_server import CQ_PREFIX, RQ_PREFIX, LoopbackApiServer

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
RQ_PATH = f"{RQ_PREFIX}acme/resourcequotas/gpu-chargeback"


# --- schemas ---------------------------------------------------------------------------------

def _strict(schema: Any) -> Any:
    """Unknown fields are errors, as kube-apiserver's fieldValidation=Strict makes them (and
    as a typo such as v1beta1's `cohort` in a v1beta2 object should be)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _crd_to_jsonschema(node: Any) -> Any:
    """A CRD structural schema as JSON Schema: `x-kubernetes-int-or-string` becomes integer or
    string (the quantity `pattern` then applies to strings only, as in the API server)."""
    if isinstance(node, list):
        return [_crd_to_jsonschema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _crd_to_jsonschema(v) for k, v in node.items()
           if not k.startswith("x-kubernetes-") and k not in ("default", "format")}
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


@pytest.fixture(scope="module")
def cluster_queue_schema() -> dict[str, Any]:
    crd = yaml.safe_load((FIXTURES / "kueue" / "kueue.x-k8s.io_clusterqueues.v1beta2.yaml")
                         .read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta2"]
    schema = _strict(_crd_to_jsonschema(version["schema"]["openAPIV3Schema"]))
    schema["properties"]["apiVersion"]["const"] = KUEUE_API_VERSION
    schema["properties"]["kind"]["const"] = "ClusterQueue"
    schema["properties"]["metadata"] = {  # what kube-apiserver requires of any object's metadata
        "type": "object", "required": ["name"],
        "properties": {"name": {"type": "string", "maxLength": 253},
                       "labels": {"type": "object", "additionalProperties": {"type": "string"}}},
        "additionalProperties": False,
    }
    return schema


@pytest.fixture(scope="module")
def resource_quota_schema() -> dict[str, Any]:
    spec = json.loads((FIXTURES / "k8s-openapi" / "resourcequota-v1.openapi.json").read_text())
    return {"$ref": "#/components/schemas/io.k8s.api.core.v1.ResourceQuota",
            "components": _strict(spec["components"])}


def _errors(schema: dict[str, Any], obj: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(obj)]


# --- inputs ----------------------------------------------------------------------------------

RECS = [
    Recommendation("acme", "acme", "premium", None, 6),
    Recommendation("acme", "acme", "standard", None, 2),
    Recommendation("acme", "acme", "premium", "1g.10gb", 3),
    Recommendation("zen", "zen-a", "economy", None, 1),
]


def _rq(changes):
    return {(c.namespace, c.field): c for c in changes}


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
    with pytest.raises(ValueError, match="at least 1"):
        step_target(1, 0, 2, 0)


def test_resource_quota_adds_up_tiers_and_keeps_mig_profiles_apart():
    changes = _rq(plan_resource_quotas(RECS, current_hard={}, in_use={}, max_step=4))
    # acme: 6 premium + 2 standard whole GPUs are one resource to a ResourceQuota.
    assert changes[("acme", "spec.hard[requests.nvidia.com/gpu]")].target == 8
    assert changes[("acme", "spec.hard[requests.nvidia.com/mig-1g.10gb]")].target == 3
    assert changes[("zen-a", "spec.hard[requests.nvidia.com/gpu]")].target == 1
    assert len(changes) == 3


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

def _manifests():
    rq = resource_quota_manifests(
        plan_resource_quotas(RECS, current_hard={}, in_use={}, max_step=4),
        {r.namespace: r.tenant for r in RECS})
    cq = cluster_queue_manifests(
        plan_cluster_queues(RECS, current_nominal={}, in_use={}, max_step=4),
        {"acme": ["acme"], "zen": ["zen-a"]})
    return rq, cq


def test_resource_quotas_match_the_kubernetes_openapi(resource_quota_schema):
    rq, _ = _manifests()
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
    _, cq = _manifests()
    acme = next(m for m in cq if m["metadata"]["name"] == "acme")
    assert acme["apiVersion"] == "kueue.x-k8s.io/v1beta2"
    (group,) = acme["spec"]["resourceGroups"]
    assert group["coveredResources"] == ["nvidia.com/gpu", "nvidia.com/mig-1g.10gb"]
    assert [f["name"] for f in group["flavors"]] == ["premium", "standard"]
    # standard has no MIG recommendation; Kueue still needs the resource listed, at 0.
    assert group["flavors"][1]["resources"] == [
        {"name": "nvidia.com/gpu", "nominalQuota": 2},
        {"name": "nvidia.com/mig-1g.10gb", "nominalQuota": 0}]
    for manifest in cq:
        assert _errors(cluster_queue_schema, manifest) == []
        assert kueue_admission_problems(manifest) == []


def test_bad_cluster_queues_are_rejected(cluster_queue_schema):
    _, cq = _manifests()
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
               for p in kueue_admission_problems(swapped))

    negative = copy.deepcopy(good)
    negative["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["nominalQuota"] = -1
    assert _errors(cluster_queue_schema, negative) == []  # the schema allows it; Kueue doesn't
    assert any("greater than or equal to 0" in p for p in kueue_admission_problems(negative))

    borrowing = copy.deepcopy(good)
    borrowing["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["borrowingLimit"] = 2
    assert any("must be nil when cohort is empty" in p
               for p in kueue_admission_problems(borrowing))
    borrowing["spec"]["cohortName"] = "gpus"
    assert kueue_admission_problems(borrowing) == []

    short = copy.deepcopy(good)
    short["spec"]["resourceGroups"][0]["flavors"][0]["resources"].pop()
    assert any("same number of resources" in p for p in kueue_admission_problems(short))

    duplicate = copy.deepcopy(good)
    duplicate["spec"]["resourceGroups"].append(copy.deepcopy(good["spec"]["resourceGroups"][0]))
    problems = kueue_admission_problems(duplicate)
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


def _patches(server):
    return [r for r in server.requests if r.method == "PATCH"]


def test_dry_run_sends_apply_patch_and_changes_nothing(server):
    server.put_resource_quota("acme", "gpu-chargeback", {"requests.nvidia.com/gpu": "3"},
                              {"requests.nvidia.com/gpu": "1"})
    before = copy.deepcopy(server.objects)
    with _api(server) as api:
        records = apply_quotas(api, ACME, max_step=4, kueue=False)
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
    with _api(server) as api:
        records = apply_quotas(api, ACME, max_step=4, dry_run=False, kueue=False)
    (patch,) = _patches(server)
    assert "dryRun" not in patch.query
    assert server.objects[RQ_PATH]["spec"]["hard"] == {"requests.nvidia.com/gpu": "2"}
    assert records[0].outcome == "applied"
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    assert record_changes(con, records) == 1
    assert record_changes(con, records) == 1  # appends
    row = con.execute("SELECT kind, namespace, field, before_gpus, after_gpus, dry_run, outcome "
                      "FROM scheduler_quota_changes").fetchall()
    assert row[0] == ("ResourceQuota", "acme", "spec.hard[requests.nvidia.com/gpu]", 3, 2,
                      False, "applied")
    assert len(row) == 2


def test_never_below_current_use_and_max_step_against_the_server(server):
    # In force 12, 9 in use ("9000m" as the quota controller may write it), recommended 2,
    # step 4: 12 - 4 = 8 would cut into the 9 in use, so 9.
    server.put_resource_quota("acme", "gpu-chargeback", {"requests.nvidia.com/gpu": "12"},
                              {"requests.nvidia.com/gpu": "9000m"})
    with _api(server) as api:
        (record,) = apply_quotas(api, ACME, max_step=4, dry_run=False, kueue=False)
    assert (record.before, record.after, record.rule) == (12, 9, "in-use floor")
    # With use at 1, the step alone limits: 9 -> 5, then 5 -> 2 (within one step).
    server.objects[RQ_PATH]["status"]["used"] = {"requests.nvidia.com/gpu": "1"}
    with _api(server) as api:
        (record,) = apply_quotas(api, ACME, max_step=4, dry_run=False, kueue=False)
    assert (record.before, record.after, record.rule) == (9, 5, "max-step")
    with _api(server) as api:
        (record,) = apply_quotas(api, ACME, max_step=4, dry_run=False, kueue=False)
    assert (record.before, record.after, record.rule) == (5, 2, "recommended")
    with _api(server) as api:
        (record,) = apply_quotas(api, ACME, max_step=4, dry_run=False, kueue=False)
    assert record.outcome == "unchanged"
    assert len(_patches(server)) == 3


def test_cluster_queue_applied_with_usage_floor_and_cpu_group_kept(server):
    cpu_group = {"coveredResources": ["cpu"],
                 "flavors": [{"name": "default", "resources": [{"name": "cpu",
                                                                "nominalQuota": "64"}]}]}
    server.put_cluster_queue(
        "acme",
        {"resourceGroups": [cpu_group, {"coveredResources": ["nvidia.com/gpu"], "flavors": [
            {"name": "premium", "resources": [{"name": "nvidia.com/gpu", "nominalQuota": 8}]}]}]},
        usage=[{"name": "premium", "resources": [{"name": "nvidia.com/gpu", "total": "7"}]}])
    with _api(server) as api:
        records = apply_quotas(api, ACME, max_step=4, dry_run=False)
    cq = {r.kind: r for r in records}["ClusterQueue"]
    assert (cq.before, cq.after, cq.in_use, cq.rule) == (8, 7, 7, "in-use floor")
    groups = server.objects[f"{CQ_PREFIX}acme"]["spec"]["resourceGroups"]
    assert groups[0] == cpu_group
    assert groups[1]["flavors"][0]["resources"][0]["nominalQuota"] == 7


def test_conflict_gives_a_clear_error(server, tmp_path):
    server.put_resource_quota("acme", "gpu-chargeback", {"requests.nvidia.com/gpu": "3"},
                              {}, manager="argocd-controller")
    with _api(server) as api, pytest.raises(ApplyConflict, match="--force-conflicts") as info:
        apply_quotas(api, ACME, max_step=4, dry_run=False, kueue=False)
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
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    assert con.execute("SELECT outcome FROM scheduler_quota_changes ORDER BY outcome"
                       ).fetchall() == [("applied",), ("conflict",)]


def test_cli_write_and_bad_input(tmp_path, resource_quota_schema, cluster_queue_schema):
    recs = tmp_path / "recs.csv"
    recs.write_text("tenant,namespace,hardware_tier,mig_profile,recommended_gpus,current_gpus\n"
                    "acme,acme,premium,,9,2\nacme,acme,premium,3g.40gb,1,\n")
    result = CliRunner().invoke(main, ["quotas", "write", "--recommendations", str(recs),
                                       "--out", str(tmp_path / "out"), "--max-step", "3"])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["clusterqueue-acme.yaml", "resourcequota-acme.gpu-chargeback.yaml"]
    rq = yaml.safe_load((tmp_path / "out" / files[1]).read_text())
    # current 2, recommended 9, step 3 -> 5; the MIG quota is new -> as recommended.
    assert rq["spec"]["hard"] == {"requests.nvidia.com/gpu": "5",
                                  "requests.nvidia.com/mig-3g.40gb": "1"}
    assert _errors(resource_quota_schema, rq) == []
    cq = yaml.safe_load((tmp_path / "out" / files[0]).read_text())
    assert _errors(cluster_queue_schema, cq) == []

    bad = tmp_path / "bad.csv"
    bad.write_text("tenant,namespace\nacme,acme\n")
    result = CliRunner().invoke(main, ["quotas", "write", "--recommendations", str(bad),
                                       "--out", str(tmp_path / "o2")])
    assert result.exit_code == 2
    assert "missing column(s) hardware_tier" in result.output
    assert "Traceback" not in result.output
