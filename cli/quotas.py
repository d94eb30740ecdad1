"""`chargeback quotas`: reservation recommendations as scheduler quotas (manifests or apply)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
import yaml

from models.errors import UserError
from models.files import atomic_write, safe_path
from models.planning.quotas import (
    DEFAULT_MAX_STEP,
    QuotaChange,
    Recommendation,
    RecommendationsError,
    cluster_queue_manifests,
    dns_name,
    kueue_admission_problems,
    plan_cluster_queues,
    plan_resource_quotas,
    read_recommendations,
    resource_quota_manifests,
)

_RECOMMENDATIONS = click.option(
    "--recommendations", "recommendations_path", required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Parquet or CSV: tenant, namespace, hardware_tier, mig_profile, recommended_gpus "
    "(optional in_use_gpus, current_gpus).",
)
_MAX_STEP = click.option(
    "--max-step", type=click.IntRange(min=1), default=DEFAULT_MAX_STEP, show_default=True,
    help="Largest change of one quota per run, in GPUs (or MIG instances).",
)
_KUEUE = click.option(
    "--kueue/--no-kueue", default=True, show_default=True,
    help="Also set Kueue ClusterQueue nominalQuota per ResourceFlavor (hardware tier).",
)


@click.group("quotas")
def quotas() -> None:
    """Write or apply scheduler quotas from reservation recommendations.

    A ResourceQuota per tenant namespace (requests.nvidia.com/gpu, requests.nvidia.com/mig-*)
    and, with Kueue, a kueue.x-k8s.io/v1beta2 ClusterQueue per tenant with a nominalQuota per
    hardware tier. A quota never drops below what is in use and moves at most --max-step."""


@quotas.command("write")
@_RECOMMENDATIONS
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the YAML manifests (one file per object), e.g. a GitOps repo.")
@_MAX_STEP
@_KUEUE
def write(recommendations_path: Path, out_dir: Path, max_step: int, kueue: bool) -> None:
    """Write manifests for GitOps. Use and current quota come from the file's optional
    in_use_gpus and current_gpus columns (no cluster is contacted)."""
    recommendations = _load(recommendations_path)
    changes = plan_resource_quotas(recommendations, current_hard={}, in_use={},
                                   max_step=max_step)
    manifests = resource_quota_manifests(changes, {r.namespace: r.tenant for r in recommendations})
    if kueue:
        cq_changes = plan_cluster_queues(recommendations, current_nominal={}, in_use={},
                                         max_step=max_step)
        cq_manifests = cluster_queue_manifests(cq_changes, _queue_namespaces(recommendations))
        for manifest in cq_manifests:
            problems = kueue_admission_problems(manifest)
            if problems:
                raise UserError(
                    f"ClusterQueue {manifest['metadata']['name']}: Kueue would reject it: "
                    + "; ".join(problems)
                )
        changes += cq_changes
        manifests += cq_manifests
    out_dir.mkdir(parents=True, exist_ok=True)
    for manifest in manifests:
        meta = manifest["metadata"]
        stem = f"{meta['namespace']}.{meta['name']}" if "namespace" in meta else meta["name"]
        path = safe_path(out_dir, f"{manifest['kind'].lower()}-{stem}", ".yaml")
        atomic_write(path, yaml.safe_dump(manifest, sort_keys=False))
    _print_changes(changes, verb="written")
    click.echo(f"{len(manifests)} manifest(s) in {out_dir}")


@quotas.command("apply")
@_RECOMMENDATIONS
@click.option("--apply", "really", is_flag=True,
              help="Really change the cluster. Without it the API server only dry-runs.")
@_MAX_STEP
@_KUEUE
@click.option("--force-conflicts", is_flag=True,
              help="Take over fields another field manager owns (server-side apply force).")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Kubeconfig file (default: in-cluster credentials, then ~/.kube/config).")
@click.option("--context", default=None, help="Kubeconfig context.")
@click.option("--warehouse", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="DuckDB file to record every change in (table scheduler_quota_changes).")
def apply(recommendations_path: Path, really: bool, max_step: int, kueue: bool,
          force_conflicts: bool, kubeconfig: str | None, context: str | None,
          warehouse: Path | None) -> None:
    """Apply quotas with server-side apply (dry-run unless --apply); print what changes."""
    # Imported here so `quotas write` works without touching the Kubernetes client.
    import duckdb

    from collectors.kube_apply import ApplyError, api_client, apply_quotas, record_changes

    recommendations = _load(recommendations_path)
    try:
        api = api_client(kubeconfig, context)
    except Exception as exc:  # the config loader raises several unrelated types
        raise UserError(f"cannot load Kubernetes credentials: {exc}") from exc
    failure: ApplyError | None = None
    try:
        records = apply_quotas(api, recommendations, max_step=max_step, dry_run=not really,
                               force=force_conflicts, kueue=kueue)
    except ApplyError as exc:
        failure, records = exc, exc.records
    finally:
        api.close()  # type: ignore[no-untyped-call]
    for r in records:
        where = f"{r.namespace}/{r.name}" if r.namespace else r.name
        before = "-" if r.before is None else str(r.before)
        click.echo(f"{r.kind:<14} {where:<32} {r.field:<64} {before:>5} -> {r.after:<5} "
                   f"(use {r.in_use}, recommended {r.recommended}, {r.rule}) {r.outcome}")
    if warehouse is not None and records:
        con = duckdb.connect(str(warehouse))
        try:
            record_changes(con, records)
        finally:
            con.close()
    if failure is not None:
        raise UserError(str(failure))
    if not really:
        click.echo("dry run: nothing was changed; rerun with --apply to apply.")


def _load(path: Path) -> list[Recommendation]:
    try:
        recommendations = read_recommendations(path)
    except RecommendationsError as exc:
        raise UserError(
            f"{path}: fix these rows and rerun:\n  " + "\n  ".join(exc.problems)
        ) from exc
    if not recommendations:
        raise UserError(f"{path}: no recommendations in the file")
    return recommendations


def _queue_namespaces(recommendations: Sequence[Recommendation]) -> dict[str, list[str]]:
    namespaces: dict[str, list[str]] = {}
    for r in recommendations:
        namespaces.setdefault(dns_name(r.tenant), []).append(r.namespace)
    return namespaces


def _print_changes(changes: Sequence[QuotaChange], *, verb: str) -> None:
    for c in changes:
        where = f"{c.namespace}/{c.name}" if c.namespace else c.name
        before = "-" if c.current is None else str(c.current)
        state = verb if c.changes else "unchanged"
        click.echo(f"{c.kind:<14} {where:<32} {c.field:<64} {before:>5} -> {c.target:<5} "
                   f"(use {c.in_use}, recommended {c.recommended}, {c.rule}) {state}")
