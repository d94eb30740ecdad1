"""Real public cluster traces (../shared/data) replayed as ledger rows in the spool.

Every trace counts time from its own start; all four are mapped onto one calendar so that
they bill like a real month: trace second 0 (or, for traces with wall-clock stamps, midnight
of their first day) is `TRACE_START`, 2026-05-01T00:00Z. Alibaba 2025 (31 days) and Helios
(May 2020, 31 days) then fill May 2026 exactly; Alibaba 2023 (~149 days) runs into September;
the GenAI trace (~24 days) falls in May. Hour boundaries of the trace stay hour boundaries.

Rows are one per (hour piece of an allocation interval, device), written with
`collectors.spool.write_batch` one batch per trace and UTC day (the spool splits it into hour
files). One spool folder per trace rather than per node or tenant: per-tenant batches would
write ~116,000 tiny files for Alibaba 2025 alone (0.85 ms of fsync each, and every reader
opening them all), per node 4.3 million for Alibaba 2023. The row's own `node` column keeps
the placement.

`expected_gpu_hours` recomputes each trace's GPU-hours per tenant straight from the raw CSV
with DuckDB, sharing no code with the importers, and `reconcile` compares the two."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Protocol

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm import tqdm

from collectors.spool import write_batch
from models.errors import InternalError, UserError
from models.ledger.usage import (
    DECODE_GPU_SECONDS_PER_TOKEN,
    IDLE_TENANT,
    LEDGER_SCHEMA,
    PREFILL_GPU_SECONDS_PER_TOKEN,
    REQUEST_WORK_SCHEMA,
    RESERVED_TENANTS,
    SHARED_TENANT,
    WorkloadKind,
    make_sample_id,
)

TRACE_START = datetime(2026, 5, 1, tzinfo=UTC)
HOUR_S = 3600
DAY_S = 86400
RECONCILE_TOLERANCE_PCT = 0.001

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


class TraceError(UserError):
    """A trace file that cannot be read as documented: names the file, row and field."""


@dataclass(frozen=True)
class Summary:
    """What an import wrote. `gpu_hours` is allocated GPU-hours of every tenant except
    `__idle__` (a shared endpoint's `__shared__` hours included)."""

    rows: int
    tenants: int
    start: datetime
    end: datetime
    gpu_hours: float
    idle_gpu_hours: float = 0.0
    request_rows: int = 0
    files: int = 0
    notes: tuple[str, ...] = ()


class Importer(Protocol):
    @property
    def name(self) -> str: ...

    def write(self, data_dir: Path, spool: Path, progress: bool = False) -> Summary: ...


# ---------------------------------------------------------------------------------------------
# Reading


def _read_csv(path: Path, columns: Sequence[str]) -> dict[str, list[Any]]:
    if not path.is_file():
        raise TraceError(f"{path}: trace file not found; is ../shared/data present?")
    table = pacsv.read_csv(path)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise TraceError(
            f"{path}: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(table.column_names)}"
        )
    return {c: table[c].to_pylist() for c in columns}


def _seconds(path: Path, row: int, name: str, value: Any) -> float | None:
    """A trace time in seconds, None when empty (NaN in the README's words)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if not isinstance(value, int | float) or value < 0:
        raise TraceError(f"{path}: row {row}: {name}: not seconds from trace start: {value!r}")
    return float(value)


def _csv_row(index: int) -> int:
    """The file's line number of data row `index` (header is line 1)."""
    return index + 2


# ---------------------------------------------------------------------------------------------
# Row building


def _at(origin: datetime, seconds: Floats) -> npt.NDArray[np.datetime64]:
    base = np.datetime64(origin.replace(tzinfo=None), "us")
    return base + np.round(seconds * 1e6).astype("timedelta64[us]")


def _strings(value: str | Sequence[str | None] | None, n: int) -> pa.Array:
    if value is None or isinstance(value, str):
        return pa.array([value] * n, pa.string())
    return pa.array(value, pa.string())


def _usage_table(
    *,
    origin: datetime,
    source: str,
    cluster: str,
    start_s: Floats,
    duration_s: Floats,
    node: Sequence[str],
    gpu_uuid: Sequence[str],
    gpu_product: str | Sequence[str],
    gpu_equivalents: Floats,
    tenant: str | Sequence[str],
    namespace: str | Sequence[str | None] | None,
    pod: Sequence[str | None] | None,
    workload_kind: str | Sequence[str],
    model: str | None,
    allocated: Floats,
) -> pa.Table:
    n = len(start_s)
    window = _at(origin, start_s)
    stamps = np.datetime_as_string(window, unit="us")
    tenants = [tenant] * n if isinstance(tenant, str) else list(tenant)
    pods = [None] * n if pod is None else list(pod)
    sample_ids = [
        make_sample_id(source, uuid, t, p, stamp)
        for uuid, t, p, stamp in zip(gpu_uuid, tenants, pods, stamps, strict=True)
    ]
    columns: dict[str, pa.Array] = {
        "sample_id": pa.array(sample_ids, pa.string()),
        "window_start": pa.array(window, LEDGER_SCHEMA.field("window_start").type),
        "duration_s": pa.array(duration_s, pa.float64()),
        "cluster": _strings(cluster, n),
        "node": _strings(node, n),
        "gpu_uuid": _strings(gpu_uuid, n),
        "gpu_product": _strings(gpu_product, n),
        "mig_profile": pa.nulls(n, pa.string()),
        "gpu_equivalents": pa.array(gpu_equivalents, pa.float64()),
        "tenant": _strings(tenants, n),
        "namespace": _strings(namespace, n),
        "pod": _strings(pods, n),
        "pod_uid": pa.nulls(n, pa.string()),
        "workload_kind": _strings(workload_kind, n),
        "model": _strings(model, n),
        "model_params_b": pa.nulls(n, pa.float64()),
        "allocated_gpu_seconds": pa.array(allocated, pa.float64()),
        "used_gpu_seconds": pa.nulls(n, pa.float64()),
        "memory_used_bytes": pa.nulls(n, pa.int64()),
        "source": _strings(source, n),
    }
    return pa.table(columns, schema=LEDGER_SCHEMA)


def _hour_pieces(
    start: Floats, end: Floats, day_start: float, span_end: float
) -> tuple[Ints, Floats, Floats]:
    """Intervals [start, end) cut at the hours of one day: (interval index, piece start,
    piece seconds) for every non-empty piece."""
    hours = day_start + HOUR_S * np.arange(24, dtype=np.float64)
    lo = np.maximum(start[:, None], hours[None, :])
    hi = np.minimum(np.minimum(end[:, None], hours[None, :] + HOUR_S), span_end)
    seconds = hi - lo
    index, hour = np.nonzero(seconds > 0)
    return index.astype(np.int64), lo[index, hour], seconds[index, hour]


@dataclass
class _Tally:
    """Running totals of what an importer wrote, for its Summary."""

    rows: int = 0
    request_rows: int = 0
    files: int = 0
    gpu_seconds: float = 0.0
    idle_seconds: float = 0.0
    tenants: set[str] = field(default_factory=set)

    def add(self, spool: Path, table: pa.Table, *, source: str, node: str, batch: str) -> None:
        if table.num_rows == 0:
            return
        self.files += len(write_batch(spool, table, kind="usage", source=source, node=node,
                                      batch=batch))
        self.rows += table.num_rows
        tenants = table["tenant"].to_numpy(zero_copy_only=False)
        allocated = table["allocated_gpu_seconds"].to_numpy()
        idle = tenants == IDLE_TENANT
        self.idle_seconds += float(allocated[idle].sum())
        self.gpu_seconds += float(allocated[~idle].sum())
        self.tenants.update(str(t) for t in np.unique(tenants) if t not in RESERVED_TENANTS)

    def summary(self, start: datetime, end: datetime, notes: Iterable[str] = ()) -> Summary:
        return Summary(
            rows=self.rows, tenants=len(self.tenants), start=start, end=end,
            gpu_hours=self.gpu_seconds / HOUR_S, idle_gpu_hours=self.idle_seconds / HOUR_S,
            request_rows=self.request_rows, files=self.files, notes=tuple(notes),
        )


def _days(span_end: float) -> range:
    return range(math.ceil(span_end / DAY_S))


def _day_batch(origin: datetime, day: int) -> str:
    return f"{origin + timedelta(days=day):%Y-%m-%d}"


# ---------------------------------------------------------------------------------------------
# Alibaba 2025: DLRM serving instances


@dataclass(frozen=True)
class Alibaba2025:
    """`disaggregated_DLRM_trace.csv`: each GPU instance (role HN) holds `gpu_request` whole
    GPUs from `scheduled_time` (empty: running before the trace, so from 0) to `deletion_time`
    (empty: still running, so to the trace's end, the largest time in the file). Apps are the
    tenants. The trace has no node placement and no capacity: every app gets a synthetic node
    `dlrm-<app>`, every instance GPU its own device, and there are no `__idle__` rows (no GPU
    is ever more than fully allocated, so conservation holds row by row).

    Hardware: the trace and its paper name no GPU model. `NVIDIA A10` is assumed: it is the
    inference GPU Alibaba has by far the most of in its other published 2025 inventory (the
    v2026 spot trace's node list: 2,494 A10 nodes of 4,278), and DLRM serving needs one modest
    GPU per instance."""

    name: ClassVar[str] = "alibaba-2025"
    file: ClassVar[str] = "alibaba/disaggregated_DLRM_trace.csv"
    product: str = "NVIDIA A10"
    start: datetime = TRACE_START

    def write(self, data_dir: Path, spool: Path, progress: bool = False) -> Summary:
        path = Path(data_dir) / self.file
        raw = _read_csv(path, ["instance_sn", "app_name", "gpu_request", "creation_time",
                               "scheduled_time", "deletion_time"])
        times = [(_seconds(path, _csv_row(i), name, v))
                 for name in ("creation_time", "scheduled_time", "deletion_time")
                 for i, v in enumerate(raw[name])]
        span_end = max(t for t in times if t is not None)
        instances: list[str] = []
        apps: list[str] = []
        begin: list[float] = []
        finish: list[float] = []
        for i, gpus in enumerate(raw["gpu_request"]):
            row = _csv_row(i)
            if gpus is None or gpus < 0 or gpus != int(gpus):
                raise TraceError(f"{path}: row {row}: gpu_request: not a GPU count: {gpus!r}")
            scheduled = _seconds(path, row, "scheduled_time", raw["scheduled_time"][i])
            deleted = _seconds(path, row, "deletion_time", raw["deletion_time"][i])
            s = 0.0 if scheduled is None else scheduled
            e = span_end if deleted is None else deleted
            if e < s:
                raise TraceError(f"{path}: row {row}: deletion_time {e} is before "
                                 f"scheduled_time {s}")
            for k in range(int(gpus)):
                instances.append(f"{raw['instance_sn'][i]}/gpu{k}")
                apps.append(str(raw["app_name"][i]))
                begin.append(s)
                finish.append(e)
        start, end = np.array(begin), np.array(finish)
        owner = np.array(apps, dtype=object)
        device = np.array(instances, dtype=object)
        tally = _Tally()
        source = f"trace:{self.name}"
        for day in tqdm(_days(span_end), desc=self.name, disable=not progress, unit="day"):
            index, piece_start, seconds = _hour_pieces(start, end, day * DAY_S, span_end)
            table = _usage_table(
                origin=self.start, source=source, cluster=self.name,
                start_s=piece_start, duration_s=seconds,
                node=[f"dlrm-{a}" for a in owner[index]],
                gpu_uuid=[f"GPU-{d}" for d in device[index]],
                gpu_product=self.product, gpu_equivalents=np.ones(len(index)),
                tenant=list(owner[index]), namespace=list(owner[index]),
                pod=[d.split("/")[0] for d in device[index]],
                workload_kind=WorkloadKind.INFERENCE.value, model="dlrm",
                allocated=seconds,
            )
            tally.add(spool, table, source=source, node=self.name,
                      batch=_day_batch(self.start, day))
        return tally.summary(self.start, self.start + timedelta(seconds=span_end))


# ---------------------------------------------------------------------------------------------
# Alibaba 2023: GPU-sharing pods on a heterogeneous cluster

ALIBABA_2023_PRODUCTS = {
    "P100": "Tesla P100-PCIE-16GB",
    "T4": "Tesla T4",
    "V100M16": "Tesla V100-SXM2-16GB",
    "V100M32": "Tesla V100-SXM2-32GB",
    "A10": "NVIDIA A10",
    # G1-G3 are "undisclosed internal GPU codes" (the trace's README): products of their own,
    # so a rate card must price them explicitly rather than guess.
    "G1": "Alibaba-G1",
    "G2": "Alibaba-G2",
    "G3": "Alibaba-G3",
}
"""The trace's GPU `model` codes as product names (P100 nodes hold 2 GPUs: PCIe boards)."""

ALIBABA_2023_KINDS = {"LS": WorkloadKind.INFERENCE, "BE": WorkloadKind.BATCH}
OVERFLOW_NODE = "alibaba-2023-overflow"
MILLI = 1000


@dataclass(frozen=True)
class _Placement:
    pod: int
    device: int


@dataclass(frozen=True)
class Alibaba2023:
    """`openb_pod_list_default.csv` on `openb_node_list_gpu_node.csv`.

    A pod holds `gpu_milli/1000` of each of `num_gpu` GPUs from `scheduled_time` to
    `deletion_time` (empty: to the trace's end, the largest time in the pod list); pods never
    scheduled (Pending, no `scheduled_time`) held nothing and are counted in the summary's
    notes. Placement replays the trace in time order (at equal times, departures first) with
    first-fit over devices in node-list order: a one-GPU pod takes the first device of an
    allowed model with `gpu_milli` free; a multi-GPU pod takes the first node with `num_gpu`
    such devices. A pod that fits nowhere is packed the same way onto devices of the synthetic
    node `alibaba-2023-overflow`, opened as needed (they get `__idle__` rows too, so
    conservation still holds, and count as capacity the node list does not have) and is
    reported in the notes; on the real default trace none overflow.

    Tenants: the trace has none; its QoS class stands in (`qos-ls`, `qos-be`, `qos-burstable`,
    `qos-guaranteed`), LS as inference and BE as batch work. `__idle__` rows fill every device
    of the node list, every hour of [0, trace end), so that allocated + idle = the node list's
    GPUs x the span."""

    name: ClassVar[str] = "alibaba-2023"
    pods_file: ClassVar[str] = "alibaba/openb_pod_list_default.csv"
    nodes_file: ClassVar[str] = "alibaba/openb_node_list_gpu_node.csv"
    start: datetime = TRACE_START

    def write(self, data_dir: Path, spool: Path, progress: bool = False) -> Summary:
        pods_path = Path(data_dir) / self.pods_file
        nodes_path = Path(data_dir) / self.nodes_file
        nodes = _read_csv(nodes_path, ["sn", "gpu", "model"])
        pods = _read_csv(pods_path, ["name", "num_gpu", "gpu_milli", "gpu_spec", "qos",
                                     "creation_time", "deletion_time", "scheduled_time"])
        dev_node: list[str] = []
        dev_model: list[str] = []
        for i, (sn, gpus, model) in enumerate(zip(nodes["sn"], nodes["gpu"], nodes["model"],
                                                  strict=True)):
            if model not in ALIBABA_2023_PRODUCTS:
                raise TraceError(
                    f"{nodes_path}: row {_csv_row(i)}: model: unknown GPU model {model!r}; "
                    f"known: {', '.join(ALIBABA_2023_PRODUCTS)}"
                )
            if not isinstance(gpus, int) or gpus <= 0:
                raise TraceError(f"{nodes_path}: row {_csv_row(i)}: gpu: not a GPU count: "
                                 f"{gpus!r}")
            dev_node += [str(sn)] * gpus
            dev_model += [str(model)] * gpus
        listed_devices = len(dev_node)

        times = [t for name in ("creation_time", "deletion_time", "scheduled_time")
                 for i, v in enumerate(pods[name])
                 if (t := _seconds(pods_path, _csv_row(i), name, v)) is not None]
        span_end = max(times)

        runs: list[tuple[int, float, float]] = []
        never_scheduled = 0
        for i, gpus in enumerate(pods["num_gpu"]):
            row = _csv_row(i)
            if not isinstance(gpus, int) or gpus < 0:
                raise TraceError(f"{pods_path}: row {row}: num_gpu: not a GPU count: {gpus!r}")
            milli = pods["gpu_milli"][i]
            if gpus and (not isinstance(milli, int) or not 0 < milli <= MILLI):
                raise TraceError(f"{pods_path}: row {row}: gpu_milli: must be 1..1000 for a "
                                 f"GPU pod, got {milli!r}")
            scheduled = _seconds(pods_path, row, "scheduled_time", pods["scheduled_time"][i])
            deleted = _seconds(pods_path, row, "deletion_time", pods["deletion_time"][i])
            if gpus == 0:
                continue
            if scheduled is None:
                never_scheduled += 1
                continue
            end = span_end if deleted is None else deleted
            if end < scheduled:
                raise TraceError(f"{pods_path}: row {row}: deletion_time {end} is before "
                                 f"scheduled_time {scheduled}")
            if end > scheduled:
                runs.append((i, scheduled, end))

        placements, overflowed = self._place(runs, pods, dev_node, dev_model, pods_path)
        notes = [f"{never_scheduled} GPU pods never scheduled (no scheduled_time): not billed"]
        if overflowed:
            notes.append(f"{len(overflowed)} pods did not fit the node list and ran on "
                         f"{OVERFLOW_NODE}: {', '.join(overflowed[:10])}")

        n_dev = len(dev_node)
        products = np.array([ALIBABA_2023_PRODUCTS[m] for m in dev_model], dtype=object)
        uuids = np.array([f"GPU-{node}-{k}" for node, k in _device_slots(dev_node)], dtype=object)
        nodes_arr = np.array(dev_node, dtype=object)
        p_pod = np.array([p.pod for p in placements], dtype=np.int64)
        p_dev = np.array([p.device for p in placements], dtype=np.int64)
        run_of = {i: (s, e) for i, s, e in runs}
        p_start = np.array([run_of[p.pod][0] for p in placements])
        p_end = np.array([run_of[p.pod][1] for p in placements])
        milli_of = np.array(pods["gpu_milli"], dtype=object)
        p_milli = np.array([milli_of[p.pod] for p in placements], dtype=np.int64)
        names = np.array(pods["name"], dtype=object)
        qos = [str(q) for q in pods["qos"]]
        tenant_of = np.array([f"qos-{q.lower()}" for q in qos], dtype=object)
        kind_of = np.array([ALIBABA_2023_KINDS.get(q, WorkloadKind.UNKNOWN).value for q in qos],
                           dtype=object)

        tally = _Tally()
        source = f"trace:{self.name}"
        for day in tqdm(_days(span_end), desc=self.name, disable=not progress, unit="day"):
            day_start = day * DAY_S
            live = np.flatnonzero((p_start < day_start + DAY_S) & (p_end > day_start))
            index, piece_start, seconds = _hour_pieces(p_start[live], p_end[live], day_start,
                                                       span_end)
            chosen = live[index]
            pod_ix, dev_ix, share = p_pod[chosen], p_dev[chosen], p_milli[chosen]
            # Every row of a device-hour shares the hour's window and the device's 1.0
            # GPU-equivalents; a pod's fraction and its part of the hour are in `allocated`.
            window = day_start + HOUR_S * ((piece_start - day_start) // HOUR_S)
            window_len = np.minimum(window + HOUR_S, span_end) - window
            pod_rows = _usage_table(
                origin=self.start, source=source, cluster=self.name,
                start_s=window, duration_s=window_len,
                node=list(nodes_arr[dev_ix]), gpu_uuid=list(uuids[dev_ix]),
                gpu_product=list(products[dev_ix]), gpu_equivalents=np.ones(len(chosen)),
                tenant=list(tenant_of[pod_ix]), namespace="openb",
                pod=list(names[pod_ix]), workload_kind=list(kind_of[pod_ix]), model=None,
                allocated=seconds * share / MILLI,
            )
            # Idle per device-hour in integer milli-GPU-seconds: trace times and shares are
            # integers, so "fully allocated" is exactly zero idle, not a float crumb.
            hour_of = ((piece_start - day_start) // HOUR_S).astype(np.int64)
            used = np.zeros((n_dev, 24), dtype=np.int64)
            np.add.at(used, (dev_ix, hour_of), np.round(seconds * share).astype(np.int64))
            hour_starts = day_start + HOUR_S * np.arange(24, dtype=np.float64)
            hour_len = np.clip(np.minimum(hour_starts + HOUR_S, span_end) - hour_starts, 0, None)
            idle = np.round(hour_len * MILLI).astype(np.int64)[None, :] - used
            if (idle < 0).any():
                d, h = np.argwhere(idle < 0)[0]
                raise AssertionError(f"device {uuids[d]} over-allocated in hour {h} of day "
                                     f"{day}: placement is broken")
            d_ix, h_ix = np.nonzero(idle > 0)
            idle_rows = _usage_table(
                origin=self.start, source=source, cluster=self.name,
                start_s=hour_starts[h_ix], duration_s=hour_len[h_ix],
                node=list(nodes_arr[d_ix]), gpu_uuid=list(uuids[d_ix]),
                gpu_product=list(products[d_ix]), gpu_equivalents=np.ones(len(d_ix)),
                tenant=IDLE_TENANT, namespace=None, pod=None,
                workload_kind=WorkloadKind.IDLE.value, model=None,
                allocated=idle[d_ix, h_ix] / MILLI,
            )
            tally.add(spool, pa.concat_tables([pod_rows, idle_rows]), source=source,
                      node=self.name, batch=_day_batch(self.start, day))
        if n_dev > listed_devices:
            notes.append(f"{n_dev - listed_devices} overflow devices added to the node list's "
                         f"{listed_devices}")
        return tally.summary(self.start, self.start + timedelta(seconds=span_end), notes)

    @staticmethod
    def _place(
        runs: list[tuple[int, float, float]],
        pods: Mapping[str, list[Any]],
        dev_node: list[str],
        dev_model: list[str],
        path: Path,
    ) -> tuple[list[_Placement], list[str]]:
        """First-fit placement in event order; grows dev_node/dev_model with overflow devices."""
        free = np.full(len(dev_node), MILLI, dtype=np.int64)
        models = np.array(dev_model, dtype=object)
        node_ids = np.unique(np.array(dev_node, dtype=object), return_inverse=True)[1]
        events = sorted([(s, 1, i) for i, s, _ in runs] + [(e, 0, i) for i, _, e in runs])
        held: dict[int, list[int]] = {}
        placements: list[_Placement] = []
        overflowed: list[str] = []
        for _, arriving, i in events:
            milli = int(pods["gpu_milli"][i])
            if not arriving:
                for d in held.pop(i):
                    free[d] += milli
                continue
            gpus = int(pods["num_gpu"][i])
            spec = pods["gpu_spec"][i]
            allowed = str(spec).split("|") if spec else None
            if allowed and not set(allowed) <= ALIBABA_2023_PRODUCTS.keys():
                raise TraceError(f"{path}: row {_csv_row(i)}: gpu_spec: unknown GPU model in "
                                 f"{spec!r}; known: {', '.join(ALIBABA_2023_PRODUCTS)}")
            fits = free[: len(models)] >= milli
            if allowed:
                fits &= np.isin(models, allowed)
            chosen: list[int] = []
            if gpus == 1:
                candidates = np.flatnonzero(fits)
                chosen = [int(candidates[0])] if len(candidates) else []
            else:
                per_node = np.bincount(node_ids[fits], minlength=node_ids.max() + 1)
                roomy = np.flatnonzero(per_node >= gpus)
                if len(roomy):
                    chosen = [int(d) for d in np.flatnonzero(fits & (node_ids == roomy[0]))[:gpus]]
            if not chosen:
                # First fit again over the overflow node's devices (all on one node), opening
                # new ones only when those are full; they carry the model of the pod that
                # opened them.
                overflowed.append(str(pods["name"][i]))
                spare = len(models) + np.flatnonzero(free[len(models):] >= milli)
                if len(spare) >= gpus:
                    chosen = [int(d) for d in spare[:gpus]]
                else:
                    model = allowed[0] if allowed else "G2"
                    chosen = list(range(len(dev_node), len(dev_node) + gpus))
                    dev_node += [OVERFLOW_NODE] * gpus
                    dev_model += [model] * gpus
                    free = np.append(free, np.full(gpus, MILLI, dtype=np.int64))
            for d in chosen:
                free[d] -= milli
                placements.append(_Placement(i, d))
            held[i] = chosen
        return placements, overflowed


def _device_slots(dev_node: Sequence[str]) -> Iterator[tuple[str, int]]:
    counts: dict[str, int] = {}
    for node in dev_node:
        k = counts.get(node, 0)
        counts[node] = k + 1
        yield node, k


# ---------------------------------------------------------------------------------------------
# Alibaba GenAI 2026: one shared Stable Diffusion endpoint


@dataclass(frozen=True)
class AlibabaGenAI:
    """`lora_request_trace.csv` as one shared endpoint (namespace `genai-shared`, model
    `stable-diffusion`) serving the trace's `groupId`s as tenants.

    A request runs from `gmt_create` for `exec_time_seconds` (requests with no execution
    time, e.g. PENDING, did no work; FAILED ones did and count). Request work is written per
    tenant per UTC hour (REQUEST_WORK_SCHEMA, pieces of requests crossing an hour in each).
    The endpoint holds N whole GPUs every hour from the hour of the first request to the end
    of the hour of the last request's end, written as `__shared__` rows; N is the trace's peak
    number of requests running at once (a Stable Diffusion pipeline runs a request on one
    GPU, so fewer GPUs could not have served the trace). The pipeline apportions each hour's
    GPU-seconds to tenants by request work; hours without requests stay `__shared_idle__`.

    `gmt_create` stamps are anonymized wall-clock times, read as UTC and shifted by whole
    days so that midnight of the first request's day is `start`. Hardware: `NVIDIA A10`,
    the GPU Alibaba serves most inference on in its published 2025-26 inventories."""

    name: ClassVar[str] = "alibaba-genai"
    file: ClassVar[str] = "alibaba/lora_request_trace.csv"
    namespace: ClassVar[str] = "genai-shared"
    model: ClassVar[str] = "stable-diffusion"
    product: str = "NVIDIA A10"
    start: datetime = TRACE_START

    def write(self, data_dir: Path, spool: Path, progress: bool = False) -> Summary:
        path = Path(data_dir) / self.file
        raw = _read_csv(path, ["gmt_create", "exec_time_seconds", "groupId"])
        stamps: list[datetime] = []
        for i, stamp in enumerate(raw["gmt_create"]):
            if not isinstance(stamp, datetime):
                raise TraceError(f"{path}: row {_csv_row(i)}: gmt_create: not a timestamp: "
                                 f"{stamp!r}")
            stamps.append(stamp.replace(tzinfo=UTC))
        if not stamps:
            raise TraceError(f"{path}: no requests")
        first_day = min(stamps).replace(hour=0, minute=0, second=0, microsecond=0)
        begin: list[float] = []
        finish: list[float] = []
        groups: list[str] = []
        for i, (stamp, seconds, group) in enumerate(zip(stamps, raw["exec_time_seconds"],
                                                        raw["groupId"], strict=True)):
            row = _csv_row(i)
            if seconds is None or math.isnan(seconds) or seconds < 0:
                raise TraceError(f"{path}: row {row}: exec_time_seconds: not a duration: "
                                 f"{seconds!r}")
            if not group:
                raise TraceError(f"{path}: row {row}: groupId: empty")
            if seconds == 0:
                continue
            s = (stamp - first_day).total_seconds()
            begin.append(s)
            finish.append(s + seconds)
            groups.append(str(group))
        start, end = np.array(begin), np.array(finish)
        gpus = _peak_concurrency(start, end)
        span_start = math.floor(start.min() / HOUR_S) * HOUR_S
        span_end = math.ceil(end.max() / HOUR_S) * HOUR_S
        owner = np.array(groups, dtype=object)

        tally = _Tally()
        source = f"trace:{self.name}"
        first, last = span_start // DAY_S, math.ceil(span_end / DAY_S)
        for day in tqdm(range(first, last), desc=self.name, disable=not progress, unit="day"):
            day_start = day * DAY_S
            hours = day_start + HOUR_S * np.arange(24, dtype=np.float64)
            hours = hours[(hours >= span_start) & (hours < span_end)]
            slots = np.repeat(np.arange(gpus), len(hours))
            shared = _usage_table(
                origin=self.start, source=source, cluster=self.name,
                start_s=np.tile(hours, gpus), duration_s=np.full(len(slots), float(HOUR_S)),
                node=["genai-endpoint"] * len(slots),
                gpu_uuid=[f"GPU-genai-endpoint-{k}" for k in slots],
                gpu_product=self.product, gpu_equivalents=np.ones(len(slots)),
                tenant=SHARED_TENANT, namespace=self.namespace,
                pod=[f"stable-diffusion-{k}" for k in slots],
                workload_kind=WorkloadKind.INFERENCE.value, model=self.model,
                allocated=np.full(len(slots), float(HOUR_S)),
            )
            tally.add(spool, shared, source=source, node=self.name,
                      batch=_day_batch(self.start, day))
            index, piece_start, seconds = _hour_pieces(start, end, day_start, span_end)
            work = self._work_table(owner[index], piece_start, seconds, source)
            if work.num_rows:
                tally.files += len(write_batch(spool, work, kind="requests", source=source,
                                               node=self.name, batch=_day_batch(self.start, day)))
                tally.request_rows += work.num_rows
        tally.tenants.update(groups)
        return tally.summary(self.start + timedelta(seconds=span_start),
                             self.start + timedelta(seconds=span_end),
                             [f"endpoint of {gpus} GPUs (peak concurrent requests)"])

    def _work_table(
        self, owner: npt.NDArray[Any], piece_start: Floats, seconds: Floats, source: str
    ) -> pa.Table:
        hour = np.floor(piece_start / HOUR_S) * HOUR_S
        per: dict[tuple[float, str], float] = {}
        for h, tenant, s in zip(hour.tolist(), owner.tolist(), seconds.tolist(), strict=True):
            per[(h, tenant)] = per.get((h, tenant), 0.0) + s
        keys = sorted(per)
        window = _at(self.start, np.array([h for h, _ in keys], dtype=np.float64))
        stamps = np.datetime_as_string(window, unit="us")
        n = len(keys)
        unmeasured = {name: pa.nulls(n, REQUEST_WORK_SCHEMA.field(name).type) for name in (
            "requests", "prefill_seconds", "decode_seconds", "input_tokens", "output_tokens",
            "latency_buckets", "ttft_buckets")}
        return pa.table(
            {
                **unmeasured,
                "sample_id": [make_sample_id(source, self.namespace, self.model, t, stamp)
                              for (_, t), stamp in zip(keys, stamps, strict=True)],
                "window_start": pa.array(window, REQUEST_WORK_SCHEMA.field("window_start").type),
                "duration_s": [float(HOUR_S)] * n,
                "cluster": [self.name] * n,
                "namespace": [self.namespace] * n,
                "model": [self.model] * n,
                "tenant": [t for _, t in keys],
                "request_seconds": [per[k] for k in keys],
                "source": [source] * n,
            },
            schema=REQUEST_WORK_SCHEMA,
        )


def _peak_concurrency(start: Floats, end: Floats) -> int:
    # At equal times a request ending frees its GPU before the next one starts ([start, end)).
    times = np.concatenate([start, end])
    delta = np.concatenate([np.ones(len(start)), -np.ones(len(end))])
    order = np.lexsort((delta, times))
    return int(np.cumsum(delta[order]).max())


# ---------------------------------------------------------------------------------------------
# Helios (SenseTime Earth, May 2020): per-minute running GPUs per virtual cluster

_HELIOS_VC = re.compile(r"^(?P<vc>.+)_cluster_sequence_vc\.csv$")
HELIOS_EPOCH = datetime(2020, 5, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Helios:
    """`helios/earth_vcs/<vc>_cluster_sequence_vc.csv`: each virtual cluster (the file's VC
    name is the tenant) has a quota of `total_gpu_num` GPUs and `running_gpu_num` of them busy
    in each minute. The quota's GPUs are the VC's devices (`<vc>-gpu000`..., eight to a node,
    as Helios nodes hold 8 V100s); in a minute with r GPUs running, devices 0..r-1 are
    allocated and the rest idle, so per device and hour allocated + `__idle__` = 3600 s.
    A minute with more running GPUs than quota cannot be drawn on the quota's devices and is
    rejected with its row (never the case in the published Earth files).

    Minute stamps (2020-05-01 00:00 ..) are shifted so that 2020-05-01 is `start`."""

    name: ClassVar[str] = "helios"
    folder: ClassVar[str] = "helios/earth_vcs"
    product: str = "Tesla V100-SXM2-32GB"
    start: datetime = TRACE_START

    def write(self, data_dir: Path, spool: Path, progress: bool = False) -> Summary:
        files = sorted((Path(data_dir) / self.folder).glob("*_cluster_sequence_vc.csv"))
        if not files:
            raise TraceError(f"{Path(data_dir) / self.folder}: no *_cluster_sequence_vc.csv files")
        vcs = []
        for path in files:
            match = _HELIOS_VC.match(path.name)
            assert match is not None  # the glob above
            vcs.append((match["vc"], *self._read(path)))
        span_end = max((int(minute.max()) + 1) * 60.0 for _, minute, _, _ in vcs)
        tally = _Tally()
        source = f"trace:{self.name}"
        for day in tqdm(_days(span_end), desc=self.name, disable=not progress, unit="day"):
            tables = []
            for vc, minute, quota, running in vcs:
                in_day = minute // (24 * 60) == day
                h_local = minute[in_day] // 60 - day * 24
                # Busy minutes per (hour, device k): minutes of the hour with running > k.
                busy = np.zeros((24, quota), dtype=np.int64)
                np.add.at(busy, h_local, running[in_day][:, None] > np.arange(quota)[None, :])
                present = np.bincount(h_local, minlength=24)  # minutes the file has per hour
                for tenant, minutes in ((vc, busy), (IDLE_TENANT, present[:, None] - busy)):
                    h_ix, k_ix = np.nonzero(minutes > 0)
                    tables.append(_usage_table(
                        origin=self.start, source=source, cluster=self.name,
                        start_s=(day * 24 + h_ix) * float(HOUR_S),
                        duration_s=(present[h_ix] * 60.0).astype(np.float64),
                        node=[f"{vc}-node{k // 8:02d}" for k in k_ix],
                        gpu_uuid=[f"GPU-{vc}-{k:03d}" for k in k_ix],
                        gpu_product=self.product, gpu_equivalents=np.ones(len(h_ix)),
                        tenant=tenant, namespace=vc if tenant == vc else None, pod=None,
                        workload_kind=(WorkloadKind.TRAINING if tenant == vc
                                       else WorkloadKind.IDLE).value,
                        model=None, allocated=(minutes[h_ix, k_ix] * 60.0).astype(np.float64),
                    ))
            tally.add(spool, pa.concat_tables(tables), source=source, node=self.name,
                      batch=_day_batch(self.start, day))
        return tally.summary(self.start, self.start + timedelta(seconds=span_end))

    def _read(self, path: Path) -> tuple[Ints, int, Ints]:
        raw = _read_csv(path, ["time", "total_gpu_num", "running_gpu_num"])
        minutes: list[int] = []
        quotas = set()
        for i, (stamp, quota, running) in enumerate(zip(raw["time"], raw["total_gpu_num"],
                                                        raw["running_gpu_num"], strict=True)):
            row = _csv_row(i)
            if not isinstance(stamp, datetime):
                raise TraceError(f"{path}: row {row}: time: not a timestamp: {stamp!r}")
            offset = (stamp.replace(tzinfo=UTC) - HELIOS_EPOCH).total_seconds()
            if offset < 0 or offset % 60:
                raise TraceError(f"{path}: row {row}: time: {stamp} is not a whole minute "
                                 f"from {HELIOS_EPOCH:%Y-%m-%d}")
            if not isinstance(running, int) or running < 0:
                raise TraceError(f"{path}: row {row}: running_gpu_num: not a GPU count: "
                                 f"{running!r}")
            if not isinstance(quota, int) or running > quota:
                raise TraceError(f"{path}: row {row}: running_gpu_num {running} exceeds the "
                                 f"VC's quota total_gpu_num {quota}; the quota's devices "
                                 "cannot hold it")
            minutes.append(int(offset // 60))
            quotas.add(quota)
        if len(quotas) != 1:
            raise TraceError(f"{path}: total_gpu_num: the quota changes ({sorted(quotas)}); "
                             "one device set per VC needs one quota")
        if len(set(minutes)) != len(minutes):
            raise TraceError(f"{path}: time: duplicate minutes")
        return (np.array(minutes, dtype=np.int64), quotas.pop(),
                np.array(raw["running_gpu_num"], dtype=np.int64))


# ---------------------------------------------------------------------------------------------
# Azure LLM inference 2023 (Splitwise): two services' requests with their tokens


@dataclass(frozen=True)
class AzureLLM:
    """`AzureLLMInferenceTrace_{code,conv}.csv` as one shared endpoint (namespace `llm-shared`,
    model `llama-2-70b`, 70B parameters) serving the two services as tenants `code` and
    `conversation`: the Splitwise paper's setup, Llama-2-70B on 8 x H100 DGX servers.

    The trace has each request's arrival and its input (context) and output (generated)
    tokens, no latency. GPU time comes from the cost model of models/ledger/usage.py:
    `PREFILL_GPU_SECONDS_PER_TOKEN` per input token and `DECODE_GPU_SECONDS_PER_TOKEN` per
    output token; a request's work counts in the minute it arrived. Request work is written
    per tenant per minute (REQUEST_WORK_SCHEMA: requests, tokens, and the model's prefill and
    decode GPU-seconds; request seconds null: not in the trace). The endpoint holds whole
    8-GPU servers, as many as the busiest minute's modelled work needs, every minute from the
    first request's minute to the last one's end (`__shared__` rows of 60 s); minutes
    without requests stay `__shared_idle__`.

    Timestamps are UTC wall-clock times, shifted by whole days so that the trace's first day
    is `start`'s: minute boundaries are the trace's own."""

    name: ClassVar[str] = "azure-llm"
    files: ClassVar[dict[str, str]] = {"code": "azure-llm/AzureLLMInferenceTrace_code.csv",
                                       "conversation": "azure-llm/AzureLLMInferenceTrace_conv.csv"}
    namespace: ClassVar[str] = "llm-shared"
    model: ClassVar[str] = "llama-2-70b"
    gpus_per_server: ClassVar[int] = 8
    interval_s: ClassVar[int] = 60
    product: str = "NVIDIA H100 80GB HBM3"
    start: datetime = TRACE_START

    def read(self, data_dir: Path) -> tuple[datetime, dict[str, tuple[Floats, Ints, Ints]]]:
        """The first request's UTC day and, per tenant, each request's seconds after it,
        input tokens and output tokens."""
        stamps: dict[str, list[datetime]] = {}
        tokens: dict[str, tuple[list[int], list[int]]] = {}
        for tenant, name in self.files.items():
            path = Path(data_dir) / name
            raw = _read_csv(path, ["TIMESTAMP", "ContextTokens", "GeneratedTokens"])
            stamps[tenant] = []
            tokens[tenant] = ([], [])
            for i, (stamp, given, generated) in enumerate(zip(
                    raw["TIMESTAMP"], raw["ContextTokens"], raw["GeneratedTokens"], strict=True)):
                row = _csv_row(i)
                try:
                    at = (stamp if isinstance(stamp, datetime)
                          else datetime.fromisoformat(str(stamp)))
                except ValueError:
                    raise TraceError(f"{path}: row {row}: TIMESTAMP: not a timestamp: "
                                     f"{stamp!r}") from None
                stamps[tenant].append(at.replace(tzinfo=UTC))
                for field_name, value, out in (("ContextTokens", given, tokens[tenant][0]),
                                               ("GeneratedTokens", generated, tokens[tenant][1])):
                    # One bad cell makes the CSV reader type the whole column as text.
                    if isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
                        value = int(value)
                    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                        raise TraceError(f"{path}: row {row}: {field_name}: not a token "
                                         f"count: {value!r}")
                    out.append(value)
            if not stamps[tenant]:
                raise TraceError(f"{path}: no requests")
        first_day = min(min(v) for v in stamps.values()).replace(
            hour=0, minute=0, second=0, microsecond=0)
        return first_day, {
            t: (np.array([(s - first_day).total_seconds() for s in stamps[t]]),
                np.array(tokens[t][0], dtype=np.int64), np.array(tokens[t][1], dtype=np.int64))
            for t in stamps}

    def write(self, data_dir: Path, spool: Path, progress: bool = False) -> Summary:
        _, requests = self.read(data_dir)
        step = self.interval_s
        minutes: dict[tuple[int, str], list[float]] = {}
        for tenant, (arrival, given, generated) in requests.items():
            minute = np.floor(arrival / step).astype(np.int64)
            prefill = given * PREFILL_GPU_SECONDS_PER_TOKEN
            decode = generated * DECODE_GPU_SECONDS_PER_TOKEN
            for m in np.unique(minute).tolist():
                pick = minute == m
                minutes[(m, tenant)] = [float(pick.sum()), float(given[pick].sum()),
                                        float(generated[pick].sum()), float(prefill[pick].sum()),
                                        float(decode[pick].sum())]
        per_minute: dict[int, float] = {}
        for (m, _), (_, _, _, prefill_s, decode_s) in minutes.items():
            per_minute[m] = per_minute.get(m, 0.0) + prefill_s + decode_s
        servers = math.ceil(max(per_minute.values()) / (self.gpus_per_server * step))
        gpus = servers * self.gpus_per_server
        first, last = min(per_minute), max(per_minute)
        span = np.arange(first, last + 1, dtype=np.float64) * step
        slots = np.repeat(np.arange(gpus), len(span))
        source = f"trace:{self.name}"
        tally = _Tally()
        day = int(first * step // DAY_S)
        shared = _usage_table(
            origin=self.start, source=source, cluster=self.name,
            start_s=np.tile(span, gpus), duration_s=np.full(len(slots), float(step)),
            node=[f"dgx-h100-{k // self.gpus_per_server}" for k in slots],
            gpu_uuid=[f"GPU-azure-llm-{k}" for k in slots],
            gpu_product=self.product, gpu_equivalents=np.ones(len(slots)),
            tenant=SHARED_TENANT, namespace=self.namespace,
            pod=[f"llama-2-70b-{k // self.gpus_per_server}" for k in slots],
            workload_kind=WorkloadKind.INFERENCE.value, model=self.model,
            allocated=np.full(len(slots), float(step)),
        )
        shared = shared.set_column(shared.schema.get_field_index("model_params_b"),
                                   "model_params_b", pa.array([70.0] * len(slots), pa.float64()))
        tally.add(spool, shared, source=source, node=self.name, batch=_day_batch(self.start, day))
        keys = sorted(minutes)
        window = _at(self.start, np.array([m * step for m, _ in keys], dtype=np.float64))
        stamps = np.datetime_as_string(window, unit="us")
        n = len(keys)
        work = pa.table(
            {
                "sample_id": [make_sample_id(source, self.namespace, self.model, t, stamp)
                              for (_, t), stamp in zip(keys, stamps, strict=True)],
                "window_start": pa.array(window, REQUEST_WORK_SCHEMA.field("window_start").type),
                "duration_s": [float(step)] * n,
                "cluster": [self.name] * n,
                "namespace": [self.namespace] * n,
                "model": [self.model] * n,
                "tenant": [t for _, t in keys],
                "requests": pa.array([round(minutes[k][0]) for k in keys], pa.int64()),
                "request_seconds": pa.nulls(n, pa.float64()),
                "prefill_seconds": [minutes[k][3] for k in keys],
                "decode_seconds": [minutes[k][4] for k in keys],
                "input_tokens": pa.array([round(minutes[k][1]) for k in keys], pa.int64()),
                "output_tokens": pa.array([round(minutes[k][2]) for k in keys], pa.int64()),
                "latency_buckets": pa.nulls(n, REQUEST_WORK_SCHEMA.field("latency_buckets").type),
                "ttft_buckets": pa.nulls(n, REQUEST_WORK_SCHEMA.field("ttft_buckets").type),
                "source": [source] * n,
            },
            schema=REQUEST_WORK_SCHEMA,
        )
        tally.files += len(write_batch(spool, work, kind="requests", source=source,
                                       node=self.name, batch=_day_batch(self.start, day)))
        tally.request_rows += n
        tally.tenants.update(requests)
        work_s = sum(per_minute.values())
        capacity_s = gpus * len(span) * step
        return tally.summary(
            self.start + timedelta(seconds=float(span[0])),
            self.start + timedelta(seconds=float(span[-1]) + step),
            [f"endpoint of {servers} x {self.gpus_per_server} H100 ({gpus} GPUs) over "
             f"{len(span)} minutes: {capacity_s:,.0f} GPU-s; modelled prefill + decode work "
             f"{work_s:,.0f} GPU-s ({work_s / capacity_s:.1%} of capacity)"])


IMPORTERS: dict[str, Importer] = {
    Alibaba2025.name: Alibaba2025(),
    Alibaba2023.name: Alibaba2023(),
    AlibabaGenAI.name: AlibabaGenAI(),
    Helios.name: Helios(),
    AzureLLM.name: AzureLLM(),
}


# ---------------------------------------------------------------------------------------------
# Reconciliation: the same GPU-hours straight from the raw CSVs, by SQL that shares nothing
# with the importers above.

_EXPECTED_SQL = {
    "alibaba-2025": """
        WITH t AS (SELECT * FROM read_csv($1)),
        span AS (SELECT greatest(max(creation_time), max(scheduled_time), max(deletion_time))
                 AS end_s FROM t)
        SELECT app_name, sum(gpu_request * (coalesce(deletion_time, end_s)
                                            - coalesce(scheduled_time, 0))) / 3600
        FROM t, span WHERE gpu_request > 0 GROUP BY app_name
    """,
    "alibaba-2023": """
        WITH p AS (SELECT * FROM read_csv($1)),
        span AS (SELECT greatest(max(creation_time), max(scheduled_time), max(deletion_time))
                 AS end_s FROM p),
        used AS (
            SELECT 'qos-' || lower(qos) AS tenant,
                   sum(num_gpu * gpu_milli / 1000 * (coalesce(deletion_time, end_s)
                                                     - scheduled_time)) / 3600 AS gpu_hours
            FROM p, span WHERE num_gpu > 0 AND scheduled_time IS NOT NULL GROUP BY 1),
        capacity AS (SELECT sum(gpu) * (SELECT end_s FROM span) / 3600 AS gpu_hours
                     FROM read_csv($2))
        SELECT tenant, gpu_hours FROM used
        UNION ALL
        SELECT '__idle__', (SELECT gpu_hours FROM capacity) - (SELECT sum(gpu_hours) FROM used)
    """,
    "alibaba-genai": """
        WITH r AS (SELECT groupId AS g, epoch(gmt_create) AS s,
                          epoch(gmt_create) + exec_time_seconds AS e
                   FROM read_csv($1) WHERE exec_time_seconds > 0),
        edges AS (SELECT s AS t, 1 AS d FROM r UNION ALL SELECT e, -1 FROM r),
        peak AS (SELECT max(c) AS gpus FROM (
                   SELECT sum(d) OVER (ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS c FROM edges)),
        hours AS (SELECT unnest(range(floor(min(s) / 3600)::BIGINT,
                                      ceil(max(e) / 3600)::BIGINT)) AS h FROM r),
        pieces AS (SELECT g, h, least(e, (h + 1) * 3600) - greatest(s, h * 3600) AS w
                   FROM r JOIN hours ON h * 3600 < e AND (h + 1) * 3600 > s),
        total AS (SELECT h, sum(w) AS w FROM pieces GROUP BY h)
        SELECT g, sum(pieces.w / total.w * (SELECT gpus FROM peak)) FROM pieces JOIN total USING (h)
        GROUP BY g
        UNION ALL
        SELECT '__shared_idle__', count(*) * (SELECT gpus FROM peak)
        FROM hours WHERE h NOT IN (SELECT h FROM total)
    """,
    "azure-llm": """
        WITH r AS (
            SELECT 'code' AS tenant, TIMESTAMP AS ts, ContextTokens AS i, GeneratedTokens AS o
            FROM read_csv($1)
            UNION ALL
            SELECT 'conversation', TIMESTAMP, ContextTokens, GeneratedTokens FROM read_csv($2)),
        m AS (SELECT tenant, date_trunc('minute', ts) AS minute, sum(i * $3 + o * $4) AS w
              FROM r GROUP BY ALL),
        tot AS (SELECT minute, sum(w) AS w FROM m GROUP BY 1),
        gpus AS (SELECT 8 * ceil(max(w) / (8 * 60)) AS n FROM tot),
        span AS (SELECT (epoch(max(minute)) - epoch(min(minute))) / 60 + 1 AS minutes FROM tot)
        SELECT tenant, sum(m.w / tot.w * gpus.n * 60) / 3600
        FROM m JOIN tot USING (minute), gpus GROUP BY tenant
        UNION ALL
        SELECT '__shared_idle__', (span.minutes - (SELECT count(*) FROM tot)) * gpus.n * 60 / 3600
        FROM span, gpus
    """,
    "helios": """
        SELECT regexp_extract(filename, '([^/]+)_cluster_sequence_vc\\.csv$', 1),
               sum(running_gpu_num) / 60
        FROM read_csv($1, filename = true) GROUP BY 1
        UNION ALL
        SELECT '__idle__', sum(total_gpu_num - running_gpu_num) / 60
        FROM read_csv($1, filename = true)
    """,
}

_EXPECTED_FILES = {
    "alibaba-2025": [Alibaba2025.file],
    "alibaba-2023": [Alibaba2023.pods_file, Alibaba2023.nodes_file],
    "alibaba-genai": [AlibabaGenAI.file],
    "helios": [f"{Helios.folder}/*_cluster_sequence_vc.csv"],
    "azure-llm": [AzureLLM.files["code"], AzureLLM.files["conversation"]],
}
_EXPECTED_PARAMETERS: dict[str, list[float]] = {
    "azure-llm": [PREFILL_GPU_SECONDS_PER_TOKEN, DECODE_GPU_SECONDS_PER_TOKEN],
}


def expected_gpu_hours(name: str, data_dir: Path) -> dict[str, float]:
    """GPU-hours per tenant computed straight from the trace `name`'s CSV files.

    Includes `__idle__` where the trace defines capacity (alibaba-2023, helios); for
    alibaba-genai, the endpoint's GPU-hours apportioned to groups hour by hour in proportion
    to their request seconds, and `__shared_idle__` for hours without requests."""
    if name not in _EXPECTED_SQL:
        raise KeyError(f"unknown trace {name!r}; one of {', '.join(_EXPECTED_SQL)}")
    paths: list[Any] = [str(Path(data_dir) / f) for f in _EXPECTED_FILES[name]]
    with duckdb.connect() as con:
        rows = con.execute(_EXPECTED_SQL[name],
                           paths + _EXPECTED_PARAMETERS.get(name, [])).fetchall()
    return {str(tenant): float(hours) for tenant, hours in rows}


def expected_tokens(data_dir: Path) -> dict[str, tuple[int, int]]:
    """(input, output) tokens per tenant of the azure-llm trace, summed straight from its CSVs."""
    paths = [str(Path(data_dir) / AzureLLM.files[t]) for t in ("code", "conversation")]
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT 'code', sum(ContextTokens), sum(GeneratedTokens) FROM read_csv($1) "
            "UNION ALL SELECT 'conversation', sum(ContextTokens), sum(GeneratedTokens) "
            "FROM read_csv($2)", paths).fetchall()
    return {str(t): (int(i), int(o)) for t, i, o in rows}


def spool_gpu_hours(spool: Path, source: str | None = None) -> dict[str, float]:
    """Allocated GPU-hours per tenant summed over a spool's usage files (as written, before
    any apportioning of `__shared__` rows)."""
    pattern = str(Path(spool) / "usage" / "**" / "*.parquet")
    where = "WHERE source = $2" if source else ""
    params = [pattern, source] if source else [pattern]
    with duckdb.connect() as con:
        rows = con.execute(
            f"SELECT tenant, sum(allocated_gpu_seconds) / 3600 FROM "
            f"read_parquet($1, hive_partitioning = false) {where} GROUP BY tenant",
            params,
        ).fetchall()
    return {str(tenant): float(hours) for tenant, hours in rows}


@dataclass(frozen=True)
class ReconcileLine:
    tenant: str
    expected_gpu_hours: float
    billed_gpu_hours: float
    grain_gpu_hours: float = 0.0
    """Rounding the bill is allowed: half a 6-decimal quantum per hour it rounded."""

    @property
    def difference_pct(self) -> float:
        diff = abs(self.billed_gpu_hours - self.expected_gpu_hours)
        if self.expected_gpu_hours == 0:
            # Nothing expected: any billed quantity above the ledger's 6-decimal grain is wrong.
            return 0.0 if diff < 1e-6 else math.inf
        return diff / abs(self.expected_gpu_hours) * 100

    @property
    def ok(self) -> bool:
        within_grain = (abs(self.billed_gpu_hours - self.expected_gpu_hours)
                        <= self.grain_gpu_hours + 1e-12)
        return self.difference_pct <= RECONCILE_TOLERANCE_PCT or within_grain


@dataclass(frozen=True)
class ReconcileReport:
    lines: tuple[ReconcileLine, ...]
    total: ReconcileLine

    @property
    def ok(self) -> bool:
        return self.total.ok and all(line.ok for line in self.lines)

    @property
    def failures(self) -> list[ReconcileLine]:
        return [line for line in (*self.lines, self.total) if not line.ok]

    def __str__(self) -> str:
        width = max([len(line.tenant) for line in self.lines] + [len("TOTAL")])
        out = [f"{'tenant':<{width}} {'expected GPU-h':>16} {'billed GPU-h':>16} {'diff %':>10}"]
        for line in (*self.lines, self.total):
            mark = "" if line.ok else "  MISMATCH"
            out.append(f"{line.tenant:<{width}} {line.expected_gpu_hours:>16.6f} "
                       f"{line.billed_gpu_hours:>16.6f} {line.difference_pct:>10.6f}{mark}")
        verdict = "OK" if self.ok else f"FAILED: {len(self.failures)} line(s) differ by more"
        out.append(f"{verdict} (tolerance {RECONCILE_TOLERANCE_PCT}%)"
                   + (" than the tolerance" if not self.ok else ""))
        return "\n".join(out)


class ReconciliationError(InternalError):
    def __init__(self, report: ReconcileReport) -> None:
        super().__init__(str(report))
        self.report = report


def reconcile(
    expected: Mapping[str, float], billed: Mapping[str, float], *, strict: bool = True,
    billed_hours: Mapping[str, int] | None = None,
) -> ReconcileReport:
    """Per tenant and in total, expected against billed GPU-hours; raises
    ReconciliationError (after comparing everything) when any line differs by more than
    0.001%, unless `strict` is False, in which case the report says so (`report.ok`)."""
    # Bills keep 6 decimals of a GPU-hour per tenant-hour (DESIGN.md), so a tenant billed in
    # n hours may differ from the exact figure by up to n x 0.5e-6 GPU-hours: for a tenant of
    # a few hundredths of a GPU-hour that grain exceeds 0.001%.
    hours = billed_hours or {}
    lines = tuple(
        ReconcileLine(t, float(expected.get(t, 0.0)), float(billed.get(t, 0.0)),
                      hours.get(t, 0) * 0.5e-6)
        for t in sorted(set(expected) | set(billed))
    )
    total = ReconcileLine("TOTAL", math.fsum(expected.values()), math.fsum(billed.values()))
    report = ReconcileReport(lines, total)
    if strict and not report.ok:
        raise ReconciliationError(report)
    return report

