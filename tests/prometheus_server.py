"""A real Prometheus for tests: fixed history built with promtool, served on 127.0.0.1.

`prometheus_with_history(openmetrics_text, folder)` builds TSDB blocks from OpenMetrics text
with `promtool tsdb create-blocks-from openmetrics`, starts Debian's `prometheus` on a free port
over them and stops it by its own PID. Blocks hold samples at the times written, so tests query
those times (well outside the head's two hours); retention is set long enough that the server
never deletes them. With `scrape_configs` the server also scrapes live targets (tests then read
the last few seconds): a real scrape, so `up` says what Prometheus made of each target."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import yaml

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


def require_prometheus() -> tuple[str, str]:
    if PROMETHEUS is None or PROMTOOL is None:
        pytest.skip(
            "Prometheus is not installed (needs Debian's `prometheus` package, which provides "
            "prometheus and promtool; `make test` installs it)"
        )
    return PROMETHEUS, PROMTOOL


@dataclass
class Series:
    name: str
    labels: dict[str, str]
    samples: list[tuple[float, float]] = field(default_factory=list)
    """(unix seconds, value), in time order."""


_LINE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(path: Path) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of each sample line of a Prometheus text scrape."""
    samples = []
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError(f"{path}: cannot parse {line!r}")
        labels = dict(_LABEL.findall(match["labels"] or ""))
        samples.append((match["name"], labels, float(match["value"])))
    return samples


def to_openmetrics(series: Iterable[Series], types: Mapping[str, str]) -> str:
    """OpenMetrics text with one family per metric. `types` maps family names to
    `gauge`/`counter`/`histogram`; counter samples must be named `<family>_total`, histogram
    samples `<family>_bucket` (with `le`), `<family>_count` and `<family>_sum`."""
    families: dict[str, list[Series]] = {}
    for s in series:
        family = s.name
        if types.get(s.name.removesuffix("_total")) == "counter":
            family = s.name.removesuffix("_total")
        for suffix in ("_bucket", "_count", "_sum"):
            if s.name.endswith(suffix) and types.get(s.name.removesuffix(suffix)) == "histogram":
                family = s.name.removesuffix(suffix)
        families.setdefault(family, []).append(s)
    lines = []
    for family, members in families.items():
        lines.append(f"# TYPE {family} {types.get(family, 'gauge')}")
        for s in members:
            label_text = ",".join(
                f'{k}="{_escape(v)}"' for k, v in sorted(s.labels.items())
            )
            for ts, value in s.samples:
                number = "NaN" if math.isnan(value) else repr(float(value))
                lines.append(f"{s.name}{{{label_text}}} {number} {ts:.3f}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def prometheus_with_history(
    openmetrics_text: str,
    folder: Path,
    *,
    lookback_delta: str = "1m",
    extra_args: Sequence[str] = (),
    scrape_configs: Sequence[Mapping[str, object]] = (),
) -> Iterator[str]:
    """Yield the URL of a Prometheus serving exactly this history (none when the text is
    empty) and scraping `scrape_configs`; stop it afterwards."""
    prometheus, promtool = require_prometheus()
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    if openmetrics_text:
        source = folder / "history.om.txt"
        source.write_text(openmetrics_text)
        built = subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
            capture_output=True, text=True, check=False,
        )
        if built.returncode != 0:
            raise RuntimeError(f"promtool could not build blocks from {source}:\n{built.stderr}")
    config = folder / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1h"},
        "scrape_configs": [dict(c) for c in scrape_configs],
    }))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (folder / "prometheus.log").open("w")
    server = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            "--storage.tsdb.retention.time=100y",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--query.lookback-delta={lookback_delta}",
            *extra_args,
        ],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        _wait_ready(url, server, folder / "prometheus.log")
        yield url
    finally:
        _stop(server.pid, server)
        log.close()


def _wait_ready(url: str, server: subprocess.Popen[bytes], log: Path,
                name: str = "prometheus") -> None:
    """Until the server answers `/-/ready` (Prometheus and Alertmanager alike)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"{name} exited with {server.returncode}:\n{log.read_text()}")
        try:
            if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} at {url} not ready after 30 s:\n{log.read_text()}")


def _stop(pid: int, server: subprocess.Popen[bytes]) -> None:
    os.kill(pid, signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
        server.wait()
