"""Runs record the process that runs them; a STARTED run whose process is gone is failed, one
whose process runs (or runs where it cannot be seen) is left alone. Real processes, real /proc,
a real Dagster instance; the SIGKILL tests with a real daemon are in test_killed_runs.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import dagster as dg
import pytest

from pipelines.run_workers import (
    WORKER_TAG,
    Place,
    Worker,
    dead_run_workers,
    fail_dead_runs,
    gone_because,
    here,
    recorded_worker,
    start_ticks,
)
from tests.pipelines.conftest import DAYS, Pipeline

REPO = Path(__file__).resolve().parents[2]
STARTED = dg.DagsterRunStatus.STARTED


def this_place() -> Place:
    place = here()
    assert place is not None, "these tests need Linux's /proc"
    return place


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real process to stand for a run worker."""
    process = subprocess.Popen(["sleep", "300"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def worker_for(process: subprocess.Popen[bytes], run_id: str = "r") -> Worker:
    ticks = start_ticks(process.pid)
    assert ticks is not None
    return Worker(run_id, this_place(), process.pid, ticks)


def exited(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


def test_a_run_records_the_process_that_opens_the_warehouse(pipeline: Pipeline) -> None:
    result = pipeline.ingest(DAYS[0])
    assert result.success

    run = pipeline.instance.get_run_by_id(result.run_id)
    assert run is not None
    worker = recorded_worker(run)
    assert worker == Worker(result.run_id, this_place(), os.getpid(), start_ticks(os.getpid()))


def test_a_running_process_is_not_gone(sleeper: subprocess.Popen[bytes]) -> None:
    assert gone_because(worker_for(sleeper), this_place()) is None


def test_an_exited_process_is_gone(sleeper: subprocess.Popen[bytes]) -> None:
    worker = worker_for(sleeper)
    exited(sleeper)
    assert gone_because(worker, this_place()) == "it no longer exists"


def test_a_killed_process_not_yet_reaped_is_gone(sleeper: subprocess.Popen[bytes]) -> None:
    worker = worker_for(sleeper)
    sleeper.kill()
    # Not waited for: the killed process stays a zombie until its parent collects it.
    stat = Path(f"/proc/{sleeper.pid}/stat")
    deadline = time.monotonic() + 30
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the killed process never became a zombie"
        time.sleep(0.05)
    assert gone_because(worker, this_place()) == "it no longer exists"


def test_a_pid_that_now_names_another_process_is_gone(sleeper: subprocess.Popen[bytes]) -> None:
    # The record of a process that had this PID before the sleeper started.
    worker = worker_for(sleeper)
    earlier = replace(worker, start_ticks=worker.start_ticks - 100)
    assert gone_because(earlier, this_place()) == "its PID now belongs to a later process"


def test_a_worker_from_before_the_hosts_restart_is_gone(sleeper: subprocess.Popen[bytes]
                                                        ) -> None:
    place = this_place()
    before = replace(worker_for(sleeper), place=replace(place, boot_id=str(uuid.uuid4())))
    assert gone_because(before, place) == f"{place.host} has been restarted since"


def test_a_worker_in_another_pid_namespace_is_not_judged(sleeper: subprocess.Popen[bytes]
                                                         ) -> None:
    place = this_place()
    worker = worker_for(sleeper)
    exited(sleeper)
    # Its PID means nothing here, dead or alive.
    for other in (replace(place, host="run-pod-7", pid_namespace="pid:[1]"),
                  replace(place, pid_namespace="pid:[1]")):
        assert gone_because(replace(worker, place=other), place) is None


def started_run(instance: dg.DagsterInstance, worker: Worker | None, *,
                run_id: str | None = None, partition: str = "2026-09-01") -> str:
    run_id = run_id or (worker.run_id if worker else str(uuid.uuid4()))
    tags = {"chargeback/warehouse": "write", "dagster/partition": partition}
    if worker is not None:
        tags[WORKER_TAG] = json.dumps(asdict(worker))
    instance.add_run(dg.DagsterRun(job_name="daily_usage_job", run_id=run_id, status=STARTED,
                                   tags=tags))
    return run_id


def status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run.status


def test_only_started_runs_whose_recorded_process_is_gone_are_failed() -> None:
    dead_process = subprocess.Popen(["sleep", "300"])
    dead = worker_for(dead_process, str(uuid.uuid4()))
    exited(dead_process)
    place = this_place()
    with dg.DagsterInstance.ephemeral() as instance:
        killed = started_run(instance, dead)
        alive = started_run(instance, Worker(str(uuid.uuid4()), place, os.getpid(),
                                             start_ticks(os.getpid()) or 0))
        on_a_pod = started_run(instance, replace(dead, run_id=str(uuid.uuid4()),
                                                 place=replace(place, host="run-pod-7",
                                                               pid_namespace="pid:[1]")))
        unrecorded = started_run(instance, None)
        # A re-execution carries its parent's record until its own process writes one.
        inherited = started_run(instance, dead, run_id=str(uuid.uuid4()))

        lines = fail_dead_runs(instance)

        assert len(lines) == 1
        assert lines[0].startswith(f"run {killed} (daily_usage_job, partition 2026-09-01): ")
        assert f"pid {dead.pid} on {place.host}" in lines[0]
        assert status(instance, killed) == dg.DagsterRunStatus.FAILURE
        for run_id in (alive, on_a_pod, unrecorded, inherited):
            assert status(instance, run_id) == STARTED
        [failure] = instance.all_logs(killed, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert failure.message is not None
        assert "is gone: it no longer exists" in failure.message
        assert "next warehouse writer" in failure.message
        # Once failed, never failed again.
        assert fail_dead_runs(instance) == []
        assert len(instance.all_logs(killed, of_type=dg.DagsterEventType.RUN_FAILURE)) == 1


def test_a_run_that_ended_before_its_process_went_keeps_its_status() -> None:
    process = subprocess.Popen(["sleep", "300"])
    worker = worker_for(process, str(uuid.uuid4()))
    with dg.DagsterInstance.ephemeral() as instance:
        started_run(instance, worker)
        instance.report_run_canceled(instance.get_run_by_id(worker.run_id))  # type: ignore[arg-type]
        exited(process)
        assert fail_dead_runs(instance) == []
        assert status(instance, worker.run_id) == dg.DagsterRunStatus.CANCELED


def test_the_sensor_fails_dead_runs_and_says_which(sleeper: subprocess.Popen[bytes]) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_sensor_context(instance=instance)
        idle = dead_run_workers(context)
        assert isinstance(idle, dg.SkipReason)
        assert idle.skip_message == "no STARTED run has lost its process"

        killed = started_run(instance, worker_for(sleeper, str(uuid.uuid4())))
        exited(sleeper)
        answer = dead_run_workers(dg.build_sensor_context(instance=instance))

        assert isinstance(answer, dg.SkipReason)
        assert answer.skip_message is not None
        assert answer.skip_message.startswith(f"failed run {killed} (daily_usage_job")
        assert status(instance, killed) == dg.DagsterRunStatus.FAILURE


def test_the_sensor_is_on_by_default_in_the_code_location() -> None:
    from pipelines.definitions import defs

    sensor = defs.resolve_sensor_def("dead_run_workers")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds is not None
    assert sensor.minimum_interval_seconds <= 60


def test_the_instance_file_enables_run_monitoring_and_every_job_has_a_maximum_runtime(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.definitions import defs

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled
        # The default launcher cannot resume a run: a nonzero value would refuse to start.
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert instance.run_monitoring_start_timeout_seconds <= 300
    for job in defs.resolve_all_job_defs():
        if not job.name.startswith("__"):
            assert 0 < float(job.tags["dagster/max_runtime"]) <= 24 * 3600, job.name
