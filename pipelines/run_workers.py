"""Runs whose process was killed: found and failed, so that the warehouse's run queue drains.

A run stays STARTED until its own process reports how it ended. With Dagster's
DefaultRunLauncher the code server that spawned a run process fails the run when that process
dies alone, but nobody does when both go (the OOM killer taking the container, a reboot,
`kill -9` of `dagster dev`), and nobody watches the CLI's in-process runs at all. Dagster's run
monitoring cannot help here: the DefaultRunLauncher has no worker health check, so monitoring
only times out STARTING and CANCELING runs. A dead run left STARTED with the writer tag holds
the one-writer queue (dagster.yaml) forever, and schedules and sensors pile up behind it.

So the process that opens the warehouse records itself on its run (`chargeback/worker`), and
`fail_dead_runs` (the `dead_run_workers` sensor, and the CLI before it runs a job) fails every
STARTED run whose recorded process is gone. A PID alone could since belong to another process:
the record also holds the process's start time (clock ticks after boot) and the host's boot id.
A record made in another PID namespace (a Kubernetes run pod, another container) is not judged
here; there the K8sRunLauncher's health check and the jobs' maximum runtime apply. Linux only
(/proc): elsewhere nothing is recorded and only the maximum runtime applies."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

import dagster as dg

from pipelines.partitions import run_days

WORKER_TAG = "chargeback/worker"
PROC = Path("/proc")


@dataclass(frozen=True)
class Place:
    """Where a PID names one process: a host, its current boot, one PID namespace."""

    host: str
    boot_id: str
    pid_namespace: str


@dataclass(frozen=True)
class Worker:
    """The process that ran a run, identified so that a reused PID cannot pass for it."""

    run_id: str
    place: Place
    pid: int
    start_ticks: int


def here() -> Place | None:
    """This process's place; None without Linux's /proc."""
    try:
        boot_id = (PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
        namespace = os.readlink(PROC / "self" / "ns" / "pid")
    except OSError:
        return None
    return Place(socket.gethostname(), boot_id, namespace)


def start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks after boot; None once it has exited (a zombie
    has exited too: only its exit status is left for its parent to collect)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields resume after the
    # last ')', with the state (field 3) first and the start time (field 22) twentieth.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def this_worker(run_id: str) -> Worker | None:
    place = here()
    ticks = start_ticks(os.getpid())
    if place is None or ticks is None:
        return None
    return Worker(run_id, place, os.getpid(), ticks)


def record_worker(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Record this process as the run's worker; False where processes cannot be identified."""
    worker = this_worker(run_id)
    if worker is None:
        return False
    instance.add_run_tags(run_id, {WORKER_TAG: json.dumps(asdict(worker), sort_keys=True)})
    return True


def recorded_worker(run: dg.DagsterRun) -> Worker | None:
    """The worker recorded on the run; None if none was, or if the record was copied from
    another run (a re-execution inherits its parent's tags until its own process records)."""
    text = run.tags.get(WORKER_TAG)
    if text is None:
        return None
    try:
        data = json.loads(text)
        worker = Worker(str(data["run_id"]), Place(**data["place"]), int(data["pid"]),
                        int(data["start_ticks"]))
    except (ValueError, TypeError, KeyError):
        return None
    return worker if worker.run_id == run.run_id else None


def gone_because(worker: Worker, place: Place) -> str | None:
    """Why the worker's process is known to be gone, judged from `place`; None while it runs,
    and for a process in another PID namespace, which cannot be seen from here."""
    if worker.place.host == place.host and worker.place.boot_id != place.boot_id:
        return f"{place.host} has been restarted since"
    if (worker.place.boot_id, worker.place.pid_namespace) != (place.boot_id,
                                                              place.pid_namespace):
        return None
    ticks = start_ticks(worker.pid)
    if ticks is None:
        return "it no longer exists"
    if ticks != worker.start_ticks:
        return "its PID now belongs to a later process"
    return None


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail every STARTED run whose recorded worker is gone; one line for each run failed."""
    place = here()
    if place is None:
        return []
    failed = []
    for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        worker = recorded_worker(run)
        reason = gone_because(worker, place) if worker else None
        if worker is None or reason is None:
            continue
        # The process is gone; had it reported its end before going, the run would show it now.
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status != dg.DagsterRunStatus.STARTED:
            continue
        days = run_days(run.tags)
        what = f"{run.job_name}" + (f", partition {days[0]}" if len(days) == 1 else
                                    f", partitions {days[0]}..{days[-1]}" if days else "")
        message = (f"run worker (pid {worker.pid} on {worker.place.host}) is gone: {reason}. "
                   "It was killed or crashed mid-run; marked failed so that the run queue "
                   f"admits the next warehouse writer. Run it again ({what}, same config) "
                   "to rewrite what it left half done.")
        instance.report_run_failed(current, message)
        failed.append(f"run {run.run_id} ({what}): {message}")
    return failed


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def dead_run_workers(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    """Fail runs whose process was killed, so that the next warehouse writer can start."""
    failed = fail_dead_runs(context.instance)
    for line in failed:
        context.log.warning(line)
    return dg.SkipReason("failed " + "; ".join(failed) if failed
                         else "no STARTED run has lost its process")
