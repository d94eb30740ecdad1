"""The corpus through the installed `chargeback` script, as an operator runs it: a
representative set of bad files and arguments, a Dagster run on a bad rate card, collectors
facing garbage from the Kubernetes API and Prometheus, and a warehouse another process holds.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from tests.corpus.corpus import (
    BILL,
    Case,
    assert_refused,
    card,
    fill,
    make_workspace,
    snapshot,
    tenants,
    usage_with,
)
from tests.kube_api import KubeAPI, _Handler, start_http, stop_http, url_of

CHARGEBACK = Path(sys.executable).with_name("chargeback")


def console(args: Sequence[str], w: Path, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEBACK_")}
    environment.update(CHARGEBACK_HOME=str(w / "home"), DAGSTER_HOME=str(w / "dagster"),
                       **(env or {}))
    return subprocess.run([str(CHARGEBACK), *args], capture_output=True, text=True,
                          env=environment, timeout=timeout, check=False)


def refused(done: subprocess.CompletedProcess[str], where: Sequence[str],
            before: dict[str, Any], after: dict[str, Any]) -> None:
    assert_refused(done.returncode, done.stdout + done.stderr, where, before, after)


def without(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A snapshot without one subtree (Dagster's run history, which records refused runs)."""
    return {k: v for k, v in state.items() if not (k == prefix or k.startswith(prefix + "/"))}


CASES = [
    Case("bill-duplicate-key", BILL,
         ["{w}/card.yaml: line 8, column 5: duplicate key 'currency'"],
         card("    currency: USD\n", "    currency: USD\n    currency: EUR\n")),
    Case("bill-tenants-invalid-utf8", BILL, ["{w}/tenants.yaml: line 2, column 3: not valid"],
         {"tenants.yaml": b"tenants:\n  \xc3\x28cme:\n    plan: growth\n"}),
    Case("bill-price-1e999999", BILL, ["bands[0].price: must be at most 1,000,000"],
         card('{up_to: 500, price: "4.00"}', '{up_to: 500, price: "1e999999"}')),
    Case("bill-usage-inf", BILL, ["{w}/usage.parquet: row 3: duration_s: not a number: inf"],
         usage_with(duration_s=math.inf)),
    Case("bill-reserved-tenant", BILL, ["tenants.__idle__: names starting with __"],
         tenants("  zen:\n", "  __idle__:\n")),
    Case("invoices-period-9999-12", ["invoices", "list", "--period", "9999-12"],
         ["Invalid value for '--period'", "must be a month from 1970-01 to 2199-12"]),
    Case("run-before-the-first-partition", ["run", "--from", "2025-06-01", "--to", "2026-01-01"],
         ["Invalid value for '--from'", "2025-06-01: the pipeline's days run from"]),
    Case("users-bomb", ["users", "list", "--users", "{w}/users.yaml"],
         ["{w}/users.yaml: line 2", "aliases"],
         {"users.yaml": "a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: [*b, *b, *b, *b]\n"}),
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_console_refuses(case: Case, tmp_path: Path) -> None:
    w = make_workspace(tmp_path, case.files)
    before = snapshot(tmp_path)
    done = console(fill(case.args, w), w)
    refused(done, fill(case.where, w), before, snapshot(tmp_path))


@pytest.mark.slow
def test_a_dagster_run_on_a_bad_rate_card_is_one_message(tmp_path: Path) -> None:
    w = make_workspace(tmp_path, card("    currency: USD\n",
                                      "    currency: USD\n    currency: EUR\n"))
    before = snapshot(tmp_path)
    done = console(["run", "--from", "2026-03-01", "--to", "2026-03-01"], w,
                   {"CHARGEBACK_RATE_CARD": str(w / "card.yaml"),
                    "CHARGEBACK_TENANTS": str(w / "tenants.yaml")})
    output = done.stdout + done.stderr
    refused(done, [f"{w}/card.yaml: line 8, column 5: duplicate key 'currency'"],
            before, without(snapshot(tmp_path), "w/dagster"))
    assert "dagster._core" not in output
    assert "DagsterExecutionStepExecutionError" not in output
    # The run itself is on record, failed, for the Dagster UI.
    assert (w / "dagster").is_dir()


# -- collectors against garbage ----------------------------------------------------------------

def kubeconfig(url: str) -> str:
    import json

    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "loop",
        "clusters": [{"name": "loop", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "loop", "context": {"cluster": "loop", "user": "u"}}],
    })


GARBAGE: dict[str, tuple[int, str, bytes]] = {
    "not-json": (200, "application/json", b"<html>502 Bad Gateway</html>"),
    "truncated-json": (200, "application/json", b'{"kind": "PodList", "items": [{"metad'),
    "wrong-kind": (200, "application/json",
                   b'{"kind": "Status", "apiVersion": "v1", "status": "Success"}'),
    "server-error": (500, "application/json",
                     b'{"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": '
                     b'"Failure", "message": "etcd timeout", "reason": "InternalError", '
                     b'"code": 500}'),
}


@pytest.fixture
def kube_with_garbage_pods(request: pytest.FixtureRequest) -> Iterator[str]:
    """A loopback API server whose nodes are real (GPU nodes from the fixtures) and whose
    pod list answers with `request.param` garbage."""
    from tests.collectors.test_pods import cluster_objects

    api = KubeAPI(idle_close_s=0.15)
    for obj in cluster_objects():
        api.put(obj)
    code, content_type, body = GARBAGE[request.param]

    class Handler(_Handler):
        server_api = api

        def do_GET(self) -> None:
            if self.path.split("?")[0].rstrip("/").endswith("/pods"):
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            super().do_GET()

    server, thread = start_http(Handler)
    try:
        yield url_of(server)
    finally:
        stop_http(server, thread)


@pytest.mark.parametrize("kube_with_garbage_pods", sorted(GARBAGE), indirect=True)
def test_pods_collector_facing_garbage(kube_with_garbage_pods: str, tmp_path: Path) -> None:
    w = make_workspace(tmp_path, {"kubeconfig": kubeconfig(kube_with_garbage_pods)})
    done = console(["collect", "pods", "--once", "--spool", f"{w}/spool", "--kubeconfig",
                    f"{w}/kubeconfig", "--interval", "60"], w, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert "pods" in output
    # Could not read is never idle: no usage rows at all for the window.
    assert not list((w / "spool").glob("usage/**/*.parquet"))


class _Prometheus(BaseHTTPRequestHandler):
    answer: tuple[int, bytes] = (200, b"")

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        code, body = self.answer
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET


PROMETHEUS_GARBAGE = {
    "not-json": (200, b"<html>gateway timeout</html>"),
    "error-status": (400, b'{"status": "error", "errorType": "bad_data", "error": "parse '
                          b'error at char 12"}'),
    "matrix-of-strings": (200, b'{"status": "success", "data": {"resultType": "matrix", '
                               b'"result": [{"metric": {"__name__": "DCGM_FI_PROF_GR_ENGINE_'
                               b'ACTIVE", "UUID": "GPU-1", "modelName": "NVIDIA H100 80GB '
                               b'HBM3", "Hostname": "n1"}, "values": [[1, "NaN-ish"]]}]}}'),
}


@pytest.mark.parametrize("answer", sorted(PROMETHEUS_GARBAGE))
def test_prometheus_collector_facing_garbage(answer: str, tmp_path: Path) -> None:
    class Handler(_Prometheus):
        pass

    Handler.answer = PROMETHEUS_GARBAGE[answer]
    server, thread = start_http(Handler)
    try:
        w = make_workspace(tmp_path, {})
        done = console(["collect", "prometheus", "--once", "--spool", f"{w}/spool", "--url",
                        url_of(server), "--delay", "0"], w, timeout=120)
    finally:
        stop_http(server, thread)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert url_of(server) in output
    assert not list((w / "spool").glob("usage/**/*.parquet"))


def test_prometheus_collector_with_prometheus_down(tmp_path: Path) -> None:
    from tests.prometheus_server import free_port

    url = f"http://127.0.0.1:{free_port()}"
    w = make_workspace(tmp_path, {})
    done = console(["collect", "prometheus", "--once", "--spool", f"{w}/spool", "--url", url,
                    "--delay", "0"], w, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert url in output


@pytest.mark.slow
def test_prometheus_collector_when_the_exporter_serves_garbage(tmp_path: Path) -> None:
    """A real Prometheus scraping a dcgm-exporter that answers garbage: `up == 0`."""
    from tests.prometheus_server import _stop, _wait_ready, free_port, require_prometheus

    class Exporter(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = b"DCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu=0 this is not exposition\n\x00\x01"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    prometheus, _ = require_prometheus()
    exporter, thread = start_http(Exporter)
    target = url_of(exporter).removeprefix("http://")
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: dcgm-exporter\n"
        f"    static_configs:\n      - targets: ['{target}']\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (folder / "log").open("w")
    server = subprocess.Popen(
        [prometheus, f"--config.file={folder / 'prometheus.yml'}",
         f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(url, server, folder / "log")
        _wait_scrape_failed(url)
        w = make_workspace(tmp_path, {})
        done = console(["collect", "prometheus", "--once", "--spool", f"{w}/spool", "--url", url,
                        "--interval", "1", "--delay", "0"], w, timeout=120)
    finally:
        _stop(server.pid, server)
        log.close()
        stop_http(exporter, thread)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert target in output


def _wait_scrape_failed(url: str, timeout_s: float = 60) -> None:
    """Until Prometheus has scraped the exporter at least once and found it down (a fixed
    sleep is too short on a loaded machine)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=5) as answer:
            targets = json.load(answer)["data"]["activeTargets"]
        if targets and all(t["health"] == "down" for t in targets):
            return
        time.sleep(0.2)
    raise AssertionError(f"Prometheus at {url} did not scrape the exporter in {timeout_s} s")


# -- the warehouse held by another process ----------------------------------------------------

@pytest.fixture
def held_warehouse(tmp_path: Path) -> Iterator[Path]:
    """A demo warehouse that a second process holds open for writing (DuckDB's lock)."""
    from tests.corpus.corpus import demo_home

    home = tmp_path / "w" / "home"
    home.parent.mkdir(parents=True)
    demo_home(home)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; con = duckdb.connect(sys.argv[1]); "
         "print('ready', flush=True); sys.stdin.read()", str(home / "warehouse.duckdb")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        yield tmp_path / "w"
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("args", [["invoices", "list", "--period", "2026-10"],
                                  ["close", "--period", "2026-10"]])
def test_a_locked_warehouse_is_a_message_to_retry(held_warehouse: Path, args: list[str]
                                                   ) -> None:
    w = held_warehouse
    before = without(snapshot(w), "dagster")
    done = console(args, w)
    refused(done, ["in use by another process", "(temporary: the same command may succeed"],
            before, without(snapshot(w), "dagster"))


@pytest.mark.slow
def test_a_corrupt_spool_file_is_quarantined_not_a_traceback(tmp_path: Path) -> None:
    # The demo's rate card and tenants (the defaults) price the simulated cluster.
    w = make_workspace(tmp_path, {})
    made = console(["collect", "simulate", "--spool", f"{w}/home/spool", "--days", "1",
                    "--start", "2026-03-01"], w)
    assert made.returncode == 0, made.stderr
    good = sorted((w / "home" / "spool").glob("usage/**/*.parquet"))
    broken = good[0].with_name("broken.parquet")
    broken.write_bytes(good[0].read_bytes()[:100])
    done = console(["run", "--from", "2026-03-01", "--to", "2026-03-01"], w)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Traceback" not in output
    assert "broken.parquet" in output
    assert "quarantine" in output
    assert not broken.exists()
