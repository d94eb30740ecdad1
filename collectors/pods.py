"""Kubernetes pod collector: GPU allocations of pods, as ledger rows (`source = pods`).

Lists and watches pods, nodes and namespaces through the kubernetes client (the only module
that imports it, besides the scheduler-quota write-back). A pod holds GPUs from the moment it
is scheduled to a node until it terminates; `PodCollector.rows` turns those allocation
intervals into one row per (window, device, pod) plus `__idle__` rows for the capacity no pod
holds, so that GPU-seconds are conserved per device.

The API does not say which physical GPU a pod got, so devices are synthetic and stable per
node (`<node>/gpu<i>`, `<node>/mig-<profile>-<i>`, and `<node>/gpu<i>-unpartitioned` for the
slices of a MIG-mode GPU that no instance covers, always idle) and pods are packed onto them
deterministically. GPU-equivalents are kept as exact fractions until the row is written, so
that allocated + idle equals capacity exactly rather than to float rounding.
"""

from __future__ import annotations

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
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

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


class PodSpecError(ValueError):
    """A pod or node object whose GPU fields cannot be read; the message names object and field."""


class KubeConfigError(RuntimeError):
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
    meta = _meta(obj)
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
        created_at=_time(meta.get("creationTimestamp")),
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
    other drivers and devices not bound to one node are not GPUs of ours."""
    spec = resource_slice.get("spec") or {}
    node = spec.get("nodeName")
    if spec.get("driver") != DRA_DRIVER or not node:
        return []
    where = _where({**resource_slice, "kind": "ResourceSlice"})
    pool = str((spec.get("pool") or {}).get("name"))
    out = []
    for device in spec.get("devices") or []:
        attributes = device.get("attributes") or {}

        def text(name: str, attributes: Mapping[str, Any] = attributes) -> str | None:
            value = (attributes.get(name) or {}).get("string")
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
                raise PodSpecError(f"{where}: device {device.get('name')}: {exc}") from None
        key = dra_key(DRA_DRIVER, pool, str(device.get("name")))
        out.append((str(node), Device(text("uuid") or f"{node}/{key}", _DRA + key, product,
                                      profile, equivalents)))
    return out


def claim_allocation(claim: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The devices of NVIDIA's driver a ResourceClaim was allocated (dra_key), and the UIDs of
    the pods that reserve it."""
    status = claim.get("status") or {}
    results = ((status.get("allocation") or {}).get("devices") or {}).get("results") or []
    keys = [dra_key(r["driver"], r["pool"], r["device"])
            for r in results if r.get("driver") == DRA_DRIVER]
    pods = [str(ref["uid"]) for ref in status.get("reservedFor") or []
            if ref.get("resource") == "pods" and ref.get("uid")]
    return keys, pods


def _time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        stamp = value
    else:
        stamp = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        raise PodSpecError(f"timestamp {value!r} has no time zone")
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


def _scheduled_at(pod: Mapping[str, Any]) -> datetime | None:
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "True":
            stamp = _time(condition.get("lastTransitionTime"))
            if stamp is not None:
                return stamp
    return _time(status.get("startTime"))


def _finished_at(pod: Mapping[str, Any]) -> datetime | None:
    """When the last container terminated, if every container has."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    ends = []
    for status in statuses:
        terminated = (status.get("state") or {}).get("terminated")
        if not terminated:
            return None
        stamp = _time(terminated.get("finishedAt"))
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
    request = gpu_request(pod)
    spec = pod.get("spec") or {}
    meta = _meta(pod)
    node = spec.get("nodeName")
    labels: Mapping[str, str] = meta.get("labels") or {}
    claims = spec.get("resourceClaims") or []
    if (not request and not claims) or not node or labels.get("app") == RUNAI_RESERVATION_APP:
        return None
    start = _scheduled_at(pod) or observed_at
    phase = (pod.get("status") or {}).get("phase")
    end = _finished_at(pod) if (deleted or phase in ("Succeeded", "Failed")) else None
    end_is_observed = False
    if end is None and (deleted or phase in ("Succeeded", "Failed")):
        deletion = _time(meta.get("deletionTimestamp"))
        end = min(observed_at, deletion) if deletion else observed_at
        end_is_observed = True
    if end is not None and end < start:
        end = start
    return PodAllocation(
        uid=str(meta.get("uid")),
        namespace=str(meta.get("namespace")),
        name=str(meta.get("name")),
        node=str(node),
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


def _seconds(start: datetime, end: datetime) -> Fraction:
    delta = end - start
    return Fraction(delta.days * 86_400 + delta.seconds) + Fraction(delta.microseconds, 10**6)


@dataclass
class CollectorState:
    """What the collector knows: allocation intervals by pod UID, nodes, namespace labels."""

    allocations: dict[str, PodAllocation] = field(default_factory=dict)
    nodes: dict[str, NodeGpus] = field(default_factory=dict)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    dra_devices: dict[str, tuple[str, Device]] = field(default_factory=dict)
    """dra_key -> (node, device) from the ResourceSlices."""
    dra_held: dict[str, tuple[tuple[str, Fraction], ...]] = field(default_factory=dict)
    """Pod UID -> (dra_key, share of the device) from the claims reserving it. Kept with the
    pod's interval, so a claim deleted after its pod ended still bills the pod."""

    def set_dra(self, slices: Sequence[Mapping[str, Any]], claims: Sequence[Mapping[str, Any]]
                ) -> None:
        """Devices and allocations from full lists of ResourceSlices and ResourceClaims. A
        device reserved by several pods (a shared claim) is split between them equally."""
        self.dra_devices = {device.kind.removeprefix(_DRA): (node, device)
                            for item in slices for node, device in dra_devices(item)}
        held: dict[str, list[tuple[str, Fraction]]] = {}
        for claim in claims:
            keys, pods = claim_allocation(claim)
            for uid in pods:
                held.setdefault(uid, []).extend((k, Fraction(1, len(pods))) for k in keys)
        self.dra_held.update({uid: tuple(sorted(h)) for uid, h in held.items()})

    def upsert_pod(self, pod: Mapping[str, Any], *, observed_at: datetime,
                   deleted: bool = False) -> None:
        """Record a Pod object; the same UID always updates one interval, never adds one."""
        new = allocation_from_pod(pod, observed_at=observed_at, deleted=deleted)
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

    def forget_ended_before(self, when: datetime) -> int:
        """Drop intervals that ended before `when` (already written); returns how many."""
        gone = [u for u, a in self.allocations.items() if a.end is not None and a.end < when]
        for uid in gone:
            del self.allocations[uid]
            self.dra_held.pop(uid, None)
        return len(gone)

    def rows(self, window_start: datetime, duration_s: float, *, cluster: str,
             namespace_tenants: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        if window_start.tzinfo is None:
            raise ValueError(f"window_start {window_start} is naive: pass a UTC time")
        if duration_s <= 0:
            raise ValueError(f"duration_s must be positive, got {duration_s}")
        window_start = window_start.astimezone(UTC)
        window_end = window_start + timedelta(seconds=duration_s)
        duration = _seconds(window_start, window_end)
        tenants = namespace_tenants or {}
        by_node: dict[str, list[PodAllocation]] = {}
        for allocation in self.allocations.values():
            if allocation.start < window_end and (
                allocation.end is None or allocation.end > window_start
            ):
                by_node.setdefault(allocation.node, []).append(allocation)
        rows: list[dict[str, Any]] = []
        for node_name in sorted({*self.nodes, *by_node}):
            node = self.nodes.get(node_name)
            devices = (node.devices() if node is not None
                       and node.alive_during(window_start, window_end) else [])
            devices += [d for n, d in self.dra_devices.values() if n == node_name]
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
            for device in devices:
                rows += self._device_rows(
                    device, placed[device.device_id], window_start, duration, duration_s,
                    node_name, cluster, tenants,
                )
        return rows

    def _dra_slots(self, allocation: PodAllocation, start: datetime, end: datetime
                   ) -> list[_Slot]:
        """The devices the pod's claims were allocated, each its share of the device."""
        slots = []
        for key, share in self.dra_held.get(allocation.uid, ()):
            known = self.dra_devices.get(key)
            # A device no ResourceSlice shows (yet) is still held: a whole one, on its own.
            equivalents = known[1].gpu_equivalents if known else Fraction(1)
            slots.append(_Slot(allocation, _DRA + key, equivalents * share, start, end))
        return slots

    def _device_rows(
        self, device: Device, slots: list[_Slot], window_start: datetime, duration: Fraction,
        duration_s: float, node: str, cluster: str, tenants: Mapping[str, str],
    ) -> list[dict[str, Any]]:
        held: dict[str, tuple[PodAllocation, Fraction, Fraction]] = {}
        for slot in slots:
            seconds = _seconds(slot.start, slot.end) * slot.equivalents
            _, eq, total = held.get(slot.allocation.uid, (slot.allocation, Fraction(0),
                                                         Fraction(0)))
            held[slot.allocation.uid] = (slot.allocation, eq + slot.equivalents, total + seconds)
        base = {
            "window_start": window_start,
            "duration_s": float(duration_s),
            "cluster": cluster,
            "node": node,
            "gpu_uuid": device.device_id,
            "gpu_product": device.gpu_product,
            "mig_profile": device.mig_profile,
            "used_gpu_seconds": None,
            "memory_used_bytes": None,
            "source": SOURCE,
        }
        rows = []
        allocated = Fraction(0)
        for uid, (allocation, eq, seconds) in sorted(held.items()):
            allocated += seconds
            tenant = allocation.tenant(self.namespace_labels.get(allocation.namespace, {}),
                                       tenants)
            rows.append({
                **base,
                "sample_id": make_sample_id(SOURCE, cluster, window_start.isoformat(),
                                            duration_s, node, device.device_id, uid),
                "gpu_equivalents": float(eq),
                "tenant": tenant,
                "namespace": allocation.namespace,
                "pod": allocation.name,
                "pod_uid": uid,
                "workload_kind": allocation.workload_kind,
                "model": allocation.model,
                "model_params_b": allocation.model_params_b,
                "allocated_gpu_seconds": float(seconds),
            })
        idle = duration * device.gpu_equivalents - allocated
        if idle > 0:
            rows.append({
                **base,
                "sample_id": make_sample_id(SOURCE, cluster, window_start.isoformat(),
                                            duration_s, node, device.device_id, IDLE_TENANT),
                "gpu_equivalents": float(device.gpu_equivalents),
                "tenant": IDLE_TENANT,
                "namespace": None,
                "pod": None,
                "pod_uid": None,
                "workload_kind": WorkloadKind.IDLE.value,
                "model": None,
                "model_params_b": None,
                "allocated_gpu_seconds": float(idle),
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


def _as_dict(api_client: k8s.ApiClient, model: Any) -> dict[str, Any]:
    """A typed client model back to the API's JSON shape (camelCase keys, ISO times)."""
    data: dict[str, Any] = api_client.sanitize_for_serialization(  # type: ignore[no-untyped-call]
        model
    )
    return data


class WatchExpired(Exception):
    """The API server no longer has history back to our resourceVersion (410 Gone)."""


@dataclass
class _Resource:
    kind: str
    list_call: Callable[..., Any]
    resource_version: str | None = None


class PodCollector:
    """Lists and watches pods, nodes and namespaces; writes allocation intervals as rows.

    `sync()` lists on first use (and after 410 Gone), otherwise watches from the last
    resourceVersion seen (events or BOOKMARKs), so a dropped connection resumes where it
    stopped. State is keyed by pod UID, so a relist updates intervals instead of adding
    them again."""

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
        self.errors: list[str] = []

    def server_version(self) -> str:
        info = k8s.VersionApi(self.api_client).get_code(_request_timeout=self.request_timeout_s)
        return str(info.git_version)

    # -- listing

    def _list(self, resource: _Resource) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self.page_size,
                                      "_request_timeout": self.request_timeout_s}
            if token:
                kwargs["_continue"] = token
            page = resource.list_call(**kwargs)
            items += [{"kind": resource.kind, **_as_dict(self.api_client, i)} for i in page.items]
            token = page.metadata._continue if page.metadata else None
            if not token:
                resource.resource_version = page.metadata.resource_version
                return items

    def relist(self) -> None:
        """Rebuild state from full lists (first start, or after 410 Gone)."""
        now = self.clock()
        self.relists += 1
        self.refresh_namespaces()
        self.refresh_dra()
        for node in self._list(self.nodes):
            self._apply_node("ADDED", node, now)
        pods = self._list(self.pods)
        for pod in pods:
            self._apply_pod("ADDED", pod, now)
        self.state.end_missing({str(_meta(p).get("uid")) for p in pods}, observed_at=now)

    def refresh_dra(self) -> None:
        """ResourceSlices and ResourceClaims, listed whole on every sync (they change at pod
        scheduling, far less often than pods). A cluster that does not serve
        resource.k8s.io/v1 (before Kubernetes 1.34, or DRA off) has no DRA GPUs."""
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
        try:
            self.state.set_dra(slices, claims)
        except PodSpecError as exc:
            self.errors.append(str(exc))
            log.error("%s", exc)

    def refresh_namespaces(self) -> None:
        namespaces = self._list(_Resource("Namespace", self.api.list_namespace))
        self.state.namespace_labels = {
            _meta(ns)["name"]: dict(_meta(ns).get("labels") or {}) for ns in namespaces
        }

    # -- watching

    def _apply_pod(self, kind: str, pod: Mapping[str, Any], now: datetime) -> None:
        try:
            self.state.upsert_pod(pod, observed_at=now, deleted=kind == "DELETED")
        except PodSpecError as exc:
            self.errors.append(str(exc))
            log.error("%s", exc)

    def _apply_node(self, kind: str, node: Mapping[str, Any], now: datetime) -> None:
        name = str(_meta(node).get("name"))
        if kind == "DELETED":
            if name in self.state.nodes:
                self.state.nodes[name] = replace(self.state.nodes[name], deleted_at=now)
            return
        try:
            self.state.nodes[name] = node_gpus(node)
        except PodSpecError as exc:
            self.errors.append(str(exc))
            log.error("%s", exc)

    def _watch(self, resource: _Resource, apply: Callable[[str, Mapping[str, Any], datetime],
                                                          None]) -> int:
        watcher = k8s_watch.Watch()  # type: ignore[no-untyped-call]
        events = 0
        try:
            for event in watcher.stream(  # type: ignore[no-untyped-call]
                resource.list_call,
                resource_version=resource.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout_s,
                _request_timeout=self.request_timeout_s + self.watch_timeout_s,
            ):
                raw = event["raw_object"]
                version = _meta(raw).get("resourceVersion")
                if event["type"] != "BOOKMARK":
                    apply(event["type"], raw, self.clock())
                    events += 1
                if version:
                    resource.resource_version = str(version)
        except ApiException as exc:
            if exc.status == 410:
                raise WatchExpired(f"{resource.kind} watch: {exc.reason}") from exc
            raise
        finally:
            watcher.stop()  # type: ignore[no-untyped-call]
        return events

    def sync(self) -> int:
        """List (first time, or after 410 Gone), else watch pods and nodes once each.

        Returns the number of events applied. A connection dropped mid-watch is not an
        error: the next call resumes from the last resourceVersion seen."""
        if self.pods.resource_version is None or self.nodes.resource_version is None:
            self.relist()
            return 0
        events = 0
        try:
            self.refresh_namespaces()
            self.refresh_dra()
            events += self._watch(self.nodes, self._apply_node)
            events += self._watch(self.pods, self._apply_pod)
        except WatchExpired as exc:
            log.info("%s; relisting", exc)
            self.relist()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self.resumes += 1
            log.warning("watch connection dropped (%s); resuming from resourceVersion %s",
                        exc, self.pods.resource_version)
        return events

    def rows(self, window_start: datetime, duration_s: float) -> pa.Table:
        """Ledger rows (LEDGER_SCHEMA, source `pods`) for [window_start, +duration_s).

        Ask for a window only after it has ended and `sync()` has run since: a pod still
        running counts to the window's end. Rows depend only on the state, so asking again
        for the same window gives the same rows and sample ids."""
        return ledger_table(self.state.rows(window_start, duration_s, cluster=self.cluster,
                                            namespace_tenants=self.namespace_tenants))

