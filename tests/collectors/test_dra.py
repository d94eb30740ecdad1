"""GPUs allocated through Dynamic Resource Allocation (resource.k8s.io/v1 ResourceClaims) are
attributed to the pods that reserve them, with the same conservation as device-plugin GPUs,
read through the loopback API server and billed like any GPU.

The objects are shaped after the kubernetes client 37's V1ResourceSlice / V1ResourceClaim
models (the client deserializes them strictly, so a missing required field fails the list) and
NVIDIA's DRA driver (k8s-dra-driver-gpu `cmd/gpu-kubelet-plugin/deviceinfo.go`: driver
`gpu.nvidia.com`, devices `gpu-<minor>` and `gpu-<minor>-mig-<profile id>-<start>-<size>`,
attributes `type`, `uuid`, `productName`, `profile`, `parentUUID`). Names, UIDs and times are
made up."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from kubernetes import client as k8s

from cli.bill import bill
from collectors.pods import PodCollector, claim_allocation, dra_devices, ledger_table
from models.ledger.gaps import GapReason
from models.ledger.usage import IDLE_TENANT
from tests.collectors.test_pods import Clock
from tests.kube_api import KubeAPI, serve

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
T0 = datetime(2026, 10, 5, 10, 0, tzinfo=UTC)
NODE = "gpu-h100-dra"
PLUGIN_NODE = "gpu-l4-plugin"
H100 = "NVIDIA H100 80GB HBM3"


def _attrs(**values: str) -> dict[str, Any]:
    return {k: {"string": v} for k, v in values.items()}


def _slice() -> dict[str, Any]:
    devices = [
        {"name": f"gpu-{i}", "attributes": _attrs(type="gpu", uuid=f"GPU-0000000{i}",
                                                   productName=H100),
         "capacity": {"memory": {"value": "80Gi"}}}
        for i in (0, 1)
    ]
    devices.append({"name": "gpu-2-mig-9-4-4", "attributes": _attrs(
        type="mig", uuid="MIG-00000002-3g", parentUUID="GPU-00000002", profile="3g.40gb",
        productName=H100)})
    return {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"name": f"{NODE}-gpu.nvidia.com-x7k2p", "uid": "slice-1",
                     "creationTimestamp": "2026-10-01T00:00:00Z"},
        "spec": {"driver": "gpu.nvidia.com", "nodeName": NODE,
                 "pool": {"name": NODE, "generation": 1, "resourceSliceCount": 1},
                 "devices": devices},
    }


def _claim(name: str, namespace: str, devices: list[str], pods: list[tuple[str, str]]
           ) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": f"claim-{name}",
                     "creationTimestamp": "2026-10-05T09:59:00Z"},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
            "deviceClassName": "gpu.nvidia.com", "allocationMode": "ExactCount", "count": 1}}]}},
        "status": {
            "allocation": {
                "devices": {"results": [
                    {"request": "gpu", "driver": "gpu.nvidia.com", "pool": NODE, "device": d}
                    for d in devices]},
                # kube-scheduler's DRA plugin pins a node-local allocation to its node.
                "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": [NODE]}]}]},
            },
            "reservedFor": [{"resource": "pods", "name": n, "uid": u} for n, u in pods],
        },
    }


def _pod(name: str, uid: str, claim: str, *, tenant: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": f"team-{tenant}", "uid": uid,
                     "creationTimestamp": "2026-10-05T09:59:00Z",
                     "labels": {"chargeback/model": "llama-3.1-70b",
                                "chargeback/model-params-b": "70"}},
        "spec": {"nodeName": NODE,
                 "containers": [{"name": "server", "image": "vllm/vllm-openai",
                                 "resources": {"claims": [{"name": "gpu"}]}}],
                 "resourceClaims": [{"name": "gpu", "resourceClaimName": claim}]},
        "status": {"phase": "Running", "startTime": T0.isoformat(),
                   "conditions": [{"type": "PodScheduled", "status": "True",
                                   "lastTransitionTime": T0.isoformat()}],
                   "resourceClaimStatuses": [{"name": "gpu", "resourceClaimName": claim}]},
    }


def _namespace(tenant: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": f"team-{tenant}", "uid": f"ns-{tenant}",
                         "labels": {"chargeback/tenant": tenant}}}


def _claims() -> list[dict[str, Any]]:
    """acme's pod holds gpu-0 alone; zen's two pods share one claim on the MIG instance."""
    return [_claim("acme-gpu", "team-acme", ["gpu-0"], [("acme-llm", "uid-acme")]),
            _claim("zen-mig", "team-zen", ["gpu-2-mig-9-4-4"],
                   [("zen-a", "uid-zen-a"), ("zen-b", "uid-zen-b")])]


def _cluster(api: KubeAPI, resource_slice: dict[str, Any] | None = None,
             claims: list[dict[str, Any]] | None = None) -> None:
    for tenant in ("acme", "zen"):
        api.put(_namespace(tenant))
    # A node whose GPUs only the DRA driver publishes (no device-plugin resources).
    api.put({"apiVersion": "v1", "kind": "Node",
             "metadata": {"name": NODE, "uid": "node-1",
                          "creationTimestamp": "2026-10-01T00:00:00Z",
                          "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
             "status": {"allocatable": {"cpu": "96"}}})
    # And one with a device-plugin GPU that nobody holds.
    api.put({"apiVersion": "v1", "kind": "Node",
             "metadata": {"name": PLUGIN_NODE, "uid": "node-2",
                          "creationTimestamp": "2026-10-01T00:00:00Z",
                          "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"}},
             "status": {"allocatable": {"cpu": "16", "nvidia.com/gpu": "1"}}})
    api.put(resource_slice or _slice())
    for claim in _claims() if claims is None else claims:
        api.put(claim)
    api.put(_pod("acme-llm", "uid-acme", "acme-gpu", tenant="acme"))
    api.put(_pod("zen-a", "uid-zen-a", "zen-mig", tenant="zen"))
    api.put(_pod("zen-b", "uid-zen-b", "zen-mig", tenant="zen"))


def _seconds(rows: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """(device, tenant) -> GPU-seconds."""
    out: dict[tuple[str, str], float] = {}
    for row in rows:
        key = (row["gpu_uuid"], row["tenant"])
        out[key] = out.get(key, 0.0) + row["allocated_gpu_seconds"]
    return out


def test_slices_and_claims_parse_as_nvidias_driver_writes_them():
    devices = dict((d.device_id, (n, d)) for n, d in dra_devices(_slice()))
    assert devices["GPU-00000000"][1].gpu_product == "H100-80GB-HBM3"
    mig = devices["MIG-00000002-3g"][1]
    assert (mig.mig_profile, mig.gpu_equivalents) == ("3g.40gb", Fraction(3, 7))
    other = {**_slice(), "spec": {**_slice()["spec"], "driver": "example.com/nic"}}
    assert dra_devices(other) == []
    keys, pods = claim_allocation(_claim("a", "ns", ["gpu-0"], [("p", "uid-p")]))
    assert (keys, pods) == ([f"gpu.nvidia.com/{NODE}/gpu-0"],
                            ["uid-p"])


def test_a_pod_with_a_claim_is_attributed_its_gpu_and_billed(tmp_path):
    with serve() as api:
        _cluster(api)
        collector = PodCollector(k8s.ApiClient(k8s.Configuration(host=api.url)),
                                 cluster="test", clock=lambda: T0 + timedelta(hours=1))
        collector.sync()
        table = collector.rows(T0, 3600)
        assert collector.outages == []
        assert collector.gaps(T0, 3600) == []
        # Listed through the resource.k8s.io/v1 API, as the kubernetes client does it.
        assert api.requests_to("resourceslices")
        assert api.requests_to("resourceclaims")
    rows = table.to_pylist()
    by_device: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_device.setdefault(row["gpu_uuid"], []).append(row)
    # Conservation on every DRA device: held + idle = an hour of its GPU-equivalents.
    for device, expected in (("GPU-00000000", 3600.0), ("GPU-00000001", 3600.0),
                             ("MIG-00000002-3g", 3600 * 3 / 7)):
        assert abs(sum(r["allocated_gpu_seconds"] for r in by_device[device]) - expected) < 1e-6
    (acme,) = by_device["GPU-00000000"]
    assert (acme["tenant"], acme["pod"], acme["allocated_gpu_seconds"]) == (
        "acme", "acme-llm", 3600.0)
    assert acme["gpu_product"] == "H100-80GB-HBM3"
    assert [r["tenant"] for r in by_device["GPU-00000001"]] == [IDLE_TENANT]
    zen = [r for r in by_device["MIG-00000002-3g"] if r["tenant"] == "zen"]
    # One claim reserved by two pods: each holds half the 3g.40gb instance.
    assert sorted(r["allocated_gpu_seconds"] for r in zen) == [3600 * 3 / 14] * 2
    assert all(r["mig_profile"] == "3g.40gb" for r in zen)

    usage = tmp_path / "usage.parquet"
    pq.write_table(ledger_table(rows), usage)
    out = tmp_path / "invoices"
    result = CliRunner().invoke(bill, [
        "--usage", str(usage), "--rate-card", str(DEMO / "rate-card.yaml"),
        "--tenants", str(DEMO / "tenants.yaml"), "--period", "2026-10", "--out", str(out)])
    assert result.exit_code == 0, result.output
    acme_bill = json.loads((out / "acme.json").read_text())
    zen_bill = json.loads((out / "zen.json").read_text())
    # acme's hour on its DRA-allocated H100 is premium GPU time, covered by its reservation.
    assert [(u["hardware_tier"], u["gpu_hours"], u["covered_gpu_hours"])
            for u in acme_bill["usage"]] == [("premium", "1.000000", "1.000000")]
    # zen's shared 3g.40gb claim: 3/7 GPU for the hour, on demand at the 70B multiplier.
    assert [(u["hardware_tier"], u["gpu_hours"], u["billable_units"])
            for u in zen_bill["usage"]] == [("premium", "0.428571", "0.535714")]
    (line,) = [x for x in zen_bill["lines"] if x["kind"] == "usage"]
    assert (line["quantity"], line["unit_price"], line["amount"]) == ("0.535714", "4.00", "2.14")


# -- what cannot be read is a gap, never idle (as for pods and nodes: test_pods_gaps.py)

HOUR = 3600
LATER = T0 + timedelta(hours=1)
"""The window after the one a broken object was seen in, once it reads again."""
WHOLE = {("GPU-00000000", "acme"): 3600.0, ("GPU-00000001", IDLE_TENANT): 3600.0,
         ("MIG-00000002-3g", "zen"): 3600 * 3 / 7,
         (f"{PLUGIN_NODE}/gpu0", IDLE_TENANT): 3600.0}
"""Every device's hour when everything can be read."""


def _collector(api: KubeAPI, clock: Clock) -> PodCollector:
    return PodCollector(k8s.ApiClient(k8s.Configuration(host=api.url)), cluster="test",
                        request_timeout_s=5, clock=clock)


def test_an_unreadable_slice_is_a_gap_of_its_node_never_idle():
    broken = _slice()
    broken["spec"]["devices"][2]["attributes"]["profile"] = {"string": "9g.160gb"}
    with serve() as api:
        _cluster(api, broken)
        clock = Clock(T0)
        collector = _collector(api, clock)
        collector.sync()
        rows = collector.rows(T0, HOUR).to_pylist()
        [gap] = collector.gaps(T0, HOUR)
        api.put(_slice())
        clock.now = LATER
        collector.sync()
        assert collector.quarantined == {}
        assert collector.gaps(T0, HOUR) == [gap]  # that hour stays unknown
        assert collector.gaps(LATER, HOUR) == []
        later = _seconds(collector.rows(LATER, HOUR).to_pylist())
    # Which GPUs the DRA node has is unknown: no rows there at all, not even acme's (its
    # device might be billed at the wrong size); the other node is whole.
    assert {r["node"] for r in rows} == {PLUGIN_NODE}
    assert (gap.node, gap.gpu_uuid, gap.reason) == (NODE, None, GapReason.MALFORMED_OBJECT)
    assert f"ResourceSlice {NODE}-gpu.nvidia.com-x7k2p: device gpu-2-mig-9-4-4:" in gap.detail
    assert later == pytest.approx(WHOLE)


@pytest.mark.parametrize(("break_claim", "detail", "gap_node"), [
    (lambda c: c["status"]["reservedFor"][0].pop("uid"),
     "ResourceClaim team-zen/zen-mig: status.reservedFor[0].uid: None is not a UID", NODE),
    (lambda c: c["status"]["allocation"]["devices"]["results"][0].update(
        device="gpu-7-mig-9-4-4"),
     "ResourceClaim team-zen/zen-mig: allocated gpu.nvidia.com/gpu-h100-dra/gpu-7-mig-9-4-4, "
     "which no readable ResourceSlice of gpu.nvidia.com publishes", NODE),
    # Without its node selector the claim's devices could be on any node.
    (lambda c: (c["status"]["allocation"].pop("nodeSelector"),
                c["status"]["allocation"]["devices"]["results"][0].pop("pool")),
     "ResourceClaim team-zen/zen-mig: status.allocation.devices.results[0]: pool None",
     None),
])
def test_an_unreadable_claim_hides_its_nodes_idle(break_claim, detail, gap_node):
    acme, zen = _claims()
    break_claim(zen)
    with serve() as api:
        _cluster(api, claims=[acme, zen])
        clock = Clock(T0)
        collector = _collector(api, clock)
        collector.sync()
        rows = collector.rows(T0, HOUR).to_pylist()
        [gap] = collector.gaps(T0, HOUR)
        api.put(_claims()[1])
        clock.now = LATER
        collector.sync()
        assert collector.gaps(LATER, HOUR) == []
        later = _seconds(collector.rows(LATER, HOUR).to_pylist())
    # acme's claim reads: its hour is kept. What zen's pods hold is unknown, so is every idle
    # second of the node(s) it may be on: never idle.
    expected = {k: v for k, v in WHOLE.items() if k[1] == "acme" or (
        gap_node is not None and k[0].startswith(PLUGIN_NODE))}
    assert _seconds(rows) == pytest.approx(expected)
    assert (gap.node, gap.reason) == (gap_node, GapReason.MALFORMED_OBJECT)
    assert gap.detail.startswith(detail)
    assert later == pytest.approx(WHOLE)


@pytest.mark.parametrize("collection", ["resourceslices", "resourceclaims"])
@pytest.mark.parametrize("fault", ["status-500", "not-json", "wrong-kind", "no-items"])
def test_an_unreadable_slice_or_claim_list_is_an_outage(collection, fault):
    with serve() as api:
        _cluster(api)
        clock = Clock(T0 - timedelta(minutes=5))
        collector = _collector(api, clock)
        collector.sync()
        assert collector.outages == []
        # The next sync (a watch of pods and nodes, then the DRA lists) cannot read one list.
        api.fail_next(collection, fault)
        clock.now = T0 + timedelta(minutes=30)
        collector.sync()
        rows = collector.rows(T0, HOUR)
        [gap] = collector.gaps(T0, HOUR)
        clock.now = LATER
        collector.sync()  # relists everything
        assert collector.outages[-1].end == LATER
        later = _seconds(collector.rows(LATER, HOUR).to_pylist())
    # Pods that came or went, and claims made, were not seen: the whole cluster is a gap.
    assert rows.num_rows == 0
    assert (gap.node, gap.reason) == (None, GapReason.SOURCE_UNREADABLE)
    assert gap.detail.startswith(f"Kubernetes API {api.url}")
    assert later == pytest.approx(WHOLE)


def test_a_cluster_without_the_resource_api_has_no_dra_gpus_and_no_gap():
    with serve() as api:
        _cluster(api)
        # Kubernetes before 1.34 (or DRA off) answers 404 for resource.k8s.io/v1.
        api.fail_next("resourceslices", "status-404")
        collector = _collector(api, Clock(T0))
        collector.sync()
        rows = _seconds(collector.rows(T0, HOUR).to_pylist())
        assert collector.outages == []
        assert collector.gaps(T0, HOUR) == []
    assert not collector.dra_served
    assert rows == {(f"{PLUGIN_NODE}/gpu0", IDLE_TENANT): 3600.0}


def test_a_claim_and_device_gone_after_the_pods_ended_still_bill_their_time():
    with serve() as api:
        _cluster(api)
        clock = Clock(T0 + timedelta(minutes=30))
        collector = _collector(api, clock)
        collector.sync()
        # zen's pods end, their claim is deleted and the MIG instance is reconfigured away
        # before the window's rows are asked for.
        for name, uid in (("zen-a", "uid-zen-a"), ("zen-b", "uid-zen-b")):
            api.delete(_pod(name, uid, "zen-mig", tenant="zen"))
        api.delete(_claims()[1])
        reconfigured = _slice()
        del reconfigured["spec"]["devices"][2]
        api.put(reconfigured)
        clock.now = LATER
        collector.sync()
        rows = _seconds(collector.rows(T0, HOUR).to_pylist())
        assert collector.gaps(T0, HOUR) == []
    # Still the 3g.40gb's 3/7 of a GPU for the hour, not a whole GPU of unknown size.
    assert rows[("MIG-00000002-3g", "zen")] == pytest.approx(3600 * 3 / 7)
    assert rows == pytest.approx(WHOLE)
