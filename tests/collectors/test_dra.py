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
from click.testing import CliRunner
from kubernetes import client as k8s

from cli.bill import bill
from collectors.pods import PodCollector, claim_allocation, dra_devices, ledger_table
from models.ledger.usage import IDLE_TENANT
from tests.kube_api import serve

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
T0 = datetime(2026, 10, 5, 10, 0, tzinfo=UTC)
NODE = "gpu-h100-dra"
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
            "allocation": {"devices": {"results": [
                {"request": "gpu", "driver": "gpu.nvidia.com", "pool": NODE, "device": d}
                for d in devices]}},
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
        for tenant in ("acme", "zen"):
            api.put(_namespace(tenant))
        # A node whose GPUs only the DRA driver publishes (no device-plugin resources).
        api.put({"apiVersion": "v1", "kind": "Node",
                 "metadata": {"name": NODE, "uid": "node-1",
                              "creationTimestamp": "2026-10-01T00:00:00Z",
                              "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
                 "status": {"allocatable": {"cpu": "96"}}})
        api.put(_slice())
        # acme's pod holds gpu-0 alone; zen's two pods share one claim on the MIG instance.
        api.put(_claim("acme-gpu", "team-acme", ["gpu-0"], [("acme-llm", "uid-acme")]))
        api.put(_claim("zen-mig", "team-zen", ["gpu-2-mig-9-4-4"],
                       [("zen-a", "uid-zen-a"), ("zen-b", "uid-zen-b")]))
        api.put(_pod("acme-llm", "uid-acme", "acme-gpu", tenant="acme"))
        api.put(_pod("zen-a", "uid-zen-a", "zen-mig", tenant="zen"))
        api.put(_pod("zen-b", "uid-zen-b", "zen-mig", tenant="zen"))
        collector = PodCollector(k8s.ApiClient(k8s.Configuration(host=api.url)),
                                 cluster="test", clock=lambda: T0 + timedelta(hours=1))
        collector.sync()
        table = collector.rows(T0, 3600)
        assert collector.errors == []
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
