"""A seeded synthetic GPU cluster that emits the same rows as the real collectors.

The default cluster ("sim", 64 GPUs) and its 12 tenants are described by `default_cluster`;
everything is generated with numpy a pool of identical devices and a UTC day at a time, so a
month at 60 s intervals takes seconds. The same seed gives the same rows, byte for byte.

Placement: each pool's workloads fill its devices in a fixed order every interval (the first
workload takes devices 0.., the next continues where it stopped), so steady workloads keep
their devices and a pod that holds a device for part of an interval (a short batch job) leaves
the rest of that interval to the next workload or to `__idle__`. Capacity beyond the pool is
pending demand and is not billed, as on a real cluster."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from collectors.spool import Batch, SpoolLocation, write_batches
from models.ledger.tiers import mig_gpu_equivalents
from models.ledger.usage import (
    IDLE_TENANT,
    LATENCY_BUCKETS,
    LEDGER_SCHEMA,
    REQUEST_WORK_SCHEMA,
    SHARED_TENANT,
    UNATTRIBUTED_TENANT,
    WorkloadKind,
)

SOURCE = "simulator"
CLUSTER = "sim"

H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-80GB"
L4 = "NVIDIA L4"
T4 = "Tesla T4"
GIB = 1024**3

TENANTS = (
    "acme", "zen", "orbit", "nimbus", "helix", "quanta",
    "lumen", "vega", "kite", "pixel", "sable", "terra",
)
INJECTED_SHIFTS: dict[str, tuple[int, float, float]] = {
    "quanta": (12, 2.0, 6.0),
    "lumen": (18, 6.0, 2.0),
}
"""tenant -> (day index from the simulation's start, GPUs before, GPUs after): sustained shifts
in the tenant's own GPUs (H100 for quanta, A100 for lumen), on from that day's 00:00 UTC."""
GROWTH: dict[str, tuple[float, float]] = {"helix": (2.0, 8.0)}
"""tenant -> (GPUs at the start, GPUs at the end): a linear ramp over the simulated days."""
STEADY_TENANTS = ("acme", "zen", "nimbus", "kite", "terra")
"""Tenants whose daily GPU-hours have no change point (nimbus is nightly but the same every
day): a shift detector must report nothing for them."""

SHARED_NAMESPACE = "shared-inference"
SHARED_MODEL = "llama-3.1-8b"
SHARED_MODEL_PARAMS_B = 8.0
SHARED_ENDPOINT_TENANTS = {"kite": 0.5, "pixel": 0.3, "sable": 0.2}
"""Tenants of the shared endpoint and their mean share of its request work."""
SHARED_ENDPOINT_MIX = {"kite": (1155.0, 211.0), "pixel": (2048.0, 28.0), "sable": (1155.0, 211.0)}
"""tenant -> mean (input, output) tokens per request: the means of the Azure LLM inference
trace's conversation and code services (../shared/data/azure-llm)."""
PREFILL_SECONDS_PER_TOKEN = 0.0002
"""Wall-clock prefill time per prompt token of one request (an 8B model on one GPU processes a
few thousand prompt tokens per second per request under load)."""
INTER_TOKEN_SECONDS = 0.025
"""Wall-clock decode time per generated token of one request (vLLM's inter-token latency of
an 8B model at moderate batch sizes, 20 to 30 ms)."""
SHARED_BURSTS = {"pixel": (
    63, 531, 166, 151, 15, 42, 38, 476, 403, 81, 585, 346, 8, 336, 348, 155, 78, 274, 462, 264,
    39, 128, 111, 315, 325, 118, 169, 91, 345, 158, 322, 57, 300, 191, 1, 225, 252, 99, 32, 97,
    212, 22, 137, 14, 237)}
"""tenant -> requests per minute of the Azure LLM trace's code service (2023-11-16 18:17 to
19:01 UTC, ../shared/data/azure-llm), replayed minute by minute (cycled) as the shape of the
tenant's demand around its mean: real bursts of up to 2.8x the mean within a minute."""
ENDPOINT_WORK_PER_GPU_SECOND = 6.0
"""Request work (seconds of requests in flight) one GPU of the shared endpoint serves per
second at saturation: batching runs several requests at once."""
QUEUEING = 0.5
"""Latency grows with the endpoint's utilisation u as 1 + QUEUEING * u / (1 - u), as waiting
time in a queue does (u capped at 0.95: the server sheds or times out beyond it)."""
SHARED_LULL_HOURS = (3, 4)
"""[start, end) UTC hours in which the shared endpoint gets no requests at all."""

LATENCY_BUCKETS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, math.inf)
"""Upper bounds of the simulated end-to-end latency histograms (seconds; +Inf last)."""
TTFT_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, math.inf)
"""Upper bounds of the simulated time-to-first-token histograms."""
LATENCY_SPREAD = 0.5
"""Log-normal sigma of one interval's request latencies around their mean."""

_NO_REQUEST_PROBABILITY = 0.05
_EPS = 1e-9


@dataclass(frozen=True)
class Calendar:
    """The intervals of one simulated UTC day."""

    epoch_s: np.ndarray
    """Start of each interval, seconds since 1970 (int64)."""
    interval_s: int
    day_index: int
    """Days since the simulation's start."""
    horizon_days: int

    @property
    def hour(self) -> np.ndarray:
        return (self.epoch_s % 86400) // 3600

    @property
    def weekday(self) -> int:
        return int((self.epoch_s[0] // 86400 + 3) % 7)  # 1970-01-01 was a Thursday

    @property
    def progress(self) -> np.ndarray:
        """Fraction of the simulated period elapsed at each interval, 0 to 1."""
        elapsed = self.day_index * 86400 + (self.epoch_s % 86400)
        return np.clip(elapsed / max(self.horizon_days * 86400 - self.interval_s, 1), 0.0, 1.0)


Demand = Callable[[Calendar, np.random.Generator], np.ndarray]
"""Devices of the pool a workload wants in each interval (fractions: part of an interval)."""


def constant(devices: float) -> Demand:
    return lambda cal, rng: np.full(len(cal.epoch_s), devices)


def step(day: int, before: float, after: float) -> Demand:
    return lambda cal, rng: np.full(len(cal.epoch_s), before if cal.day_index < day else after)


def ramp(first: float, last: float) -> Demand:
    """Whole replicas added one at a time as the linear target grows."""
    return lambda cal, rng: np.round(first + (last - first) * cal.progress)


def hours(devices: float, start_hour: int, end_hour: int) -> Demand:
    return lambda cal, rng: np.where(
        (cal.hour >= start_hour) & (cal.hour < end_hour), devices, 0.0
    )


def office_notebooks(low: int, high: int) -> Demand:
    """Weekdays 08:00-18:00 UTC, between `low` and `high` notebooks open, redrawn hourly."""

    def demand(cal: Calendar, rng: np.random.Generator) -> np.ndarray:
        per_hour = rng.integers(low, high + 1, size=24).astype(float)
        open_hours = (cal.hour >= 8) & (cal.hour < 18) & (cal.weekday < 5)
        return np.where(open_hours, per_hour[cal.hour], 0.0)

    return demand


def poisson_jobs(rate_per_min: float, mean_job_s: float) -> Demand:
    """Short jobs arriving as a Poisson process whose rate switches between calm (0.6x) and
    bursts (3x, a sixth of the time), so the mean stays at `rate_per_min`."""

    def demand(cal: Calendar, rng: np.random.Generator) -> np.ndarray:
        n = len(cal.epoch_s)
        # Alternating regimes with geometric lengths (in intervals): calm ~50, burst ~10.
        lengths = np.empty(2 * n, dtype=np.int64)
        lengths[0::2] = rng.geometric(0.02, size=n)
        lengths[1::2] = rng.geometric(0.1, size=n)
        regime = np.repeat(np.tile([0.6, 3.0], n), lengths)[:n]
        jobs = rng.poisson(rate_per_min / 60 * cal.interval_s * regime)
        job_seconds = rng.gamma(np.maximum(jobs, 1), mean_job_s) * (jobs > 0)
        return np.asarray(job_seconds / cal.interval_s, dtype=float)

    return demand


def occasionally(devices: float, probability_per_hour: float) -> Demand:
    def demand(cal: Calendar, rng: np.random.Generator) -> np.ndarray:
        on = rng.random(24) < probability_per_hour
        return np.where(on[cal.hour], devices, 0.0)

    return demand


@dataclass(frozen=True)
class Workload:
    tenant: str
    namespace: str | None
    deployment: str
    kind: WorkloadKind
    model: str | None
    params_b: float | None
    demand: Demand
    pod_share: float = 1.0
    """Fraction of a device one pod holds: 1 for whole GPUs and MIG instances, 0.5 or 0.25
    for time-sliced pods."""
    activity: float = 0.5
    """Mean fraction of its allocation a pod keeps busy."""
    memory_fraction: float = 0.5
    """Fraction of the device's (or its share's) memory in use."""


@dataclass(frozen=True)
class Device:
    node: str
    uuid: str
    parent: str
    """UUID of the physical GPU (the device's own for a whole GPU)."""
    product: str
    mig_profile: str | None
    gpu_equivalents: float
    memory_bytes: int


@dataclass(frozen=True)
class Pool:
    """Identical devices that the same workloads are placed on, in order."""

    name: str
    devices: tuple[Device, ...]
    workloads: tuple[Workload, ...]


@dataclass(frozen=True)
class Endpoint:
    """A shared endpoint's request work: tenant -> mean share of its requests."""

    namespace: str
    model: str
    gpus: float
    tenants: dict[str, float]


@dataclass(frozen=True)
class Cluster:
    name: str
    pools: tuple[Pool, ...]
    endpoints: tuple[Endpoint, ...]
    gateway_node: dict[str, str] = field(default_factory=dict)
    """Endpoint namespace -> the spool `node` its request rows are written under."""

    @property
    def nodes(self) -> list[str]:
        return sorted({d.node for p in self.pools for d in p.devices})

    @property
    def gpu_count(self) -> int:
        return len({d.parent for p in self.pools for d in p.devices})


def _uuid(prefix: str, *parts: object) -> str:
    h = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return f"{prefix}-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _gpus(node: str, product: str, memory_gib: int, indices: Sequence[int]) -> list[Device]:
    uuids = [_uuid("GPU", CLUSTER, node, i) for i in indices]
    return [Device(node, u, u, product, None, 1.0, memory_gib * GIB) for u in uuids]


def _mig(node: str, product: str, profile: str, per_gpu: int, gpus: Sequence[int]) -> list[Device]:
    equivalents = float(mig_gpu_equivalents(profile, product))
    memory = int(profile.split(".")[1].removesuffix("gb")) * GIB
    return [
        Device(node, _uuid("MIG", CLUSTER, node, g, profile, k), _uuid("GPU", CLUSTER, node, g),
               product, profile, equivalents, memory)
        for g in gpus
        for k in range(per_gpu)
    ]


def default_cluster(scale: int = 1) -> Cluster:
    """`scale` copies of the default 64-GPU cluster; copy r > 0 has nodes `sim-r<r>-...` and
    tenants `<tenant>-<r>` with the same patterns (and shift days)."""
    if scale < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    pools: list[Pool] = []
    endpoints: list[Endpoint] = []
    gateway: dict[str, str] = {}
    for r in range(scale):
        suffix = "" if r == 0 else f"-{r}"
        prefix = "sim-" if r == 0 else f"sim-r{r}-"

        def node(name: str, prefix: str = prefix) -> str:
            return prefix + name

        def team(tenant: str, deployment: str, kind: WorkloadKind, model: str, params: float,
                 demand: Demand, suffix: str = suffix, **kw: float) -> Workload:
            name = tenant + suffix
            return Workload(name, f"team-{name}", f"{deployment}{suffix}", kind, model, params,
                            demand, **kw)

        shared_ns = SHARED_NAMESPACE + suffix
        qd, qb, qa = INJECTED_SHIFTS["quanta"]
        ld, lb, la = INJECTED_SHIFTS["lumen"]
        hb, ha = GROWTH["helix"]
        inference, batch = WorkloadKind.INFERENCE, WorkloadKind.BATCH
        pools += [
            Pool(
                f"h100{suffix}",
                tuple(_gpus(node("h100-0"), H100, 80, range(8))
                      + _gpus(node("h100-1"), H100, 80, range(4, 8))),
                (
                    Workload(SHARED_TENANT, shared_ns, f"llama-8b-shared{suffix}", inference,
                             SHARED_MODEL, SHARED_MODEL_PARAMS_B, constant(2), activity=0.45,
                             memory_fraction=0.85),
                    team("acme", "llama-70b-chat", inference, "llama-3.1-70b", 70.0,
                         constant(3), activity=0.6, memory_fraction=0.9),
                    team("zen", "mistral-7b-api", inference, "mistral-7b", 7.0, constant(1),
                         activity=0.35, memory_fraction=0.6),
                    # quanta's two replicas sit on h100-0; the four of the shift on h100-1.
                    team("quanta", "llama-70b-quant", inference, "llama-3.1-70b", 70.0,
                         step(qd, qb, qa), activity=0.55, memory_fraction=0.9),
                ),
            ),
            Pool(f"h100-mig-3g{suffix}", tuple(_mig(node("h100-1"), H100, "3g.40gb", 1, range(4))),
                 (Workload(UNATTRIBUTED_TENANT, "default", f"debug-shell{suffix}",
                           WorkloadKind.UNKNOWN, None, None, occasionally(1, 0.04),
                           activity=0.1, memory_fraction=0.2),)),
            Pool(f"h100-mig-2g{suffix}", tuple(_mig(node("h100-1"), H100, "2g.20gb", 1, range(4))),
                 (team("zen", "mistral-7b-api-mig", inference, "mistral-7b", 7.0, constant(1),
                       activity=0.4, memory_fraction=0.8),)),
            Pool(f"h100-mig-1g{suffix}", tuple(_mig(node("h100-1"), H100, "1g.10gb", 2, range(4))),
                 (team("vega", "jupyter", WorkloadKind.NOTEBOOK, "phi-3-mini", 3.8,
                       office_notebooks(3, 8), activity=0.15, memory_fraction=0.7),)),
            Pool(
                f"a100{suffix}",
                tuple(d for i in range(4) for d in _gpus(node(f"a100-{i}"), A100, 80, range(8))),
                (
                    team("lumen", "llama-13b-serve", inference, "llama-2-13b", 13.0,
                         step(ld, lb, la), activity=0.5, memory_fraction=0.7),
                    team("helix", "codellama-34b", inference, "codellama-34b", 34.0,
                         ramp(hb, ha), activity=0.5, memory_fraction=0.8),
                    team("nimbus", "finetune-13b", WorkloadKind.FINE_TUNING, "llama-2-13b", 13.0,
                         hours(8, 1, 6), activity=0.9, memory_fraction=0.95),
                    team("orbit", "batch-worker", batch, "bert-large", 0.34,
                         poisson_jobs(200, 1.0), activity=0.8, memory_fraction=0.3),
                ),
            ),
            Pool(
                f"l4{suffix}",
                tuple(_gpus(node("l4-0"), L4, 24, range(8))),
                (
                    team("kite", "embed-api", inference, "mistral-7b", 7.0, constant(2),
                         activity=0.3, memory_fraction=0.7),
                    team("pixel", "sdxl-render", batch, "sdxl", 3.5, hours(3, 8, 20),
                         activity=0.85, memory_fraction=0.6),
                ),
            ),
            Pool(
                f"t4{suffix}",
                tuple(_gpus(node("t4-0"), T4, 16, range(8))),
                (
                    team("terra", "tinyllama-api", inference, "tinyllama-1.1b", 1.1,
                         constant(5), pod_share=0.5, activity=0.3, memory_fraction=0.8),
                    team("terra", "tinyllama-worker", batch, "tinyllama-1.1b", 1.1,
                         constant(1), pod_share=0.25, activity=0.6, memory_fraction=0.8),
                ),
            ),
        ]
        tenants = {t + suffix: share for t, share in SHARED_ENDPOINT_TENANTS.items()}
        endpoints.append(Endpoint(shared_ns, SHARED_MODEL, 2.0, tenants))
        gateway[shared_ns] = node("gateway")
    return Cluster(CLUSTER, tuple(pools), tuple(endpoints), gateway)


# --- row generation ------------------------------------------------------------------------

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_K2 = np.uint64(0x9E3779B97F4A7C15)
_HEX = np.array([f"{i:02x}" for i in range(256)], dtype="S2")


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijection of uint64 that scatters nearby keys."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return np.asarray(x ^ (x >> np.uint64(31)))


def _key(text: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big"))


def sample_ids(a: np.ndarray, b: np.ndarray, epoch_s: np.ndarray) -> pa.Array:
    """32 hex characters from 128 hash bits of (a, b, epoch): deterministic, vectorized."""
    with np.errstate(over="ignore"):
        h1 = _mix(a ^ _mix(epoch_s.astype(np.uint64) ^ b))
        h2 = _mix(h1 ^ b ^ _K2)
    n = len(h1)
    raw = np.empty((n, 2), dtype=">u8")
    raw[:, 0], raw[:, 1] = h1, h2
    chars = np.ascontiguousarray(_HEX[raw.view(np.uint8).reshape(n, 16)])
    offsets = np.arange(0, 32 * n + 1, 32, dtype=np.int64)
    return pa.Array.from_buffers(
        pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes())]
    ).cast(pa.string())


def _strings(values: Sequence[str | None], codes: np.ndarray) -> pa.Array:
    return pc.take(pa.array(values, pa.string()), pa.array(codes))


def _floats(values: Sequence[float | None], codes: np.ndarray) -> pa.Array:
    lookup = np.array([np.nan if v is None else v for v in values])[codes]
    return pa.array(lookup, pa.float64(), mask=np.isnan(lookup))


@dataclass(frozen=True)
class _PoolNames:
    pods: list[str | None]
    pod_uids: list[str | None]
    keys: np.ndarray
    """Sample-id key per row code (pod, or the idle bucket of a device)."""


_MAX_PODS_PER_DEVICE = 4  # 0.25 shares


def _pool_names(cluster: str, pool: Pool) -> _PoolNames:
    """Pod name, UID and key for each (workload, device, pod slot) code, then one idle code per
    device: codes are stable, so a pod keeps its name for as long as it keeps its device."""
    pods: list[str | None] = []
    uids: list[str | None] = []
    keys: list[np.uint64] = []
    for w in pool.workloads:
        for d in pool.devices:
            for m in range(_MAX_PODS_PER_DEVICE):
                h = hashlib.sha256(f"{w.deployment}/{d.uuid}/{m}".encode()).hexdigest()
                name = f"{w.deployment}-{h[:5]}"
                pods.append(name)
                uids.append(f"{h[5:13]}-{h[13:17]}-{h[17:21]}-{h[21:25]}-{h[25:37]}")
                keys.append(_key(f"{cluster}/{w.namespace}/{name}"))
    for d in pool.devices:
        pods.append(None)
        uids.append(None)
        keys.append(_key(f"{cluster}/{d.uuid}/{IDLE_TENANT}"))
    return _PoolNames(pods, uids, np.array(keys, dtype=np.uint64))


class Simulation:
    """The cluster over `horizon_days` UTC days from `origin` (a UTC midnight)."""

    def __init__(self, cluster: Cluster, origin: datetime, horizon_days: int,
                 interval_s: int = 60, seed: int = 7) -> None:
        if origin.tzinfo is None or origin.utcoffset() != timedelta(0):
            raise ValueError(f"start must be a UTC datetime, got {origin.isoformat()}")
        if origin != datetime.combine(origin.date(), datetime.min.time(), UTC):
            raise ValueError(f"start must be a UTC midnight, got {origin.isoformat()}")
        if interval_s <= 0 or 3600 % interval_s:
            raise ValueError(f"interval must divide an hour (e.g. 10, 60, 300), got {interval_s}")
        self.cluster = cluster
        self.origin = origin
        self.horizon_days = horizon_days
        self.interval_s = interval_s
        self.seed = seed
        self._names = [_pool_names(cluster.name, p) for p in cluster.pools]
        self._device_keys = [
            np.array([_key(f"{cluster.name}/{d.uuid}") for d in p.devices], dtype=np.uint64)
            for p in cluster.pools
        ]

    def calendar(self, day_index: int) -> Calendar:
        first = int(self.origin.timestamp()) + day_index * 86400
        epoch = np.arange(first, first + 86400, self.interval_s, dtype=np.int64)
        return Calendar(epoch, self.interval_s, day_index, self.horizon_days)

    def _rng(self, *parts: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *parts])

    def pool_day(self, pool_index: int, day_index: int) -> tuple[pa.Table, np.ndarray]:
        """Ledger rows of one pool for one day, and each row's node (index into `nodes`)."""
        pool = self.cluster.pools[pool_index]
        names = self._names[pool_index]
        cal = self.calendar(day_index)
        t_count, j_count, k_count = len(cal.epoch_s), len(pool.devices), len(pool.workloads)
        demand = np.stack([
            np.maximum(w.demand(cal, self._rng(1, pool_index, k, day_index)), 0.0)
            for k, w in enumerate(pool.workloads)
        ])
        filled = np.minimum(np.cumsum(demand, axis=0), j_count)
        before = np.vstack([np.zeros((1, t_count)), filled[:-1]])
        j = np.arange(j_count, dtype=float)
        held = (np.clip(filled[:, :, None] - j, 0, 1)
                - np.clip(before[:, :, None] - j, 0, 1))  # (workload, interval, device)

        t_parts, j_parts, code_parts, k_parts, share_parts = [], [], [], [], []
        for k, w in enumerate(pool.workloads):
            for m in range(round(1 / w.pod_share)):
                share = np.clip(held[k] - m * w.pod_share, 0, w.pod_share)
                t_i, j_i = np.nonzero(share > _EPS)
                t_parts.append(t_i)
                j_parts.append(j_i)
                code_parts.append((k * j_count + j_i) * _MAX_PODS_PER_DEVICE + m)
                k_parts.append(np.full(len(t_i), k))
                share_parts.append(share[t_i, j_i])
        idle = 1.0 - held.sum(axis=0)
        t_i, j_i = np.nonzero(idle > _EPS)
        t_parts.append(t_i)
        j_parts.append(j_i)
        code_parts.append(k_count * j_count * _MAX_PODS_PER_DEVICE + j_i)
        k_parts.append(np.full(len(t_i), k_count))
        share_parts.append(idle[t_i, j_i])

        t_idx = np.concatenate(t_parts)
        order = np.argsort(t_idx, kind="stable")
        t_idx = t_idx[order]
        dev = np.concatenate(j_parts)[order]
        code = np.concatenate(code_parts)[order]
        wk = np.concatenate(k_parts)[order]
        share = np.concatenate(share_parts)[order]
        n = len(t_idx)

        rng = self._rng(2, pool_index, day_index)
        equivalents = np.array([d.gpu_equivalents for d in pool.devices])[dev]
        duration = float(self.interval_s)
        allocated = share * duration * equivalents
        is_pod = wk < k_count
        activity = np.array([w.activity for w in pool.workloads] + [0.0])[wk]
        activity = np.where(is_pod, np.clip(rng.normal(activity, 0.08, n), 0.02, 1.0), 0.0)
        pod_share = np.array([w.pod_share for w in pool.workloads] + [0.0])[wk]
        memory_fraction = np.array([w.memory_fraction for w in pool.workloads] + [0.0])[wk]
        device_memory = np.array([d.memory_bytes for d in pool.devices], dtype=float)[dev]
        memory = (device_memory * pod_share * memory_fraction
                  * np.clip(rng.normal(1.0, 0.03, n), 0.8, 1.0)).astype(np.int64)
        epoch = cal.epoch_s[t_idx]

        workloads = pool.workloads
        node_names = self.cluster.nodes
        node_of = np.array([node_names.index(d.node) for d in pool.devices])[dev]
        table = pa.Table.from_arrays(
            [
                sample_ids(self._device_keys[pool_index][dev], names.keys[code], epoch),
                pa.array(epoch * 1_000_000, pa.int64()).cast(LEDGER_SCHEMA.field(
                    "window_start").type),
                pa.array(np.full(n, duration)),
                pa.array(np.full(n, self.cluster.name), pa.string()),
                _strings(node_names, node_of),
                _strings([d.uuid for d in pool.devices], dev),
                _strings([d.product for d in pool.devices], dev),
                _strings([d.mig_profile for d in pool.devices], dev),
                pa.array(equivalents),
                _strings([w.tenant for w in workloads] + [IDLE_TENANT], wk),
                _strings([w.namespace for w in workloads] + [None], wk),
                _strings(names.pods, code),
                _strings(names.pod_uids, code),
                _strings([w.kind.value for w in workloads] + [WorkloadKind.IDLE.value], wk),
                _strings([w.model for w in workloads] + [None], wk),
                _floats([w.params_b for w in workloads] + [None], wk),
                pa.array(allocated),
                pa.array(allocated * activity),
                pa.array(memory),
                pa.array(np.full(n, SOURCE), pa.string()),
            ],
            schema=LEDGER_SCHEMA,
        )
        return table, node_of

    def node_days(self, day_index: int) -> dict[str, pa.Table]:
        """Ledger rows of every node for one day, each sorted by window_start."""
        tables, nodes = zip(*(self.pool_day(p, day_index)
                              for p in range(len(self.cluster.pools))), strict=True)
        table = pa.concat_tables(tables)
        node_of = np.concatenate(nodes)
        # One stable sort by node, then time (rows of a node and minute keep the pools' order),
        # and one take: each node's rows are then a slice, not a filter, concat and sort.
        epoch = table["window_start"].combine_chunks().cast(pa.int64()).to_numpy()
        order = np.lexsort((epoch, node_of))
        table = table.take(pa.array(order))
        node_of = node_of[order]
        starts = np.flatnonzero(np.r_[True, node_of[1:] != node_of[:-1]])
        ends = np.r_[starts[1:], len(node_of)]
        names = self.cluster.nodes
        return {names[node_of[a]]: table.slice(a, b - a)
                for a, b in zip(starts, ends, strict=True)}

    def requests_day(self, endpoint_index: int, day_index: int) -> pa.Table:
        """Request work of a shared endpoint's tenants: a diurnal load split in shares that
        drift from interval to interval, as requests, tokens, prefill, decode and request
        seconds of each tenant's mix; no rows for a tenant without requests."""
        endpoint = self.cluster.endpoints[endpoint_index]
        cal = self.calendar(day_index)
        rng = self._rng(3, endpoint_index, day_index)
        n = len(cal.epoch_s)
        hour = cal.hour
        diurnal = 0.65 + 0.35 * np.sin((cal.epoch_s % 86400) / 86400 * 2 * np.pi - np.pi / 2)
        # Several requests run batched on each GPU, so work exceeds wall-clock GPU time.
        load = endpoint.gpus * cal.interval_s * 3.0 * diurnal
        lull = (hour >= SHARED_LULL_HOURS[0]) & (hour < SHARED_LULL_HOURS[1])
        tenants = list(endpoint.tenants)
        ts, tenant_codes, seconds = [], [], []
        for i, tenant in enumerate(tenants):
            mean = load * endpoint.tenants[tenant]
            base = tenant.split("-")[0]  # copies of the cluster (scale > 1): `<tenant>-<r>`
            if base in SHARED_BURSTS:
                shape = np.array(SHARED_BURSTS[base], dtype=np.float64)
                mean = mean * (shape / shape.mean())[(cal.epoch_s // 60) % len(shape)]
            work = rng.gamma(4.0, mean / 4.0)
            quiet = lull | (rng.random(n) < _NO_REQUEST_PROBABILITY)
            t_i = np.flatnonzero(~quiet)
            ts.append(t_i)
            tenant_codes.append(np.full(len(t_i), i))
            seconds.append(work[t_i])
        t_idx = np.concatenate(ts)
        order = np.argsort(t_idx, kind="stable")
        t_idx = t_idx[order]
        code = np.concatenate(tenant_codes)[order]
        work = np.concatenate(seconds)[order]
        # Requests of the tenant's mix fill its work: tokens per interval jitter around the
        # mix, prefill and decode follow the tokens, latency adds queueing on top.
        mix = np.array([SHARED_ENDPOINT_MIX[t.split("-")[0]] for t in tenants])[code]
        per_request = mix[:, 0] * PREFILL_SECONDS_PER_TOKEN + mix[:, 1] * INTER_TOKEN_SECONDS
        requests = np.maximum(1, np.round(work / per_request)).astype(np.int64)
        input_tokens = np.round(requests * mix[:, 0] * rng.lognormal(0, 0.2, len(t_idx)))
        output_tokens = np.round(requests * mix[:, 1] * rng.lognormal(0, 0.2, len(t_idx)))
        prefill_seconds = input_tokens * PREFILL_SECONDS_PER_TOKEN
        decode_seconds = output_tokens * INTER_TOKEN_SECONDS * rng.uniform(0.9, 1.1, len(t_idx))
        # Queueing grows with the endpoint's utilisation: at the diurnal peak, and in any
        # tenant's burst, every tenant's requests wait longer.
        capacity = endpoint.gpus * cal.interval_s * ENDPOINT_WORK_PER_GPU_SECOND
        utilisation = np.minimum(np.bincount(t_idx, weights=work, minlength=n) / capacity, 0.95)
        queueing = 1.0 + (QUEUEING * utilisation / (1 - utilisation))[t_idx] * rng.uniform(
            0.8, 1.2, len(t_idx))
        request_seconds = (prefill_seconds + decode_seconds) * queueing
        latency = _histograms(requests, request_seconds / requests, LATENCY_BUCKETS_S)
        ttft = _histograms(requests, prefill_seconds / requests * queueing + 0.03,
                           TTFT_BUCKETS_S)
        epoch = cal.epoch_s[t_idx]
        endpoint_key = _key(f"{self.cluster.name}/{endpoint.namespace}/{endpoint.model}")
        tenant_keys = np.array([_key(t) for t in tenants], dtype=np.uint64)[code]
        m = len(t_idx)
        return pa.Table.from_arrays(
            [
                sample_ids(np.full(m, endpoint_key, dtype=np.uint64), tenant_keys, epoch),
                pa.array(epoch * 1_000_000, pa.int64()).cast(
                    REQUEST_WORK_SCHEMA.field("window_start").type),
                pa.array(np.full(m, float(cal.interval_s))),
                pa.array(np.full(m, self.cluster.name), pa.string()),
                pa.array(np.full(m, endpoint.namespace), pa.string()),
                pa.array(np.full(m, endpoint.model), pa.string()),
                _strings(tenants, code),
                pa.array(requests),
                pa.array(request_seconds),
                pa.array(prefill_seconds),
                pa.array(decode_seconds),
                pa.array(input_tokens.astype(np.int64)),
                pa.array(output_tokens.astype(np.int64)),
                latency,
                ttft,
                pa.array(np.full(m, SOURCE), pa.string()),
            ],
            schema=REQUEST_WORK_SCHEMA,
        )


def _histograms(requests: np.ndarray, mean_s: np.ndarray, bounds: Sequence[float]) -> pa.Array:
    """Per row, cumulative counts of `requests` log-normal latencies of mean `mean_s` within
    each bound (LATENCY_BUCKETS rows; the last bound, +Inf, counts every request)."""
    mu = np.log(mean_s) - LATENCY_SPREAD ** 2 / 2
    erf = np.vectorize(math.erf)
    finite = np.array([b for b in bounds if math.isfinite(b)])
    cdf = 0.5 * (1 + erf((np.log(finite)[None, :] - mu[:, None]) / (LATENCY_SPREAD * math.sqrt(2))))
    counts = np.minimum(np.round(cdf * requests[:, None]).astype(np.int64), requests[:, None])
    counts = np.maximum.accumulate(np.concatenate([counts, requests[:, None]], axis=1), axis=1)
    n, k = counts.shape
    les = np.tile(np.array(bounds, dtype=np.float64), n)
    entries = pa.StructArray.from_arrays([pa.array(les), pa.array(counts.ravel())],
                                         fields=list(LATENCY_BUCKETS.value_type))
    return pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)),
                                    entries, type=LATENCY_BUCKETS)


def _hours(table: pa.Table) -> Iterator[tuple[datetime, pa.Table]]:
    """A table sorted by window_start, cut at UTC hours."""
    us = table["window_start"].combine_chunks().cast(pa.int64()).to_numpy()
    hour = us // 3_600_000_000
    starts = np.flatnonzero(np.r_[True, hour[1:] != hour[:-1]])
    ends = np.r_[starts[1:], len(hour)]
    for a, b in zip(starts, ends, strict=True):
        yield datetime.fromtimestamp(int(hour[a]) * 3600, UTC), table.slice(a, b - a)


def _as_midnight(start: datetime | date) -> datetime:
    if isinstance(start, datetime):
        return start
    return datetime.combine(start, datetime.min.time(), UTC)


def simulate(start: datetime | date, days: int, interval_s: int = 60, seed: int = 7,
             scale: int = 1) -> Iterator[Batch]:
    """The default cluster from `start` (a UTC midnight) for `days` days: one usage batch per
    node and hour, one request batch per shared endpoint and hour, in time order."""
    for batches in simulate_days(start, days, interval_s, seed, scale):
        yield from batches


def simulate_days(start: datetime | date, days: int, interval_s: int = 60, seed: int = 7,
                  scale: int = 1) -> Iterator[list[Batch]]:
    """`simulate`'s batches, a UTC day at a time."""
    sim = Simulation(default_cluster(scale), _as_midnight(start), days, interval_s, seed)
    for day in range(days):
        batches = [Batch("usage", node, f"sim-{hour:%Y%m%dT%H}", part)
                   for node, table in sim.node_days(day).items()
                   for hour, part in _hours(table)]
        for e, endpoint in enumerate(sim.cluster.endpoints):
            node = sim.cluster.gateway_node[endpoint.namespace]
            batches += [Batch("requests", node, f"sim-{hour:%Y%m%dT%H}", part)
                        for hour, part in _hours(sim.requests_day(e, day))]
        yield batches


@dataclass
class SpoolSummary:
    usage_rows: int = 0
    request_rows: int = 0
    files: int = 0


def simulate_to_spool(
    root: SpoolLocation, start: datetime | date, days: int, interval_s: int = 60, seed: int = 7,
    scale: int = 1, progress: Callable[[Batch], None] | None = None,
) -> SpoolSummary:
    """Write `simulate(...)` through the spool writer, a day's batches at a time (the spool's
    fsyncs paid once a day); `progress` is called after each batch once it is written."""
    summary = SpoolSummary()

    def write(batches: list[Batch]) -> list[Batch]:
        summary.files += len(write_batches(root, batches, source=SOURCE))
        return batches

    def written(batches: list[Batch]) -> None:
        for batch in batches:
            if batch.kind == "usage":
                summary.usage_rows += batch.table.num_rows
            else:
                summary.request_rows += batch.table.num_rows
            if progress is not None:
                progress(batch)

    # A day is written (Parquet encoding and fsyncs, which release the GIL) while the next is
    # generated; days are written one after the other, in order.
    with ThreadPoolExecutor(1) as writer:
        pending: Future[list[Batch]] | None = None
        for batches in simulate_days(start, days, interval_s, seed, scale):
            if pending is not None:
                written(pending.result())
            pending = writer.submit(write, batches)
        if pending is not None:
            written(pending.result())
    return summary
