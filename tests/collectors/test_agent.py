import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from click.testing import CliRunner
from prometheus_client import start_http_server

from cli.collect import collect
from cli.main import main
from collectors import spool
from collectors.agent import Agent, CollectionGaps, SimulatorCollector, run_agent
from models.errors import TransientError
from models.ledger.gaps import Gap, GapReason
from models.ledger.usage import GPU_SECONDS_TOLERANCE, LEDGER_SCHEMA, validate_ledger

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from cli.main import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spool_rows(root: Path, kind: str = "usage") -> pa.Table:
    files = [f for day in spool.days(root, kind) for f in spool.day_files(root, kind, day)]
    assert files, f"no {kind} files in {root}"
    return pa.concat_tables(pq.read_table(f, schema=spool.SCHEMAS[kind]) for f in files)


def assert_valid_ledger(table: pa.Table) -> None:
    assert validate_ledger(table.to_pylist()) == []
    con = duckdb.connect()
    con.register("t", table)
    worst = con.execute(
        """SELECT max(abs(s - c)) FROM (SELECT sum(allocated_gpu_seconds) s,
           max(duration_s * gpu_equivalents) c FROM t GROUP BY gpu_uuid, window_start)"""
    ).fetchone()[0]
    assert worst < GPU_SECONDS_TOLERANCE


def scrape(port: int) -> dict[str, float]:
    """Sample lines of a /metrics page as {'name{labels}': value}."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def test_collect_simulate_days_writes_a_valid_spool(tmp_path):
    result = CliRunner().invoke(collect, ["simulate", "--days", "1", "--spool", str(tmp_path),
                                          "--start", "2026-10-05", "--interval", "300"])
    assert result.exit_code == 0, result.output
    usage = spool_rows(tmp_path)
    assert usage.num_rows > 0
    assert set(usage["window_start"].to_pylist()) == {
        datetime(2026, 10, 5, tzinfo=UTC) + timedelta(minutes=5 * i) for i in range(288)}
    morning = datetime(2026, 10, 5, 9, tzinfo=UTC)
    assert_valid_ledger(usage.filter(pa.compute.less(
        pa.compute.abs(pa.compute.subtract(usage["window_start"], pa.scalar(morning))),
        pa.scalar(timedelta(minutes=30)))))
    assert spool_rows(tmp_path, "requests").num_rows > 0


def test_collect_simulate_defaults_to_past_days(tmp_path):
    result = CliRunner().invoke(collect, ["simulate", "--days", "1", "--spool", str(tmp_path),
                                          "--interval", "900"])
    assert result.exit_code == 0, result.output
    assert list(spool.days(tmp_path)) == [datetime.now(UTC).date() - timedelta(days=1)]


def test_collect_simulate_rejects_an_interval_that_does_not_divide_an_hour(tmp_path):
    result = CliRunner().invoke(collect, ["simulate", "--spool", str(tmp_path),
                                          "--interval", "7"])
    assert result.exit_code == 2
    assert "--interval" in result.output
    assert "Traceback" not in result.output


def test_once_with_the_simulator_writes_a_valid_spool(tmp_path):
    result = CliRunner().invoke(collect, ["simulate", "--once", "--spool", str(tmp_path)])
    assert result.exit_code == 0, result.output
    usage = spool_rows(tmp_path)
    assert len(set(usage["window_start"].to_pylist())) == 1
    assert usage["window_start"][0].as_py() <= datetime.now(UTC)
    assert_valid_ledger(usage)
    # One window of the whole cluster: 60 whole GPUs and 16 MIG instances.
    assert len(set(usage["gpu_uuid"].to_pylist())) == 76


def test_metrics_count_what_the_spool_holds(tmp_path):
    collector = SimulatorCollector(origin=date(2026, 10, 1))
    agent = Agent(collector, tmp_path, "simulator", "test-node", 60)
    for minute in range(3):
        agent.collect(datetime(2026, 10, 14, 9, minute, tzinfo=UTC))
    port = free_port()
    server, _thread = start_http_server(port, "127.0.0.1", registry=agent.metrics.registry)
    try:
        metrics = scrape(port)
    finally:
        server.shutdown()
    usage = spool_rows(tmp_path)
    requests_ = spool_rows(tmp_path, "requests")
    assert metrics['chargeback_agent_samples_written_total{kind="usage"}'] == usage.num_rows
    assert metrics['chargeback_agent_samples_written_total{kind="requests"}'] == (
        requests_.num_rows)
    assert metrics['chargeback_agent_batches_written_total{kind="usage"}'] == 3
    files = [p for p in tmp_path.rglob("*.parquet")]
    assert metrics["chargeback_agent_spool_size_bytes"] == sum(p.stat().st_size for p in files)
    # The last window ended 2026-10-14 09:03, long ago: the lag is that far behind now.
    lag = datetime.now(UTC) - datetime(2026, 10, 14, 9, 3, tzinfo=UTC)
    assert metrics["chargeback_agent_spool_lag_seconds"] == pytest.approx(
        lag.total_seconds(), abs=60)
    acme = usage.filter(pa.compute.equal(usage["tenant"], "acme"))
    key = ('chargeback_tenant_gpu_seconds_total{hardware_tier="H100-80GB-HBM3",'
           'model="llama-3.1-70b",tenant="acme"}')
    # acme holds 3 H100s for 3 minutes.
    assert metrics[key] == pytest.approx(3 * 3 * 60)
    assert metrics[key] == pytest.approx(pa.compute.sum(acme["allocated_gpu_seconds"]).as_py())
    assert any(k.startswith("chargeback_tenant_gpu_seconds_total{") and 'tenant="__idle__"' in k
               for k in metrics)


def test_unwritable_spool_keeps_batches_and_retries(tmp_path):
    blocked = tmp_path / "spool"
    blocked.write_text("a file where the spool folder should be")
    collector = SimulatorCollector(origin=date(2026, 10, 1))
    messages: list[str] = []
    agent = Agent(collector, blocked, "simulator", "n", 60, log=messages.append)
    agent.collect(datetime(2026, 10, 2, 0, 0, tzinfo=UTC))
    assert agent.metrics.errors.labels("write")._value.get() >= 1
    assert agent.metrics.pending._value.get() == 2  # usage + requests of that window
    assert "kept in memory" in messages[0]

    blocked.unlink()
    agent.collect(datetime(2026, 10, 2, 0, 1, tzinfo=UTC))
    assert agent.metrics.pending._value.get() == 0
    windows = set(spool_rows(blocked)["window_start"].to_pylist())
    assert windows == {datetime(2026, 10, 2, 0, m, tzinfo=UTC) for m in (0, 1)}


def test_a_failing_collector_is_counted_and_the_agent_goes_on(tmp_path):
    class Flaky:
        calls = 0

        def rows(self, window_start, duration_s):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("GPU fell off the bus")
            return SimulatorCollector(origin=date(2026, 10, 1)).rows(window_start, duration_s)

    messages: list[str] = []
    agent = Agent(Flaky(), tmp_path, "x", "n", 60, log=messages.append, cluster="c1",
                  gap_node="gpu-7")
    agent.collect(datetime(2026, 10, 2, tzinfo=UTC))
    agent.collect(datetime(2026, 10, 2, 0, 1, tzinfo=UTC))
    assert agent.metrics.errors.labels("collect")._value.get() == 1
    assert "GPU fell off the bus" in messages[0]
    assert set(spool_rows(tmp_path)["window_start"].to_pylist()) == {
        datetime(2026, 10, 2, 0, 1, tzinfo=UTC)}
    # The failed window is a gap of the agent's node, not an empty window.
    [gap] = spool_rows(tmp_path, "gaps").to_pylist()
    assert (gap["source"], gap["cluster"], gap["node"], gap["gpu_uuid"], gap["reason"]) == (
        "x", "c1", "gpu-7", None, "collector_failed")
    assert (gap["window_start"], gap["window_end"]) == (
        datetime(2026, 10, 2, tzinfo=UTC), datetime(2026, 10, 2, 0, 1, tzinfo=UTC))
    assert gap["detail"] == "RuntimeError: GPU fell off the bus"
    assert agent.metrics.gaps.labels("x", "collector_failed")._value.get() == 1


class PartlyReadable:
    """One GPU read, one not: rows for the first, a gap for the second, one pod unreadable."""

    def __init__(self) -> None:
        self.quarantined = {"Pod ns/bad": "Pod ns/bad: status.startTime: 'x' is not a time"}

    def rows(self, window_start, duration_s):
        return pa.Table.from_pylist([{
            "sample_id": f"s-{window_start:%H%M}", "window_start": window_start,
            "duration_s": duration_s, "cluster": "c", "node": "n1", "gpu_uuid": "GPU-1",
            "gpu_product": "NVIDIA L4", "gpu_equivalents": 1.0, "tenant": "t",
            "workload_kind": "batch", "allocated_gpu_seconds": duration_s, "source": "nvml",
        }], schema=LEDGER_SCHEMA)

    def gaps(self, window_start, duration_s):
        return [Gap("nvml", "c", "n1", "GPU-2", window_start,
                    window_start + timedelta(seconds=duration_s), GapReason.DEVICE_LOST,
                    "GPU-2: GPU is lost")]


def test_gaps_are_written_beside_the_rows_counted_and_served_in_metrics(tmp_path):
    messages: list[str] = []
    agent = Agent(PartlyReadable(), tmp_path, "nvml", "n1", 60, log=messages.append)
    for minute in range(3):
        agent.collect(datetime(2026, 10, 2, 0, minute, tzinfo=UTC))
    assert spool_rows(tmp_path).num_rows == 3
    gaps = spool_rows(tmp_path, "gaps").to_pylist()
    assert [(g["gpu_uuid"], g["reason"]) for g in gaps] == [("GPU-2", "device_lost")] * 3
    assert len({g["gap_id"] for g in gaps}) == 3
    assert sum("gap: nvml, node n1 device GPU-2" in m for m in messages) == 3
    port = free_port()
    server, _thread = start_http_server(port, "127.0.0.1", registry=agent.metrics.registry)
    try:
        metrics = scrape(port)
    finally:
        server.shutdown()
    assert metrics['chargeback_collector_gaps_total{reason="device_lost",source="nvml"}'] == 3
    assert metrics['chargeback_collector_quarantined_objects{source="nvml"}'] == 1
    assert metrics['chargeback_agent_batches_written_total{kind="gaps"}'] == 3


def test_once_with_a_gap_writes_everything_then_raises(tmp_path):
    now = datetime(2026, 10, 2, 0, 0, 30, tzinfo=UTC).timestamp()
    agent = Agent(PartlyReadable(), tmp_path, "nvml", "n1", 60, clock=lambda: now,
                  log=lambda _m: None)
    with pytest.raises(CollectionGaps) as raised:
        run_agent(agent, once=True, metrics_port=None)
    assert raised.value.problems == [
        "nvml, node n1 device GPU-2, 2026-10-02 00:00:00-00:01:00 UTC: GPU lost: "
        "GPU-2: GPU is lost",
        f"1 gap(s) recorded in {tmp_path} beside the rows that could be read",
    ]
    assert isinstance(raised.value, TransientError)
    assert spool_rows(tmp_path).num_rows == 1
    assert spool_rows(tmp_path, "gaps").num_rows == 1


def test_due_windows_catch_up_but_not_forever():
    agent = Agent(SimulatorCollector(origin=date(2026, 10, 1)), Path("unused"), "x", "n", 60)
    t0 = datetime(2026, 10, 2, 12, tzinfo=UTC).timestamp()
    assert list(agent._due_windows(t0)) == [t0 - 60]
    assert list(agent._due_windows(t0 + 60)) == [t0]
    # Stalled for 3 windows: all three are collected, in order.
    assert list(agent._due_windows(t0 + 240)) == [t0 + 60, t0 + 120, t0 + 180]
    # Stalled for a day: only the most recent windows are asked for.
    late = list(agent._due_windows(t0 + 86400))
    assert len(late) == 61
    assert late[-1] == t0 + 86400 - 60


def test_delay_collects_windows_later():
    agent = Agent(SimulatorCollector(origin=date(2026, 10, 1)), Path("unused"), "x", "n", 60,
                  delay_s=120)
    t0 = datetime(2026, 10, 2, 12, tzinfo=UTC).timestamp()
    assert list(agent._due_windows(t0)) == [t0 - 180]


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this node has a driver")
def test_nvml_without_a_driver_says_so_and_exits_non_zero(tmp_path):
    result = CliRunner().invoke(main, ["collect", "nvml", "--once", "--spool", str(tmp_path)])
    assert result.exit_code == 2
    assert "no NVIDIA driver on this node" in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.rglob("*.parquet"))


def start_agent(tmp_path: Path, port: int, interval: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "collect", "simulate", "--live", "--interval", str(interval), "--spool",
         str(tmp_path / "spool"), "--metrics-port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = condition()
        except requests.ConnectionError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def stop(process: subprocess.Popen[str]) -> int:
    os.kill(process.pid, signal.SIGTERM)
    try:
        return process.wait(timeout=10)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


def test_sigterm_while_waiting_exits_zero_at_once(tmp_path):
    port = free_port()
    process = start_agent(tmp_path, port, 300)
    wait_for(lambda: scrape(port), 20, "/metrics")
    started = time.monotonic()
    assert stop(process) == 0
    assert time.monotonic() - started < 5
    assert "SIGTERM" in process.stdout.read()


@pytest.mark.slow
def test_live_agent_writes_serves_metrics_and_stops_on_sigterm(tmp_path):
    port = free_port()
    process = start_agent(tmp_path, port, 10)
    try:
        metrics = wait_for(
            lambda: (m := scrape(port)).get(
                'chargeback_agent_batches_written_total{kind="usage"}') and m,
            40, "a first batch")
    finally:
        code = stop(process)
    assert code == 0, process.stdout.read()
    usage = spool_rows(tmp_path / "spool")
    assert usage.num_rows >= metrics['chargeback_agent_samples_written_total{kind="usage"}']
    assert usage.schema.equals(LEDGER_SCHEMA)
    assert_valid_ledger(usage)
    assert not list((tmp_path / "spool").rglob(f"{spool.TEMP_PREFIX}*"))


# --- deploy/collector-daemonset.yaml ----------------------------------------------------------

MANIFEST = ROOT / "deploy" / "collector-daemonset.yaml"


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    import yaml

    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def test_manifests_are_valid_kubernetes_objects(manifests):
    from kubernetes import client

    api = client.ApiClient()
    for key, doc in manifests.items():
        group_version = doc["apiVersion"].split("/")[-1]
        assert group_version == "v1", f"{key}: {doc['apiVersion']}"
        # Through the client's own models and back: a misspelled or misplaced field is
        # dropped on the way, so the round trip differs.
        model = api._ApiClient__deserialize(doc, f"V1{doc['kind']}")
        assert api.sanitize_for_serialization(model) == doc, key


def container_args(spec: dict) -> tuple[dict, list[str]]:
    [container] = spec["template"]["spec"]["containers"]
    assert container["command"] == ["chargeback"]
    return container, container["args"]


def test_daemonset_runs_the_nvml_agent_with_host_pids_and_read_only_mounts(manifests):
    ds = manifests["DaemonSet/chargeback-nvml"]["spec"]
    pod = ds["template"]["spec"]
    assert pod["hostPID"] is True
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert ds["selector"]["matchLabels"].items() <= ds["template"]["metadata"]["labels"].items()
    container, args = container_args(ds)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["host-proc"]["hostPath"]["path"] == "/proc"
    assert mounts["host-proc"]["readOnly"] is True
    assert volumes["nvidiactl"]["hostPath"]["path"] == "/dev/nvidiactl"
    assert mounts["nvidiactl"]["readOnly"] is True
    assert "readOnly" not in mounts["spool"]
    assert volumes["spool"]["hostPath"]["path"].startswith("/var/lib/")
    assert container["resources"]["requests"].keys() == {"cpu", "memory"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert pod["automountServiceAccountToken"] is False

    # The args are the CLI's own: parse them with the real command.
    assert args[:2] == ["collect", "nvml"]
    ctx = collect.commands["nvml"].make_context("nvml", list(args[2:]))
    assert ctx.params["proc_root"] == Path(mounts["host-proc"]["mountPath"])
    assert str(ctx.params["spool"]) == mounts["spool"]["mountPath"]
    assert ctx.params["interval_s"] == 10
    [port] = container["ports"]
    assert ctx.params["metrics_port"] == port["containerPort"] != 9400
    assert container["livenessProbe"]["httpGet"]["port"] == port["name"]


def test_pods_collector_is_a_single_deployment_with_read_only_rbac(manifests):
    deployment = manifests["Deployment/chargeback-pods"]["spec"]
    assert deployment["replicas"] == 1
    _container, args = container_args(deployment)
    assert args[:2] == ["collect", "pods"]
    ctx = collect.commands["pods"].make_context("pods", list(args[2:]))
    assert not ctx.params["node"].startswith("$(")  # a fixed name across restarts
    pod = deployment["template"]["spec"]
    claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert f"PersistentVolumeClaim/{claim}" in manifests

    account = pod["serviceAccountName"]
    assert f"ServiceAccount/{account}" in manifests
    [binding] = [d for d in manifests.values() if d["kind"] == "ClusterRoleBinding"]
    assert {"kind": "ServiceAccount", "name": account, "namespace": "gpu-chargeback"} in (
        binding["subjects"])
    role = manifests[f"ClusterRole/{binding['roleRef']['name']}"]
    [rule] = role["rules"]
    assert set(rule["resources"]) == {"pods", "nodes", "namespaces"}
    assert set(rule["verbs"]) == {"get", "list", "watch"}
