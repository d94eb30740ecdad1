"""`chargeback collect ...`: run a collector on an interval into the spool (collectors/agent.py)."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from cli.options import FiniteFloatRange
from collectors.agent import Agent, SimulatorCollector, run_agent
from collectors.spool import SpoolLocation, SpoolLocationError, local_path
from models.errors import ChargebackError


def _node_name() -> str:
    return os.environ.get("NODE_NAME") or socket.gethostname()


SPOOL_HELP = ("Spool folder (created if missing), file:///folder, or s3://bucket/prefix "
              "(credentials and endpoint from the AWS_* variables).")


def _spool_option(_ctx: click.Context, _param: click.Parameter, value: str) -> SpoolLocation:
    try:
        local = local_path(value)
    except SpoolLocationError as error:
        raise click.BadParameter(str(error)) from error
    if local is None:
        return value
    if local.exists() and not local.is_dir():
        raise click.BadParameter(f"{local} is a file, not a folder")
    return local


def _run(agent: Agent, *, once: bool, metrics_port: int | None, metrics_address: str) -> None:
    """run_agent, with its errors (gaps in a `--once` window) as one message and exit 2."""
    try:
        run_agent(agent, once=once, metrics_port=metrics_port, metrics_address=metrics_address)
    except ChargebackError as error:
        click.echo(f"Error: {error}", err=True)
        raise click.exceptions.Exit(2) from None


def _common(function: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--spool", callback=_spool_option, required=True, help=SPOOL_HELP),
        click.option("--once", is_flag=True, help="Collect a single window and exit."),
        click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
                     help="Serve /metrics on this port (off by default; 9401 in the "
                          "DaemonSet, beside dcgm-exporter's 9400)."),
        # All interfaces: Prometheus scrapes the pod's IP in-cluster.
        click.option("--metrics-address", default="0.0.0.0", show_default=True),
        click.option("--node", default=_node_name, show_default="$NODE_NAME or hostname",
                     help="Node name for the spool partition and the rows."),
        click.option("--cluster", default="default", show_default=True,
                     help="Cluster name written in every row."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@click.group("collect")
def collect() -> None:
    """Run a collector on an interval into the local spool."""


@collect.command("simulate")
@click.option("--spool", callback=_spool_option, required=True, help=SPOOL_HELP)
@click.option("--days", type=click.IntRange(1, 366), default=1, show_default=True)
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="First UTC day (default: DAYS days before today, so all rows are past).")
@click.option("--interval", "interval_s", type=click.IntRange(1, 3600), default=60,
              show_default=True, help="Seconds per sample; must divide an hour.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--scale", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Copies of the 64-GPU default cluster (nodes and tenants).")
@click.option("--live", is_flag=True,
              help="Run as a live agent (one window per interval, /metrics) instead of "
                   "writing DAYS days at once.")
@click.option("--once", is_flag=True, help="Live: write the current window and exit.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None)
@click.option("--metrics-address", default="127.0.0.1", show_default=True)
def simulate_command(spool: SpoolLocation, days: int, start: datetime | None, interval_s: int,
                     seed: int, scale: int, live: bool, once: bool, metrics_port: int | None,
                     metrics_address: str) -> None:
    """Write the simulated cluster (collectors/simulate.py) to the spool."""
    from tqdm import tqdm

    from collectors.simulate import SOURCE, default_cluster, simulate_to_spool

    if 3600 % interval_s:
        raise click.BadParameter(f"must divide an hour (10, 60, 300...), got {interval_s}",
                                 param_hint="--interval")
    today = datetime.now(UTC).date()
    if live or once:
        origin = start.date() if start else today.replace(day=1)
        agent = Agent(SimulatorCollector(origin=origin, interval_s=interval_s, seed=seed,
                                         scale=scale),
                      spool, SOURCE, "simulator", interval_s)
        _run(agent, once=once, metrics_port=metrics_port, metrics_address=metrics_address)
        return
    first = start.date() if start else today - timedelta(days=days)
    usage_batches = days * 24 * len(default_cluster(scale).nodes)
    with tqdm(total=usage_batches, unit="batch", desc="simulating", disable=None,
              file=sys.stderr) as bar:
        summary = simulate_to_spool(
            spool, first, days, interval_s, seed, scale,
            progress=lambda b: bar.update(1 if b.kind == "usage" else 0),
        )
    click.echo(f"wrote {summary.usage_rows:,} usage rows and {summary.request_rows:,} request "
               f"rows in {summary.files:,} files to {spool} ({first} + {days} days)")


@collect.command("nvml")
@_common
@click.option("--interval", "interval_s", type=FiniteFloatRange(min=1), default=10.0,
              show_default=True, help="Seconds between NVML samples.")
@click.option("--window", "window_s", type=FiniteFloatRange(min=1), default=60.0,
              show_default=True, help="Seconds per spool batch (a multiple of --interval).")
@click.option("--proc-root", type=click.Path(file_okay=False, path_type=Path),
              default=Path("/proc"), show_default=True,
              help="The host's /proc (PID -> pod); in the DaemonSet /host/proc.")
def nvml_command(spool: SpoolLocation, once: bool, metrics_port: int | None, metrics_address: str,
                 node: str, cluster: str, interval_s: float, window_s: float,
                 proc_root: Path) -> None:
    """Sample this node's GPUs through NVML (run on every GPU node: the DaemonSet)."""
    from collectors.nvml import NvmlCollector

    # No driver, or NVML failing to start, is an NvmlUnavailable: exit 2 with its message.
    collector = NvmlCollector(node=node, cluster=cluster, proc_root=proc_root)
    with collector:
        agent = Agent(collector, spool, "nvml", node, window_s, sample_s=interval_s,
                      cluster=cluster, gap_node=node)
        _run(agent, once=once, metrics_port=metrics_port, metrics_address=metrics_address)


def _tenant_options(command: Any) -> Any:
    """--tenants FILE and --namespace-tenant NS=TENANT: the configured namespace -> tenant map
    of DESIGN.md's tenant resolution (after namespace and pod labels)."""
    command = click.option(
        "--namespace-tenant", "namespace_tenant", multiple=True, metavar="NS=TENANT",
        help="Charge namespace NS to TENANT when no label names a tenant (repeatable; wins "
             "over --tenants).")(command)
    return click.option(
        "--tenants", "tenants_file", default=None,
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="Tenants YAML: a pod in one of a tenant's `namespaces` is charged to that tenant "
             "when no label names one (else __unattributed__).")(command)


@collect.command("pods")
@_common
@click.option("--interval", "interval_s", type=FiniteFloatRange(min=1), default=60.0,
              show_default=True, help="Seconds per spool batch; the watch runs in between.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Default: in-cluster service account, else ~/.kube/config.")
@_tenant_options
def pods_command(spool: SpoolLocation, once: bool, metrics_port: int | None, metrics_address: str,
                 node: str, cluster: str, interval_s: float, kubeconfig: str | None,
                 tenants_file: Path | None, namespace_tenant: tuple[str, ...]) -> None:
    """List and watch GPU pods through the Kubernetes API (one replica per cluster)."""
    from collectors.pods import PodCollector, api_client_from_environment

    api_client = api_client_from_environment(kubeconfig)
    # The watch runs on every tick and must return before the next one.
    collector = PodCollector(api_client, cluster=cluster,
                             namespace_tenants=_namespace_tenants(tenants_file, namespace_tenant),
                             watch_timeout_s=max(1, int(interval_s // 2)))
    agent = Agent(collector, spool, "pods", node, interval_s, cluster=cluster)
    _run(agent, once=once, metrics_port=metrics_port, metrics_address=metrics_address)


def _namespace_tenants(tenants_file: Path | None, pairs: tuple[str, ...]) -> dict[str, str]:
    """The configured namespace -> tenant map: the tenants file's `namespaces`, then
    `--namespace-tenant NS=TENANT` pairs (which win over the file)."""
    from models.billing.rate_cards import ConfigError, load_tenants

    mapping: dict[str, str] = {}
    if tenants_file is not None:
        try:
            tenants = load_tenants(tenants_file)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--tenants") from exc
        mapping = {ns: t.name for t in tenants.values() for ns in t.namespaces}
    for pair in pairs:
        namespace, _, tenant = pair.partition("=")
        namespace, tenant = namespace.strip(), tenant.strip()
        if not namespace or not tenant:
            raise click.BadParameter(f"expected NAMESPACE=TENANT, got {pair!r}",
                                     param_hint="--namespace-tenant")
        if tenant.startswith("__"):
            raise click.BadParameter(
                f"{pair!r}: tenant names starting with __ are reserved (__idle__, "
                "__unattributed__, ...)", param_hint="--namespace-tenant")
        mapping[namespace] = tenant
    return mapping


@collect.command("prometheus")
@_common
@click.option("--url", required=True, help="Prometheus (or Thanos/Mimir) base URL.")
@click.option("--interval", "interval_s", type=click.IntRange(min=1), default=60,
              show_default=True, help="Seconds per window and query step.")
@click.option("--delay", "delay_s", type=FiniteFloatRange(min=0), default=120.0,
              show_default=True, help="Read a window this long after it ends, so its scrapes "
                                      "have landed.")
@click.option("--exporter-job", default=None, metavar="REGEX",
              help="Regular expression matching the Prometheus job of dcgm-exporter targets "
                   "(default .*dcgm.*): a window in which one could not be scraped is recorded "
                   "as a gap.")
@click.option("--gateway", default="litellm", show_default=True, metavar="NAME|FILE",
              help="Where the inference gateway keeps per-tenant request work: `litellm`, "
                   "`none`, or a YAML mapping file (docs/collectors.md).")
@click.option("--server", default="vllm", show_default=True, metavar="NAME|FILE",
              help="Where the inference server keeps prefill and decode time: `vllm`, `none`, "
                   "or a YAML mapping file.")
@_tenant_options
def prometheus_command(spool: SpoolLocation, once: bool, metrics_port: int | None,
                       metrics_address: str, node: str, cluster: str, url: str,
                       interval_s: int, delay_s: float, exporter_job: str | None,
                       gateway: str, server: str,
                       tenants_file: Path | None, namespace_tenant: tuple[str, ...]) -> None:
    """Read dcgm-exporter, inference-gateway and inference-server metrics from Prometheus."""
    from collectors.prometheus import DCGM_JOB, PrometheusCollector, PrometheusReader
    from collectors.request_metrics import BUILT_IN, RequestMetrics, load_request_metrics

    def mapping(value: str) -> RequestMetrics | None:
        if value == "none":
            return None
        return BUILT_IN.get(value) or load_request_metrics(Path(value))

    namespace_tenants = _namespace_tenants(tenants_file, namespace_tenant)
    reader = PrometheusReader(url, cluster=cluster, exporter_job=exporter_job or DCGM_JOB,
                              gateway=mapping(gateway), server=mapping(server))
    try:
        agent = Agent(PrometheusCollector(reader, interval_s, namespace_tenants), spool,
                      "prometheus", node, interval_s, delay_s=delay_s, cluster=cluster)
        _run(agent, once=once, metrics_port=metrics_port, metrics_address=metrics_address)
    finally:
        reader.close()
