"""SIGKILL mid-run, for real: the killed run is failed and the next warehouse writer runs.

A run worker killed alone is failed by the code server that spawned it. What stalled the
schedule is a worker killed together with its code server and daemon (the OOM killer taking the
container, a reboot, `kill -9` of `dagster dev`), and a killed `chargeback run`: their runs stay
STARTED with the writer tag, and the one-writer queue waits for them forever. Here a real
`dagster-daemon` with the project's dagster.yaml, in a temp DAGSTER_HOME, runs the code location
over a simulated spool; the CLI runs as a user runs it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest

from models.ledger import warehouse
from pipelines.run_workers import recorded_worker, start_ticks

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STARTED = dg.DagsterRunStatus.STARTED
DETECTION_S = 300
"""A fresh daemon loads the code location (a code server), then the sensor ticks every 30 s: on
a loaded 2-core machine that can take minutes; once detected, the queue must move within 60 s."""


def wait_for(what: str, condition: Callable[[], bool], timeout_s: float,
             log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s:.0f} s"
                        + (f"\n{log.read_text()[-4000:]}" if log and log.exists() else ""))
        time.sleep(0.1)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """End a process started in its own session, and everything it started."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    # Its children too (code servers), whether or not the leader went.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class Home:
    """CHARGEBACK_HOME (spool, warehouse) and DAGSTER_HOME (the project's dagster.yaml) in a
    temp folder, and the processes started on them."""

    def __init__(self, root: Path, spool: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.dagster = root / "dagster"
        self.dagster.mkdir(parents=True)
        shutil.copy(REPO / "dagster.yaml", self.dagster / "dagster.yaml")
        shutil.copytree(spool, root / "home" / "spool")
        self.env = {**os.environ, "DAGSTER_HOME": str(self.dagster),
                    "CHARGEBACK_HOME": str(root / "home")}
        for name in ("CHARGEBACK_WAREHOUSE", "CHARGEBACK_SPOOL", "CHARGEBACK_EXPORTS",
                     "CHARGEBACK_MARTS"):
            self.env.pop(name, None)
        self.processes: list[subprocess.Popen[bytes]] = []
        # The storage settings in dagster.yaml read DAGSTER_HOME.
        monkeypatch.setenv("DAGSTER_HOME", str(self.dagster))
        self.instance = dg.DagsterInstance.from_config(str(self.dagster))

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("ab")
        process = subprocess.Popen([str(BIN / args[0]), *args[1:]], cwd=REPO, env=self.env,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        log.close()
        self.processes.append(process)
        return process

    def run(self, run_id: str) -> dg.DagsterRun:
        run = self.instance.get_run_by_id(run_id)
        assert run is not None, run_id
        return run

    def event_time(self, run_id: str, event: dg.DagsterEventType) -> float:
        [entry] = self.instance.all_logs(run_id, of_type=event)
        return entry.timestamp

    def close(self) -> None:
        for process in self.processes:
            stop_group(process)
        self.instance.dispose()


@pytest.fixture
def home(tmp_path: Path, simulated_spool: Path, monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[Home]:
    made = Home(tmp_path, simulated_spool, monkeypatch)
    try:
        yield made
    finally:
        made.close()


def mid_run(home: Home, run_id: str) -> bool:
    """The run's process has opened the warehouse and started a step."""
    run = home.run(run_id)
    return (run.status == STARTED and recorded_worker(run) is not None
            and bool(home.instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)))


@pytest.mark.slow
def test_a_daemon_killed_mid_run_with_its_worker_does_not_stall_the_writer_queue(
        home: Home) -> None:
    days = ("2026-09-01", "2026-09-02")
    runs = {day: str(uuid.uuid4()) for day in days}
    # Two ingest runs queued for the warehouse's one writer place, as schedules queue them.
    launches = [home.start(f"launch-{day}", "dagster", "job", "launch", "-m",
                           "pipelines.definitions", "-j", "daily_usage_job", "--run-id",
                           runs[day], "--tags", f'{{"dagster/partition": "{day}"}}')
                for day in days]
    for launch in launches:
        assert launch.wait(timeout=300) == 0, (home.root / "launch-2026-09-01.log").read_text()
    assert {home.run(r).status for r in runs.values()} == {dg.DagsterRunStatus.QUEUED}

    daemon = home.start("daemon-1", "dagster-daemon", "run", "-m", "pipelines.definitions")
    wait_for("an ingest run mid-run", lambda: any(mid_run(home, r) for r in runs.values()),
             300, home.root / "daemon-1.log")
    killed, waiting = ((runs[days[0]], runs[days[1]]) if mid_run(home, runs[days[0]])
                       else (runs[days[1]], runs[days[0]]))
    worker = recorded_worker(home.run(killed))
    assert worker is not None

    # The daemon, its code server and the run worker: the whole process group, at once.
    os.killpg(daemon.pid, signal.SIGKILL)
    daemon.wait()
    wait_for("the run worker to die", lambda: start_ticks(worker.pid) is None, 30)

    assert home.run(killed).status == STARTED, "the run ended before it could be killed"
    assert home.run(waiting).status == dg.DagsterRunStatus.QUEUED

    # The supervisor (systemd, Kubernetes) starts the daemon again.
    home.start("daemon-2", "dagster-daemon", "run", "-m", "pipelines.definitions")
    wait_for("the killed run to be failed",
             lambda: home.run(killed).status == dg.DagsterRunStatus.FAILURE, DETECTION_S,
             home.root / "daemon-2.log")
    [failure] = home.instance.all_logs(killed, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert failure.message is not None
    assert f"pid {worker.pid}" in failure.message
    assert "is gone: it no longer exists" in failure.message

    wait_for("the queued writer to succeed",
             lambda: home.run(waiting).status == dg.DagsterRunStatus.SUCCESS, 300,
             home.root / "daemon-2.log")
    detected = failure.timestamp
    launched = home.event_time(waiting, dg.DagsterEventType.RUN_STARTING)
    succeeded = home.event_time(waiting, dg.DagsterEventType.RUN_SUCCESS)
    assert 0 <= launched - detected < 60, (launched - detected, succeeded - detected)
    print(f"queued writer launched {launched - detected:.1f} s and succeeded "
          f"{succeeded - detected:.1f} s after the killed run was failed")

    con = warehouse.connect(home.root / "home" / "warehouse.duckdb", read_only=True)
    try:
        day = home.run(waiting).tags["dagster/partition"]
        [(rows,)] = con.execute("SELECT count(*) FROM usage_hourly WHERE CAST(hour AS DATE) = ?",
                                [day]).fetchall()
    finally:
        con.close()
    assert rows > 0


@pytest.mark.slow
def test_a_killed_chargeback_run_is_failed_by_the_next_one(home: Home) -> None:
    command = ("chargeback", "run", "--from", "2026-09-01", "--to", "2026-09-02")
    first = home.start("run-1", *command)

    def killable() -> bool:
        for run in home.instance.get_runs(dg.RunsFilter(statuses=[STARTED])):
            worker = recorded_worker(run)
            if worker and worker.pid == first.pid and mid_run(home, run.run_id):
                return True
        return False

    wait_for("a run of `chargeback run` mid-run", killable, 300, home.root / "run-1.log")
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    [stale] = home.instance.get_runs(dg.RunsFilter(statuses=[STARTED]))

    second = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=REPO, env=home.env,
                            capture_output=True, text=True, timeout=600, check=False)

    assert second.returncode == 0, second.stdout + second.stderr
    assert "Traceback" not in second.stdout + second.stderr
    assert f"marked failed: run {stale.run_id} ({stale.job_name}" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    assert "ingested 2 days, billed 2026-09" in second.stdout
    assert home.run(stale.run_id).status == dg.DagsterRunStatus.FAILURE
    assert home.instance.get_runs(dg.RunsFilter(statuses=[STARTED])) == []
    others = [r for r in home.instance.get_runs() if r.run_id != stale.run_id]
    # The two days (one run), a month, the analytics and the marts: the second command's runs,
    # at least.
    assert len(others) >= 4
    assert {r.status for r in others} == {dg.DagsterRunStatus.SUCCESS}
