"""Prometheus reader: dcgm-exporter activity per pod and MIG instance, gateway request work.

Two products, both read with the sampling step `step_s` over `[start, end)`:

- `PrometheusReader.usage_rows`: ledger rows (`source = "dcgm"`) per (interval, device or MIG
  instance, pod). A pod-labelled dcgm-exporter series means the pod holds the device in that
  interval; devices without a pod become `__idle__` rows, so GPU-seconds are conserved per
  device and interval. A pod is attributed through the pod collector's view of it, else
  through the configured namespace -> tenant map, else to `__unattributed__`. MIG series,
  which real dcgm-exporter emits with empty pod labels, are attributed through the pod
  collector's MIG allocation, else to `__unattributed__`.
- `PrometheusReader.request_rows`: REQUEST_WORK_SCHEMA rows (`source = "gateway"`) per
  (interval, namespace, model, tenant) from the inference gateway's counters, computed from the
  raw counter samples (exact increases with reset handling, no PromQL extrapolation), so that
  a shared endpoint's GPU-seconds can be apportioned in proportion to them.

Interval `[t, t + step)` is evaluated at `t + step` over `[step] offset 1ms`, so that a sample
taken exactly on a boundary belongs to the interval it opens (exact on Prometheus 3's left-open
ranges, and off by at most one millisecond on 2.x's closed ones). An interval without its own
sample takes the last one within `staleness_s`; beyond that it has no activity data.

What cannot be read becomes a gap (models/ledger/gaps.py), never idle, and never takes the
rest of the window with it:
- a series without what the ledger needs (UUID, modelName, a node label, a valid MIG profile)
  is quarantined alone: its device has no rows in the intervals it covers (the device's
  holders are read from all of its series together, so a partial view would mis-split it),
  every other device keeps its rows;
- a dcgm-exporter target Prometheus could not scrape in an interval (`up == 0`: down, refused,
  garbage exposition) is a gap for its node; so is a target scraped fine that served no DCGM
  series (an empty exporter);
- expected devices without any series are gaps of their own."""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any, Protocol

import pyarrow as pa
import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from collectors.request_metrics import HISTOGRAMS, LITELLM, MEASURES, VLLM, RequestMetrics
from models.errors import ChargebackError, TransientError, UserError
from models.ledger.gaps import Gap, GapReason
from models.ledger.tiers import UnknownMigProfile, mig_gpu_equivalents
from models.ledger.usage import (
    ENDPOINT_LOAD_SCHEMA,
    IDLE_TENANT,
    LEDGER_SCHEMA,
    REQUEST_WORK_SCHEMA,
    UNATTRIBUTED_TENANT,
    PodInfo,
    WorkloadKind,
    make_sample_id,
)

log = logging.getLogger(__name__)

DCGM_SOURCE = "dcgm"
GATEWAY_SOURCE = "gateway"

GR_ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
"""Fraction (0..1) of time the graphics/compute engine was busy: the activity we bill on."""
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
"""Percent (0..100); the fallback on GPUs or exporters without profiling metrics."""
FB_USED = "DCGM_FI_DEV_FB_USED"
"""Framebuffer used, MiB."""

INTERVAL_MEAN_QUERY = (
    "avg_over_time({metric}[{step_s}s] offset 1ms)"
    " or last_over_time({metric}[{staleness_ms}ms] offset 1ms)"
)
"""Mean of the interval's samples, else the last sample within the staleness window."""
INTERVAL_PEAK_QUERY = (
    "max_over_time({metric}[{step_s}s] offset 1ms)"
    " or last_over_time({metric}[{staleness_ms}ms] offset 1ms)"
)
"""Peak of the interval's samples (memory is billed on what was held), else the last one."""
RAW_SAMPLES_QUERY = "{selector}[{range_s}s]"
"""Raw counter samples, for exact increases with reset handling."""
TARGET_UP_QUERY = (
    'max_over_time(up{{job=~"{job}"}}[{step_s}s] offset 1ms)'
    ' or last_over_time(up{{job=~"{job}"}}[{staleness_ms}ms] offset 1ms)'
)
"""1 when any scrape of the exporter target succeeded in the interval, 0 when all failed."""
DCGM_JOB = ".*dcgm.*"
"""Prometheus jobs of dcgm-exporter targets (the GPU operator's is `nvidia-dcgm-exporter`)."""

# Prometheus refuses range queries of more than 11,000 points per series.
MAX_POINTS_PER_QUERY = 10_000
COUNTER_CHUNK_S = 6 * 3600
MIB = 1024 * 1024

# dcgm-exporter's own labels (see tests/fixtures/dcgm/*.prom).
UUID_LABEL = "UUID"
MODEL_NAME_LABEL = "modelName"
MIG_PROFILE_LABEL = "GPU_I_PROFILE"
MIG_INSTANCE_LABEL = "GPU_I_ID"
POD_LABEL = "pod"
NAMESPACE_LABEL = "namespace"


class PrometheusError(ChargebackError):
    """Base of this reader's errors."""


class PrometheusUnavailable(PrometheusError, TransientError):
    """Prometheus could not be reached; transient, retry later."""


class PrometheusQueryError(PrometheusError, UserError):
    """Prometheus rejected a query (bad PromQL, too many points); retrying will not help."""


class PrometheusDataError(PrometheusError, UserError):
    """A series lacks what the ledger needs (GPU UUID, product, a valid MIG profile)."""


class PodAttribution(Protocol):
    """What the pod collector knows about a pod: who pays and what it runs."""

    @property
    def namespace(self) -> str | None: ...
    @property
    def pod(self) -> str | None: ...
    @property
    def tenant(self) -> str: ...
    @property
    def pod_uid(self) -> str | None: ...
    @property
    def workload_kind(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def model_params_b(self) -> float | None: ...


MigKey = tuple[str, str]
"""A MIG instance as dcgm-exporter names it: (parent GPU UUID, GPU instance id `GPU_I_ID`)."""


def mig_device_id(parent_uuid: str, gpu_instance_id: str) -> str:
    """The ledger's `gpu_uuid` of a MIG instance read from DCGM (which has no MIG UUID label)."""
    return f"{parent_uuid}/gi{gpu_instance_id}"


@dataclass(frozen=True)
class UsageRead:
    """Ledger rows plus what the caller should know about their coverage."""

    table: pa.Table
    devices: tuple[str, ...]
    """`gpu_uuid` of every device and MIG instance that had series in the window."""
    missing_devices: tuple[str, ...]
    """Expected GPU UUIDs with no series at all in the window (no rows written for them)."""
    gaps: tuple[Gap, ...] = ()
    """What could not be read: quarantined series, intervals without samples, failed or
    empty scrapes, missing devices."""


@dataclass(frozen=True)
class RequestRead:
    table: pa.Table
    gaps: tuple[Gap, ...] = ()
    """Quarantined gateway series (work that no endpoint can be named for)."""


@dataclass
class _Device:
    gpu_uuid: str
    node: str
    product: str
    mig_profile: str | None
    mig_key: MigKey | None
    gpu_equivalents: float
    # per interval index: pod (namespace, pod) -> value; pod ("", "") = series without a pod
    activity: dict[int, dict[tuple[str, str], float]] = field(default_factory=dict)
    memory_mib: dict[int, dict[tuple[str, str], float]] = field(default_factory=dict)
    present: dict[int, set[tuple[str, str]]] = field(default_factory=dict)


_NO_POD = ("", "")
_WorkKey = tuple[int, str, str, str]
"""(interval index, namespace, model, tenant)"""


class PrometheusReader:
    """Reads dcgm-exporter and inference-gateway metrics from one Prometheus (or Thanos/Mimir)."""

    def __init__(
        self,
        url: str,
        *,
        cluster: str,
        staleness_s: float = 300.0,
        timeout_s: float = 30.0,
        retries: int = 2,
        headers: Mapping[str, str] | None = None,
        disable_ssl: bool = False,
        node_labels: Sequence[str] = ("node", "kubernetes_node", "Hostname"),
        exporter_job: str = DCGM_JOB,
        gateway: RequestMetrics | None = LITELLM,
        server: RequestMetrics | None = VLLM,
    ) -> None:
        """`staleness_s`: how long a sample stands in for intervals without their own (like
        Prometheus's lookback delta, default 5 min). `node_labels`: labels naming the node, in
        order of preference; dcgm-exporter's `Hostname` is the exporter pod's name unless it
        runs with hostNetwork, so a relabelled `node` label wins when present. `exporter_job`:
        a regular expression matching the `job` of dcgm-exporter targets, whose `up` says
        whether they could be scraped. `gateway`: where the gateway keeps per-tenant request
        work; `server`: where the inference server keeps per-endpoint prefill and decode time
        (collectors/request_metrics.py); either may be None."""
        if staleness_s <= 0:
            raise ValueError(f"staleness_s must be positive, got {staleness_s}")
        self.url = url.rstrip("/")
        self.cluster = cluster
        self.staleness_s = staleness_s
        self.node_labels = tuple(node_labels)
        self.exporter_job = exporter_job
        self.gateway = gateway
        self.server = server
        retry = Retry(total=retries, backoff_factor=0.5, status_forcelist=[502, 503, 504])
        self._client = PrometheusConnect(
            self.url, headers=dict(headers or {}), disable_ssl=disable_ssl, retry=retry,
            timeout=timeout_s,
        )

    def close(self) -> None:
        self._client.close()

    # -- dcgm-exporter -> ledger ---------------------------------------------------------

    def usage_rows(
        self,
        start: datetime,
        end: datetime,
        step_s: int,
        *,
        pods: Mapping[tuple[str, str], PodAttribution] | None = None,
        mig_allocations: Mapping[MigKey, PodAttribution] | None = None,
        namespace_tenants: Mapping[str, str] | None = None,
    ) -> pa.Table:
        """Ledger rows (LEDGER_SCHEMA) of `[start, end)`; see `read_usage`."""
        return self.read_usage(
            start, end, step_s, pods=pods, mig_allocations=mig_allocations,
            namespace_tenants=namespace_tenants,
        ).table

    def read_usage(
        self,
        start: datetime,
        end: datetime,
        step_s: int,
        *,
        pods: Mapping[tuple[str, str], PodAttribution] | None = None,
        mig_allocations: Mapping[MigKey, PodAttribution] | None = None,
        namespace_tenants: Mapping[str, str] | None = None,
        expected_devices: Iterable[str] = (),
    ) -> UsageRead:
        """Ledger rows per (interval, device or MIG instance, pod) of `[start, end)`.

        `pods` resolves a pod-labelled series' (namespace, pod) to its tenant (the pod
        collector's resolution: namespace label, then pod label, then the map); a pod it does
        not know falls back to `namespace_tenants` (the configured namespace -> tenant map),
        else it is `__unattributed__`. `mig_allocations` names the pod holding a MIG instance whose
        series carry no pod labels; an instance it does not name is `__unattributed__` (dcgm
        cannot tell a free instance from an unlabelled busy one). A whole GPU whose series carry
        no pod is `__idle__`. Only whole intervals are read: a trailing partial step is left for
        the next call."""
        intervals = _interval_count(start, end, step_s)
        pods = pods or {}
        mig_allocations = mig_allocations or {}
        namespace_tenants = namespace_tenants or {}
        devices: dict[str, _Device] = {}
        # (node, gpu_uuid) -> interval -> problem, for the series quarantined.
        unreadable: dict[tuple[str | None, str | None], dict[int, str]] = defaultdict(dict)
        # Exporter targets (job, instance) that served any series, per interval.
        served: dict[int, set[tuple[str, str]]] = defaultdict(set)
        for metric, query, target in (
            (GR_ENGINE_ACTIVE, INTERVAL_MEAN_QUERY, "gr"),
            (GPU_UTIL, INTERVAL_MEAN_QUERY, "util"),
            (FB_USED, INTERVAL_PEAK_QUERY, "fb"),
        ):
            promql = query.format(
                metric=metric, step_s=step_s, staleness_ms=round(self.staleness_s * 1000)
            )
            for labels, points in self._range(promql, start, intervals, step_s):
                for k, _ in points:
                    served[k].add((labels.get("job", ""), labels.get("instance", "")))
                try:
                    device = self._device(devices, labels, metric)
                except PrometheusDataError as exc:
                    place = self._place(labels)
                    for k, _ in points:
                        unreadable[place].setdefault(k, str(exc))
                    continue
                who = (labels.get(NAMESPACE_LABEL, ""), labels.get(POD_LABEL, ""))
                if not who[1]:
                    who = _NO_POD
                for k, value in points:
                    device.present.setdefault(k, set()).add(who)
                    if target == "fb":
                        slot = device.memory_mib.setdefault(k, {})
                        slot[who] = max(value, slot.get(who, value))
                    elif target == "gr" or who not in device.activity.get(k, {}):
                        # GR_ENGINE_ACTIVE was read first and wins; GPU_UTIL only fills in.
                        fraction = value if target == "gr" else value / 100.0
                        device.activity.setdefault(k, {})[who] = _clamp01(fraction)
        rows: list[dict[str, Any]] = []
        gaps: list[Gap] = []
        for device in devices.values():
            skip = set(unreadable.get((device.node, device.gpu_uuid), {}))
            skip |= set(unreadable.get((None, device.gpu_uuid), {}))
            unread = self._device_rows(rows, device, start, step_s, pods, mig_allocations,
                                       namespace_tenants, skip)
            gaps += _runs(DCGM_SOURCE, self.cluster, device.node, device.gpu_uuid, start, step_s,
                          dict.fromkeys(unread, f"Prometheus {self.url}: no sample of "
                                        f"{device.gpu_uuid} within {self.staleness_s:g} s"),
                          GapReason.NO_SERIES)
        gaps += [gap for (node, gpu), problems in unreadable.items()
                 for gap in _runs(DCGM_SOURCE, self.cluster, node, gpu, start, step_s, problems,
                                  GapReason.MALFORMED_SERIES)]
        gaps += self._target_gaps(start, intervals, step_s, served)
        seen_parents = {d.gpu_uuid.split("/gi", 1)[0] for d in devices.values()}
        missing = tuple(sorted(set(expected_devices) - seen_parents - set(devices)))
        window_end = start + timedelta(seconds=intervals * step_s)
        gaps += [Gap(DCGM_SOURCE, self.cluster, None, uuid, start, window_end,
                     GapReason.NO_SERIES, f"Prometheus {self.url}: no dcgm-exporter series "
                     f"for expected device {uuid}") for uuid in missing]
        for gap in gaps:
            log.warning("%s", gap.describe())
        return UsageRead(
            table=pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA),
            devices=tuple(sorted(devices)),
            missing_devices=missing,
            gaps=tuple(gaps),
        )

    def _place(self, labels: Mapping[str, str]) -> tuple[str | None, str | None]:
        """(node, gpu_uuid) a series names, each None when it does not say."""
        node = next((labels[n] for n in self.node_labels if labels.get(n)), None)
        uuid = labels.get(UUID_LABEL) or None
        instance = labels.get(MIG_INSTANCE_LABEL, "")
        return node, (mig_device_id(uuid, instance) if uuid and instance else uuid)

    def _target_gaps(self, start: datetime, intervals: int, step_s: int,
                     served: Mapping[int, set[tuple[str, str]]]) -> list[Gap]:
        """Gaps for the intervals in which a dcgm-exporter target could not be scraped, or was
        scraped and served no series, each on the target's node (every node when the target
        has no node label)."""
        promql = TARGET_UP_QUERY.format(job=self.exporter_job, step_s=step_s,
                                        staleness_ms=round(self.staleness_s * 1000))
        gaps: list[Gap] = []
        errors: dict[tuple[str, str], str] | None = None
        for labels, points in self._range(promql, start, intervals, step_s):
            target = (labels.get("job", ""), labels.get("instance", ""))
            node = next((labels[n] for n in self.node_labels if labels.get(n)), None)
            name = f"dcgm-exporter target {target[1]} (job {target[0]})"
            failed = {k for k, up in points if up == 0}
            if failed and errors is None:
                errors = self._scrape_errors()
            problem = f"{name}: scrape failed (up == 0)"
            if errors and errors.get(target):
                problem += f": {errors[target]}"
            gaps += _runs(DCGM_SOURCE, self.cluster, node, None, start, step_s,
                          dict.fromkeys(sorted(failed), problem), GapReason.SCRAPE_FAILED)
            empty = {k for k, up in points if up > 0 and target not in served.get(k, set())}
            gaps += _runs(DCGM_SOURCE, self.cluster, node, None, start, step_s,
                          dict.fromkeys(sorted(empty), f"{name}: scraped, but served no DCGM "
                                        "series"), GapReason.NO_SERIES)
        return gaps

    def _scrape_errors(self) -> dict[tuple[str, str], str]:
        """(job, instance) -> the last scrape error, from the targets API. Only Prometheus has
        it (not Thanos or Mimir), and it only says why a failure happens now: it adds to a
        gap's message and is never needed."""
        with contextlib.suppress(requests.RequestException, PrometheusApiClientException,
                                 KeyError, TypeError, ValueError):
            targets = self._client.get_targets(state="active")["activeTargets"]
            return {(t["labels"].get("job", ""), t["labels"].get("instance", "")):
                    t.get("lastError", "") for t in targets}
        return {}

    def _device(self, devices: dict[str, _Device], labels: Mapping[str, str], metric: str
                ) -> _Device:
        uuid = labels.get(UUID_LABEL, "")
        where = f"Prometheus {self.url}: series {metric}{_format_labels(labels)}"
        if not uuid:
            raise PrometheusDataError(
                f"{where}: no {UUID_LABEL} label; keep dcgm-exporter's labels when relabelling"
            )
        # Every series is checked on its own, not only a device's first: a bad series is
        # quarantined alone whichever order Prometheus returns them in.
        instance = labels.get(MIG_INSTANCE_LABEL, "")
        gpu_uuid = mig_device_id(uuid, instance) if instance else uuid
        product = labels.get(MODEL_NAME_LABEL, "")
        if not product:
            raise PrometheusDataError(
                f"{where}: no {MODEL_NAME_LABEL} label, so the GPU product (and hardware tier) is "
                "unknown; keep dcgm-exporter's modelName label when relabelling"
            )
        node = next((labels[n] for n in self.node_labels if labels.get(n)), "")
        if not node:
            raise PrometheusDataError(
                f"{where}: none of the node labels {', '.join(self.node_labels)} is set; "
                "pass node_labels= naming the label that holds the node name"
            )
        profile = labels.get(MIG_PROFILE_LABEL) or None
        equivalents = Fraction(1)
        if instance:
            if profile is None:
                raise PrometheusDataError(f"{where}: {MIG_INSTANCE_LABEL} without "
                                          f"{MIG_PROFILE_LABEL}; cannot size the MIG instance")
            try:
                equivalents = mig_gpu_equivalents(profile, product)
            except UnknownMigProfile as exc:
                raise PrometheusDataError(f"{where}: {exc}") from exc
        if gpu_uuid in devices:
            return devices[gpu_uuid]
        device = _Device(
            gpu_uuid=gpu_uuid, node=node, product=product, mig_profile=profile,
            mig_key=(uuid, instance) if instance else None, gpu_equivalents=float(equivalents),
        )
        devices[gpu_uuid] = device
        return device

    def _device_rows(
        self,
        rows: list[dict[str, Any]],
        device: _Device,
        start: datetime,
        step_s: int,
        pods: Mapping[tuple[str, str], PodAttribution],
        mig_allocations: Mapping[MigKey, PodAttribution],
        namespace_tenants: Mapping[str, str],
        skip: set[int],
    ) -> list[int]:
        """Append the device's rows, except in the intervals `skip` (a quarantined series);
        returns the intervals between its first and last data that have none (no sample
        within the staleness window), which get no rows either: the exporter was not read
        then, and who held the device is not known."""
        with_data = sorted(device.present)
        capacity = step_s * device.gpu_equivalents
        unread = []
        for k in range(with_data[0], with_data[-1] + 1) if with_data else ():
            present = device.present.get(k)
            if present is None:
                unread.append(k)
                continue
            if k in skip:
                continue
            # Pod-labelled series name the holders; the device's unlabelled series (dcgm emits
            # one when no pod holds it) only counts when there are none.
            holders = {who for who in present if who != _NO_POD} or {_NO_POD}
            window_start = start + timedelta(seconds=k * step_s)
            share = capacity / len(holders)
            for who in sorted(holders):
                rows.append(self._row(
                    device, window_start, step_s, share,
                    device.activity.get(k, {}).get(who), device.memory_mib.get(k, {}).get(who),
                    self._attribution(device, who, pods, mig_allocations, namespace_tenants),
                    who,
                ))
        return unread

    @staticmethod
    def _attribution(
        device: _Device,
        who: tuple[str, str],
        pods: Mapping[tuple[str, str], PodAttribution],
        mig_allocations: Mapping[MigKey, PodAttribution],
        namespace_tenants: Mapping[str, str],
    ) -> PodAttribution | str:
        """The pod's attribution, or the reserved tenant when there is none."""
        if who != _NO_POD:
            known = pods.get(who)
            if known is not None:
                return known
            tenant = namespace_tenants.get(who[0], "").strip()
            return PodInfo(tenant, *who) if tenant else UNATTRIBUTED_TENANT
        if device.mig_key is not None:
            return mig_allocations.get(device.mig_key, UNATTRIBUTED_TENANT)
        return IDLE_TENANT

    def _row(
        self,
        device: _Device,
        window_start: datetime,
        step_s: int,
        allocated: float,
        activity: float | None,
        memory_mib: float | None,
        attribution: PodAttribution | str,
        who: tuple[str, str],
    ) -> dict[str, Any]:
        namespace, pod = who if who != _NO_POD else (None, None)
        if isinstance(attribution, str):
            tenant, pod_uid, model, params = attribution, None, None, None
            kind = WorkloadKind.IDLE.value if tenant == IDLE_TENANT else WorkloadKind.UNKNOWN.value
        else:
            tenant, pod_uid = attribution.tenant, attribution.pod_uid
            kind, model, params = (
                attribution.workload_kind, attribution.model, attribution.model_params_b
            )
            namespace, pod = namespace or attribution.namespace, pod or attribution.pod
        return {
            "sample_id": make_sample_id(
                DCGM_SOURCE, self.cluster, device.gpu_uuid, window_start.isoformat(), step_s,
                tenant, namespace, pod,
            ),
            "window_start": window_start,
            "duration_s": float(step_s),
            "cluster": self.cluster,
            "node": device.node,
            "gpu_uuid": device.gpu_uuid,
            "gpu_product": device.product,
            "mig_profile": device.mig_profile,
            "gpu_equivalents": device.gpu_equivalents,
            "tenant": tenant,
            "namespace": namespace,
            "pod": pod,
            "pod_uid": pod_uid,
            "workload_kind": kind,
            "model": model,
            "model_params_b": params,
            "allocated_gpu_seconds": allocated,
            "used_gpu_seconds": None if activity is None else allocated * activity,
            "memory_used_bytes": None if memory_mib is None else round(memory_mib * MIB),
            "source": DCGM_SOURCE,
        }

    # -- inference gateway -> request work ------------------------------------------------

    def request_rows(self, start: datetime, end: datetime, step_s: int) -> pa.Table:
        """Request work (REQUEST_WORK_SCHEMA) of `[start, end)`; see `read_requests`."""
        return self.read_requests(start, end, step_s).table

    def read_requests(self, start: datetime, end: datetime, step_s: int) -> RequestRead:
        """Request work (REQUEST_WORK_SCHEMA) per (interval, namespace, model, tenant).

        Per-tenant work comes from the gateway. The server's prefill and decode seconds of an
        endpoint-interval are split over the gateway's tenants of that endpoint-interval:
        prefill by their share of input tokens, decode by their share of output tokens (prefill
        time grows with prompt tokens, decode time with generated ones), so that the endpoint
        is apportioned by measured phase time. Server work with no gateway tenant in its
        interval is `__unattributed__`: served, and nobody to charge.

        Each counter sample adds its increase over the previous sample (a drop means the counter
        restarted from zero, as PromQL's increase() reads it) to the interval it falls in; the
        first sample of a series has no baseline and adds nothing. An interval gets a row when
        at least one increase fell in it, zero included: zero work is a measurement; a measure
        the source does not report stays null. A series that names no endpoint is quarantined
        alone (a gap for the read window)."""
        intervals = _interval_count(start, end, step_s)
        gaps: list[Gap] = []
        work: dict[_WorkKey, dict[str, float]] = {}
        latency: dict[_WorkKey, dict[str, dict[float, float]]] = {}
        if self.gateway is not None:
            work = self._read_work(self.gateway, start, intervals, step_s, gaps)
            latency = self._read_histograms(self.gateway, start, intervals, step_s, gaps)
        if self.server is not None:
            served = self._read_work(self.server, start, intervals, step_s, gaps)
            if self.gateway is None:
                work = served
                latency = self._read_histograms(self.server, start, intervals, step_s, gaps)
            else:
                _split_phases(work, served)
        rows = []
        for key in sorted(work.keys() | latency.keys()):
            k, namespace, model, tenant = key
            window_start = start + timedelta(seconds=k * step_s)
            measures = work.get(key, {})
            histograms = latency.get(key, {})
            rows.append({
                "sample_id": make_sample_id(
                    GATEWAY_SOURCE, self.cluster, namespace, model, tenant,
                    window_start.isoformat(), step_s,
                ),
                "window_start": window_start,
                "duration_s": float(step_s),
                "cluster": self.cluster,
                "namespace": namespace,
                "model": model,
                "tenant": tenant,
                **{m: _measure(m, measures.get(m)) for m in MEASURES},
                **{column: _buckets(histograms.get(column)) for column in HISTOGRAMS.values()},
                "source": GATEWAY_SOURCE,
            })
        return RequestRead(pa.Table.from_pylist(rows, schema=REQUEST_WORK_SCHEMA), tuple(gaps))

    def _read_work(self, mapping: RequestMetrics, start: datetime, intervals: int, step_s: int,
                   gaps: list[Gap]) -> dict[_WorkKey, dict[str, float]]:
        work: dict[_WorkKey, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        matchers = ",".join(f'{label}="{_promql_string(value)}"'
                            for label, value in sorted(mapping.extra.items()))
        for measure, metric in mapping.counters.items():
            selector = metric
            if matchers:
                selector = (f"{metric[:-1]},{matchers}}}" if metric.endswith("}")
                            else f"{metric}{{{matchers}}}")
            for labels, samples in self._raw_samples(selector, start, intervals * step_s):
                try:
                    endpoint = self._endpoint(mapping, metric, labels)
                except PrometheusDataError as exc:
                    gaps.append(Gap(GATEWAY_SOURCE, self.cluster, None, None, start,
                                    start + timedelta(seconds=intervals * step_s),
                                    GapReason.MALFORMED_SERIES, str(exc)))
                    log.warning("%s", gaps[-1].describe())
                    continue
                for ts_ms, increase in _increases(samples):
                    k = (ts_ms - _ms(start)) // (step_s * 1000)
                    if 0 <= k < intervals:
                        work[(k, *endpoint)][measure] += increase
        return work

    def read_endpoint_load(self, start: datetime, end: datetime, step_s: int) -> pa.Table:
        """The inference server's load (ENDPOINT_LOAD_SCHEMA) per endpoint and interval: the
        mean of its running and waiting gauges over the interval's samples (else the last
        sample within the staleness window; else null). Series naming no endpoint are left
        out: these are no billing figures, only the evidence of queueing."""
        if self.server is None or not self.server.gauges:
            return pa.Table.from_pylist([], schema=ENDPOINT_LOAD_SCHEMA)
        intervals = _interval_count(start, end, step_s)
        load: dict[tuple[int, str, str], dict[str, float]] = defaultdict(
            lambda: defaultdict(float))
        for column, metric in self.server.gauges.items():
            promql = INTERVAL_MEAN_QUERY.format(
                metric=metric, step_s=step_s, staleness_ms=round(self.staleness_s * 1000))
            for labels, points in self._range(promql, start, intervals, step_s):
                try:
                    namespace, model, _ = self._endpoint(self.server, metric, labels)
                except PrometheusDataError:
                    continue
                for k, value in points:
                    # Several engines (data-parallel ranks) of one endpoint add up.
                    load[(k, namespace, model)][column] += value
        rows = [{"window_start": start + timedelta(seconds=k * step_s),
                 "duration_s": float(step_s), "cluster": self.cluster, "namespace": namespace,
                 "model": model, "requests_running": values.get("requests_running"),
                 "requests_waiting": values.get("requests_waiting"), "source": GATEWAY_SOURCE}
                for (k, namespace, model), values in sorted(load.items())]
        return pa.Table.from_pylist(rows, schema=ENDPOINT_LOAD_SCHEMA)

    def _read_histograms(self, mapping: RequestMetrics, start: datetime, intervals: int,
                         step_s: int, gaps: list[Gap]
                         ) -> dict[_WorkKey, dict[str, dict[float, float]]]:
        """Per endpoint-interval and histogram column, the increase of each bucket (`le`)."""
        found: dict[_WorkKey, dict[str, dict[float, float]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(float)))
        matchers = ",".join(f'{label}="{_promql_string(value)}"'
                            for label, value in sorted(mapping.extra.items()))
        for kind, name in mapping.histograms.items():
            metric = f"{name}_bucket"
            selector = f"{metric}{{{matchers}}}" if matchers else metric
            for labels, samples in self._raw_samples(selector, start, intervals * step_s):
                try:
                    endpoint = self._endpoint(mapping, metric, labels)
                    le = float(labels["le"])
                except (PrometheusDataError, KeyError, ValueError) as exc:
                    gaps.append(Gap(GATEWAY_SOURCE, self.cluster, None, None, start,
                                    start + timedelta(seconds=intervals * step_s),
                                    GapReason.MALFORMED_SERIES,
                                    str(exc) if isinstance(exc, PrometheusDataError) else
                                    f"Prometheus {self.url}: bucket series "
                                    f"{metric}{_format_labels(labels)} has no numeric le"))
                    log.warning("%s", gaps[-1].describe())
                    continue
                for ts_ms, increase in _increases(samples):
                    k = (ts_ms - _ms(start)) // (step_s * 1000)
                    if 0 <= k < intervals:
                        found[(k, *endpoint)][HISTOGRAMS[kind]][le] += increase
        return found

    def _endpoint(self, mapping: RequestMetrics, metric: str,
                  labels: Mapping[str, str]) -> tuple[str, str, str]:
        names = [mapping.model_label] + ([mapping.namespace_label] if mapping.namespace_label
                                         else [])
        missing = [n for n in names if not labels.get(n)]
        if missing:
            raise PrometheusDataError(
                f"Prometheus {self.url}: {mapping.name} series {metric}{_format_labels(labels)} "
                f"has no {' or '.join(missing)} label; a shared endpoint is named by namespace "
                "and model: map the labels that name them (docs/collectors.md)"
            )
        namespace = labels[mapping.namespace_label] if mapping.namespace_label else (
            mapping.namespace or "")
        tenant = (labels.get(mapping.tenant_label) if mapping.tenant_label else None
                  ) or UNATTRIBUTED_TENANT
        return namespace, labels[mapping.model_label], tenant

    # -- Prometheus access ----------------------------------------------------------------

    def _range(
        self, promql: str, start: datetime, intervals: int, step_s: int
    ) -> Iterator[tuple[dict[str, str], list[tuple[int, float]]]]:
        """(labels, [(interval index, value)]) per series, in chunks Prometheus accepts."""
        for first in range(0, intervals, MAX_POINTS_PER_QUERY):
            count = min(MAX_POINTS_PER_QUERY, intervals - first)
            # Interval k is evaluated at its end, start + (k + 1) * step.
            eval_start = start + timedelta(seconds=(first + 1) * step_s)
            eval_end = start + timedelta(seconds=(first + count) * step_s)
            result = self._call(
                self._client.custom_query_range, promql, eval_start, eval_end, str(step_s)
            )
            for series in result:
                points = []
                for ts, value in series["values"]:
                    number = float(value)
                    if math.isnan(number):
                        continue
                    k = round((float(ts) - start.timestamp()) / step_s) - 1
                    if 0 <= k < intervals:
                        points.append((k, number))
                yield dict(series["metric"]), points

    def _raw_samples(
        self, selector: str, start: datetime, span_s: int
    ) -> Iterator[tuple[dict[str, str], list[tuple[int, float]]]]:
        """(labels, [(timestamp ms, value)]) per series over [start - staleness, start + span).

        Samples before `start` are only a baseline for the first increase. Chunks keep a long
        window's raw samples from arriving in one response."""
        by_series: dict[tuple[tuple[str, str], ...], list[tuple[int, float]]] = defaultdict(list)
        lookback = math.ceil(self.staleness_s)
        for offset in range(0, span_s, COUNTER_CHUNK_S):
            length = min(COUNTER_CHUNK_S, span_s - offset)
            # Ranges are closed on Prometheus 2.x: evaluate 1 ms before the chunk's end so that
            # a sample on the boundary is read once, by the next chunk.
            at = start + timedelta(seconds=offset + length) - timedelta(milliseconds=1)
            lead = lookback if offset == 0 else 0
            promql = RAW_SAMPLES_QUERY.format(selector=selector, range_s=length + lead)
            params = {"time": f"{at.timestamp():.3f}"}
            result = self._call(self._client.custom_query, promql, params)
            for series in result:
                labels = tuple(sorted(series["metric"].items()))
                by_series[labels].extend(
                    (round(float(ts) * 1000), float(v)) for ts, v in series.get("values", [])
                )
        for labels, samples in by_series.items():
            yield dict(labels), sorted(set(samples))

    def _call(self, request: Any, promql: str, *args: Any) -> list[dict[str, Any]]:
        try:
            result: list[dict[str, Any]] = request(promql, *args)
        except requests.RequestException as exc:
            raise PrometheusUnavailable(
                f"Prometheus at {self.url} did not answer ({type(exc).__name__}: {exc}); "
                "check that the URL is right and the server is up, then retry"
            ) from exc
        except PrometheusApiClientException as exc:
            raise PrometheusQueryError(
                f"Prometheus at {self.url} rejected query {promql!r}: {exc}"
            ) from exc
        return self._checked(result, promql)

    def _checked(self, result: Any, promql: str) -> list[dict[str, Any]]:
        """The answer's series with their samples as numbers, or PrometheusDataError naming
        the server and query: an answer we cannot read is never read as zero or idle."""
        series_list = []
        try:
            for series in result:
                labels = series["metric"]
                if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
                    raise ValueError(f"labels {labels!r} are not strings")
                values = [(float(ts), float(v)) for ts, v in series.get("values", [])]
                series_list.append({"metric": labels, "values": values})
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise PrometheusDataError(
                f"Prometheus at {self.url}: the answer to {promql!r} is not a matrix of "
                f"labelled samples ({type(exc).__name__}: {exc})"
            ) from None
        return series_list


class PrometheusCollector:
    """The reader as the agent's collector: each window's usage rows, request work, and what
    could not be read of them. Prometheus unreachable, or a query it rejects, is a gap for the
    whole cluster and window (the agent writes it), not an empty window."""

    def __init__(self, reader: PrometheusReader, step_s: int,
                 namespace_tenants: Mapping[str, str] | None = None) -> None:
        self.reader = reader
        self.step_s = step_s
        self.namespace_tenants = dict(namespace_tenants or {})
        self._gaps: dict[datetime, list[Gap]] = {}

    def _failed(self, source: str, start: datetime, end: datetime, exc: PrometheusError
                ) -> None:
        reason = (GapReason.SOURCE_UNREADABLE if isinstance(exc, PrometheusUnavailable)
                  else GapReason.COLLECTOR_FAILED)
        self._gaps.setdefault(start, []).append(
            Gap(source, self.reader.cluster, None, None, start, end, reason, str(exc)))

    def rows(self, window_start: datetime, duration_s: float) -> pa.Table:
        end = window_start + timedelta(seconds=duration_s)
        try:
            read = self.reader.read_usage(window_start, end, self.step_s,
                                          namespace_tenants=self.namespace_tenants)
        except PrometheusError as exc:
            self._gaps = {}
            self._failed(DCGM_SOURCE, window_start, end, exc)
            return pa.Table.from_pylist([], schema=LEDGER_SCHEMA)
        self._gaps = {window_start: list(read.gaps)}  # only this window waits for `gaps`
        return read.table

    def request_rows(self, window_start: datetime, duration_s: float) -> pa.Table:
        end = window_start + timedelta(seconds=duration_s)
        try:
            read = self.reader.read_requests(window_start, end, self.step_s)
        except PrometheusError as exc:
            self._failed(GATEWAY_SOURCE, window_start, end, exc)
            return pa.Table.from_pylist([], schema=REQUEST_WORK_SCHEMA)
        self._gaps.setdefault(window_start, []).extend(read.gaps)
        return read.table

    def gaps(self, window_start: datetime, _duration_s: float) -> list[Gap]:
        return self._gaps.pop(window_start, [])


def _runs(source: str, cluster: str, node: str | None, gpu_uuid: str | None, start: datetime,
          step_s: int, problems: Mapping[int, str], reason: GapReason) -> list[Gap]:
    """One gap per run of consecutive intervals (by index) with the same problem."""
    gaps = []
    ks = sorted(problems)
    first = 0
    for i, k in enumerate(ks):
        if i + 1 == len(ks) or ks[i + 1] != k + 1 or problems[ks[i + 1]] != problems[ks[first]]:
            gaps.append(Gap(source, cluster, node, gpu_uuid,
                            start + timedelta(seconds=ks[first] * step_s),
                            start + timedelta(seconds=(k + 1) * step_s),
                            reason, problems[ks[first]]))
            first = i + 1
    return gaps


def _increases(samples: Sequence[tuple[int, float]]) -> Iterator[tuple[int, float]]:
    """(timestamp ms, increase since the previous sample); a drop is a restart from zero."""
    for (_, before), (ts, value) in itertools.pairwise(samples):
        yield ts, value - before if value >= before else value


def _interval_count(start: datetime, end: datetime, step_s: int) -> int:
    for name, value in (("start", start), ("end", end)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name} {value.isoformat()} is naive: pass a UTC datetime")
    if not isinstance(step_s, int) or step_s < 1:
        raise ValueError(f"step_s must be a whole number of seconds >= 1, got {step_s!r}")
    if start.microsecond:
        raise ValueError(f"start {start.isoformat()} must fall on a whole second")
    if end <= start:
        raise ValueError(f"end {end.isoformat()} must be after start {start.isoformat()}")
    return int((end - start).total_seconds() // step_s)


def _ms(ts: datetime) -> int:
    return round(ts.astimezone(UTC).timestamp() * 1000)


def _clamp01(value: float) -> float:
    # DCGM's profiling ratios overshoot 1.0 by rounding now and then; used may not exceed
    # allocated.
    return min(max(value, 0.0), 1.0)


def _format_labels(labels: Mapping[str, str]) -> str:
    # last_over_time keeps the metric name that avg_over_time drops; it is said already.
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())
                          if k != "__name__") + "}"


def _promql_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _measure(name: str, value: float | None) -> float | int | None:
    """A measure as the schema holds it: counts are whole numbers, seconds are not."""
    if value is None:
        return None
    return round(value) if name in ("requests", "input_tokens", "output_tokens") else value


def _split_phases(work: dict[_WorkKey, dict[str, float]],
                  served: Mapping[_WorkKey, Mapping[str, float]]) -> None:
    """Give the gateway's tenants (`work`) the server's prefill and decode seconds of their
    endpoint-interval, in proportion to their input and output tokens; server work without
    a gateway tenant becomes `__unattributed__` work. Tenants whose tokens are unknown get no
    phase time, and then neither do the others of that endpoint-interval (apportioning some
    tenants by phases and others by another measure would compare unlike things)."""
    tenants: dict[tuple[int, str, str], list[_WorkKey]] = defaultdict(list)
    for key in work:
        tenants[key[:3]].append(key)
    for (k, namespace, model, _), measures in served.items():
        phases = {m: measures[m] for m in ("prefill_seconds", "decode_seconds") if m in measures}
        keys = tenants.get((k, namespace, model))
        if not keys:
            work[(k, namespace, model, UNATTRIBUTED_TENANT)] = dict(measures)
            continue
        if len(phases) < 2 or not all(
                "input_tokens" in work[key] and "output_tokens" in work[key] for key in keys):
            continue
        for phase, tokens in (("prefill_seconds", "input_tokens"),
                              ("decode_seconds", "output_tokens")):
            total = sum(work[key][tokens] for key in keys)
            for key in keys:
                work[key][phase] = phases[phase] * work[key][tokens] / total if total else 0.0


def _buckets(increases: Mapping[float, float] | None) -> list[dict[str, float | int]] | None:
    """An interval's histogram (LATENCY_BUCKETS) from its buckets' increases; summed over the
    series of a tenant (several keys or models' series fall into one endpoint-interval)."""
    if not increases:
        return None
    return [{"le": le, "count": round(increases[le])} for le in sorted(increases)]
