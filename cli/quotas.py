"""`chargeback quotas`: reservation recommendations as scheduler quotas (manifests or apply).

Both commands run models.planning.quotas.run_quotas, the sequence the Dagster asset runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import click

from models.errors import ChargebackError, UserError
from models.planning.quotas import (
    DEFAULT_MAX_STEP,
    ChangeRecord,
    ClusterState,
    Recommendation,
    read_recommendations,
    run_quotas,
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
    run = run_quotas(_load(recommendations_path), ClusterState(), now=datetime.now(UTC),
                     max_step=max_step, kueue=kueue, folder=out_dir)
    _print(run.records)
    click.echo(f"{len(run.files)} manifest(s) in {out_dir}")


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
@click.option("--warehouse", "warehouse_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="DuckDB file to record every change in (table scheduler_quota_changes).")
def apply(recommendations_path: Path, really: bool, max_step: int, kueue: bool,
          force_conflicts: bool, kubeconfig: str | None, context: str | None,
          warehouse_path: Path | None) -> None:
    """Apply quotas with server-side apply (dry-run unless --apply); print what changes."""
    # Imported here so `quotas write` works without touching the Kubernetes client.
    from collectors.kube_apply import api_client, apply_plan, read_cluster_state
    from models.ledger import warehouse
    from models.planning.quotas import ApplyRefused

    recommendations = _load(recommendations_path)
    try:
        api = api_client(kubeconfig, context)
    except Exception as exc:  # the config loader raises several unrelated types
        raise UserError(f"cannot load Kubernetes credentials: {exc}") from None
    try:
        con = None
        if warehouse_path is not None:
            con = warehouse.connect(warehouse_path)
            warehouse.create_schema(con)
        try:
            state = read_cluster_state(api, recommendations, kueue=kueue)
            run = run_quotas(recommendations, state, now=datetime.now(UTC), max_step=max_step,
                             kueue=kueue, con=con, apply=partial(
                                 apply_plan, api, dry_run=not really, force=force_conflicts))
        finally:
            if con is not None:
                con.close()
    except ApplyRefused as error:
        _print(error.records)
        raise
    finally:
        api.close()  # type: ignore[no-untyped-call]
    _print(run.records)
    if not really:
        click.echo("dry run: nothing was changed; rerun with --apply to apply.")


def _load(path: Path) -> list[Recommendation]:
    try:
        recommendations = read_recommendations(path)
    except ChargebackError as error:
        raise UserError(["fix these rows and rerun:", *error.problems]) from None
    if not recommendations:
        raise UserError(f"{path}: no recommendations in the file")
    return recommendations


def _print(records: Sequence[ChangeRecord]) -> None:
    for r in records:
        before = "-" if r.before is None else str(r.before)
        click.echo(f"{r.key.kind.value:<14} {r.key.label:<56} {before:>5} -> {r.after:<5} "
                   f"(use {r.in_use}, recommended {r.recommended}, {r.rule}) {r.outcome}")
