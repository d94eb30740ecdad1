"""Reservation recommendations as scheduler quotas: a ResourceQuota per tenant namespace and,
with Kueue, a complete set: a ResourceFlavor per hardware tier, one cohort whose own quota is the
shared overflow pool, a ClusterQueue per tenant holding its reservation as nominal quota in that
cohort, and a LocalQueue per tenant namespace.

One planner (`plan_quotas`: recommendations and cluster state in, a typed QuotaPlan out), one
manifest writer (`write_manifests`) and one sequence (`run_quotas`: plan, validate, write,
apply, record) behind both the Dagster asset and `chargeback quotas`. No Kubernetes client
here: collectors/kube_apply.py reads the cluster's state and applies a plan. Kueue objects are
`kueue.x-k8s.io/v1beta2` (Kueue 0.19); their admission rules are in models/planning/kueue.py.

Two rules protect running work whatever the recommendation says:
- a quota never drops below what is in use now (the scheduler would block every new pod of
  the tenant until usage fell under it);
- a quota moves by at most `max_step` GPUs per run, so a bad recommendation is a small step
  that the next run (or an operator) can correct.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import yaml

from models.billing.rate_cards import Tenant
from models.errors import UserError
from models.files import atomic_write, safe_path
from models.ledger import warehouse
from models.ledger.tiers import UnknownMigProfile, mig_gpu_equivalents
from models.ledger.usage import RESERVED_TENANTS
from models.planning.kueue import (
    KUEUE_API_VERSION,
    PREEMPTION,
    admission_problems,
    cohort_limits,
    flavor_node_labels,
    parse_quantity,
)
from models.planning.reservations import DEFAULT_LOOKBACK_HOURS

MANAGER = "gpu-chargeback"
"""Server-side apply field manager and the `app.kubernetes.io/managed-by` label value."""
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
TENANT_LABEL = "chargeback/tenant"
QUOTA_NAME = "gpu-chargeback"
"""Our own ResourceQuota per namespace: Kubernetes enforces every quota of a namespace, so a
separate object leaves the operators' other quotas (CPU, memory, ...) alone."""
COHORT_NAME = "gpu-chargeback"
"""The one cohort every pooled tenant's ClusterQueue joins; its own quota is the overflow pool."""
DEFAULT_MAX_STEP = 4

REQUIRED_COLUMNS = ("tenant", "namespace", "hardware_tier", "mig_profile", "recommended_gpus")
OPTIONAL_COLUMNS = ("in_use_gpus", "current_gpus")
SLA_CLASSES = ("standard", "latency-sensitive")
ISOLATIONS = ("pool", "bridge", "silo")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class RecommendationsError(UserError):
    """Every problem of a recommendations file, not only the first, each naming the file."""

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        super().__init__([f"{path}: {p}" for p in problems])


@dataclass(frozen=True)
class Recommendation:
    tenant: str
    namespace: str
    hardware_tier: str
    mig_profile: str | None
    recommended_gpus: int
    in_use_gpus: int | None = None
    """What the tenant uses now, when the caller knows it (the cluster's figure wins if higher)."""
    current_gpus: int | None = None
    """The quota in force now, when known without a cluster (for `quotas write`)."""
    sla_class: str = "standard"
    """The tenant's SLA class: a latency-sensitive tenant lends none of its reservation."""
    isolation: str = "pool"
    """The tenant's isolation model: `silo` stays out of the cohort, `bridge` borrows only."""


def device_resource(mig_profile: str | None) -> str:
    """The extended resource pods request: `nvidia.com/gpu` or `nvidia.com/mig-1g.10gb`."""
    return "nvidia.com/gpu" if mig_profile is None else f"nvidia.com/mig-{mig_profile}"


def quota_resource(mig_profile: str | None) -> str:
    """ResourceQuota key: extended resources are only quotable under `requests.`."""
    return f"requests.{device_resource(mig_profile)}"


def dns_name(text: str) -> str:
    """A tenant or tier name as a DNS-1123 subdomain (ClusterQueue and ResourceFlavor names)."""
    name = re.sub(r"[^a-z0-9.-]+", "-", text.strip().lower()).strip("-.")
    name = re.sub(r"\.{2,}", ".", name)[:253].strip("-.")
    if not name:
        raise UserError(f"{text!r} has no letters or digits to name a Kubernetes object after")
    return name


def whole_gpus(value: object) -> int:
    """GPUs in use as a whole number: a fractional figure rounds up so a floor never cuts it."""
    return math.ceil(parse_quantity(value))


def read_recommendations(path: str | Path) -> list[Recommendation]:
    """Recommendations from Parquet or CSV; raises RecommendationsError listing every bad row."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".csv":
            table = pa_csv.read_csv(
                path,
                convert_options=pa_csv.ConvertOptions(
                    column_types={"mig_profile": pa.string(), "namespace": pa.string()},
                    strings_can_be_null=True,
                ),
            )
        else:
            table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise RecommendationsError(str(path), [f"cannot read as Parquet or CSV: {exc}"]) from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise RecommendationsError(
            str(path),
            [f"missing column(s) {', '.join(missing)}; need {', '.join(REQUIRED_COLUMNS)}"],
        )
    recommendations, problems = parse_recommendations(table.to_pylist())
    if problems:
        raise RecommendationsError(str(path), problems)
    return recommendations


def parse_recommendations(
    rows: Iterable[Mapping[str, Any]],
) -> tuple[list[Recommendation], list[str]]:
    """Rows as Recommendations, and every problem found (`row N: field: message`)."""
    out: list[Recommendation] = []
    problems: list[str] = []
    seen: dict[tuple[str, str, str | None], int] = {}
    for i, row in enumerate(rows):
        before = len(problems)

        def bad(field: str, message: str, i: int = i) -> None:
            problems.append(f"row {i}: {field}: {message}")

        tenant = _text(row.get("tenant"))
        namespace = _text(row.get("namespace"))
        tier = _text(row.get("hardware_tier"))
        mig = _text(row.get("mig_profile"))
        sla = _text(row.get("sla_class")) or "standard"
        isolation = _text(row.get("isolation")) or "pool"
        if sla not in SLA_CLASSES:
            bad("sla_class", f"{sla!r} is not one of {', '.join(SLA_CLASSES)}")
        if isolation not in ISOLATIONS:
            bad("isolation", f"{isolation!r} is not one of {', '.join(ISOLATIONS)}")
        if tenant is None:
            bad("tenant", "must not be empty")
        elif tenant in RESERVED_TENANTS:
            bad("tenant", f"{tenant} is a reserved bucket, not a tenant; drop its rows")
        if namespace is None:
            bad("namespace", "must not be empty")
        elif len(namespace) > 63 or not _DNS_LABEL.match(namespace):
            bad("namespace", f"{namespace!r} is not a Kubernetes namespace name (DNS-1123 label)")
        if tier is None:
            bad("hardware_tier", "must not be empty")
        if mig is not None:
            mig = mig.lower().removeprefix("mig-")
            try:
                mig_gpu_equivalents(mig)
            except UnknownMigProfile as exc:
                bad("mig_profile", str(exc))
        counts: dict[str, int | None] = {}
        for name in ("recommended_gpus", *OPTIONAL_COLUMNS):
            value = row.get(name)
            if value is None:
                if name == "recommended_gpus":
                    bad(name, "must not be empty")
                counts[name] = None
            elif isinstance(value, bool) or not isinstance(value, int | float) or (
                isinstance(value, float) and not value.is_integer()
            ):
                bad(name, f"must be a whole number of GPUs (or MIG instances), got {value!r}")
                counts[name] = None
            elif value < 0:
                bad(name, f"must not be negative, got {value}")
                counts[name] = None
            else:
                counts[name] = int(value)
        if namespace is not None and tier is not None:
            key = (namespace, tier, mig)
            if key in seen:
                bad("hardware_tier", f"duplicate of row {seen[key]} for {namespace}/{tier}/{mig}")
            seen.setdefault(key, i)
        if len(problems) == before:
            assert tenant
            assert namespace
            assert tier
            assert counts["recommended_gpus"] is not None
            out.append(
                Recommendation(
                    tenant, namespace, tier, mig, counts["recommended_gpus"],
                    counts["in_use_gpus"], counts["current_gpus"], sla, isolation,
                )
            )
    return out, problems


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


class QuotaKind(StrEnum):
    RESOURCE_QUOTA = "ResourceQuota"
    CLUSTER_QUEUE = "ClusterQueue"
    COHORT = "Cohort"
    RESOURCE_FLAVOR = "ResourceFlavor"
    LOCAL_QUEUE = "LocalQueue"
    """The last two carry no figure: they are written and applied whole."""


@dataclass(frozen=True)
class QuotaKey:
    """One quota figure: a ResourceQuota's `spec.hard[resource]` in a namespace, or a
    ClusterQueue's (or the cohort's) `nominalQuota` of `resource` under ResourceFlavor
    `flavor`. `resource` is
    the key as the object writes it (`requests.nvidia.com/gpu` in a ResourceQuota,
    `nvidia.com/gpu` in a ClusterQueue), so a figure read from the cluster maps to its key
    as it is. The fields follow the columns of the warehouse's scheduler_quota_changes."""

    kind: QuotaKind
    namespace: str | None
    """The ResourceQuota's namespace; None for the cluster-scoped ClusterQueue."""
    name: str
    flavor: str | None
    """The ClusterQueue flavor (a hardware tier); None for a ResourceQuota."""
    resource: str

    @classmethod
    def resource_quota(cls, namespace: str, resource: str) -> QuotaKey:
        return cls(QuotaKind.RESOURCE_QUOTA, namespace, QUOTA_NAME, None, resource)

    @classmethod
    def cluster_queue(cls, queue: str, flavor: str, resource: str) -> QuotaKey:
        return cls(QuotaKind.CLUSTER_QUEUE, None, queue, flavor, resource)

    @classmethod
    def cohort(cls, cohort: str, flavor: str, resource: str) -> QuotaKey:
        return cls(QuotaKind.COHORT, None, cohort, flavor, resource)

    @property
    def label(self) -> str:
        """For people: `acme/gpu-chargeback requests.nvidia.com/gpu`,
        `acme premium:nvidia.com/gpu`."""
        if self.kind is QuotaKind.RESOURCE_QUOTA:
            return f"{self.namespace}/{self.name} {self.resource}"
        return f"{self.name} {self.flavor}:{self.resource}"


@dataclass(frozen=True)
class ClusterState:
    """What is in force and in use now, as far as the caller knows: read from the cluster
    (collectors/kube_apply.py), or the last figures written (`last_written_state`), or nothing.
    A figure missing from `in_force` does not exist yet."""

    in_force: Mapping[QuotaKey, int] = field(default_factory=dict)
    in_use: Mapping[QuotaKey, int] = field(default_factory=dict)
    other_groups: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    """A live ClusterQueue's resource groups without GPUs (CPU, memory), by queue, kept as they
    are: `resourceGroups` is an atomic list, so applying it replaces the whole list."""
    flavors: frozenset[str] | None = None
    """The ResourceFlavors that exist on the cluster; None when not read (no cluster)."""
    no_borrowing: frozenset[str] = frozenset()
    """ClusterQueues whose borrowing a budget has set to zero now (models/planning/budgets.py)."""


@dataclass(frozen=True)
class KueueSetup:
    """What the Kueue objects need besides the tenants' recommendations."""

    flavor_labels: Mapping[str, Mapping[str, str]] | None = None
    """nodeLabels of the ResourceFlavor of each hardware tier (`kueue.flavor_node_labels`);
    None when the operator manages the flavors: none is written, and before apply every flavor
    the queues name is checked to exist."""
    pools: Mapping[tuple[str, str | None], int] = field(default_factory=dict)
    """Shared overflow pool per (hardware tier, MIG profile), in GPUs or instances: the
    cohort's own nominal quota, which every pooled tenant may borrow."""
    cohort: str = COHORT_NAME
    notes: tuple[str, ...] = ()
    """What the operator must do for the objects to work (node labels to set)."""

    @classmethod
    def generated(cls, tier_products: Mapping[str, Iterable[str]],
                  pools: Mapping[tuple[str, str | None], int], cohort: str = COHORT_NAME
                  ) -> KueueSetup:
        """Flavors generated from the GPU products each tier's nodes carry."""
        try:
            labels, notes = flavor_node_labels(tier_products)
        except ValueError as exc:
            raise UserError(f"cannot generate ResourceFlavors: {exc}") from exc
        return cls(labels, pools, cohort, tuple(notes))


@dataclass(frozen=True)
class QuotaChange:
    """One quota figure: what it is now, what is used, what we set and why."""

    key: QuotaKey
    current: int | None
    """None when the object or the figure does not exist yet."""
    in_use: int
    recommended: int
    target: int
    rule: str
    """Why target differs from recommended: `recommended`, `max-step`, `in-use floor`."""

    @property
    def changes(self) -> bool:
        return self.current != self.target


@dataclass(frozen=True)
class QuotaObject:
    """One Kubernetes object of a plan: its manifest and the figures it sets."""

    kind: QuotaKind
    namespace: str | None
    name: str
    manifest: dict[str, Any]
    changes: tuple[QuotaChange, ...]
    restated: bool = False
    """Applied even when no figure changes: a budget sets or lifts its borrowingLimit 0."""

    @property
    def file_stem(self) -> str:
        where = f"{self.namespace}.{self.name}" if self.namespace else self.name
        return f"{self.kind.value.lower()}-{where}"

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True)
class QuotaPlan:
    changes: tuple[QuotaChange, ...]
    """Every figure, ResourceQuotas first, in a stable order."""
    objects: tuple[QuotaObject, ...]
    """In the order they must be applied: flavors, cohort, queues, local queues, quotas."""
    flavors: tuple[str, ...] = ()
    """Every ResourceFlavor the queues and the cohort name."""
    notes: tuple[str, ...] = ()

    def problems(self) -> list[str]:
        """Why Kueue's admission would reject an object of the plan; empty when it would not."""
        return [f"{o.kind.value} {o.where}: Kueue would reject it: {p}"
                for o in self.objects if o.kind is not QuotaKind.RESOURCE_QUOTA
                for p in admission_problems(o.manifest)]


def step_target(
    current: int | None, in_use: int, recommended: int, max_step: int
) -> tuple[int, str]:
    """The quota to set now, and the rule that decided it.

    Moves from `current` toward `recommended` by at most `max_step`, never below `in_use`.
    A quota that does not exist yet has no step to limit: it is created at the recommendation,
    raised to what is in use."""
    if max_step < 1:
        raise UserError(f"max step must be at least 1 GPU, got {max_step}")
    target, rule = recommended, "recommended"
    if current is not None and abs(recommended - current) > max_step:
        target = current + max_step if recommended > current else current - max_step
        rule = "max-step"
    if target < in_use and (current is None or target < current):
        # Only a decrease is held up: an over-used quota (current < in_use) is left where it is
        # rather than raised past the recommendation's direction.
        floor = in_use if current is None else min(in_use, current)
        if floor > target:
            target, rule = floor, "in-use floor"
    return target, rule


def plan_quotas(
    recommendations: Sequence[Recommendation],
    state: ClusterState | None = None,
    *,
    max_step: int = DEFAULT_MAX_STEP,
    kueue: bool = True,
    setup: KueueSetup | None = None,
    no_borrowing: Collection[str] = (),
) -> QuotaPlan:
    """The quotas to set now: a ResourceQuota per namespace and, with `kueue`, the Kueue set
    (ResourceFlavors, the cohort, a ClusterQueue per tenant, a LocalQueue per namespace); every
    figure moved from what is in force toward the recommendation by `step_target`.

    A ResourceQuota cannot tell an H100 from a T4 (`nvidia.com/gpu` is one resource), so the
    GPUs of every tier in a namespace add up; MIG profiles stay apart. Kueue requires every
    flavor of a resource group to list every covered resource, so a tier without a
    recommendation for some resource of its queue gets 0 for it (held up by the in-use floor);
    the cohort likewise lists every flavor and resource of the plan, at its pool (0 where no
    pool was sized). In-force and in-use figures carried by the recommendations (`quotas write`
    without a cluster) fill what `state` lacks; of two in-use figures the higher counts.

    `no_borrowing`: ClusterQueues a budget stops from borrowing (`action: no-borrowing`): every
    resource of every flavor gets borrowingLimit 0 while the nominal quota is planned as ever,
    so nothing admitted within it is taken away. The quota path is the one writer of
    `resourceGroups`, so the hold is part of its plan rather than a second apply."""
    state = state or ClusterState()
    setup = setup or KueueSetup()
    recommended: dict[QuotaKey, int] = {}
    carried_use: dict[QuotaKey, int] = {}
    carried_current: dict[QuotaKey, int] = {}
    tenant_of: dict[str, str] = {}
    queue_of: dict[str, str] = {}
    first_rec: dict[str, Recommendation] = {}
    queue_namespaces: dict[str, set[str]] = {}
    queue_flavors: dict[str, set[str]] = {}
    queue_resources: dict[str, set[str]] = {}
    tier_of: dict[str, str] = {}

    def add(key: QuotaKey, r: Recommendation) -> None:
        recommended[key] = recommended.get(key, 0) + r.recommended_gpus
        if r.in_use_gpus is not None:
            carried_use[key] = carried_use.get(key, 0) + r.in_use_gpus
        if r.current_gpus is not None:
            carried_current[key] = carried_current.get(key, 0) + r.current_gpus

    for r in recommendations:
        tenant_of[r.namespace] = r.tenant
        add(QuotaKey.resource_quota(r.namespace, quota_resource(r.mig_profile)), r)
        if kueue:
            queue, flavor = dns_name(r.tenant), dns_name(r.hardware_tier)
            resource = device_resource(r.mig_profile)
            add(QuotaKey.cluster_queue(queue, flavor, resource), r)
            queue_of[r.namespace] = queue
            first_rec.setdefault(queue, r)
            tier_of[flavor] = r.hardware_tier
            queue_namespaces.setdefault(queue, set()).add(r.namespace)
            queue_flavors.setdefault(queue, set()).add(flavor)
            queue_resources.setdefault(queue, set()).add(resource)

    all_flavors = sorted({f for fs in queue_flavors.values() for f in fs})
    all_resources = _ordered_resources({r for rs in queue_resources.values() for r in rs})
    pooled_queues = [q for q in sorted(queue_resources)
                     if cohort_limits(first_rec[q].sla_class, first_rec[q].isolation, 0)
                     is not None]
    cohort = dns_name(setup.cohort)
    if pooled_queues:
        for (tier, mig), units in setup.pools.items():
            if dns_name(tier) in tier_of:
                key = QuotaKey.cohort(cohort, dns_name(tier), device_resource(mig))
                recommended[key] = recommended.get(key, 0) + units

    keys = sorted((k for k in recommended if k.kind is QuotaKind.RESOURCE_QUOTA),
                  key=lambda k: (k.namespace or "", k.resource))
    keys += [QuotaKey.cluster_queue(queue, flavor, resource)
             for queue in sorted(queue_resources) for flavor in sorted(queue_flavors[queue])
             for resource in _ordered_resources(queue_resources[queue])]
    if pooled_queues:
        keys += [QuotaKey.cohort(cohort, flavor, resource)
                 for flavor in all_flavors for resource in all_resources]
    changes = []
    for key in keys:
        current = state.in_force.get(key, carried_current.get(key))
        used = max(state.in_use.get(key, 0), carried_use.get(key, 0))
        target, rule = step_target(current, used, recommended.get(key, 0), max_step)
        changes.append(QuotaChange(key, current, used, recommended.get(key, 0), target, rule))

    objects: list[QuotaObject] = []
    labels = {MANAGED_BY_LABEL: MANAGER}
    if kueue and setup.flavor_labels is not None:
        missing = sorted(tier_of[f] for f in all_flavors if tier_of[f] not in setup.flavor_labels)
        if missing:
            raise UserError(f"no node labels for the ResourceFlavor of tier(s) "
                            f"{', '.join(missing)}: no GPU product of theirs is known")
        for flavor in all_flavors:
            objects.append(QuotaObject(QuotaKind.RESOURCE_FLAVOR, None, flavor, {
                "apiVersion": KUEUE_API_VERSION,
                "kind": QuotaKind.RESOURCE_FLAVOR.value,
                "metadata": {"name": flavor, "labels": dict(labels)},
                "spec": {"nodeLabels": dict(setup.flavor_labels[tier_of[flavor]])},
            }, ()))
    pool_target = {(c.key.flavor, c.key.resource): c.target for c in changes
                   if c.key.kind is QuotaKind.COHORT}
    if pooled_queues:
        mine = tuple(c for c in changes if c.key.kind is QuotaKind.COHORT)
        objects.append(QuotaObject(QuotaKind.COHORT, None, cohort, {
            "apiVersion": KUEUE_API_VERSION,
            "kind": QuotaKind.COHORT.value,
            "metadata": {"name": cohort, "labels": dict(labels)},
            "spec": {"resourceGroups": [{
                "coveredResources": all_resources,
                "flavors": [{"name": flavor,
                             "resources": [{"name": c.key.resource, "nominalQuota": c.target}
                                           for c in mine if c.key.flavor == flavor]}
                            for flavor in all_flavors],
            }]},
        }, mine))
    for queue in sorted(queue_resources):
        mine = tuple(c for c in changes if c.key.kind is QuotaKind.CLUSTER_QUEUE
                     and c.key.name == queue)
        rec = first_rec[queue]
        in_cohort = queue in pooled_queues

        def quota(c: QuotaChange, rec: Recommendation = rec, in_cohort: bool = in_cohort
                  ) -> dict[str, Any]:
            entry: dict[str, Any] = {"name": c.key.resource, "nominalQuota": c.target}
            if in_cohort:
                entry.update(cohort_limits(rec.sla_class, rec.isolation,
                                           pool_target.get((c.key.flavor, c.key.resource), 0))
                             or {})
                if c.key.name in no_borrowing:
                    entry["borrowingLimit"] = 0
            return entry

        flavors = [{"name": flavor,
                    "resources": [quota(c) for c in mine if c.key.flavor == flavor]}
                   for flavor in sorted(queue_flavors[queue])]
        groups = [dict(g) for g in state.other_groups.get(queue, ())]
        groups.append({"coveredResources": _ordered_resources(queue_resources[queue]),
                       "flavors": flavors})
        spec: dict[str, Any] = {
            "namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name",
                "operator": "In",
                "values": sorted(queue_namespaces[queue]),
            }]},
            "resourceGroups": groups,
        }
        if in_cohort:
            spec = {"cohortName": cohort, **spec, "preemption": dict(PREEMPTION)}
        objects.append(QuotaObject(QuotaKind.CLUSTER_QUEUE, None, queue, {
            "apiVersion": KUEUE_API_VERSION,
            "kind": QuotaKind.CLUSTER_QUEUE.value,
            "metadata": {"name": queue, "labels": dict(labels)},
            "spec": spec,
        }, mine, restated=in_cohort and (queue in no_borrowing) != (queue in state.no_borrowing)))
    for namespace in sorted(queue_of):
        objects.append(QuotaObject(QuotaKind.LOCAL_QUEUE, namespace, QUOTA_NAME, {
            "apiVersion": KUEUE_API_VERSION,
            "kind": QuotaKind.LOCAL_QUEUE.value,
            "metadata": {"name": QUOTA_NAME, "namespace": namespace,
                         "labels": {**labels, TENANT_LABEL: tenant_of[namespace]}},
            "spec": {"clusterQueue": queue_of[namespace]},
        }, ()))
    for namespace in sorted({c.key.namespace for c in changes
                             if c.key.kind is QuotaKind.RESOURCE_QUOTA and c.key.namespace}):
        mine = tuple(c for c in changes if c.key.kind is QuotaKind.RESOURCE_QUOTA
                     and c.key.namespace == namespace)
        objects.append(QuotaObject(QuotaKind.RESOURCE_QUOTA, namespace, QUOTA_NAME, {
            "apiVersion": "v1",
            "kind": QuotaKind.RESOURCE_QUOTA.value,
            "metadata": {
                "name": QUOTA_NAME,
                "namespace": namespace,
                "labels": {**labels, TENANT_LABEL: tenant_of[namespace]},
            },
            "spec": {"hard": {c.key.resource: str(c.target)
                              for c in sorted(mine, key=lambda c: c.key.resource)}},
        }, mine))
    notes = setup.notes if kueue and setup.flavor_labels is not None else ()
    return QuotaPlan(tuple(changes), tuple(objects), tuple(all_flavors), tuple(notes))


def _ordered_resources(resources: Iterable[str]) -> list[str]:
    # Whole GPUs first, then MIG profiles: a stable order, since Kueue compares it per flavor.
    return sorted(resources, key=lambda r: (r != "nvidia.com/gpu", r))


def write_manifests(plan: QuotaPlan, folder: Path) -> list[Path]:
    """One YAML file per object of the plan (for GitOps), each written atomically; YAML files
    of objects the plan no longer has are removed. Returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [atomic_write(safe_path(folder, o.file_stem, ".yaml"),
                            yaml.safe_dump(o.manifest, sort_keys=False))
               for o in plan.objects]
    for stale in sorted(set(folder.glob("*.yaml")) - set(written)):
        stale.unlink()
    return written


@dataclass(frozen=True)
class ChangeRecord:
    """What happened to one quota figure in one run (a scheduler_quota_changes row)."""

    changed_at: datetime
    key: QuotaKey
    before: int | None
    after: int
    in_use: int
    recommended: int
    rule: str
    dry_run: bool
    outcome: str
    """`manifest` (written for GitOps only), `dry-run` (accepted, not stored), `applied`,
    `unchanged`, or `conflict` / `error: HTTP n`."""

    @classmethod
    def of(cls, change: QuotaChange, changed_at: datetime, dry_run: bool, outcome: str
           ) -> ChangeRecord:
        return cls(changed_at, change.key, change.current, change.target, change.in_use,
                   change.recommended, change.rule, dry_run, outcome)


class ApplyRefused(UserError):
    """The API server refused an object of the plan; nothing after it was applied.
    `records` holds what was done or attempted before, for the warehouse."""

    def __init__(self, message: str, records: Sequence[ChangeRecord] = ()) -> None:
        super().__init__(message)
        self.records = list(records)


class ApplyConflict(ApplyRefused):
    """409: another field manager owns a field we set."""


Applier = Callable[[QuotaPlan], list[ChangeRecord]]
"""Applies a plan to a cluster and returns a record per figure (collectors/kube_apply.py);
raises ApplyRefused."""


@dataclass(frozen=True)
class QuotaRun:
    plan: QuotaPlan
    records: list[ChangeRecord]
    files: list[Path]


def run_quotas(
    recommendations: Sequence[Recommendation],
    state: ClusterState,
    *,
    now: datetime,
    max_step: int = DEFAULT_MAX_STEP,
    kueue: bool = True,
    folder: Path | None = None,
    apply: Applier | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    day: date | None = None,
    setup: KueueSetup | None = None,
    no_borrowing: Collection[str] = (),
) -> QuotaRun:
    """Plan, validate, write, apply and record, in this order; the one sequence behind the
    `scheduler_quotas` asset and `chargeback quotas`.

    Nothing is written or applied when Kueue would reject an object (QuotaPlanRejected), nor
    when the operator manages the flavors and one the queues name is missing from the cluster
    (FlavorsMissing: Kueue would mark every queue naming it inactive).
    Manifests go to `folder` when given. Without `apply` each figure is recorded as
    `manifest` at `now`; with it, as the applier reports, and what was done before a refusal
    is recorded before ApplyRefused is raised on. Records go to the warehouse's
    scheduler_quota_changes when `con` is given, with the partition `day` that produced them
    (a rerun of that day replaces its manifest rows)."""
    plan = plan_quotas(recommendations, state, max_step=max_step, kueue=kueue, setup=setup,
                       no_borrowing=no_borrowing)
    problems = plan.problems()
    if problems:
        raise QuotaPlanRejected(problems)
    if kueue and (setup is None or setup.flavor_labels is None) and state.flavors is not None:
        missing = sorted(set(plan.flavors) - state.flavors)
        if missing:
            raise FlavorsMissing(
                f"ResourceFlavor(s) {', '.join(missing)} do not exist on the cluster: Kueue "
                f"would mark every ClusterQueue naming them inactive (FlavorNotFound) and admit "
                f"nothing. Create them (`chargeback quotas write` writes them from the tier map "
                f"unless --flavors existing), or rerun without --flavors existing.")
    files = write_manifests(plan, folder) if folder is not None else []
    try:
        records = apply(plan) if apply is not None else [
            ChangeRecord.of(c, now, True, warehouse.MANIFEST_OUTCOME) for c in plan.changes]
    except ApplyRefused as error:
        if con is not None:
            warehouse.record_quota_changes(con, [_row(r) for r in error.records], day=day)
        raise
    if con is not None:
        warehouse.record_quota_changes(con, [_row(r) for r in records], day=day,
                                       replace_manifests=apply is None and day is not None)
    return QuotaRun(plan, records, files)


class QuotaPlanRejected(UserError):
    """A planned object that the cluster's admission would refuse; nothing was written."""


class FlavorsMissing(UserError):
    """Operator-managed flavors the plan names are not on the cluster; nothing was applied."""


def _row(record: ChangeRecord) -> tuple[Any, ...]:
    k = record.key
    return (record.changed_at, k.kind.value, k.namespace, k.name, k.flavor, k.resource,
            record.before, record.after, record.in_use, record.recommended, record.rule,
            record.dry_run, record.outcome)


def last_written_state(con: duckdb.DuckDBPyConnection, before: datetime) -> ClusterState:
    """Without a cluster, the figures last written or applied before `before` stand for what is
    in force, so max-step limits the move from one run to the next."""
    return ClusterState(in_force={
        QuotaKey(QuotaKind(kind), namespace, name, flavor, resource): value
        for (kind, namespace, name, flavor, resource), value
        in warehouse.last_quota_targets(con, before).items()})


@dataclass(frozen=True)
class WarehouseInputs:
    recommendations: list[Recommendation]
    skipped_tenants: list[str]
    """Tenants with recommendations but no namespace in the tenants file."""
    setup: KueueSetup


def warehouse_inputs(
    con: duckdb.DuckDBPyConnection,
    day: date,
    tenants: Mapping[str, Tenant],
    *,
    generate_flavors: bool = True,
    lookback_hours: int = DEFAULT_LOOKBACK_HOURS,
) -> WarehouseInputs:
    """Everything the quotas of analysis day `day` are planned from: its reservation
    recommendations, what each tenant holds at the end of the day, its overflow pools and,
    with `generate_flavors`, the GPU products each tier's devices carried in the look-back
    window (the ResourceFlavors' node labels)."""
    recommendations, skipped = recommendations_for(
        warehouse.reservation_recommendations(con, day),
        warehouse.gpus_in_use_at_end_of(con, day), tenants)
    pools = warehouse.overflow_pools_of(con, day)
    if not generate_flavors:
        return WarehouseInputs(recommendations, skipped, KueueSetup(None, pools))
    end = datetime.combine(day + timedelta(days=1), time(), UTC)
    products = warehouse.tier_products(con, end - timedelta(hours=lookback_hours), end)
    used = {r.hardware_tier for r in recommendations}
    return WarehouseInputs(recommendations, skipped, KueueSetup.generated(
        {tier: p for tier, p in products.items() if tier in used}, pools))


def recommendations_for(
    rows: Iterable[tuple[str, str, str | None, int, float]],
    in_use: Mapping[tuple[str, str, str | None], float],
    tenants: Mapping[str, Tenant],
) -> tuple[list[Recommendation], list[str]]:
    """Reservation recommendations (tenant, tier, MIG profile, units, GPU-equivalents of a
    unit) as quota recommendations in each tenant's first namespace, with what it holds now
    (`in_use` GPU-equivalents, whole units rounded up). Also returns the tenants skipped for
    having no namespace in the tenants file."""
    out: list[Recommendation] = []
    skipped: set[str] = set()
    for tenant, tier, mig, units, unit in rows:
        config = tenants.get(tenant)
        if config is None or not config.namespaces:
            skipped.add(tenant)
            continue
        held = math.ceil(round(in_use.get((tenant, tier, mig), 0.0) / unit, 6))
        out.append(Recommendation(tenant, config.namespaces[0], tier, mig, int(units),
                                  in_use_gpus=held, sla_class=config.sla_class.value,
                                  isolation=config.isolation.value))
    return out, sorted(skipped)
