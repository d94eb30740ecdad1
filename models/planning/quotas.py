"""Reservation recommendations as scheduler quotas: ResourceQuota and Kueue ClusterQueue manifests.

Pure: no Kubernetes client here (collectors/kube_apply.py talks to the API server). Kueue
objects are written as `kueue.x-k8s.io/v1beta2`, the storage version as of Kueue 0.16 and
still in 0.19; v1beta1 is deprecated. Its schema (tests/fixtures/kueue) and the admission rules
below follow kubernetes-sigs/kueue's CRD and `pkg/webhooks/clusterqueue_webhook.go`.

Two rules protect running work whatever the recommendation says:
- a quota never drops below what is in use now (the scheduler would block every new pod of
  the tenant until usage fell under it);
- a quota moves by at most `max_step` GPUs per run, so a bad recommendation is a small step
  that the next run (or an operator) can correct.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from models.errors import UserError
from models.ledger.tiers import UnknownMigProfile, mig_gpu_equivalents
from models.ledger.usage import RESERVED_TENANTS

MANAGER = "gpu-chargeback"
"""Server-side apply field manager and the `app.kubernetes.io/managed-by` label value."""
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
TENANT_LABEL = "chargeback/tenant"
QUOTA_NAME = "gpu-chargeback"
"""Our own ResourceQuota per namespace: Kubernetes enforces every quota of a namespace, so a
separate object leaves the operators' other quotas (CPU, memory, ...) alone."""
KUEUE_API_VERSION = "kueue.x-k8s.io/v1beta2"
KUEUE_GROUP, KUEUE_VERSION = KUEUE_API_VERSION.split("/")
DEFAULT_MAX_STEP = 4

REQUIRED_COLUMNS = ("tenant", "namespace", "hardware_tier", "mig_profile", "recommended_gpus")
OPTIONAL_COLUMNS = ("in_use_gpus", "current_gpus")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Kubernetes' resource.Quantity grammar, as the CRDs' `pattern` writes it.
_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))?$"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


class RecommendationsError(UserError):
    """Every problem of a recommendations file, not only the first."""

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        super().__init__(f"{path}: " + "; ".join(problems))
        self.problems = list(problems)


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
        raise ValueError(f"{text!r} has no letters or digits to name a Kubernetes object after")
    return name


def parse_quantity(value: object) -> Decimal:
    """A Kubernetes quantity (`2`, `1500m`, `1k`, `1Ki`, `2e3`) as an exact Decimal."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(str(value))
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    try:
        number = Decimal(match["num"])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"not a Kubernetes quantity: {value!r}") from exc
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * (Decimal(1024) ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    if suffix:
        return number.scaleb(int(Decimal(suffix[1:])))
    return number


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
                    counts["in_use_gpus"], counts["current_gpus"],
                )
            )
    return out, problems


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


@dataclass(frozen=True)
class QuotaChange:
    """One quota field: where it is, what it is now, what is used, what we set and why."""

    kind: str
    """`ResourceQuota` or `ClusterQueue`."""
    namespace: str | None
    """The ResourceQuota's namespace; None for the cluster-scoped ClusterQueue."""
    name: str
    field: str
    """JSON-path-like location, e.g. `spec.hard[requests.nvidia.com/gpu]`."""
    current: int | None
    """None when the object or the field does not exist yet."""
    in_use: int
    recommended: int
    target: int
    rule: str
    """Why target differs from recommended: `recommended`, `max-step`, `in-use floor`."""

    @property
    def changes(self) -> bool:
        return self.current != self.target


def step_target(
    current: int | None, in_use: int, recommended: int, max_step: int
) -> tuple[int, str]:
    """The quota to set now, and the rule that decided it.

    Moves from `current` toward `recommended` by at most `max_step`, never below `in_use`.
    A quota that does not exist yet has no step to limit: it is created at the recommendation,
    raised to what is in use."""
    if max_step < 1:
        raise ValueError(f"max step must be at least 1 GPU, got {max_step}")
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


def plan_resource_quotas(
    recommendations: Sequence[Recommendation],
    *,
    current_hard: Mapping[tuple[str, str], int],
    in_use: Mapping[tuple[str, str], int],
    max_step: int = DEFAULT_MAX_STEP,
) -> list[QuotaChange]:
    """One change per (namespace, quota resource): GPUs of every tier in a namespace add up,
    since a ResourceQuota cannot tell an H100 from a T4 (`nvidia.com/gpu` is one resource).

    `current_hard` and `in_use` are keyed by (namespace, quota resource), e.g.
    `("acme", "requests.nvidia.com/gpu")`; values passed in the recommendations fill the gaps,
    and of two in-use figures the higher one counts."""
    recommended: dict[tuple[str, str], int] = {}
    passed_use: dict[tuple[str, str], int] = {}
    passed_current: dict[tuple[str, str], int] = {}
    for r in recommendations:
        key = (r.namespace, quota_resource(r.mig_profile))
        recommended[key] = recommended.get(key, 0) + r.recommended_gpus
        if r.in_use_gpus is not None:
            passed_use[key] = passed_use.get(key, 0) + r.in_use_gpus
        if r.current_gpus is not None:
            passed_current[key] = passed_current.get(key, 0) + r.current_gpus
    changes = []
    for key in sorted(recommended):
        namespace, resource = key
        current = current_hard.get(key, passed_current.get(key))
        used = max(in_use.get(key, 0), passed_use.get(key, 0))
        target, rule = step_target(current, used, recommended[key], max_step)
        changes.append(
            QuotaChange("ResourceQuota", namespace, QUOTA_NAME, f"spec.hard[{resource}]",
                        current, used, recommended[key], target, rule)
        )
    return changes


def plan_cluster_queues(
    recommendations: Sequence[Recommendation],
    *,
    current_nominal: Mapping[tuple[str, str, str], int],
    in_use: Mapping[tuple[str, str, str], int],
    max_step: int = DEFAULT_MAX_STEP,
) -> list[QuotaChange]:
    """One change per (ClusterQueue, flavor, resource): a ClusterQueue per tenant, a
    ResourceFlavor per hardware tier. Keys of `current_nominal` and `in_use` are
    (queue name, flavor name, device resource), e.g. `("acme", "premium", "nvidia.com/gpu")`.

    Kueue requires every flavor of a resource group to list every covered resource, so a tier
    without a recommendation for some resource gets 0 for it (held up by the in-use floor)."""
    recommended: dict[tuple[str, str, str], int] = {}
    passed_use: dict[tuple[str, str, str], int] = {}
    passed_current: dict[tuple[str, str, str], int] = {}
    resources_of: dict[str, set[str]] = {}
    flavors_of: dict[str, set[str]] = {}
    for r in recommendations:
        queue, flavor, resource = (
            dns_name(r.tenant), dns_name(r.hardware_tier), device_resource(r.mig_profile)
        )
        key = (queue, flavor, resource)
        recommended[key] = recommended.get(key, 0) + r.recommended_gpus
        if r.in_use_gpus is not None:
            passed_use[key] = passed_use.get(key, 0) + r.in_use_gpus
        if r.current_gpus is not None:
            passed_current[key] = passed_current.get(key, 0) + r.current_gpus
        resources_of.setdefault(queue, set()).add(resource)
        flavors_of.setdefault(queue, set()).add(flavor)
    changes = []
    for queue in sorted(resources_of):
        for flavor in sorted(flavors_of[queue]):
            for resource in _ordered_resources(resources_of[queue]):
                key = (queue, flavor, resource)
                current = current_nominal.get(key, passed_current.get(key))
                used = max(in_use.get(key, 0), passed_use.get(key, 0))
                target, rule = step_target(current, used, recommended.get(key, 0), max_step)
                changes.append(
                    QuotaChange(
                        "ClusterQueue", None, queue,
                        f"spec.resourceGroups[{resource}].flavors[{flavor}].nominalQuota",
                        current, used, recommended.get(key, 0), target, rule,
                    )
                )
    return changes


def _ordered_resources(resources: Iterable[str]) -> list[str]:
    # Whole GPUs first, then MIG profiles: a stable order, since Kueue compares it per flavor.
    return sorted(resources, key=lambda r: (r != "nvidia.com/gpu", r))


def _kueue_key(change: QuotaChange) -> tuple[str, str]:
    match = re.match(r"spec\.resourceGroups\[(.+)\]\.flavors\[(.+)\]\.nominalQuota$", change.field)
    if not match:
        raise ValueError(f"not a ClusterQueue nominalQuota change: {change.field}")
    return match[1], match[2]


def resource_quota_manifests(
    changes: Sequence[QuotaChange], tenants: Mapping[str, str]
) -> list[dict[str, Any]]:
    """A ResourceQuota per namespace with the changes' targets as `spec.hard`.

    `tenants` maps namespace -> tenant, written as the `chargeback/tenant` label."""
    hard: dict[str, dict[str, str]] = {}
    for c in changes:
        if c.kind != "ResourceQuota" or c.namespace is None:
            continue
        hard.setdefault(c.namespace, {})[c.field[len("spec.hard["):-1]] = str(c.target)
    return [
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {
                "name": QUOTA_NAME,
                "namespace": namespace,
                "labels": {MANAGED_BY_LABEL: MANAGER, TENANT_LABEL: tenants[namespace]},
            },
            "spec": {"hard": dict(sorted(hard[namespace].items()))},
        }
        for namespace in sorted(hard)
    ]


def cluster_queue_manifests(
    changes: Sequence[QuotaChange],
    namespaces: Mapping[str, Sequence[str]],
    *,
    other_groups: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """A v1beta2 ClusterQueue per tenant queue: one resource group covering its GPU resources,
    a flavor per hardware tier with the changes' targets as `nominalQuota`.

    `namespaces` maps queue name -> the tenant's namespaces (its `namespaceSelector`).
    `other_groups` carries a live queue's non-GPU resource groups (CPU, memory) over unchanged:
    `resourceGroups` is an atomic list, so applying it replaces the whole list."""
    quotas: dict[str, dict[str, dict[str, int]]] = {}
    for c in changes:
        if c.kind != "ClusterQueue":
            continue
        resource, flavor = _kueue_key(c)
        quotas.setdefault(c.name, {}).setdefault(flavor, {})[resource] = c.target
    manifests = []
    for queue in sorted(quotas):
        covered = _ordered_resources({r for f in quotas[queue].values() for r in f})
        flavors = [
            {
                "name": flavor,
                "resources": [
                    {"name": r, "nominalQuota": quotas[queue][flavor].get(r, 0)} for r in covered
                ],
            }
            for flavor in sorted(quotas[queue])
        ]
        groups = [dict(g) for g in (other_groups or {}).get(queue, ())]
        groups.append({"coveredResources": covered, "flavors": flavors})
        manifests.append(
            {
                "apiVersion": KUEUE_API_VERSION,
                "kind": "ClusterQueue",
                "metadata": {"name": queue, "labels": {MANAGED_BY_LABEL: MANAGER}},
                "spec": {
                    "namespaceSelector": {
                        "matchExpressions": [
                            {
                                "key": "kubernetes.io/metadata.name",
                                "operator": "In",
                                "values": sorted(namespaces.get(queue, ())),
                            }
                        ]
                    },
                    "resourceGroups": groups,
                },
            }
        )
    return manifests


def kueue_admission_problems(cluster_queue: Mapping[str, Any]) -> list[str]:
    """The checks Kueue's ClusterQueue webhook (pkg/webhooks/clusterqueue_webhook.go) and the
    CRD's CEL rules (`x-kubernetes-validations`, which a JSON-schema validator does not run)
    make on create/update, as `field: message`. Empty when Kueue would admit the object."""
    problems: list[str] = []
    name = (cluster_queue.get("metadata") or {}).get("name")
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        problems.append(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    spec = cluster_queue.get("spec") or {}
    has_cohort = bool(spec.get("cohortName"))
    seen_resources: set[str] = set()
    seen_flavors: set[str] = set()
    for i, group in enumerate(spec.get("resourceGroups") or []):
        path = f"spec.resourceGroups[{i}]"
        covered = list(group.get("coveredResources") or [])
        for j, resource in enumerate(covered):
            if resource in seen_resources:
                problems.append(f"{path}.coveredResources[{j}]: duplicate resource {resource!r}")
            seen_resources.add(resource)
        for j, flavor in enumerate(group.get("flavors") or []):
            fpath = f"{path}.flavors[{j}]"
            fname = flavor.get("name")
            if fname in seen_flavors:
                problems.append(f"{fpath}.name: duplicate flavor {fname!r}")
            seen_flavors.add(fname)
            resources = list(flavor.get("resources") or [])
            if len(resources) != len(covered):
                problems.append(
                    f"{fpath}.resources: must have the same number of resources as the "
                    f"coveredResources ({len(resources)} != {len(covered)})"
                )
            for k, quota in enumerate(resources[: len(covered)]):
                qpath = f"{fpath}.resources[{k}]"
                if quota.get("name") != covered[k]:
                    problems.append(
                        f"{qpath}.name: {quota.get('name')!r} must match the name in "
                        f"coveredResources ({covered[k]!r}, same order)"
                    )
                nominal = _quantity_or_problem(quota.get("nominalQuota"), f"{qpath}.nominalQuota",
                                               problems)
                for limit in ("borrowingLimit", "lendingLimit"):
                    if quota.get(limit) is None:
                        continue
                    value = _quantity_or_problem(quota[limit], f"{qpath}.{limit}", problems)
                    if not has_cohort:
                        problems.append(f"{qpath}.{limit}: must be nil when cohort is empty")
                    if (limit == "lendingLimit" and value is not None and nominal is not None
                            and value > nominal):
                        problems.append(
                            f"{qpath}.lendingLimit: must be less than or equal to the nominalQuota"
                        )
    preemption = spec.get("preemption") or {}
    borrow = preemption.get("borrowWithinCohort") or {}
    if (preemption.get("reclaimWithinCohort", "Never") == "Never"
            and borrow.get("policy", "Never") != "Never"):
        problems.append(
            "spec.preemption: reclaimWithinCohort=Never and borrowWithinCohort.Policy!=Never"
        )
    if spec.get("admissionChecksStrategy") is not None and spec.get("admissionChecks"):
        problems.append(
            "spec: Either AdmissionChecks or AdmissionCheckStrategy can be set, but not both"
        )
    return problems


def _quantity_or_problem(value: object, path: str, problems: list[str]) -> Decimal | None:
    try:
        quantity = parse_quantity(value)
    except ValueError as exc:
        problems.append(f"{path}: {exc}")
        return None
    if quantity < 0:
        problems.append(f"{path}: must be greater than or equal to 0, got {value}")
    return quantity
