"""The collector agent: run a collector on an interval into the local spool.

The agent never depends on the pipeline: it writes Parquet batches to its own spool (what the
pipeline ingests later) and keeps doing so while the pipeline is down. A batch is acknowledged
once `write_batch` has written, fsynced and renamed it; a batch that could not be written
stays in memory and is retried before the next one. SIGTERM lets the current write finish,
then the agent exits 0. `/metrics` (prometheus_client) reports the agent's own health and the
GPU-seconds it has acknowledged per tenant, model and hardware tier.

What a collector could not read is never written as a value: the collector leaves those rows
out and reports gaps (models/ledger/gaps.py), which the agent writes to the spool beside the
rows (kind `gaps`), counts in `chargeback_collector_gaps_total{source,reason}` and logs. A
collector that raises gets a gap for its whole window. `--once` then exits non-zero (see
`run_agent`); a running agent goes on to the next window."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import FrameType
from typing import Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from collectors.spool import SpoolLocation, local_path, write_batch
from models.errors import TransientError
from models.ledger.gaps import Gap, GapReason, gap_table
from models.ledger.tiers import normalize_product

MAX_PENDING_BATCHES = 1000
"""Batches kept in memory while the spool cannot be written (disk full, read-only mount);
beyond it the oldest unacknowledged batch is dropped and counted as an error."""
MAX_CATCH_UP_WINDOWS = 60
"""After a stall (suspended node, slow collector) at most this many past windows are asked
for; older ones are skipped rather than flooding the collector."""


@runtime_checkable
class Collector(Protocol):
    """What the agent drives. Optionally also `sample(now)` (called every sampling tick),
    `request_rows(window_start, duration_s)` (REQUEST_WORK_SCHEMA rows),
    `gaps(window_start, duration_s)` (the `Gap`s of the window just read: what its rows lack
    because it could not be read) and `quarantined` (a mapping of the objects whose fields
    cannot be read now)."""

    def rows(self, window_start: datetime, duration_s: float) -> pa.Table: ...


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.samples = Counter("chargeback_agent_samples_written", "Rows acknowledged in the "
                               "spool.", ["kind"], registry=r)
        self.batches = Counter("chargeback_agent_batches_written", "Batches acknowledged in "
                               "the spool.", ["kind"], registry=r)
        self.errors = Counter("chargeback_agent_errors", "Failures by stage (collect: the "
                              "collector raised; write: the spool could not be written; "
                              "dropped: an unwritten batch was given up).", ["stage"],
                              registry=r)
        self.pending = Gauge("chargeback_agent_pending_batches", "Batches collected but not "
                             "yet written to the spool.", registry=r)
        self.spool_size = Gauge("chargeback_agent_spool_size_bytes", "Bytes of Parquet files "
                                "in the spool.", registry=r)
        self.lag = Gauge("chargeback_agent_spool_lag_seconds", "Seconds since the end of the "
                         "newest acknowledged window (grows while nothing is written).",
                         registry=r)
        self.gaps = Counter(
            "chargeback_collector_gaps", "Gap records written: a window of a device, a node or "
            "the whole cluster that could not be read, so it has no rows.", ["source", "reason"],
            registry=r)
        self.quarantined = Gauge(
            "chargeback_collector_quarantined_objects", "Objects (pods, nodes, DRA slices and "
            "claims) whose fields cannot be read, kept out of the rows until they can.",
            ["source"], registry=r)
        self.tenant_gpu_seconds = Counter(
            "chargeback_tenant_gpu_seconds", "Allocated GPU-seconds acknowledged in the spool.",
            ["tenant", "model", "hardware_tier"], registry=r)
        self.tenant_used_gpu_seconds = Counter(
            "chargeback_tenant_used_gpu_seconds", "Used GPU-seconds acknowledged in the spool.",
            ["tenant", "model", "hardware_tier"], registry=r)
        self.last_acknowledged_end: float | None = None
        self.lag.set_function(self._lag)

    def _lag(self) -> float:
        if self.last_acknowledged_end is None:
            return math.nan
        return max(time.time() - self.last_acknowledged_end, 0.0)

    def acknowledged(self, kind: str, table: pa.Table, window_end: float) -> None:
        self.samples.labels(kind).inc(table.num_rows)
        self.batches.labels(kind).inc()
        self.last_acknowledged_end = max(self.last_acknowledged_end or window_end, window_end)
        if kind != "usage" or table.num_rows == 0:
            return
        # hardware_tier is the normalized product: the agent carries no rate card, and the
        # rate card's tier map is applied (and an unknown product rejected) by the pipeline.
        products = pc.utf8_upper(table["gpu_product"])
        grouped = (
            table.select(["tenant", "model", "allocated_gpu_seconds", "used_gpu_seconds"])
            .append_column("product", products)
            .group_by(["tenant", "model", "product"])
            .aggregate([("allocated_gpu_seconds", "sum"), ("used_gpu_seconds", "sum")])
        )
        for row in grouped.to_pylist():
            labels = (row["tenant"], row["model"] or "", normalize_product(row["product"]))
            self.tenant_gpu_seconds.labels(*labels).inc(row["allocated_gpu_seconds_sum"] or 0.0)
            self.tenant_used_gpu_seconds.labels(*labels).inc(row["used_gpu_seconds_sum"] or 0.0)

    def measure_spool(self, root: SpoolLocation) -> None:
        local = local_path(root)
        if local is None:
            # Listing a bucket every window would cost requests that grow with the whole
            # fleet's spool; the object store reports its own size.
            return
        total = 0
        for folder, _dirs, files in os.walk(local):
            for name in files:
                if name.endswith(".parquet"):
                    # A file shipped or replaced while we walked is simply not counted.
                    with contextlib.suppress(FileNotFoundError):
                        total += os.stat(os.path.join(folder, name)).st_size
        self.spool_size.set(total)


@dataclass
class _Pending:
    kind: str
    table: pa.Table
    batch: str
    window_end: float


@dataclass
class Agent:
    collector: Collector
    spool: SpoolLocation
    source: str
    """The spool's `source=` partition (nvml, pods, prometheus, simulator)."""
    node: str
    interval_s: float
    """Length of a window: one batch per window."""
    sample_s: float | None = None
    """How often to call `collector.sample(now)` (defaults to once per window)."""
    delay_s: float = 0.0
    """Collect a window this long after it ends (Prometheus needs its scrapes to land)."""
    cluster: str = "default"
    gap_node: str | None = None
    """The node a collector covers, named in the gap written when it raises (the NVML
    agent's own node); None for a collector of the whole cluster (pods, Prometheus)."""
    metrics: AgentMetrics = field(default_factory=AgentMetrics)
    stop: threading.Event = field(default_factory=threading.Event)
    clock: Callable[[], float] = time.time
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True)
    _pending: deque[_Pending] = field(default_factory=deque)
    _next_window_end: float | None = None

    def collect(self, window_start: datetime) -> list[Gap]:
        """Collect one window and write it (and anything still pending) to the spool; returns
        what could not be read of it."""
        window_end = window_start.timestamp() + self.interval_s
        batch = f"{window_start:%Y%m%dT%H%M%S}-{self.interval_s:g}s"
        try:
            tables = [self.collector.rows(window_start, self.interval_s)]
            request_rows = getattr(self.collector, "request_rows", None)
            if request_rows is not None:
                tables.append(request_rows(window_start, self.interval_s))
            gaps = list(getattr(self.collector, "gaps", lambda *_: [])(window_start,
                                                                        self.interval_s))
        except Exception as exc:  # a failing source must not stop the agent: a gap, go on
            self.metrics.errors.labels("collect").inc()
            self.log(f"collecting {self.source} window {window_start.isoformat()} failed: "
                     f"{type(exc).__name__}: {exc}")
            # Rows read before it raised are not trusted: the whole window is the gap.
            tables = []
            gaps = [Gap(self.source, self.cluster, self.gap_node, None, window_start,
                        datetime.fromtimestamp(window_end, UTC), GapReason.COLLECTOR_FAILED,
                        f"{type(exc).__name__}: {exc}")]
        for gap in gaps:
            self.metrics.gaps.labels(gap.source, gap.reason.value).inc()
            self.log(f"gap: {gap.describe()}")
        quarantined = getattr(self.collector, "quarantined", None)
        if quarantined is not None:
            self.metrics.quarantined.labels(self.source).set(len(quarantined))
        for table in tables:
            kind = "requests" if "request_seconds" in table.column_names else "usage"
            if table.num_rows:
                self._pending.append(_Pending(kind, table, batch, window_end))
        if gaps:
            self._pending.append(_Pending("gaps", gap_table(gaps), batch, window_end))
        while len(self._pending) > MAX_PENDING_BATCHES:
            lost = self._pending.popleft()
            self.metrics.errors.labels("dropped").inc()
            self.log(f"dropped unwritten batch {lost.batch} ({lost.table.num_rows} rows): the "
                     f"spool {self.spool} has not been writable for {MAX_PENDING_BATCHES} "
                     "batches")
        self.flush()
        return gaps

    def flush(self) -> None:
        while self._pending:
            item = self._pending[0]
            try:
                write_batch(self.spool, item.table, kind=item.kind, source=self.source,
                            node=self.node, batch=item.batch)
            except OSError as exc:
                self.metrics.errors.labels("write").inc()
                self.log(f"writing batch {item.batch} to the spool {self.spool} failed "
                         f"({exc}); kept in memory, retried at the next window")
                break
            self._pending.popleft()
            self.metrics.acknowledged(item.kind, item.table, item.window_end)
        self.metrics.pending.set(len(self._pending))
        self.metrics.measure_spool(self.spool)

    def _sample(self, at: float) -> None:
        sample = getattr(self.collector, "sample", None)
        if sample is None:
            return
        try:
            sample(datetime.fromtimestamp(at, UTC))
        except Exception as exc:  # same as collect: count, say, keep going
            self.metrics.errors.labels("collect").inc()
            self.log(f"sampling {self.source} failed: {type(exc).__name__}: {exc}")

    def once(self) -> list[Gap]:
        """Sample now and write the window that holds now (minus the delay); returns what
        could not be read of it."""
        now = self.clock()
        self._sample(now)
        start = math.floor((now - self.delay_s) / self.interval_s) * self.interval_s
        return self.collect(datetime.fromtimestamp(start, UTC))

    def run(self) -> None:
        """Sample on every tick; after each window ends (plus the delay), write it. Returns
        when `stop` is set, after finishing the write in progress."""
        tick_s = self.sample_s or self.interval_s
        while not self.stop.is_set():
            tick = (math.floor(self.clock() / tick_s) + 1) * tick_s
            if self.stop.wait(max(tick - self.clock(), 0.0)):
                break
            self._sample(tick)
            for start in self._due_windows(tick):
                self.collect(datetime.fromtimestamp(start, UTC))
                if self.stop.is_set():
                    break
            if self._pending:
                self.flush()

    def _due_windows(self, now: float) -> Iterator[float]:
        last_end = math.floor((now - self.delay_s) / self.interval_s) * self.interval_s
        if self._next_window_end is None:
            self._next_window_end = last_end
        first_end = max(self._next_window_end, last_end - MAX_CATCH_UP_WINDOWS * self.interval_s)
        end = first_end
        while end <= last_end:
            yield end - self.interval_s
            end += self.interval_s
        self._next_window_end = max(self._next_window_end, end)


class CollectionGaps(TransientError):
    """`--once` could not read part of its source: the rest was written, the gaps recorded."""


def run_agent(agent: Agent, *, once: bool, metrics_port: int | None,
              metrics_address: str = "127.0.0.1") -> None:
    """Serve /metrics, stop cleanly on SIGTERM/SIGINT, run once or until stopped.

    Once: raises CollectionGaps, after writing everything, when part of the window could not
    be read, so a scripted run never mistakes a gap for a complete window."""
    if metrics_port is not None:
        start_http_server(metrics_port, metrics_address, registry=agent.metrics.registry)

    def stop(signum: int, _frame: FrameType | None) -> None:
        agent.log(f"{signal.Signals(signum).name}: finishing the current write, then exiting")
        agent.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    local = local_path(agent.spool)
    if local is not None:
        local.mkdir(parents=True, exist_ok=True)
    gaps: list[Gap] = []
    if once:
        gaps = agent.once()
    else:
        agent.log(f"collecting {agent.source} every {agent.interval_s:g} s into {agent.spool}"
                  + (f"; metrics on :{metrics_port}/metrics" if metrics_port else ""))
        agent.run()
    if agent._pending:
        raise TransientError(
            f"{len(agent._pending)} batches could not be written to {agent.spool}; see the "
            "errors above"
        )
    if gaps:
        raise CollectionGaps([
            *(gap.describe() for gap in gaps),
            f"{len(gaps)} gap(s) recorded in {agent.spool} beside the rows that could be read",
        ])


class SimulatorCollector:
    """The simulated cluster as a live source: the rows of one window at a time."""

    def __init__(self, *, origin: date, horizon_days: int = 30, interval_s: int = 60,
                 seed: int = 7, scale: int = 1) -> None:
        from collectors.simulate import Simulation, default_cluster

        self.sim = Simulation(default_cluster(scale), datetime.combine(
            origin, datetime.min.time(), UTC), horizon_days, interval_s, seed)
        self._day: int | None = None
        self._usage: pa.Table | None = None
        self._requests: pa.Table | None = None

    def _load(self, window_start: datetime, duration_s: float) -> int:
        if duration_s != self.sim.interval_s:
            raise ValueError(f"the simulator was built for {self.sim.interval_s} s windows, "
                             f"asked for {duration_s:g} s")
        day = (window_start - self.sim.origin) // timedelta(days=1)
        if day != self._day:
            self._usage = pa.concat_tables(self.sim.node_days(day).values())
            self._requests = pa.concat_tables(
                [self.sim.requests_day(e, day) for e in range(len(self.sim.cluster.endpoints))])
            self._day = day
        return day

    @staticmethod
    def _window(table: pa.Table | None, window_start: datetime) -> pa.Table:
        assert table is not None
        return table.filter(pc.equal(table["window_start"],
                                     pa.scalar(window_start, table.schema.field(
                                         "window_start").type)))

    def rows(self, window_start: datetime, duration_s: float) -> pa.Table:
        self._load(window_start, duration_s)
        return self._window(self._usage, window_start)

    def request_rows(self, window_start: datetime, duration_s: float) -> pa.Table:
        self._load(window_start, duration_s)
        return self._window(self._requests, window_start)
