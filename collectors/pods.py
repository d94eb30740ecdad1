"""Kubernetes pod collector: GPU allocations of pods, as ledger rows (`source = pods`).

Lists and watches pods, nodes and namespaces, and lists the ResourceSlices and ResourceClaims
of Dynamic Resource Allocation, through the kubernetes client (the only module that imports
it, besides the scheduler-quota write-back). A pod holds GPUs from the moment it is scheduled
to a node until it terminates; `PodCollector.rows` turns those allocation intervals into one
row per (window, device, pod) plus `__idle__` rows for the capacity no pod holds, so that
GPU-seconds are conserved per device. What it cannot read (an answer that is not a readable
list or watch, a pod, node, slice or claim with unreadable fields) has no rows and is
reported by `PodCollector.gaps` instead: never idle.

The API does not say which physical GPU a pod got, so devices are synthetic and stable per
node (`<node>/gpu<i>`, `<node>/mig-<profile>-<i>`, and `<node>/gpu<i>-unpartitioned` for the
slices of a MIG-mode GPU that no instance covers, always idle) and pods are packed onto them
deterministically. GPU-equivalents are kept as exact fractions until the row is written, so
that allocated + idle equals capacity exactly rather than to float rounding.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

import pyarrow as pa
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from models.errors import TransientError, UserError
from models.ledger.gaps import Gap, GapReason
from models.ledger.tiers import UnknownMigProfile, mig_gpu_equivalents, normalize_product
from models.ledger.usage import (
    IDLE_TENANT,
    SHARED_TENANT,
    UNATTRIBUTED_TENANT,
    WorkloadKind,
    ledger_table,
    make_sample_id,
)

log = logging.getLogger(__name__)

SOURCE = "pods"
GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
PRODUCT_LABEL = "nvidia.com/gpu.product"
REPLICAS_LABEL = "nvidia.com/gpu.replicas"
COUNT_LABEL = "nvidia.com/gpu.count"
TENANT_LABEL = "chargeback/tenant"
MODEL_LABEL = "chargeback/model"
MODEL_PARAMS_LABEL = "chargeback/model-params-b"
WORKLOAD_LABEL = "chargeback/workload"
SHARED_LABEL = "chargeback/shared"
# Run:ai writes the share of one GPU a pod holds as `gpu-fraction: "0.5"`; Alibaba's GPU
# sharing scheduler (and its openb trace) counts thousandths of a GPU, `gpu_milli: "250"`.
FRACTION_ANNOTATIONS = ("gpu-fraction",)
MILLI_ANNOTATIONS = ("gpu_milli", "gpu-milli")
# Run:ai's reservation pods hold a whole GPU (`nvidia.com/gpu: 1`) on behalf of the fractional
# pods that share it; the GPU-time belongs to those pods (and to idle), not to the placeholder.
RUNAI_RESERVATION_APP = "runai-reservation"

_BILLABLE_KINDS = frozenset(k.value for k in WorkloadKind if k is not WorkloadKind.IDLE)
_SINGLE_MIG_PRODUCT = re.compile(r"-MIG-(?P<profile>(?:\d+c\.)?\d+g\.\d+gb)$", re.IGNORECASE)
_WHOLE = "gpu"
# Kind of the synthetic device holding a MIG-mode GPU's slices that no instance covers: no
# pod's request has this kind, so nothing is ever placed there and it is all idle.
_UNPARTITIONED = "unpartitioned"


class PodSpecError(UserError):
    """A pod or node object whose GPU fields cannot be read; the message names object and field."""


class KubeConfigError(UserError):
    """No way to reach the API server: neither in-cluster credentials nor a usable kubeconfig."""


# ---------------------------------------------------------------------------------------------
# Parsing Kubernetes objects (plain dicts, as the API serves them)


@dataclass(frozen=True)
class GpuRequest:
    """What a pod asks for: whole `nvidia.com/gpu` units, MIG instances, or a share of one GPU."""

    whole: int = 0
    mig: tuple[tuple[str, int], ...] = ()
    fraction: Fraction | None = None

    def __bool__(self) -> bool:
        return bool(self.whole or self.mig or self.fraction)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


def _where(obj: Mapping[str, Any]) -> str:
    """`Pod ns/name` or `Node name`, whatever else about the object is broken."""
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    kind = obj.get("kind") or "object"
    name = meta.get("name", "?")
    namespace = meta.get("namespace")
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def _count(value: Any, where: str) -> int:
    """An extended-resource quantity: Kubernetes only allows whole numbers for them."""
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise PodSpecError(f"{where}: {value!r} is not a quantity") from None
    if number != number.to_integral_value() or number < 0:
        raise PodSpecError(f"{where}: {value!r} must be a whole number of devices")
    return int(number)


def _container_gpus(container: Mapping[str, Any], where: str) -> dict[str, int]:
    resources = container.get("resources") or {}
    # Extended resources must have requests == limits; a spec with only limits gets requests
    # defaulted from them by the API server, so either one is the amount held.
    amounts = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return {
        name: _count(value, f"{where}: container {container.get('name')!r}: {name}")
        for name, value in amounts.items()
        if name == GPU_RESOURCE or name.startswith(MIG_RESOURCE_PREFIX)
    }


def _fraction(text: Any, where: str, *, milli: bool) -> Fraction:
    try:
        value = Fraction(Decimal(str(text).strip()))
    except (InvalidOperation, ValueError):
        raise PodSpecError(f"{where}: {text!r} is not a number") from None
    if milli:
        value /= 1000
    if not 0 < value <= 1:
        raise PodSpecError(f"{where}: {text!r} must be a share of one GPU in (0, 1]")
    return value


def gpu_request(pod: Mapping[str, Any]) -> GpuRequest:
    """GPUs a pod holds, from container resources, else from fractional/MIG annotations.

    The effective request is the larger of the app containers' sum and any one init
    container's, as the scheduler computes it. Schedulers that hand out MIG instances or
    fractions outside the device plugin (Run:ai) write them as annotations instead."""
    where = _where(pod)
    spec = pod.get("spec") or {}
    total: dict[str, int] = {}
    for container in spec.get("containers") or []:
        for name, amount in _container_gpus(container, where).items():
            total[name] = total.get(name, 0) + amount
    for container in spec.get("initContainers") or []:
        for name, amount in _container_gpus(container, where).items():
            total[name] = max(total.get(name, 0), amount)
    annotations: Mapping[str, str] = _meta(pod).get("annotations") or {}
    if not any(total.values()):
        for key, value in annotations.items():
            if key.startswith(MIG_RESOURCE_PREFIX):
                total[key] = _count(value, f"{where}: annotation {key}")
    mig = []
    for name, amount in sorted(total.items()):
        if name.startswith(MIG_RESOURCE_PREFIX) and amount:
            profile = name.removeprefix(MIG_RESOURCE_PREFIX)
            try:
                mig_gpu_equivalents(profile)
            except UnknownMigProfile as exc:
                raise PodSpecError(f"{where}: {name}: {exc}") from None
            mig.append((profile, amount))
    request = GpuRequest(whole=total.get(GPU_RESOURCE, 0), mig=tuple(mig))
    if request:
        return request
    for keys, milli in ((FRACTION_ANNOTATIONS, False), (MILLI_ANNOTATIONS, True)):
        for key in keys:
            if key in annotations:
                where_key = f"{where}: annotation {key}"
                return GpuRequest(fraction=_fraction(annotations[key], where_key, milli=milli))
    return request


@dataclass(frozen=True)
class Device:
    device_id: str
    kind: str
    """`gpu` for a whole GPU, else the MIG profile; a pod's slots go to devices of their kind."""
    gpu_product: str
    mig_profile: str | None
    gpu_equivalents: Fraction


@dataclass(frozen=True)
class NodeGpus:
    """A node's GPU inventory, from its labels and allocatable resources."""

    name: str
    product: str | None
    """Normalized (models.ledger.tiers.normalize_product); None when the node has no product
    label."""
    whole_gpus: int
    replicas: int
    """Time-slicing replicas per GPU: each `nvidia.com/gpu` unit is 1/replicas of a GPU."""
    mig: tuple[tuple[str, int], ...]
    mig_strategy_single: bool = False
    created_at: datetime | None = None
    deleted_at: datetime | None = None
    mig_gpus: int = 0
    """Physical GPUs in MIG mode, when the node's labels say (0: as many as the instances
    need at least)."""

    def devices(self) -> list[Device]:
        """Whole GPUs, MIG instances, and per MIG-mode GPU the slices no instance covers.

        The API does not say which GPU an instance is on, so the instances are taken to fill
        the MIG-mode GPUs in order and the free slices to sit on the last ones: the node's
        unpartitioned total is exact, its split over GPUs is a convention."""
        product = self.product or "UNKNOWN"
        devices = [
            Device(f"{self.name}/gpu{i}", _WHOLE, product, None, Fraction(1))
            for i in range(self.whole_gpus)
        ]
        partitioned = Fraction(0)
        for profile, count in self.mig:
            equivalents = mig_gpu_equivalents(profile, self.product)
            partitioned += equivalents * count
            devices += [
                Device(f"{self.name}/mig-{profile}-{i}", profile, product, profile, equivalents)
                for i in range(count)
            ]
        if self.mig:
            for j in range(max(self.mig_gpus, math.ceil(partitioned))):
                free = 1 - min(max(partitioned - j, Fraction(0)), Fraction(1))
                if free > 0:
                    devices.append(Device(
                        f"{self.name}/gpu{self.whole_gpus + j}-unpartitioned", _UNPARTITIONED,
                        product, None, free,
                    ))
        return devices

    def alive_during(self, start: datetime, end: datetime) -> bool:
        return (self.created_at is None or self.created_at < end) and (
            self.deleted_at is None or self.deleted_at > start
        )


def node_gpus(node: Mapping[str, Any]) -> NodeGpus:
    """GPU product, whole GPUs, time-slicing replicas and MIG layout of a Node object.

    Counts come from `status.allocatable`, not `capacity`: after a MIG reconfiguration the
    device plugin leaves stale profiles in capacity (the real A100 node in shared data lists
    3x1g.5gb + 2g.10gb + 3g.20gb = 8 of 7 slices there, with 3g.20gb allocatable 0)."""
    meta = _meta(node)
    where = _where({**node, "kind": "Node"})
    labels: Mapping[str, str] = meta.get("labels") or {}
    status = node.get("status") or {}
    allocatable: Mapping[str, Any] = status.get("allocatable") or status.get("capacity") or {}
    label = labels.get(PRODUCT_LABEL)
    product = None
    single_profile = None
    if label:
        # GPU feature discovery appends -SHARED under time-slicing and, with the `single` MIG
        # strategy, the instance profile (NVIDIA-A100-SXM4-40GB-MIG-1g.5gb).
        bare = re.sub(r"-SHARED$", "", label.strip(), flags=re.IGNORECASE)
        match = _SINGLE_MIG_PRODUCT.search(bare)
        if match:
            single_profile = match["profile"].lower()
        product = normalize_product(bare)
    try:
        replicas = max(1, int(labels.get(REPLICAS_LABEL) or 1))
    except ValueError:
        raise PodSpecError(
            f"{where}: label {REPLICAS_LABEL}: {labels[REPLICAS_LABEL]!r} is not an integer"
        ) from None
    gpu_units = _count(allocatable.get(GPU_RESOURCE, 0), f"{where}: allocatable {GPU_RESOURCE}")
    mig: dict[str, int] = {}
    for name, value in allocatable.items():
        if name.startswith(MIG_RESOURCE_PREFIX):
            count = _count(value, f"{where}: allocatable {name}")
            if count:
                mig[name.removeprefix(MIG_RESOURCE_PREFIX)] = count
    mig_gpus = 0
    if single_profile is not None:
        # `single` strategy: every nvidia.com/gpu unit is one MIG instance of that profile
        # (and GPU feature discovery's gpu.count counts instances, not GPUs).
        mig[single_profile] = mig.get(single_profile, 0) + gpu_units
        whole = 0
        replicas = 1
    else:
        whole = gpu_units // replicas
        if mig:
            # `mixed` strategy: gpu.count is the physical GPUs, MIG mode or not.
            try:
                mig_gpus = max(0, int(labels.get(COUNT_LABEL) or 0) - whole)
            except ValueError:
                raise PodSpecError(
                    f"{where}: label {COUNT_LABEL}: {labels[COUNT_LABEL]!r} is not an integer"
                ) from None
    for profile in mig:
        try:
            mig_gpu_equivalents(profile, product)
        except UnknownMigProfile as exc:
            raise PodSpecError(f"{where}: {exc}") from None
    return NodeGpus(
        name=str(meta.get("name")),
        product=product,
        whole_gpus=whole,
        replicas=replicas,
        mig=tuple(sorted(mig.items())),
        mig_strategy_single=single_profile is not None,
        created_at=_time(meta.get("creationTimestamp"), f"{where}: creationTimestamp"),
        mig_gpus=mig_gpus,
    )


# ---------------------------------------------------------------------------------------------
# Dynamic Resource Allocation (resource.k8s.io/v1)

DRA_DRIVER = "gpu.nvidia.com"
"""NVIDIA's DRA driver (k8s-dra-driver-gpu). Its ResourceSlices publish each GPU and MIG
device of a node with the attributes `type` (gpu or mig), `uuid`, `productName` and, for MIG,
`profile`; a ResourceClaim's `status.allocation.devices.results` names the devices (driver,
pool, device) and `status.reservedFor` the pods that hold them."""
_DRA = "dra:"
"""Device kind prefix: a claim's slot goes to exactly the device it was allocated, not to any
device of a kind as with device-plugin GPUs."""


def dra_key(driver: str, pool: str, device: str) -> str:
    return f"{driver}/{pool}/{device}"


def dra_devices(resource_slice: Mapping[str, Any]) -> list[tuple[str, Device]]:
    """(node, device) for every GPU or MIG device a ResourceSlice of NVIDIA's driver publishes;
    other drivers and devices not bound to one node are not GPUs of ours. A device of the
    driver whose fields cannot be read raises PodSpecError: which GPUs the node has is unknown."""
    spec = resource_slice.get("spec") or {}
    node = spec.get("nodeName")
    if spec.get("driver") != DRA_DRIVER or node is None:
        return []
    where = _where({**resource_slice, "kind": "ResourceSlice"})
    pool = (spec.get("pool") or {}).get("name")
    if not isinstance(node, str) or not node:
        raise PodSpecError(f"{where}: spec.nodeName: {node!r} is not a name")
    if not isinstance(pool, str) or not pool:
        raise PodSpecError(f"{where}: spec.pool.name: {pool!r} is not a name")
    out = []
    for i, device in enumerate(spec.get("devices") or []):
        name = device.get("name")
        if not isinstance(name, str) or not name:
            raise PodSpecError(f"{where}: spec.devices[{i}].name: {name!r} is not a name")
        attributes = device.get("attributes") or {}

        def text(attribute: str, attributes: Mapping[str, Any] = attributes) -> str | None:
            value = (attributes.get(attribute) or {}).get("string")
            return str(value) if value else None

        kind = text("type")
        if kind not in ("gpu", "mig"):
            continue
        product = normalize_product(text("productName") or "UNKNOWN")
        profile, equivalents = None, Fraction(1)
        if kind == "mig":
            profile = (text("profile") or "").lower().removeprefix("mig-")
            try:
                equivalents = mig_gpu_equivalents(profile, product)
            except UnknownMigProfile as exc:
                raise PodSpecError(f"{where}: device {name}: {exc}") from None
        key = dra_key(DRA_DRIVER, pool, name)
        out.append((node, Device(text("uuid") or f"{node}/{key}", _DRA + key, product,
                                 profile, equivalents)))
    return out


def claim_allocation(claim: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The devices of NVIDIA's driver a ResourceClaim was allocated (dra_key), and the UIDs of
    the pods that reserve it; PodSpecError when either cannot be read."""
    where = _where({**claim, "kind": "ResourceClaim"})
    status = claim.get("status") or {}
    results = ((status.get("allocation") or {}).get("devices") or {}).get("results") or []
    keys = []
    for i, result in enumerate(results):
        if result.get("driver") != DRA_DRIVER:
            continue
        pool, device = result.get("pool"), result.get("device")
        if not (isinstance(pool, str) and pool and isinstance(device, str) and device):
            raise PodSpecError(f"{where}: status.allocation.devices.results[{i}]: pool "
                               f"{pool!r} and device {device!r} must be names")
        keys.append(dra_key(DRA_DRIVER, pool, device))
    pods = []
    for i, ref in enumerate(status.get("reservedFor") or []):
        uid = ref.get("uid")
        if ref.get("resource") != "pods":
            continue
        if not isinstance(uid, str) or not uid:
            raise PodSpecError(f"{where}: status.reservedFor[{i}].uid: {uid!r} is not a UID")
        pods.append(uid)
    return keys, pods


def _claim_node(claim: Mapping[str, Any]) -> str | None:
    """The node of a claim's devices, from the node selector the scheduler writes into its
    allocation (`metadata.name In [node]`); None when that cannot be read (any node)."""
    with contextlib.suppress(AttributeError, TypeError, KeyError, ValueError):
        (term,) = claim["status"]["allocation"]["nodeSelector"]["nodeSelectorTerms"]
        (match,) = [m for m in term.get("matchFields") or []
                    if m["key"] == "metadata.name" and m["operator"] == "In"]
        (node,) = match["values"]
        if isinstance(node, str) and node:
            return node
    return None


def _time(value: Any, where: str) -> datetime | None:
    """An RFC 3339 time as the API writes it (`2026-11-01T00:00:00Z`); None when absent."""
    if value is None or value == "":
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        raise PodSpecError(f"{where}: {value!r} is not an RFC 3339 time") from None
    if stamp.tzinfo is None:
        raise PodSpecError(f"{where}: {value!r} has no time zone")
    return stamp.astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# Tenant, model, workload


def resolve_tenant(
    namespace: str,
    namespace_labels: Mapping[str, str],
    pod_labels: Mapping[str, str],
    namespace_tenants: Mapping[str, str],
) -> str:
    """DESIGN.md's order: namespace label, pod label, configured map, else `__unattributed__`.

    Shared endpoints are not resolved here: see `PodAllocation.tenant`."""
    for candidate in (
        namespace_labels.get(TENANT_LABEL),
        pod_labels.get(TENANT_LABEL),
        namespace_tenants.get(namespace),
    ):
        if candidate and candidate.strip():
            return candidate.strip()
    return UNATTRIBUTED_TENANT


@dataclass(frozen=True)
class PodAllocation:
    """A pod's GPU allocation interval [start, end) on its node; end None while it runs."""

    uid: str
    namespace: str
    name: str
    node: str
    labels: Mapping[str, str]
    request: GpuRequest
    start: datetime
    end: datetime | None
    end_is_observed: bool = False
    """The end is when we noticed the pod gone, not a time the API reported."""

    @property
    def shared(self) -> bool:
        return self.labels.get(SHARED_LABEL, "").strip().lower() == "true"

    def tenant(
        self, namespace_labels: Mapping[str, str], namespace_tenants: Mapping[str, str]
    ) -> str:
        if self.shared:
            return SHARED_TENANT
        return resolve_tenant(self.namespace, namespace_labels, self.labels, namespace_tenants)

    @property
    def workload_kind(self) -> str:
        kind = self.labels.get(WORKLOAD_LABEL, "").strip().lower()
        return kind if kind in _BILLABLE_KINDS else WorkloadKind.UNKNOWN.value

    @property
    def model(self) -> str | None:
        return self.labels.get(MODEL_LABEL) or None

    @property
    def model_params_b(self) -> float | None:
        text = self.labels.get(MODEL_PARAMS_LABEL)
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            return None
        return value if value > 0 else None


def _scheduled_at(pod: Mapping[str, Any], where: str) -> datetime | None:
    status = pod.get("status") or {}
    for i, condition in enumerate(status.get("conditions") or []):
        if condition.get("type") == "PodScheduled" and condition.get("status") == "True":
            stamp = _time(condition.get("lastTransitionTime"),
                          f"{where}: status.conditions[{i}].lastTransitionTime")
            if stamp is not None:
                return stamp
    return _time(status.get("startTime"), f"{where}: status.startTime")


def _finished_at(pod: Mapping[str, Any], where: str) -> datetime | None:
    """When the last container terminated, if every container has."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    ends = []
    for i, status in enumerate(statuses):
        terminated = (status.get("state") or {}).get("terminated")
        if not terminated:
            return None
        stamp = _time(terminated.get("finishedAt"),
                      f"{where}: status.containerStatuses[{i}].state.terminated.finishedAt")
        if stamp is None:
            return None
        ends.append(stamp)
    return max(ends) if ends else None


def allocation_from_pod(
    pod: Mapping[str, Any], *, observed_at: datetime, deleted: bool = False
) -> PodAllocation | None:
    """The allocation interval a Pod object shows, or None (no GPUs, or not scheduled yet).

    The end is the last container's finishedAt when the API has it; for a pod that is gone
    (`deleted`) or finished without that, the earlier of its deletionTimestamp and the time
    we observed it."""
    where = _where(pod)
    request = gpu_request(pod)
    spec = pod.get("spec") or {}
    meta = _meta(pod)
    node = spec.get("nodeName")
    labels: Mapping[str, str] = meta.get("labels") or {}
    claims = spec.get("resourceClaims") or []
    if (not request and not claims) or not node or labels.get("app") == RUNAI_RESERVATION_APP:
        return None
    # The fields that identify the pod and its node: without them the interval belongs to no one.
    for field_name, value in (("metadata.uid", meta.get("uid")),
                              ("metadata.name", meta.get("name")),
                              ("metadata.namespace", meta.get("namespace")),
                              ("spec.nodeName", node)):
        if not isinstance(value, str) or not value:
            raise PodSpecError(f"{where}: {field_name}: {value!r} is not a name")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise PodSpecError(f"{where}: metadata.labels: keys and values must be strings")
    start = _scheduled_at(pod, where) or observed_at
    phase = (pod.get("status") or {}).get("phase")
    end = _finished_at(pod, where) if (deleted or phase in ("Succeeded", "Failed")) else None
    end_is_observed = False
    if end is None and (deleted or phase in ("Succeeded", "Failed")):
        deletion = _time(meta.get("deletionTimestamp"), f"{where}: metadata.deletionTimestamp")
        end = min(observed_at, deletion) if deletion else observed_at
        end_is_observed = True
    if end is not None and end < start:
        end = start
    return PodAllocation(
        uid=meta["uid"],
        namespace=meta["namespace"],
        name=meta["name"],
        node=node,
        labels=dict(labels),
        request=request,
        start=start,
        end=end,
        end_is_observed=end_is_observed,
    )


# ---------------------------------------------------------------------------------------------
# Packing pods onto devices, and ledger rows


@dataclass(frozen=True)
class _Slot:
    allocation: PodAllocation
    kind: str
    equivalents: Fraction
    start: datetime
    end: datetime


def _slots(allocation: PodAllocation, node: NodeGpus | None, start: datetime,
           end: datetime) -> list[_Slot]:
    request = allocation.request
    slots: list[tuple[str, Fraction]] = []
    if node is not None and node.mig_strategy_single and request.whole:
        profile = node.mig[0][0]
        slots += [(profile, mig_gpu_equivalents(profile, node.product))] * request.whole
    else:
        replicas = node.replicas if node is not None else 1
        slots += [(_WHOLE, Fraction(1, replicas))] * request.whole
    for profile, count in request.mig:
        product = node.product if node is not None else None
        slots += [(profile, mig_gpu_equivalents(profile, product))] * count
    if request.fraction is not None:
        slots.append((_WHOLE, request.fraction))
    return [_Slot(allocation, kind, eq, start, end) for kind, eq in slots]


def _peak(placed: list[_Slot], start: datetime, end: datetime) -> Fraction:
    """Largest total GPU-equivalents held on a device at any instant of [start, end)."""
    points = {start} | {s.start for s in placed if start < s.start < end}
    return max(
        (sum((s.equivalents for s in placed if s.start <= p < s.end), Fraction(0))
         for p in points),
        default=Fraction(0),
    )


def _window(window_start: datetime, duration_s: float) -> tuple[datetime, datetime]:
    if window_start.tzinfo is None:
        raise ValueError(f"window_start {window_start} is naive: pass a UTC time")
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    window_start = window_start.astimezone(UTC)
    return window_start, window_start + timedelta(seconds=duration_s)


def _seconds(start: datetime, end: datetime) -> Fraction:
    delta = end - start
    return Fraction(delta.days * 86_400 + delta.seconds) + Fraction(delta.microseconds, 10**6)


# What reading one object's fields can raise when the API sends a value of the wrong shape
# (a string where a map belongs, a list of labels): the object is quarantined, not the list.
_UNREADABLE_FIELDS = (PodSpecError, ValueError, TypeError, AttributeError, KeyError)


def _problem(where: str, exc: Exception) -> str:
    return str(exc) if isinstance(exc, PodSpecError) else (
        f"{where}: cannot be read ({type(exc).__name__}: {exc})")


@dataclass(frozen=True)
class Quarantined:
    """An object whose fields could not be read, kept out of the rows while it is so."""

    kind: str
    """`Pod` or `ResourceClaim` (what the node's pods hold is unknown, so is its idle), `Node`
    or `ResourceSlice` (which GPUs the node has is unknown: no rows at all)."""
    key: str
    """The pod's UID (else namespace/name), the node's or slice's name, the claim's
    namespace/name."""
    node: str | None
    """The node whose windows it makes unreadable: `""` for a pod on no node (it holds no
    GPU, so nothing is unknown), None when even its node cannot be read (every node)."""
    since: datetime
    problem: str
    until: datetime | None = None
    """When a readable version, or its deletion, was seen."""

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.since < end and (self.until is None or self.until > start)


def _pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    uid = meta.get("uid")
    return uid if isinstance(uid, str) and uid else _where(pod).removeprefix("Pod ")


def _object_key(obj: Mapping[str, Any]) -> str:
    """A slice's name or a claim's namespace/name, as `_where` reads them."""
    return _where(obj).partition(" ")[2]


def _pod_node(pod: Mapping[str, Any]) -> str | None:
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return None
    node = spec.get("nodeName", "")
    return node if isinstance(node, str) else None


@dataclass
class CollectorState:
    """What the collector knows: allocation intervals by pod UID, nodes, namespace labels, and
    the objects it could not read."""

    allocations: dict[str, PodAllocation] = field(default_factory=dict)
    nodes: dict[str, NodeGpus] = field(default_factory=dict)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    quarantined: dict[tuple[str, str], Quarantined] = field(default_factory=dict)
    """Objects unreadable now, by (kind, key)."""
    released: list[Quarantined] = field(default_factory=list)
    """Objects that were unreadable for a while (until set): their windows stay gaps."""
    dra_devices: dict[str, tuple[str, Device]] = field(default_factory=dict)
    """dra_key -> (node, device) from the readable ResourceSlices."""
    dra_held: dict[str, tuple[tuple[Device, Fraction], ...]] = field(default_factory=dict)
    """Pod UID -> (device, share of it) from the readable claims reserving it. Kept with the
    pod's interval, so a claim deleted (or a slice gone) after its pod ended still bills it."""

    def quarantine(self, record: Quarantined) -> None:
        key = (record.kind, record.key)
        earlier = self.quarantined.get(key)
        if earlier is None:
            log.error("quarantined %s %s (its windows are gaps until it can be read): %s",
                      record.kind, record.key, record.problem)
        else:
            record = replace(record, since=earlier.since)
        self.quarantined[key] = record

    def release(self, kind: str, key: str, at: datetime) -> None:
        record = self.quarantined.pop((kind, key), None)
        if record is not None:
            log.info("%s %s can be read again", kind, key)
            self.released.append(replace(record, until=at))

    def set_dra(self, slices: Sequence[Mapping[str, Any]], claims: Sequence[Mapping[str, Any]],
                *, observed_at: datetime) -> None:
        """Devices and allocations from full lists of ResourceSlices and ResourceClaims. A
        device reserved by several pods (a shared claim) is split between them equally.

        A slice whose devices cannot be read is quarantined: its node has no rows (which of
        its GPUs are held is unknown). A claim that cannot be read, or that holds a device no
        readable slice publishes, is quarantined like an unreadable pod: its node keeps its
        readable pods' rows but has no idle rows."""
        devices: dict[str, tuple[str, Device]] = {}
        for item in slices:
            key = _object_key(item)
            try:
                found = dra_devices(item)
            except _UNREADABLE_FIELDS as exc:
                spec = item.get("spec")
                node = spec.get("nodeName") if isinstance(spec, Mapping) else None
                self.quarantine(Quarantined("ResourceSlice", key,
                                            node if isinstance(node, str) and node else None,
                                            observed_at, _problem(_where(item), exc)))
                continue
            self.release("ResourceSlice", key, observed_at)
            devices.update((device.kind.removeprefix(_DRA), (node, device))
                           for node, device in found)
        self.release_missing("ResourceSlice", {_object_key(s) for s in slices},
                             observed_at=observed_at)
        self.dra_devices = devices
        held: dict[str, list[tuple[Device, Fraction]]] = {}
        for claim in claims:
            key = _object_key(claim)
            try:
                keys, pods = claim_allocation(claim)
                unpublished = [k for k in keys if k not in devices]
                if unpublished:
                    raise PodSpecError(
                        f"{_where(claim)}: allocated {', '.join(unpublished)}, which no "
                        f"readable ResourceSlice of {DRA_DRIVER} publishes")
            except _UNREADABLE_FIELDS as exc:
                self.quarantine(Quarantined("ResourceClaim", key, _claim_node(claim),
                                            observed_at, _problem(_where(claim), exc)))
                continue
            self.release("ResourceClaim", key, observed_at)
            for uid in pods:
                held.setdefault(uid, []).extend((devices[k][1], Fraction(1, len(pods)))
                                                for k in keys)
        self.release_missing("ResourceClaim", {_object_key(c) for c in claims},
                             observed_at=observed_at)
        self.dra_held.update({uid: tuple(sorted(h, key=lambda d: d[0].kind))
                              for uid, h in held.items()})

    def upsert_pod(self, pod: Mapping[str, Any], *, observed_at: datetime,
                   deleted: bool = False) -> None:
        """Record a Pod object; the same UID always updates one interval, never adds one.

        A pod whose fields cannot be read is quarantined: no interval for it, and its node's
        windows are gaps (whatever it held is unknown, so its node's idle is too) until a
        readable version of it, or its deletion, arrives."""
        key = _pod_key(pod)
        try:
            new = allocation_from_pod(pod, observed_at=observed_at, deleted=deleted)
        except _UNREADABLE_FIELDS as exc:
            problem = _problem(_where(pod), exc)
            if deleted:
                # Gone, however it looked: it holds nothing from now on.
                self.release("Pod", key, observed_at)
                old = self.allocations.get(key)
                if old is not None and old.end is None:
                    self.allocations[key] = replace(old, end=observed_at, end_is_observed=True)
                return
            self.allocations.pop(key, None)
            self.quarantine(Quarantined("Pod", key, _pod_node(pod), observed_at, problem))
            return
        self.release("Pod", key, observed_at)
        if new is None:
            return
        old = self.allocations.get(new.uid)
        old_end, new_end = (old.end if old else None), new.end
        if old is not None and old_end is not None:
            # An end the API reported (finishedAt) beats one we inferred from when we noticed.
            if new_end is None or (new.end_is_observed and not old.end_is_observed):
                new = replace(new, end=old_end, end_is_observed=old.end_is_observed)
            elif new.end_is_observed == old.end_is_observed:
                new = replace(new, end=min(old_end, new_end))
        self.allocations[new.uid] = new

    def end_missing(self, present_uids: set[str], *, observed_at: datetime) -> None:
        """Pods that a relist no longer shows were deleted while we were not watching."""
        for uid, allocation in list(self.allocations.items()):
            if allocation.end is None and uid not in present_uids:
                self.allocations[uid] = replace(allocation, end=observed_at, end_is_observed=True)

    def release_missing(self, kind: str, present: set[str], *, observed_at: datetime) -> None:
        """Quarantined objects that a relist no longer shows are gone."""
        for record_kind, key in list(self.quarantined):
            if record_kind == kind and key not in present:
                self.release(kind, key, observed_at)

    def forget_ended_before(self, when: datetime) -> int:
        """Drop intervals (and quarantines) that ended before `when` (already written);
        returns how many intervals."""
        gone = [u for u, a in self.allocations.items() if a.end is not None and a.end < when]
        for uid in gone:
            del self.allocations[uid]
            self.dra_held.pop(uid, None)
        self.released = [r for r in self.released if r.until is None or r.until >= when]
        return len(gone)

    def unreadable(self, start: datetime, end: datetime) -> list[Quarantined]:
        """The quarantined objects (now or then) that make part of [start, end) unknown."""
        return [r for r in (*self.released, *self.quarantined.values())
                if r.node != "" and r.overlaps(start, end)]

    def rows(self, window_start: datetime, duration_s: float, *, cluster: str,
             namespace_tenants: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Rows of every node whose window could be read. A node with an unreadable Node
        object or ResourceSlice has none; a node with an unreadable pod or ResourceClaim has
        its readable pods' rows but no idle rows (what the unreadable object held is unknown,
        so is what nobody held)."""
        window_start, window_end = _window(window_start, duration_s)
        duration = _seconds(window_start, window_end)
        unknown = self.unreadable(window_start, window_end)
        unreadable_nodes = {r.node for r in unknown if r.kind in ("Node", "ResourceSlice")}
        idle_unknown = {r.node for r in unknown if r.kind in ("Pod", "ResourceClaim")}
        tenants = namespace_tenants or {}
        by_node: dict[str, list[PodAllocation]] = {}
        for allocation in self.allocations.values():
            if allocation.start < window_end and (
                allocation.end is None or allocation.end > window_start
            ):
                by_node.setdefault(allocation.node, []).append(allocation)
        rows: list[dict[str, Any]] = []
        known = {*self.nodes, *by_node, *(n for n, _ in self.dra_devices.values())}
        for node_name in sorted(known - unreadable_nodes if None not in unreadable_nodes
                                else ()):
            node = self.nodes.get(node_name)
            devices = (node.devices() if node is not None
                       and node.alive_during(window_start, window_end) else [])
            published = [d for n, d in self.dra_devices.values() if n == node_name]
            # Devices held in the window that no slice publishes any more (the claim and its
            # slice gone since) are still the pods' for that time.
            gone = {d for a in by_node.get(node_name, [])
                    for d, _ in self.dra_held.get(a.uid, ())} - set(published)
            devices += published + sorted(gone, key=lambda d: d.kind)
            placed: dict[str, list[_Slot]] = {d.device_id: [] for d in devices}
            slots = [
                slot
                for allocation in sorted(by_node.get(node_name, []),
                                         key=lambda a: (a.start, a.uid))
                for slot in _slots(
                    allocation, node, max(allocation.start, window_start),
                    min(allocation.end or window_end, window_end),
                ) + self._dra_slots(allocation, max(allocation.start, window_start),
                                    min(allocation.end or window_end, window_end))
            ]
            for i, slot in enumerate(slots):
                target = next(
                    (d for d in devices if d.kind == slot.kind
                     and _peak(placed[d.device_id], slot.start, slot.end) + slot.equivalents
                     <= d.gpu_equivalents),
                    None,
                )
                if target is None:
                    # More held than the node offers (or the node is unknown): never drop the
                    # usage; put it on a device of its own so conservation still holds.
                    log.warning(
                        "pod %s/%s holds %s %s on node %s beyond its known capacity",
                        slot.allocation.namespace, slot.allocation.name, slot.equivalents,
                        slot.kind, node_name,
                    )
                    profile = (None if slot.kind == _WHOLE or slot.kind.startswith(_DRA)
                               else slot.kind)
                    target = Device(
                        f"{node_name}/unplaced-{slot.allocation.uid}-{i}", slot.kind,
                        (node.product if node else None) or "UNKNOWN", profile,
                        mig_gpu_equivalents(profile) if profile else Fraction(1),
                    )
                    devices.append(target)
                    placed[target.device_id] = []
                placed[target.device_id].append(slot)
            idle = node_name not in idle_unknown and None not in idle_unknown
            for device in devices:
                rows += self._device_rows(
                    device, placed[device.device_id], window_start, duration, duration_s,
                    node_name, cluster, tenants, idle=idle,
                )
        return rows

    def _dra_slots(self, allocation: PodAllocation, start: datetime, end: datetime
                   ) -> list[_Slot]:
        """The devices the pod's claims were allocated, each its share of the device."""
        return [_Slot(allocation, device.kind, device.gpu_equivalents * share, start, end)
                for device, share in self.dra_held.get(allocation.uid, ())]

    def gaps(self, window_start: datetime, duration_s: float, *, cluster: str) -> list[Gap]:
        """One gap per node (None: every node) that an unreadable object hides in the window."""
        window_start, window_end = _window(window_start, duration_s)
        problems: dict[str | None, list[str]] = {}
        for record in self.unreadable(window_start, window_end):
            problems.setdefault(record.node, []).append(record.problem)
        return [Gap(SOURCE, cluster, node, None, window_start, window_end,
                    GapReason.MALFORMED_OBJECT, "; ".join(sorted(set(found))))
                for node, found in sorted(problems.items(), key=lambda item: item[0] or "")]

    def _device_rows(
        self, device: Device, slots: list[_Slot], window_start: datetime, duration: Fraction,
        duration_s: float, node: str, cluster: str, tenants: Mapping[str, str], *, idle: bool,
    ) -> list[dict[str, Any]]:
        held: dict[str, tuple[PodAllocation, Fraction]] = {}
        for slot in slots:
            seconds = _seconds(slot.start, slot.end) * slot.equivalents
            _, total = held.get(slot.allocation.uid, (slot.allocation, Fraction(0)))
            held[slot.allocation.uid] = (slot.allocation, total + seconds)
        # Every row carries the device's GPU-equivalents, as the other sources write them: the
        # pod's share is in its GPU-seconds, and conservation reads the device's capacity
        # from any row of it (a quarter of a time-sliced L4 is 15 of its 60 GPU-seconds).
        base = {
            "window_start": window_start,
            "duration_s": float(duration_s),
            "cluster": cluster,
            "node": node,
            "gpu_uuid": device.device_id,
            "gpu_product": device.gpu_product,
            "mig_profile": device.mig_profile,
            "gpu_equivalents": float(device.gpu_equivalents),
            "used_gpu_seconds": None,
            "memory_used_bytes": None,
            "source": SOURCE,
        }
        rows = []
        allocated = Fraction(0)
        for uid, (allocation, seconds) in sorted(held.items()):
            allocated += seconds
            tenant = allocation.tenant(self.namespace_labels.get(allocation.namespace, {}),
                                       tenants)
            rows.append({
                **base,
                "sample_id": make_sample_id(SOURCE, cluster, window_start.isoformat(),
                                            duration_s, node, device.device_id, uid),
                "tenant": tenant,
                "namespace": allocation.namespace,
                "pod": allocation.name,
                "pod_uid": uid,
                "workload_kind": allocation.workload_kind,
                "model": allocation.model,
                "model_params_b": allocation.model_params_b,
                "allocated_gpu_seconds": float(seconds),
            })
        free = duration * device.gpu_equivalents - allocated
        if idle and free > 0:
            rows.append({
                **base,
                "sample_id": make_sample_id(SOURCE, cluster, window_start.isoformat(),
                                            duration_s, node, device.device_id, IDLE_TENANT),
                "tenant": IDLE_TENANT,
                "namespace": None,
                "pod": None,
                "pod_uid": None,
                "workload_kind": WorkloadKind.IDLE.value,
                "model": None,
                "model_params_b": None,
                "allocated_gpu_seconds": float(free),
            })
        return rows


# ---------------------------------------------------------------------------------------------
# The collector: list + watch through the kubernetes client


def api_client_from_environment(kubeconfig: str | None = None,
                                context: str | None = None) -> k8s.ApiClient:
    """An ApiClient for the collector: the pod's service account when running in a cluster
    (the DaemonSet), else the given kubeconfig (or $KUBECONFIG / ~/.kube/config)."""
    if kubeconfig is None and context is None:
        try:
            k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
            return k8s.ApiClient()
        except k8s_config.ConfigException:
            pass
    try:
        api_client: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context
        )
    except (k8s_config.ConfigException, OSError) as exc:
        raise KubeConfigError(
            f"no Kubernetes credentials: not running in a cluster, and kubeconfig "
            f"{kubeconfig or '$KUBECONFIG or ~/.kube/config'}: {exc}; pass --kubeconfig"
        ) from exc
    return api_client


class UnreadableAnswer(TransientError):
    """An API answer that cannot be read: not JSON, a wrong kind, missing fields."""


class WatchExpired(TransientError):
    """The API server no longer has history back to our resourceVersion (410 Gone)."""


# What a list or watch that could not be read raises: the API's error status, the transport
# (refused, reset, timed out), or an answer we cannot read.
_UNREADABLE_ANSWERS = (ApiException, urllib3.exceptions.HTTPError, OSError, UnreadableAnswer)


@dataclass
class _Resource:
    kind: str
    list_call: Callable[..., Any]
    resource_version: str | None = None


@dataclass
class Outage:
    """A time the collector could not read the API: its state is incomplete for it."""

    start: datetime | None
    """The last time the state was known complete (None: it never was)."""
    problem: str
    end: datetime | None = None
    """When a sync read the API whole again (None: still unreadable)."""

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return (self.start is None or self.start < end) and (self.end is None or self.end > start)


def _json_object(data: bytes, where: str) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        preview = data[:60].decode("utf-8", "replace")
        raise UnreadableAnswer(f"{where}: not JSON ({preview!r})") from None
    if not isinstance(body, dict):
        raise UnreadableAnswer(f"{where}: expected a JSON object, got {type(body).__name__}")
    return body


def _api_problem(exc: BaseException, where: str) -> str:
    """One line for an API failure (an ApiException's str is its headers and body)."""
    if isinstance(exc, ApiException):
        message = ""
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            message = json.loads(exc.body or "").get("message", "")
        return f"{where}: HTTP {exc.status} {exc.reason}" + (f": {message}" if message else "")
    if isinstance(exc, UnreadableAnswer):
        return str(exc)
    return f"{where}: {type(exc).__name__}: {exc}"


class PodCollector:
    """Lists and watches pods, nodes and namespaces; writes allocation intervals as rows.

    `sync()` lists on first use (and after 410 Gone), otherwise watches from the last
    resourceVersion seen (events or BOOKMARKs). State is keyed by pod UID, so a relist updates
    intervals instead of adding them again.

    Answers are read as the API's JSON, object by object, rather than through the client's
    typed models, which refuse a whole list for one pod's bad field. A pod or node whose
    fields cannot be read is quarantined alone (see `CollectorState.upsert_pod`). A list or
    watch that cannot be read at all (an HTTP error, a timeout, not JSON, a wrong kind) opens
    an outage from the last time the state was known complete until a sync reads the API
    whole again: windows that overlap it get no rows, and a gap instead (`gaps`), because
    pods that came or went meanwhile were not seen."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        cluster: str,
        namespace_tenants: Mapping[str, str] | None = None,
        page_size: int = 500,
        watch_timeout_s: int = 30,
        request_timeout_s: float = 60.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = k8s.CoreV1Api(api_client)
        self.api_client = api_client
        self.cluster = cluster
        self.namespace_tenants = dict(namespace_tenants or {})
        self.page_size = page_size
        self.watch_timeout_s = watch_timeout_s
        self.request_timeout_s = request_timeout_s
        self.clock = clock
        self.state = CollectorState()
        self.pods = _Resource("Pod", self.api.list_pod_for_all_namespaces)
        self.nodes = _Resource("Node", self.api.list_node)
        resource_api = k8s.ResourceV1Api(api_client)
        self.slices = _Resource("ResourceSlice", resource_api.list_resource_slice)
        self.claims = _Resource("ResourceClaim",
                                resource_api.list_resource_claim_for_all_namespaces)
        self.dra_served = True
        self.relists = 0
        self.resumes = 0
        self.outages: list[Outage] = []
        """Closed outages first, the open one (end None) last."""
        self._known_through: datetime | None = None

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    def server_version(self) -> str:
        info = k8s.VersionApi(self.api_client).get_code(_request_timeout=self.request_timeout_s)
        return str(info.git_version)

    @property
    def quarantined(self) -> dict[str, str]:
        """`Kind key` -> problem, for every object unreadable now."""
        return {f"{kind} {key}": r.problem for (kind, key), r in self.state.quarantined.items()}

    # -- listing

    def _list(self, resource: _Resource) -> list[dict[str, Any]]:
        where = f"Kubernetes API {self.host}: {resource.kind} list"
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self.page_size, "_preload_content": False,
                                      "_request_timeout": self.request_timeout_s}
            if token:
                kwargs["_continue"] = token
            response = resource.list_call(**kwargs)
            try:
                body = _json_object(response.data, where)
            finally:
                response.release_conn()
            if body.get("kind") != f"{resource.kind}List":
                raise UnreadableAnswer(f"{where}: expected kind {resource.kind}List, got "
                                       f"{body.get('kind')!r}")
            page, metadata = body.get("items"), body.get("metadata")
            if not isinstance(page, list) or not isinstance(metadata, dict):
                raise UnreadableAnswer(f"{where}: `items` and `metadata` must be a list and an "
                                       "object")
            for i, item in enumerate(page):
                if not isinstance(item, dict):
                    raise UnreadableAnswer(f"{where}: items[{i}] is not an object")
                items.append({"kind": resource.kind, **item})
            token = metadata.get("continue")
            if not token:
                version = metadata.get("resourceVersion")
                if not isinstance(version, str) or not version:
                    raise UnreadableAnswer(f"{where}: metadata.resourceVersion is missing")
                resource.resource_version = version
                return items

    def relist(self) -> None:
        """Rebuild state from full lists (first start, or after 410 Gone)."""
        now = self.clock()
        self.relists += 1
        self.refresh_namespaces()
        nodes = self._list(self.nodes)
        for node in nodes:
            self._apply_node("ADDED", node, now)
        self.state.release_missing("Node", {self._node_name(n) for n in nodes},
                                   observed_at=now)
        pods = self._list(self.pods)
        for pod in pods:
            self._apply_pod("ADDED", pod, now)
        keys = {_pod_key(p) for p in pods}
        self.state.end_missing(keys, observed_at=now)
        self.state.release_missing("Pod", keys, observed_at=now)
        self.refresh_dra(now)

    def refresh_dra(self, now: datetime) -> None:
        """ResourceSlices and ResourceClaims, listed whole on every sync (they change at pod
        scheduling, far less often than pods), after the pods: the scheduler reserves a
        claim before it binds the pod, so every pod seen has its claims in the list. A
        cluster that does not serve resource.k8s.io/v1 (before Kubernetes 1.34, or DRA off)
        has no DRA GPUs; any other failure to list is an outage like a pod list's."""
        if not self.dra_served:
            return
        try:
            slices, claims = self._list(self.slices), self._list(self.claims)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.dra_served = False
            log.info("resource.k8s.io/v1 is not served: no DRA-allocated GPUs to attribute")
            return
        self.state.set_dra(slices, claims, observed_at=now)

    def refresh_namespaces(self) -> None:
        where = f"Kubernetes API {self.host}: Namespace list"
        labels: dict[str, dict[str, str]] = {}
        for namespace in self._list(_Resource("Namespace", self.api.list_namespace)):
            meta = namespace.get("metadata")
            name = meta.get("name") if isinstance(meta, dict) else None
            found = (meta.get("labels") or {}) if isinstance(meta, dict) else None
            if not isinstance(name, str) or not isinstance(found, dict) or not all(
                    isinstance(v, str) for v in found.values()):
                # Labels name tenants: one unreadable namespace could move pods between them.
                raise UnreadableAnswer(f"{where}: namespace {name!r} has no readable name and "
                                       "labels")
            labels[name] = found
        self.state.namespace_labels = labels

    # -- watching

    def _apply_pod(self, kind: str, pod: Mapping[str, Any], now: datetime) -> None:
        self.state.upsert_pod(pod, observed_at=now, deleted=kind == "DELETED")

    def _node_name(self, node: Mapping[str, Any]) -> str:
        meta = node.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        if not isinstance(name, str) or not name:
            raise UnreadableAnswer(f"Kubernetes API {self.host}: a Node without a name")
        return name

    def _apply_node(self, kind: str, node: Mapping[str, Any], now: datetime) -> None:
        name = self._node_name(node)
        if kind == "DELETED":
            self.state.release("Node", name, now)
            if name in self.state.nodes:
                self.state.nodes[name] = replace(self.state.nodes[name], deleted_at=now)
            return
        try:
            self.state.nodes[name] = node_gpus(node)
        except _UNREADABLE_FIELDS as exc:
            problem = _problem(f"Node {name}", exc)
            self.state.quarantine(Quarantined("Node", name, name, now, problem))
            return
        self.state.release("Node", name, now)

    def _watch(self, resource: _Resource, apply: Callable[[str, Mapping[str, Any], datetime],
                                                          None]) -> int:
        where = f"Kubernetes API {self.host}: {resource.kind} watch"
        response = resource.list_call(
            watch=True,
            resource_version=resource.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout_s,
            _request_timeout=self.request_timeout_s + self.watch_timeout_s,
            _preload_content=False,
        )
        events = 0
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if not line.strip():
                    continue
                event = _json_object(line.encode(), where)
                kind, obj = event.get("type"), event.get("object")
                if not isinstance(obj, dict):
                    raise UnreadableAnswer(f"{where}: {kind} event without an object")
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchExpired(f"{resource.kind} watch: {obj.get('message')}")
                    raise UnreadableAnswer(f"{where}: ERROR event {obj.get('code')} "
                                           f"{obj.get('reason')}: {obj.get('message')}")
                if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
                    raise UnreadableAnswer(f"{where}: unknown event type {kind!r}")
                if obj.get("kind") != resource.kind:
                    raise UnreadableAnswer(f"{where}: {kind} event of kind {obj.get('kind')!r}")
                if kind != "BOOKMARK":
                    apply(kind, obj, self.clock())
                    events += 1
                version = _meta(obj).get("resourceVersion")
                if version:
                    resource.resource_version = str(version)
        finally:
            response.close()
            response.release_conn()
        return events

    def sync(self) -> int:
        """List (first time, or after 410 Gone), else watch pods and nodes once each.

        Returns the number of events applied. An answer that cannot be read opens an outage
        (see the class) and is not raised: the next call relists (content it could not read
        may have hidden events) or, after a dropped connection, resumes the watch from the
        last resourceVersion seen."""
        started = self.clock()
        events = 0
        try:
            try:
                if self.pods.resource_version is None or self.nodes.resource_version is None:
                    self.relist()
                else:
                    self.refresh_namespaces()
                    events += self._watch(self.nodes, self._apply_node)
                    events += self._watch(self.pods, self._apply_pod)
                    self.refresh_dra(self.clock())
            except WatchExpired as exc:
                log.info("%s; relisting", exc)
                self.relist()
        except _UNREADABLE_ANSWERS as exc:
            if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
                self.resumes += 1
            else:
                self.pods.resource_version = self.nodes.resource_version = None
            self._unreadable(_api_problem(exc, f"Kubernetes API {self.host}"))
            return events
        self._known_through = started
        if self.outages and self.outages[-1].end is None:
            self.outages[-1].end = started
            log.warning("Kubernetes API %s readable again; windows since %s were gaps",
                        self.host, self.outages[-1].start)
        return events

    def _unreadable(self, problem: str) -> None:
        if self.outages and self.outages[-1].end is None:
            log.warning("%s (still unreadable)", problem)
            return
        log.error("%s; no rows until it can be read again, gaps instead", problem)
        self.outages.append(Outage(self._known_through, problem))

    def sample(self, _now: datetime) -> None:
        """The agent's sampling tick: keep the state current."""
        self.sync()

    def rows(self, window_start: datetime, duration_s: float) -> pa.Table:
        """Ledger rows (LEDGER_SCHEMA, source `pods`) for [window_start, +duration_s).

        Ask for a window only after it has ended and `sync()` has run since: a pod still
        running counts to the window's end. Rows depend only on the state, so asking again
        for the same window gives the same rows and sample ids. A window that overlaps an
        outage has no rows at all (see `gaps`)."""
        start, end = _window(window_start, duration_s)
        if any(outage.overlaps(start, end) for outage in self.outages):
            return ledger_table([])
        return ledger_table(self.state.rows(window_start, duration_s, cluster=self.cluster,
                                            namespace_tenants=self.namespace_tenants))

    def gaps(self, window_start: datetime, duration_s: float) -> list[Gap]:
        """What `rows` could not read for the same window: the whole cluster during an
        outage, else each node that an unreadable object hides."""
        start, end = _window(window_start, duration_s)
        problems = [o.problem for o in self.outages if o.overlaps(start, end)]
        if problems:
            return [Gap(SOURCE, self.cluster, None, None, start, end,
                        GapReason.SOURCE_UNREADABLE, "; ".join(dict.fromkeys(problems)))]
        return self.state.gaps(window_start, duration_s, cluster=self.cluster)
