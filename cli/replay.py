"""`chargeback replay`: a real public cluster trace end to end, reconciled with the trace."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import click

from evaluation.replay import DATA_DIR, TRACES
from models.errors import InternalError


@click.command()
@click.argument("name", type=click.Choice(TRACES))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the spool, warehouse, exports and Dagster runs of the replay.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=DATA_DIR,
              show_default=True, help="The folder holding alibaba/, helios/ and azure-llm/.")
def replay(name: str, out: Path, data_dir: Path) -> None:
    """Replay the trace NAME end to end and reconcile billed GPU-hours with the trace.

    Fails (exit 1) when any tenant's or the total GPU-hours differ by more than 0.001%."""
    from evaluation.replay import configure, import_trace, reconcile_replay

    if not data_dir.is_dir():
        raise click.BadParameter(f"{data_dir}: no such folder; pass the folder with alibaba/ "
                                 "and helios/ from the shared data", param_hint="--data")
    out = out.resolve()
    started = time.monotonic()
    click.echo(f"importing {name} from {data_dir} ...")
    configure(out)
    trace = import_trace(name, data_dir, out)
    click.echo(f"{trace.rows:,} ledger rows, {len(trace.tenants):,} tenants, "
               f"{trace.start:%Y-%m-%d} .. {trace.end:%Y-%m-%d}")

    from cli.operate import run_range

    last = (trace.end - timedelta(microseconds=1)).date()
    periods = run_range(trace.start.date(), last)
    report = reconcile_replay(trace, out, periods)
    click.echo(str(report))
    tokens_ok = True
    if name == "azure-llm":
        from evaluation.replay import reconcile_tokens

        tokens = reconcile_tokens(data_dir, out, periods)
        click.echo(str(tokens))
        tokens_ok = tokens.ok
    click.echo(f"replay of {name} took {time.monotonic() - started:.0f} s; invoices and "
               f"exports under {out / 'exports'}")
    if not report.ok:
        raise InternalError("reconciliation failed: billed GPU-hours differ from the trace by "
                            "more than 0.001%")
    if not tokens_ok:
        raise InternalError("reconciliation failed: tokens differ from the trace, or the "
                            "endpoint's GPU-seconds from its capacity")
