"""MIG layout recommendations per node group, in the `mig-configs` format NVIDIA's mig-parted
(and the GPU Operator's MIG manager) reads.

Geometry. A100 and H100 (and H200) GPUs have 8 memory slices and 7 compute slices; a GPU
instance profile may start only at given memory slices and takes a fixed number of them. These
are the placements `nvidia-smi mig -lgipp` prints on A100 and H100 (NVIDIA MIG user guide,
"Supported MIG Profiles" and "Partitioning"), per profile ID, the same on every product of the
family: only the memory in the profile names differs.

    ID 19  1g      {0,1,2,3,4,5,6}:1        ID 14  2g  {0,2,4}:2     ID 5  4g  {0}:4
    ID 20  1g+me   {0,1,2,3,4,5,6}:1 (one)  ID  9  3g  {0,4}:4       ID 0  7g  {0}:8
    ID 15  1g (twice the memory) {0,2,4,6}:2

A set of instances fits on one GPU when each can be given a start of its own without two
sharing a memory slice, and their compute slices add up to at most 7.

Sizing. A node group is the GPUs of one hardware tier and product. Every MIG profile gets the
instances its tenants reserve (the reservation recommendations, in instances) plus the shared
overflow pool of that profile, the same figures the scheduler quotas are set from; whole-GPU
demand likewise keeps reserved + pool GPUs unpartitioned. Instances are packed largest first
onto as few GPUs as the geometry allows; space left on a partitioned GPU is filled with the
group's smallest demanded profile (flexible overflow), and GPUs not needed either way stay
whole. Expected utilization is measured on the same decayed hourly demand as the
recommendations; the cost each tenant would see is its recommendation's expected monthly cost
(models/planning/reservations.py), not priced again here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import duckdb
import numpy as np
import polars as pl

from models.errors import UserError
from models.ledger import warehouse
from models.ledger.tiers import mig_gpu_equivalents, normalize_product
from models.planning.kueue import product_label_value
from models.planning.reservations import (
    DEFAULT_HALF_LIFE_HOURS,
    DEFAULT_LOOKBACK_HOURS,
    decay_weights,
)

MEMORY_SLICES = 8
COMPUTE_SLICES = 7


@dataclass(frozen=True)
class Profile:
    name: str
    compute_slices: int
    starts: tuple[int, ...]
    """Memory slices it may start at."""
    memory_slices: int
    max_per_gpu: int | None = None


# (compute slices, starts, memory slices, at most per GPU) by profile ID, then the names of the
# IDs 19, 15, 14, 9, 5, 0 (and 20: the 1g +me) on each product.
_PLACEMENTS = {
    19: (1, tuple(range(7)), 1, None), 20: (1, tuple(range(7)), 1, 1),
    15: (1, (0, 2, 4, 6), 2, None), 14: (2, (0, 2, 4), 2, None), 9: (3, (0, 4), 4, None),
    5: (4, (0,), 4, None), 0: (7, (0,), 8, None),
}
_NAMES = {
    "A100-40GB": ("1g.5gb", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"),
    "A100-80GB": ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H100-80GB": ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H100-94GB": ("1g.12gb", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"),
    "H200": ("1g.18gb", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"),
}


def geometry(family: str) -> dict[str, Profile]:
    names = _NAMES[family]
    profiles = {}
    for profile_id, name in zip((19, 15, 14, 9, 5, 0), names, strict=True):
        g, starts, size, most = _PLACEMENTS[profile_id]
        profiles[name] = Profile(name, g, starts, size, most)
    g, starts, size, most = _PLACEMENTS[20]
    profiles[f"{names[0]}+me"] = Profile(f"{names[0]}+me", g, starts, size, most)
    return profiles


def family_of(product: str) -> str | None:
    """The MIG geometry of a GPU product, or None when it has no MIG (L4, T4, ...)."""
    name = normalize_product(product)
    if "H200" in name:
        return "H200"
    if "H100" in name:
        return "H100-94GB" if ("94GB" in name or "NVL" in name) else "H100-80GB"
    if "A100" in name:
        return "A100-40GB" if "40GB" in name else "A100-80GB"
    return None


def placement(instances: Mapping[str, int], profiles: Mapping[str, Profile]
              ) -> list[tuple[str, int]] | None:
    """A start memory slice for every instance (profile, start), or None when they do not fit
    on one GPU together."""
    wanted = [profiles[p] for p, n in instances.items() for _ in range(n)]
    if sum(p.compute_slices for p in wanted) > COMPUTE_SLICES:
        return None
    for profile in {p.name: p for p in wanted}.values():
        if profile.max_per_gpu is not None and instances[profile.name] > profile.max_per_gpu:
            return None
    wanted.sort(key=lambda p: (-p.memory_slices, len(p.starts)))
    placed: list[tuple[str, int]] = []

    def place(i: int, used: int) -> bool:
        if i == len(wanted):
            return True
        p = wanted[i]
        for start in p.starts:
            mask = ((1 << p.memory_slices) - 1) << start
            if start + p.memory_slices <= MEMORY_SLICES and not used & mask:
                placed.append((p.name, start))
                if place(i + 1, used | mask):
                    return True
                placed.pop()
        return False

    return placed if place(0, 0) else None


@dataclass(frozen=True)
class TenantShare:
    tenant: str
    mig_profile: str | None
    workload_kinds: tuple[str, ...]
    sla_class: str
    reserved: int
    """Instances (or whole GPUs) reserved for it."""
    expected_monthly_cost: Decimal
    currency: str


@dataclass(frozen=True)
class NodeGroupLayout:
    hardware_tier: str
    gpu_product: str
    family: str | None
    gpus: int
    gpu_layouts: tuple[tuple[tuple[str, int], ...], ...]
    """Per partitioned GPU, its instances (profile, count), sorted."""
    whole_gpus: int
    needed: Mapping[str | None, int]
    """Instances per MIG profile (None: whole GPUs) reserved + pooled."""
    provided: Mapping[str | None, int]
    expected_utilization: Mapping[str | None, float]
    """Expected used / provided per profile over the look-back window's decayed hours."""
    group_utilization: float
    """Expected used GPU-equivalents over the group's GPUs."""
    shortfall_gpus: int
    tenants: tuple[TenantShare, ...]
    nodes: Mapping[str, str]
    """Node -> the mig-parted config it should be labelled with (`nvidia.com/mig.config`)."""
    configs: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)


def recommend_layout(
    tier: str,
    product: str,
    node_gpus: Mapping[str, int],
    needed: Mapping[str | None, int],
    demand: Mapping[str | None, Sequence[float]],
    ages_hours: Sequence[float],
    tenants: Sequence[TenantShare] = (),
    *,
    mig_nodes: Sequence[str] = (),
    half_life_hours: float = 168.0,
) -> NodeGroupLayout:
    """The layout of one node group. `needed`: instances per MIG profile and whole GPUs (None)
    to provide; `demand`: the group's hourly demand per profile (instances, summed over
    tenants) aligned with `ages_hours`; `mig_nodes`: nodes partitioned now, kept first."""
    family = family_of(product)
    total = sum(node_gpus.values())
    mig = {p: n for p, n in needed.items() if p is not None and n > 0}
    if mig and family is None:
        raise ValueError(f"{product}: MIG profiles {sorted(mig)} demanded on a GPU without MIG")
    profiles = geometry(family) if family else {}
    unknown = sorted(set(mig) - set(profiles))
    if unknown:
        raise ValueError(f"{product}: no MIG profile {', '.join(unknown)} on a {family} "
                         f"(its profiles: {', '.join(profiles)})")
    gpus: list[dict[str, int]] = []
    for name in sorted(mig, key=lambda p: -profiles[p].memory_slices):
        for _ in range(mig[name]):
            for layout in gpus:
                trial = {**layout, name: layout.get(name, 0) + 1}
                if placement(trial, profiles) is not None:
                    layout[name] = trial[name]
                    break
            else:
                gpus.append({name: 1})
    if mig:
        filler = min(mig, key=lambda p: (profiles[p].memory_slices, p))
        for layout in gpus:
            while placement({**layout, filler: layout.get(filler, 0) + 1}, profiles):
                layout[filler] = layout.get(filler, 0) + 1
    whole = needed.get(None, 0)
    shortfall = max(0, len(gpus) + whole - total)
    whole_kept = max(0, total - len(gpus))
    provided: dict[str | None, int] = {None: whole_kept}
    for layout in gpus:
        for name, n in layout.items():
            provided[name] = provided.get(name, 0) + n
    weights = decay_weights(np.asarray(ages_hours, dtype=float), half_life_hours)
    utilization: dict[str | None, float] = {}
    used_equivalents = 0.0
    for key, n in provided.items():
        series = np.asarray(demand.get(key, [0.0] * len(weights)), dtype=float)
        used = float(np.average(np.minimum(series, n), weights=weights)) if n else 0.0
        utilization[key] = used / n if n else 0.0
        used_equivalents += used * (1 if key is None else profiles[key].compute_slices / 7)
    layouts = tuple(tuple(sorted(g.items())) for g in gpus)
    nodes, configs = _node_configs(tier, product, node_gpus, layouts, mig_nodes)
    return NodeGroupLayout(tier, product, family, total, layouts, whole_kept, dict(needed),
                           provided, utilization, used_equivalents / total if total else 0.0,
                           shortfall, tuple(tenants), nodes, configs)


def _node_configs(tier: str, product: str, node_gpus: Mapping[str, int],
                  layouts: Sequence[tuple[tuple[str, int], ...]], mig_nodes: Sequence[str]
                  ) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]]]:
    """Partitioned GPUs go to the nodes partitioned now first (fewest reconfigurations), at
    the lowest device indices; one mig-parted config per distinct node layout."""
    order = sorted(node_gpus, key=lambda n: (n not in mig_nodes, n))
    remaining = list(layouts)
    by_content: dict[str, str] = {}
    configs: dict[str, list[dict[str, Any]]] = {}
    nodes: dict[str, str] = {}
    slug = f"{tier}-{normalize_product(product)}".lower()
    for node in order:
        mine, remaining = remaining[: node_gpus[node]], remaining[node_gpus[node]:]
        entries: list[dict[str, Any]] = []
        for index, layout in enumerate(mine):
            devices = dict(layout)
            if entries and entries[-1]["mig-devices"] == devices:
                entries[-1]["devices"].append(index)
            else:
                entries.append({"devices": [index], "mig-enabled": True, "mig-devices": devices})
        if len(mine) < node_gpus[node]:
            entries.append({"devices": list(range(len(mine), node_gpus[node])),
                            "mig-enabled": False})
        if not mine:
            entries = [{"devices": "all", "mig-enabled": False}]
        key = repr(entries)
        if key not in by_content:
            name = f"chargeback-{slug}-{len(by_content) + 1}"[:63].rstrip("-.")
            by_content[key] = name
            configs[name] = entries
        nodes[node] = by_content[key]
    return nodes, configs


def mig_parted_config(layouts: Sequence[NodeGroupLayout]) -> dict[str, Any]:
    """The `mig-configs` document of every group's node configs (mig-parted's v1 spec)."""
    configs: dict[str, Any] = {}
    for layout in layouts:
        configs.update(layout.configs)
    return {"version": "v1", "mig-configs": configs}


def mig_parted_problems(document: Mapping[str, Any], products: Mapping[str, str] | None = None
                        ) -> list[str]:
    """What mig-parted's v1 spec (api/spec/v1/spec.go) would refuse in `document`, and, for the
    configs whose GPU product is known (`products`: config -> product), every GPU whose
    instances do not fit its geometry."""
    problems: list[str] = []
    if document.get("version") != "v1":
        problems.append(f"version: unknown version {document.get('version')!r}")
    unexpected = set(document) - {"version", "mig-configs"}
    if unexpected:
        problems.append(f"unexpected field(s): {', '.join(sorted(unexpected))}")
    configs = document.get("mig-configs") or {}
    if not configs:
        problems.append("mig-configs: at least one entry is required")
    for name, specs in configs.items():
        if not specs:
            problems.append(f"{name}: at least one entry is required")
        seen: set[int] = set()
        family = family_of(products[name]) if products and name in products else None
        for i, spec in enumerate(specs or []):
            where = f"{name}[{i}]"
            extra = set(spec) - {"device-filter", "devices", "mig-enabled", "mig-devices"}
            if extra:
                problems.append(f"{where}: unexpected field(s) {', '.join(sorted(extra))}")
            for required in ("devices", "mig-enabled"):
                if required not in spec:
                    problems.append(f"{where}: missing required field: {required}")
            devices = spec.get("devices")
            if devices != "all" and not (isinstance(devices, list)
                                         and all(isinstance(d, int) for d in devices)):
                problems.append(f"{where}.devices: must be 'all' or a list of indices")
            elif isinstance(devices, list):
                if seen & set(devices):
                    problems.append(f"{where}.devices: {sorted(seen & set(devices))} configured "
                                    "twice")
                seen |= set(devices)
            enabled, instances = spec.get("mig-enabled"), spec.get("mig-devices")
            if enabled is True and instances is None:
                problems.append(f"{where}: missing required field 'mig-devices' when "
                                "'mig-enabled' is true")
            if enabled is False and instances:
                problems.append(f"{where}: MIG devices included when 'mig-enabled' is false")
            for profile, count in (instances or {}).items():
                if not isinstance(count, int) or count < 0:
                    problems.append(f"{where}.mig-devices.{profile}: not a count: {count!r}")
            if family and instances:
                profiles = geometry(family)
                unknown = sorted(set(instances) - set(profiles))
                if unknown:
                    problems.append(f"{where}: {family} has no profile {', '.join(unknown)}")
                elif placement(instances, profiles) is None:
                    problems.append(f"{where}: {dict(instances)} do not fit on one {family} "
                                    "(placements or compute slices)")
    return problems


def per_gpu_ceiling(name: str, profiles: Mapping[str, Profile]) -> int:
    """How many instances of one profile alone fit on a GPU (the user guide's "number of
    instances available")."""
    n = 0
    while placement({name: n + 1}, profiles) is not None:
        n += 1
    return n


def layouts_from_warehouse(
    con: duckdb.DuckDBPyConnection,
    day: date,
    *,
    lookback_hours: int = DEFAULT_LOOKBACK_HOURS,
    half_life_hours: float = DEFAULT_HALF_LIFE_HOURS,
) -> list[NodeGroupLayout]:
    """A layout for every MIG-capable node group (tier x product) of the look-back window
    ending with `day`, from `day`'s reservation recommendations and overflow pools."""
    end = datetime.combine(day + timedelta(days=1), time(), UTC)
    start = end - timedelta(hours=lookback_hours)
    groups: dict[tuple[str, str], dict[str, int]] = {}
    mig_nodes: set[str] = set()
    for tier, product, node, gpus, has_mig in warehouse.node_gpus(con, start, end):
        label = product_label_value(product)
        if family_of(label) is None:
            continue
        nodes = groups.setdefault((tier, label), {})
        nodes[node] = max(nodes.get(node, 0), gpus)
        if has_mig:
            mig_nodes.add(node)
    needed: dict[tuple[str, str | None], int] = dict(warehouse.overflow_pools_of(con, day))
    costs = warehouse.reservation_costs(con, day)
    kinds = warehouse.workload_kinds(con, start, end)
    for _tenant, tier, mig, _, units, _, _ in costs:
        needed[(tier, mig)] = needed.get((tier, mig), 0) + units
    demand = warehouse.hourly_demand(con, start, end)
    hours = [start + timedelta(hours=h) for h in range(lookback_hours)]
    index = {h: i for i, h in enumerate(hours)}
    ages = [lookback_hours - 1 - i for i in range(lookback_hours)]
    layouts = []
    for (tier, label), nodes in sorted(groups.items()):
        if sum(1 for (t, _l) in groups if t == tier) > 1:
            raise UserError(f"tier {tier}: its MIG-capable nodes carry several products; a "
                            "layout per product needs recommendations per product")
        series: dict[str | None, np.ndarray] = {}
        for row in demand.filter(pl.col("hardware_tier") == tier).iter_rows(named=True):
            mig = row["mig_profile"]
            unit = 1.0 if mig is None else float(mig_gpu_equivalents(mig))
            s = series.setdefault(mig, np.zeros(lookback_hours))
            s[index[row["hour"]]] += row["demand_gpus"] / unit
        shares = tuple(
            TenantShare(tenant, mig, tuple(kinds.get((tenant, tier, mig), ())), sla, units,
                        cost, currency)
            for tenant, t, mig, sla, units, cost, currency in costs if t == tier)
        layouts.append(recommend_layout(
            tier, label, nodes, {m: n for (t, m), n in needed.items() if t == tier},
            {m: list(s) for m, s in series.items()}, ages, shares,
            mig_nodes=sorted(mig_nodes & set(nodes)), half_life_hours=half_life_hours))
    return layouts


def layout_report(layouts: Sequence[NodeGroupLayout]) -> dict[str, Any]:
    """What a person reads beside the mig-parted file: per node group, what each profile needs
    and gets, its expected utilization, the nodes' configs, and who pays what."""
    return {"node_groups": [{
        "hardware_tier": g.hardware_tier, "gpu_product": g.gpu_product, "mig_family": g.family,
        "gpus": g.gpus, "partitioned_gpus": len(g.gpu_layouts), "whole_gpus": g.whole_gpus,
        "shortfall_gpus": g.shortfall_gpus,
        "expected_group_utilization": round(g.group_utilization, 4),
        "profiles": [{"mig_profile": p or "whole GPU", "needed": g.needed.get(p, 0),
                      "provided": n, "expected_utilization": round(g.expected_utilization[p], 4)}
                     for p, n in sorted(g.provided.items(), key=lambda i: (i[0] is None, i[0]))],
        "nodes": dict(g.nodes),
        "tenants": [{"tenant": t.tenant, "mig_profile": t.mig_profile or "whole GPU",
                     "workload_kinds": list(t.workload_kinds), "sla_class": t.sla_class,
                     "reserved": t.reserved, "expected_monthly_cost": str(t.expected_monthly_cost),
                     "currency": t.currency} for t in g.tenants],
    } for g in layouts]}
