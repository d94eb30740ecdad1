"""`chargeback quotas`: reservation recommendations as scheduler quotas (manifests or apply).

Both commands run models.planning.quotas.run_quotas, the sequence the Dagster asset runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any

import click

from models.errors import ChargebackError, UserError
from models.planning.quotas import (
    DEFAULT_MAX_STEP,
    ChangeRecord,
    ClusterState,
    KueueSetup,
    QuotaPlan,
    Recommendation,
    read_recommendations,
    run_quotas,
)

_RECOMMENDATIONS = click.option(
    "--recommendations", "recommendations_path", default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Parquet or CSV: tenant, namespace, hardware_tier, mig_profile, recommended_gpus "
    "(optional in_use_gpus, current_gpus, sla_class, isolation). No overflow pool, and "
    "needs --flavors existing with Kueue (the file does not say which GPUs a tier has).",
)
_FROM_WAREHOUSE = click.option(
    "--from-warehouse", "source_path", default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read one day's analysis from this DuckDB warehouse instead (opened read-only): its "
    "reservation recommendations, overflow pools, what tenants hold, and each tier's GPU "
    "products for the ResourceFlavors. Tenants from CHARGEBACK_TENANTS.",
)
_DAY = click.option(
    "--day", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
    help="With --from-warehouse: the analysis day (default: the latest one).",
)
_FLAVORS = click.option(
    "--flavors", type=click.Choice(["generate", "existing"]), default="generate",
    show_default=True,
    help="generate: write a ResourceFlavor per hardware tier from the tier's GPU products. "
    "existing: the operator manages the flavors; `apply` checks that each one exists.",
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


def _sources(f: Callable[..., Any]) -> Callable[..., Any]:
    for option in (_FLAVORS, _DAY, _FROM_WAREHOUSE, _RECOMMENDATIONS):
        f = option(f)
    return f


@quotas.command("write")
@_sources
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the YAML manifests (one file per object), e.g. a GitOps repo.")
@_MAX_STEP
@_KUEUE
def write(recommendations_path: Path | None, source_path: Path | None, day: datetime | None,
          flavors: str, out_dir: Path, max_step: int, kueue: bool) -> None:
    """Write manifests for GitOps: with Kueue, ResourceFlavors, the cohort (the overflow pool),
    a ClusterQueue per tenant and a LocalQueue per namespace, and a ResourceQuota per
    namespace. No cluster is contacted: use and current quota come from the warehouse, or from
    the file's optional in_use_gpus and current_gpus columns."""
    recommendations, setup, held = _inputs(recommendations_path, source_path, day, flavors,
                                           kueue)
    run = run_quotas(recommendations, ClusterState(no_borrowing=held), now=datetime.now(UTC),
                     max_step=max_step, kueue=kueue, folder=out_dir, setup=setup,
                     no_borrowing=held)
    _print(run.records)
    _notes(run.plan, flavors)
    click.echo(f"{len(run.files)} manifest(s) in {out_dir}")


@quotas.command("apply")
@_sources
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
def apply(recommendations_path: Path | None, source_path: Path | None, day: datetime | None,
          flavors: str, really: bool, max_step: int, kueue: bool, force_conflicts: bool,
          kubeconfig: str | None, context: str | None, warehouse_path: Path | None) -> None:
    """Apply quotas with server-side apply (dry-run unless --apply); print what changes.
    Objects are applied in order (flavors, cohort, queues, local queues, quotas); nothing is
    applied when Kueue would refuse one, or when --flavors existing names a missing one."""
    # Imported here so `quotas write` works without touching the Kubernetes client.
    from collectors.kube_apply import api_client, apply_plan, read_cluster_state
    from models.ledger import warehouse
    from models.planning.quotas import ApplyRefused

    recommendations, setup, held = _inputs(recommendations_path, source_path, day, flavors,
                                           kueue)
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
            state = replace(read_cluster_state(api, recommendations, kueue=kueue,
                                               cohort=setup.cohort), no_borrowing=held)
            run = run_quotas(recommendations, state, now=datetime.now(UTC), max_step=max_step,
                             kueue=kueue, con=con, setup=setup, no_borrowing=held, apply=partial(
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
    _notes(run.plan, flavors)
    objects = ", ".join(f"{o.kind.value} {o.where}" for o in run.plan.objects)
    click.echo(f"{'dry run accepted' if not really else 'applied'}: {objects}")
    if not really:
        click.echo("dry run: nothing was changed; rerun with --apply to apply.")


def _inputs(recommendations_path: Path | None, source_path: Path | None, day: datetime | None,
            flavors: str, kueue: bool
            ) -> tuple[list[Recommendation], KueueSetup, frozenset[str]]:
    """Recommendations, the Kueue setup, and the ClusterQueues whose borrowing a budget holds
    at zero now (from the warehouse; none known from a file), which the plan keeps held."""
    if (recommendations_path is None) == (source_path is None):
        raise UserError("give exactly one of --recommendations FILE and --from-warehouse DB")
    if recommendations_path is not None:
        if day is not None:
            raise UserError("--day goes with --from-warehouse only")
        recommendations = _load(recommendations_path)
        if kueue and flavors == "generate":
            raise UserError(
                "a recommendations file does not say which GPU products each tier's nodes "
                "carry, so no ResourceFlavor can be generated from it: use --from-warehouse, "
                "or --flavors existing if the operator manages the flavors")
        return recommendations, KueueSetup(), frozenset()
    assert source_path is not None
    from models.ledger import warehouse
    from models.planning.budgets import ALL_RECORDED
    from models.planning.quotas import warehouse_inputs
    from pipelines.resources import default_resources

    billing: Any = default_resources()["billing"]
    tenants = billing.tenants()
    con = warehouse.connect(source_path, read_only=True)
    try:
        when: date | None = day.date() if day else warehouse.latest_recommendation_day(con)
        if when is None:
            raise UserError(f"{source_path}: no reservation recommendations yet; run the "
                            "analytics job first")
        inputs = warehouse_inputs(con, when, tenants,
                                  generate_flavors=kueue and flavors == "generate")
        held = frozenset(name for _, _, name, _, _ in warehouse.held_queues(
            con, ALL_RECORDED, warehouse.BORROWING_ACTIONS))
    finally:
        con.close()
    if not inputs.recommendations:
        raise UserError(f"{source_path}: no recommendations for {when} with a namespace in "
                           "the tenants file")
    if inputs.skipped_tenants:
        click.echo(f"skipped (no namespace in the tenants file): "
                   f"{', '.join(inputs.skipped_tenants)}", err=True)
    click.echo(f"recommendations of {when} from {source_path}")
    if held:
        click.echo(f"borrowing held at 0 by a budget (kept): {', '.join(sorted(held))}")
    return inputs.recommendations, inputs.setup, held


def _notes(plan: QuotaPlan, flavors: str) -> None:
    for note in plan.notes:
        click.echo(f"note: {note}")
    if flavors == "existing" and plan.flavors:
        click.echo(f"note: expects the ResourceFlavors {', '.join(plan.flavors)} to exist")


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


@quotas.command("mig-layout")
@_FROM_WAREHOUSE
@_DAY
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder for mig-parted.yaml (the MIG manager's config) and mig-layout.json.")
def mig_layout(source_path: Path | None, day: datetime | None, out_dir: Path) -> None:
    """Recommend a MIG partition layout per node group (hardware tier x GPU product) from the
    reservations and overflow pools per MIG profile, checked against the A100/H100 geometry;
    writes it in mig-parted's `mig-configs` format with each node's config, the expected
    utilization and each tenant's expected monthly cost."""
    import json

    from models.files import atomic_write
    from models.ledger import warehouse
    from models.planning.mig_layouts import (
        layout_report,
        layouts_from_warehouse,
        mig_parted_config,
        mig_parted_problems,
    )

    if source_path is None:
        raise UserError("--from-warehouse is required: a layout is sized from its analysis")
    con = warehouse.connect(source_path, read_only=True)
    try:
        when = day.date() if day else warehouse.latest_recommendation_day(con)
        if when is None:
            raise UserError(f"{source_path}: no reservation recommendations yet")
        layouts = layouts_from_warehouse(con, when)
    finally:
        con.close()
    config = mig_parted_config(layouts)
    problems = mig_parted_problems(
        config, {name: g.gpu_product for g in layouts for name in g.configs})
    if problems:
        raise UserError(["the layout would not apply:", *problems])
    import yaml

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "mig-parted.yaml", yaml.safe_dump(config, sort_keys=False))
    report = {"day": str(when), **layout_report(layouts)}
    atomic_write(out_dir / "mig-layout.json", json.dumps(report, indent=2) + "\n")
    for g in layouts:
        profiles = ", ".join(f"{p or 'whole'} {n}" for p, n in sorted(
            g.provided.items(), key=lambda i: (i[0] is None, i[0])))
        click.echo(f"{g.hardware_tier} {g.gpu_product}: {len(g.gpu_layouts)} of {g.gpus} GPUs "
                   f"partitioned ({profiles}); expected utilization "
                   f"{g.group_utilization:.0%}" + (f"; SHORT {g.shortfall_gpus} GPU(s)"
                                                   if g.shortfall_gpus else ""))
        for node, name in g.nodes.items():
            click.echo(f"  kubectl label node {node} nvidia.com/mig.config={name} --overwrite")
    click.echo(f"wrote {out_dir / 'mig-parted.yaml'} and {out_dir / 'mig-layout.json'}")
