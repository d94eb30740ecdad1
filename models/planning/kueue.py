"""Kueue's side of scheduler quotas: ResourceFlavors from the tier map, the cohort's borrowing
and lending rules, and the checks Kueue's admission makes on every object we write.

Written against Kueue 0.19 (`kueue.x-k8s.io/v1beta2`, the storage version since 0.16; v1beta1
is deprecated). The admission rules follow kubernetes-sigs/kueue v0.19.0
`pkg/webhooks/{clusterqueue,cohort,resourceflavor}_webhook.go` and `common.go`, plus the CRDs'
CEL rules (`x-kubernetes-validations`), which a JSON-schema validator does not run. The CRD
files themselves are test fixtures (tests/fixtures/kueue), so the schema is checked there
against the real thing; here are only the rules a schema cannot express.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from models.ledger.tiers import normalize_product

KUEUE_API_VERSION = "kueue.x-k8s.io/v1beta2"
KUEUE_GROUP, KUEUE_VERSION = KUEUE_API_VERSION.split("/")
PLURALS = {"ClusterQueue": "clusterqueues", "Cohort": "cohorts",
           "ResourceFlavor": "resourceflavors", "LocalQueue": "localqueues"}

PRODUCT_LABEL = "nvidia.com/gpu.product"
"""Set on every GPU node by NVIDIA's GPU feature discovery (GPU Operator)."""
TIER_LABEL = "chargeback/hardware-tier"
"""Our node label for a tier whose nodes carry several products: a ResourceFlavor's
nodeLabels are exact matches, one value per key, so it cannot say "L4 or T4"."""

LATENCY_SENSITIVE = "latency-sensitive"
NO_COHORT_ISOLATION = "silo"
NO_LENDING_ISOLATION = "bridge"

PREEMPTION: dict[str, Any] = {
    # A tenant takes back its own nominal quota from borrowers of any priority: what it
    # reserved is its own, whatever the borrower's priority.
    "reclaimWithinCohort": "Any",
    # Borrowing never preempts another tenant's workload: the pool is first come.
    "borrowWithinCohort": {"policy": "Never"},
    "withinClusterQueue": "LowerPriority",
}

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))?$"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


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
    number = Decimal(match["num"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * (Decimal(1024) ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    if suffix:
        return number.scaleb(int(Decimal(suffix[1:])))
    return number


# --- ResourceFlavors from the tier map -------------------------------------------------------

def product_label_value(product: str) -> str:
    """The `nvidia.com/gpu.product` value GPU feature discovery writes for a product, whichever
    spelling the ledger holds: NVML's `NVIDIA H100 80GB HBM3` and the label itself both give
    `NVIDIA-H100-80GB-HBM3`; a MIG suffix (single strategy) is dropped, since a flavor selects
    the node's GPUs, not one profile."""
    text = re.sub(r"\s+", "-", product.strip())
    return re.sub(r"-MIG-(?:\d+c\.)?\d+g\.\d+gb.*$", "", text, flags=re.IGNORECASE)


def flavor_node_labels(
    tier_products: Mapping[str, Iterable[str]],
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """nodeLabels of each tier's ResourceFlavor, from the GPU products its nodes carry, and what
    the operator must do for it (empty when nothing).

    A tier with one product selects its nodes by GPU feature discovery's own label. A tier
    with several (economy: L4 and T4) cannot be one exact label value, so its flavor selects
    `chargeback/hardware-tier=<tier>` and the note gives the `kubectl label` commands that put
    that label on exactly the nodes of its products."""
    labels: dict[str, dict[str, str]] = {}
    notes: list[str] = []
    for tier, products in sorted(tier_products.items()):
        values = sorted({product_label_value(p) for p in products},
                        key=lambda v: normalize_product(v))
        if not values:
            raise ValueError(f"tier {tier!r}: no GPU product known to select its nodes by")
        if len(values) == 1:
            labels[tier] = {PRODUCT_LABEL: values[0]}
            continue
        labels[tier] = {TIER_LABEL: tier}
        commands = "; ".join(f"kubectl label nodes -l {PRODUCT_LABEL}={v} {TIER_LABEL}={tier}"
                             for v in values)
        notes.append(f"ResourceFlavor {tier} selects nodes labelled {TIER_LABEL}={tier}, since "
                     f"its nodes carry {len(values)} products ({', '.join(values)}); label "
                     f"them once: {commands}")
    return labels, notes


# --- the cohort: who borrows, who lends ------------------------------------------------------

def cohort_limits(sla_class: str, isolation: str, pool: int) -> dict[str, int] | None:
    """borrowingLimit and lendingLimit of a tenant's quota of one flavor and resource, or None
    when the tenant's queue stays out of the cohort. `pool` is the overflow pool of that tier
    and resource (the cohort's own quota of it).

    - `silo` tenants run on their own hardware: no cohort, nothing borrowed or lent.
    - Latency-sensitive tenants lend nothing (lendingLimit 0): a reserved GPU lent out must
      be reclaimed by preempting the borrower before their pod can start, which is the wait
      their reservation exists to avoid. They may borrow whatever is idle (no borrowingLimit):
      their bursts are what the pool is for, and a lender reclaims by preemption.
    - Standard tenants borrow at most the pool at once (borrowingLimit = pool), so one
      tenant's burst cannot take more than the pool was sized for; a tier with no pooled
      overflow in the look-back window has a pool of 0, and then nothing to borrow. `pool`
      tenants lend all of their idle reservation (no lendingLimit), which is where a shared
      pool's savings come from; `bridge` tenants share others' capacity but lend none.
    """
    if isolation == NO_COHORT_ISOLATION:
        return None
    if sla_class == LATENCY_SENSITIVE:
        return {"lendingLimit": 0}
    limits = {"borrowingLimit": pool}
    if isolation == NO_LENDING_ISOLATION:
        limits["lendingLimit"] = 0
    return limits


# --- admission -------------------------------------------------------------------------------

def admission_problems(manifest: Mapping[str, Any]) -> list[str]:
    """Why Kueue 0.19's admission (webhook and CEL rules) would refuse a Kueue object on
    create, as `field: message`; empty when it would admit it."""
    kind = manifest.get("kind")
    problems: list[str] = []
    name = (manifest.get("metadata") or {}).get("name")
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        problems.append(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    spec = manifest.get("spec") or {}
    if kind == "ClusterQueue":
        problems += _cluster_queue_problems(spec)
    elif kind == "Cohort":
        problems += _resource_group_problems(spec.get("resourceGroups") or [],
                                             has_parent=bool(spec.get("parentName")),
                                             cohort=True)
        problems += _fair_sharing_problems(spec.get("fairSharing"), "spec.fairSharing")
    elif kind == "ResourceFlavor":
        problems += _resource_flavor_problems(spec)
    elif kind == "LocalQueue":
        queue = spec.get("clusterQueue")
        if not isinstance(queue, str) or not _DNS_SUBDOMAIN.match(queue):
            problems.append(f"spec.clusterQueue: {queue!r} is not a ClusterQueue name")
    else:
        problems.append(f"kind: {kind!r} is not a Kueue kind we write")
    return problems


def _cluster_queue_problems(spec: Mapping[str, Any]) -> list[str]:
    groups = list(spec.get("resourceGroups") or [])
    problems = _resource_group_problems(groups, has_parent=bool(spec.get("cohortName")),
                                        cohort=False)
    problems += _selector_problems(spec.get("namespaceSelector"), "spec.namespaceSelector")
    preemption = spec.get("preemption") or {}
    borrow = preemption.get("borrowWithinCohort") or {}
    if (preemption.get("reclaimWithinCohort", "Never") == "Never"
            and borrow.get("policy", "Never") != "Never"):
        problems.append(
            "spec.preemption: reclaimWithinCohort=Never and borrowWithinCohort.Policy!=Never")
    fungibility = spec.get("flavorFungibility") or {}
    if fungibility.get("preference") is not None and (
            fungibility.get("whenCanBorrow", "MayStopSearch") != "TryNextFlavor"
            or fungibility.get("whenCanPreempt", "TryNextFlavor") != "TryNextFlavor"):
        problems.append("spec.flavorFungibility.preference: requires both whenCanBorrow and "
                        "whenCanPreempt to be TryNextFlavor")
    problems += _fair_sharing_problems(spec.get("fairSharing"), "spec.fairSharing")
    flavors = sum(len(g.get("flavors") or []) for g in groups)
    if flavors > 256:
        problems.append("spec.resourceGroups: total number of flavors across all "
                        f"resourceGroups must be ≤ 256, got {flavors}")
    covered = sum(len(g.get("coveredResources") or []) for g in groups)
    if covered > 256:
        problems.append("spec.resourceGroups: total number of covered resources across all "
                        f"resourceGroups must be ≤ 256, got {covered}")
    for i, group in enumerate(groups):
        pairs = sum(len(f.get("resources") or []) for f in group.get("flavors") or [])
        if pairs > 512:
            problems.append(f"spec.resourceGroups[{i}]: number of flavor-resource combinations "
                            f"in a resourceGroup must be ≤ 512, got {pairs}")
    names = {f.get("name") for g in groups for f in g.get("flavors") or []}
    strategy = spec.get("admissionChecksStrategy") or {}
    for i, check in enumerate(strategy.get("admissionChecks") or []):
        for j, flavor in enumerate(check.get("onFlavors") or []):
            if flavor not in names:
                problems.append(f"spec.admissionChecksStrategy.admissionChecks[{i}].onFlavors"
                                f"[{j}]: {flavor!r} is not a flavor of the ClusterQueue")
    return problems


def _resource_group_problems(groups: Iterable[Mapping[str, Any]], *, has_parent: bool,
                             cohort: bool) -> list[str]:
    problems: list[str] = []
    seen_resources: set[str] = set()
    seen_flavors: set[str] = set()
    for i, group in enumerate(groups):
        path = f"spec.resourceGroups[{i}]"
        covered = list(group.get("coveredResources") or [])
        for j, resource in enumerate(covered):
            if not is_label_key(resource):
                problems.append(f"{path}.coveredResources[{j}]: {resource!r} is not a "
                                "qualified resource name")
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
            if len(resources) != len(covered):  # the CRD's CEL rule
                problems.append(
                    f"{fpath}.resources: flavors must have the same number of resources as the "
                    f"coveredResources ({len(resources)} != {len(covered)})")
            for k, quota in enumerate(resources[: len(covered)]):
                qpath = f"{fpath}.resources[{k}]"
                if quota.get("name") != covered[k]:
                    problems.append(f"{qpath}.name: {quota.get('name')!r} must match the name in "
                                    f"coveredResources ({covered[k]!r}, same order)")
                nominal = _quantity(quota.get("nominalQuota"), f"{qpath}.nominalQuota", problems)
                for limit in ("borrowingLimit", "lendingLimit"):
                    if quota.get(limit) is None:
                        continue
                    value = _quantity(quota[limit], f"{qpath}.{limit}", problems)
                    if not has_parent:
                        problems.append(f"{qpath}.{limit}: must be nil when "
                                        f"{'parent' if cohort else 'cohort'} is empty")
                    if (limit == "lendingLimit" and not cohort and value is not None
                            and nominal is not None and value > nominal):
                        problems.append(
                            f"{qpath}.lendingLimit: must be less than or equal to the nominalQuota")
    return problems


def _resource_flavor_problems(spec: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    for key, value in (spec.get("nodeLabels") or {}).items():
        if not is_label_key(key):
            problems.append(f"spec.nodeLabels: {key!r} is not a valid label key")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            problems.append(f"spec.nodeLabels[{key}]: {value!r} is not a valid label value")
    seen: set[tuple[str, str]] = set()
    for i, taint in enumerate(spec.get("nodeTaints") or []):
        if not is_label_key(str(taint.get("key", ""))):
            problems.append(f"spec.nodeTaints[{i}].key: {taint.get('key')!r} is not a label key")
        if taint.get("effect") not in _TAINT_EFFECTS:
            problems.append(f"spec.nodeTaints[{i}].effect: {taint.get('effect')!r} is not one of "
                            f"{', '.join(_TAINT_EFFECTS)}")
        pair = (str(taint.get("key")), str(taint.get("effect")))
        if pair in seen:
            problems.append(f"spec.nodeTaints[{i}]: taints must be unique by key and effect pair")
        seen.add(pair)
    if spec.get("topologyName") and not spec.get("nodeLabels"):
        problems.append("spec: at least one nodeLabel is required when topology is set")
    return problems


def _selector_problems(selector: Mapping[str, Any] | None, path: str) -> list[str]:
    problems: list[str] = []
    for key in ((selector or {}).get("matchLabels") or {}):
        if not is_label_key(key):
            problems.append(f"{path}.matchLabels: {key!r} is not a valid label key")
    for i, expression in enumerate((selector or {}).get("matchExpressions") or []):
        operator, values = expression.get("operator"), expression.get("values") or []
        if not is_label_key(str(expression.get("key", ""))):
            problems.append(f"{path}.matchExpressions[{i}].key: not a valid label key")
        if operator in ("In", "NotIn") and not values:
            problems.append(f"{path}.matchExpressions[{i}].values: must be specified when "
                            "`operator` is 'In' or 'NotIn'")
        elif operator in ("Exists", "DoesNotExist") and values:
            problems.append(f"{path}.matchExpressions[{i}].values: may not be specified when "
                            "`operator` is 'Exists' or 'DoesNotExist'")
        elif operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            problems.append(f"{path}.matchExpressions[{i}].operator: {operator!r} is not a "
                            "valid selector operator")
    return problems


def _fair_sharing_problems(fair_sharing: Mapping[str, Any] | None, path: str) -> list[str]:
    if not fair_sharing or fair_sharing.get("weight") is None:
        return []
    problems: list[str] = []
    weight = _quantity(fair_sharing["weight"], f"{path}.weight", problems)
    if weight is not None and 0 < weight <= Decimal("1e-9"):
        problems.append(f"{path}: When not 0, weight must be > 10e-9")
    return problems


def is_label_key(key: str) -> bool:
    """A qualified name, optionally prefixed by a DNS subdomain: `nvidia.com/gpu`, `cpu`."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_QUALIFIED_NAME.match(name))


def _quantity(value: object, path: str, problems: list[str]) -> Decimal | None:
    try:
        quantity = parse_quantity(value)
    except ValueError as exc:
        problems.append(f"{path}: {exc}")
        return None
    if quantity < 0:
        problems.append(f"{path}: must be greater than or equal to 0, got {value}")
    return quantity
