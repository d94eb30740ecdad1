"""The pod collector never turns "could not read" into idle.

The real kubernetes client against the loopback API server (tests/kube_api.py) answering as
broken servers and proxies do: an error status, a body that is not JSON or is cut short, a
list of the wrong kind or without its fields, an answer slower than the client's timeout, a
watch carrying garbage or an ERROR event; and single objects with unreadable fields. Before,
each of these made every GPU of the listed nodes `__idle__` (one bad `startTime` failed the
client's typed parsing of the whole list). Expected seconds come from test_pods.py, worked out
by hand from the fixture cluster."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from kubernetes import client as k8s

from cli.collect import collect
from collectors import spool
from collectors.pods import PodCollector
from models.ledger.gaps import GapReason
from models.ledger.usage import GPU_SECONDS_TOLERANCE, IDLE_TENANT, validate_ledger
from tests.collectors.test_pods import (
    EXPECTED_SECONDS,
    NAMESPACE_TENANTS,
    WINDOW,
    Clock,
    by_name,
    cluster_objects,
    pod_seconds,
)
from tests.kube_api import serve

BEFORE = WINDOW - timedelta(minutes=1)  # a window while the API could not be read


@pytest.fixture
def kube():
    with serve(idle_close_s=0.15) as api:
        for obj in cluster_objects():
            api.put(obj)
        api.slow_s = 2.0
        yield api


def collector_at(kube, now: datetime) -> tuple[PodCollector, Clock]:
    clock = Clock(now)
    client = k8s.ApiClient(k8s.Configuration(host=kube.url))
    return PodCollector(client, cluster="test", namespace_tenants=NAMESPACE_TENANTS,
                        watch_timeout_s=5, request_timeout_s=1, clock=clock), clock


def capacity_by_node(collector: PodCollector) -> dict[str, float]:
    return {name: float(sum(d.gpu_equivalents for d in node.devices())) * 60
            for name, node in collector.state.nodes.items()}


def seconds_by_node(rows: list[dict]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for row in rows:
        totals[row["node"]] += row["allocated_gpu_seconds"]
    return dict(totals)


@pytest.mark.parametrize(("fault", "message"), [
    ("status-500", "HTTP 500 Internal Server Error: etcdserver: request timed out"),
    ("not-json", "not JSON ('<html><body>502 Bad Gateway"),
    ("truncated", "not JSON"),
    ("wrong-kind", "expected kind PodList, got 'NodeList'"),
    ("no-items", "`items` and `metadata` must be a list and an object"),
    ("slow", "ReadTimeoutError"),
])
def test_unreadable_pod_list_is_a_gap_for_every_node_never_idle(kube, fault, message) -> None:
    collector, clock = collector_at(kube, BEFORE + timedelta(seconds=30))
    # The client retries a timed-out request three times (urllib3's default) before failing.
    kube.fail_next("pods", fault, times=4 if fault == "slow" else 1)
    collector.sync()
    # The nodes were listed, the pods were not: every GPU would have looked idle.
    assert set(collector.state.nodes) >= {"gpu-h100-a", "gpu-l4-ts"}
    assert collector.rows(BEFORE, 60).num_rows == 0
    [gap] = collector.gaps(BEFORE, 60)
    assert (gap.source, gap.cluster, gap.node, gap.gpu_uuid) == ("pods", "test", None, None)
    assert (gap.window_start, gap.window_end) == (BEFORE, WINDOW)
    assert gap.reason is GapReason.SOURCE_UNREADABLE
    assert f"Kubernetes API {kube.url}" in gap.detail
    assert message in gap.detail

    clock.now = WINDOW - timedelta(seconds=30)
    collector.sync()  # the API answers again: relist
    assert collector.relists == 2
    assert collector.rows(BEFORE, 60).num_rows == 0  # that window stays a gap
    assert collector.gaps(BEFORE, 60) == [gap]
    rows = collector.rows(WINDOW, 60).to_pylist()
    assert validate_ledger(rows) == []
    assert pod_seconds(rows) == pytest.approx(EXPECTED_SECONDS)
    assert collector.gaps(WINDOW, 60) == []


@pytest.mark.parametrize(("fault", "message", "relisted"), [
    ("garbage-event", "Pod watch: not JSON ('<<< upstream reset >>>')", True),
    ("error-event", "Pod watch: ERROR event 500 InternalError", True),
    ("status-500", "HTTP 500", True),
    # A broken connection loses no event: the watch resumes from the last resourceVersion
    # seen, but the windows until then were computed without knowing what happened meanwhile.
    ("dropped", "ProtocolError", False),
])
def test_unreadable_watch_opens_an_outage_until_the_api_is_read_again(
    kube, fault, message, relisted
) -> None:
    listed_at = BEFORE - timedelta(seconds=30)
    collector, clock = collector_at(kube, listed_at)
    collector.sync()
    if fault == "dropped":
        kube.put(by_name("svc-0"))  # an event for the connection to break before
        kube.drop_next_watch_after("pods", 0)
    else:
        kube.fail_next("pods", fault)
    clock.now = WINDOW - timedelta(seconds=50)
    collector.sync()
    clock.now = WINDOW - timedelta(seconds=30)
    collector.sync()
    assert collector.relists == (2 if relisted else 1)
    [outage] = collector.outages
    assert (outage.start, outage.end) == (listed_at, WINDOW - timedelta(seconds=30))
    assert message in outage.problem
    # Known complete up to the last good sync, and again from the one that read it whole.
    assert collector.rows(BEFORE - timedelta(minutes=2), 60).num_rows > 0
    assert collector.gaps(BEFORE - timedelta(minutes=2), 60) == []
    assert collector.rows(BEFORE, 60).num_rows == 0
    assert [g.reason for g in collector.gaps(BEFORE, 60)] == [GapReason.SOURCE_UNREADABLE]
    assert pod_seconds(collector.rows(WINDOW, 60).to_pylist()) == pytest.approx(
        EXPECTED_SECONDS)


def test_one_pod_with_an_unreadable_field_is_quarantined_alone(kube) -> None:
    bad = by_name("job-0")
    bad["status"]["conditions"][0]["lastTransitionTime"] = "yesterday"
    kube.put(bad)
    collector, clock = collector_at(kube, BEFORE)
    collector.sync()
    rows = collector.rows(WINDOW, 60).to_pylist()
    assert validate_ledger(rows) == []
    # Every other pod keeps its rows; job-0 has none, and neither has the idle quarter of its
    # L4: what job-0 held is unknown, so what nobody held is too.
    expected = {k: v for k, v in EXPECTED_SECONDS.items()
                if k not in ("job-0", "idle:gpu-l4-ts/gpu0")}
    assert pod_seconds(rows) == pytest.approx(expected)
    by_node = seconds_by_node(rows)
    capacity = capacity_by_node(collector)
    for node, seconds in by_node.items():
        if node != "gpu-l4-ts":
            assert seconds == pytest.approx(capacity[node], abs=GPU_SECONDS_TOLERANCE)
    assert by_node["gpu-l4-ts"] == pytest.approx(capacity["gpu-l4-ts"] * 2 / 4)
    [gap] = collector.gaps(WINDOW, 60)
    assert (gap.node, gap.gpu_uuid, gap.reason) == ("gpu-l4-ts", None,
                                                    GapReason.MALFORMED_OBJECT)
    field = "status.conditions[0].lastTransitionTime: 'yesterday' is not an RFC 3339 time"
    assert gap.detail == f"Pod stray/job-0: {field}"
    assert collector.quarantined == {"Pod uid-stray-job-0": gap.detail}

    # A readable version arrives: from then on the node is whole again.
    kube.put(by_name("job-0"))
    clock.now = WINDOW + timedelta(seconds=70)
    collector.sync()
    assert collector.quarantined == {}
    assert collector.gaps(WINDOW + timedelta(minutes=1), 60)  # released 10 s into it
    later = WINDOW + timedelta(minutes=2)
    assert pod_seconds(collector.rows(later, 60).to_pylist()) == pytest.approx(EXPECTED_SECONDS)
    assert collector.gaps(later, 60) == []


@pytest.mark.parametrize(("change", "detail"), [
    (lambda pod: pod["spec"]["containers"][0]["resources"].update(
        limits={"nvidia.com/gpu": "a lot"}, requests={"nvidia.com/gpu": "a lot"}),
     "Pod stray/job-0: container 'main': nvidia.com/gpu: 'a lot' is not a quantity"),
    (lambda pod: pod["metadata"].update(labels=["chargeback/tenant", "x"]),
     "Pod stray/job-0: cannot be read (AttributeError"),
    (lambda pod: pod["metadata"].pop("uid"),
     "Pod stray/job-0: metadata.uid: None is not a name"),
])
def test_other_unreadable_pod_fields_are_quarantined_with_their_node(kube, change,
                                                                     detail) -> None:
    bad = by_name("job-0")
    change(bad)
    kube.put(bad)
    collector, _ = collector_at(kube, BEFORE)
    collector.sync()
    [gap] = collector.gaps(WINDOW, 60)
    assert (gap.node, gap.reason) == ("gpu-l4-ts", GapReason.MALFORMED_OBJECT)
    assert gap.detail.startswith(detail)
    rows = collector.rows(WINDOW, 60).to_pylist()
    assert "job-0" not in pod_seconds(rows)
    assert pod_seconds(rows)["llm-0"] == 60.0


def test_a_pod_whose_node_cannot_be_read_hides_every_nodes_idle(kube) -> None:
    bad = by_name("job-0")
    bad["spec"] = "gpu-l4-ts"
    kube.put(bad)
    collector, _ = collector_at(kube, BEFORE)
    collector.sync()
    rows = collector.rows(WINDOW, 60).to_pylist()
    assert IDLE_TENANT not in {r["tenant"] for r in rows}
    assert pod_seconds(rows)["llm-0"] == 60.0
    [gap] = collector.gaps(WINDOW, 60)
    assert (gap.node, gap.reason) == (None, GapReason.MALFORMED_OBJECT)


def test_an_unreadable_pod_on_no_node_is_reported_but_hides_nothing(kube) -> None:
    bad = by_name("pending-0")
    bad["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "eight"}}
    kube.put(bad)
    collector, _ = collector_at(kube, BEFORE)
    collector.sync()
    assert list(collector.quarantined) == ["Pod uid-research-pending-0"]
    assert collector.gaps(WINDOW, 60) == []
    assert pod_seconds(collector.rows(WINDOW, 60).to_pylist()) == pytest.approx(
        EXPECTED_SECONDS)


def test_an_unreadable_node_has_no_rows_but_a_gap(kube) -> None:
    node = by_name("gpu-l4-ts")
    node["status"]["allocatable"]["nvidia.com/gpu"] = "four"
    kube.put(node)
    collector, _ = collector_at(kube, BEFORE)
    collector.sync()
    rows = collector.rows(WINDOW, 60).to_pylist()
    assert "gpu-l4-ts" not in seconds_by_node(rows)
    assert pod_seconds(rows)["llm-0"] == 60.0
    [gap] = collector.gaps(WINDOW, 60)
    assert (gap.node, gap.reason) == ("gpu-l4-ts", GapReason.MALFORMED_OBJECT)
    assert "Node gpu-l4-ts: allocatable nvidia.com/gpu: 'four' is not a quantity" in gap.detail


def test_a_pod_that_turns_unreadable_while_watched_is_quarantined(kube) -> None:
    collector, clock = collector_at(kube, BEFORE)
    collector.sync()
    bad = by_name("svc-0")
    bad["status"]["containerStatuses"] = [{"name": "svc", "state": {"terminated": {
        "finishedAt": "not yet"}}}]
    bad["status"]["phase"] = "Succeeded"
    kube.put(bad)
    clock.now = WINDOW - timedelta(seconds=10)
    collector.sync()
    [gap] = collector.gaps(WINDOW, 60)
    assert gap.node == "gpu-l4-ts"
    assert "status.containerStatuses[0].state.terminated.finishedAt" in gap.detail
    assert "svc-0" not in pod_seconds(collector.rows(WINDOW, 60).to_pylist())
    kube.delete(bad)  # deleted while still unreadable: it holds nothing from then on
    clock.now = WINDOW + timedelta(seconds=90)
    collector.sync()
    assert collector.quarantined == {}


def test_collect_pods_once_writes_a_gap_and_exits_2(kube, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "loop",
        "clusters": [{"name": "loop", "cluster": {"server": kube.url}}],
        "users": [{"name": "me", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "loop", "context": {"cluster": "loop", "user": "me"}}],
    }))
    kube.fail_next("pods", "not-json")
    folder = tmp_path / "spool"
    result = CliRunner().invoke(collect, [
        "pods", "--once", "--kubeconfig", str(kubeconfig), "--spool", str(folder),
        "--cluster", "loop", "--node", "pods-collector"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "pods, every node of cluster loop" in result.output
    assert f"Kubernetes API {kube.url}: Pod list: not JSON" in result.output
    assert "1 gap(s) recorded in" in result.output
    assert not list(spool.days(folder, "usage"))
    [day] = list(spool.days(folder, "gaps"))
    [gap] = pq.read_table(spool.day_files(folder, "gaps", day)[0]).to_pylist()
    assert (gap["source"], gap["cluster"], gap["node"], gap["reason"]) == (
        "pods", "loop", None, "source_unreadable")
    now = datetime.now(UTC)
    assert gap["window_start"] <= now < gap["window_end"] + timedelta(seconds=5)

    # The same command against a readable API writes rows and exits 0.
    result = CliRunner().invoke(collect, [
        "pods", "--once", "--kubeconfig", str(kubeconfig), "--spool", str(folder),
        "--cluster", "loop", "--node", "pods-collector"])
    assert result.exit_code == 0, result.output
    assert list(spool.days(folder, "usage"))
