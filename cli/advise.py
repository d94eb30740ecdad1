"""`chargeback advise off-peak`: batch and fine-tuning work to move out of peak hours, with
the saving under each tenant's own rate card (models/planning/off_peak.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cli import options
from models.errors import UserError


@click.group("advise")
def advise() -> None:
    """Advice read from the warehouse: what to change, what it saves."""


@advise.command("off-peak")
@click.option("--from-warehouse", "source_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="DuckDB warehouse (opened read-only). Tenants and rate cards from "
              "CHARGEBACK_TENANTS and CHARGEBACK_RATE_CARD.")
@click.option("--period", required=True, callback=options.period, help="Month, YYYY-MM.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the recommendations as JSON here.")
def off_peak(source_path: Path, period: str, out_file: Path | None) -> None:
    """For each tenant whose batch or fine-tuning work runs in a tier's peak hours: the
    GPU-hours to move to off-peak hours, the saving on its bill (priced by the invoice engine
    under its own rate card), and the GPUs that frees for inference at peak."""
    from models.billing.rate_cards import month_bounds
    from models.files import atomic_write
    from models.ledger import warehouse
    from models.planning.off_peak import off_peak_move
    from pipelines.resources import default_resources

    billing: Any = default_resources()["billing"]
    tenants = billing.tenants()
    lo, hi = month_bounds(period)
    card = billing.rate_card(lo.date())
    con = warehouse.connect(source_path, read_only=True)
    try:
        usage = warehouse.usage_hours_by_kind(con, tenants, lo, hi)
    finally:
        con.close()
    if not any(usage.values()):
        raise UserError(f"{source_path}: no usage in {period}")
    moves = [m for name in sorted(usage)
             if (m := off_peak_move(tenants[name], card, period, usage[name])) is not None]
    for m in moves:
        for tier, hours in sorted(m.moved_gpu_hours.items()):
            click.echo(f"{m.tenant}: move {hours.normalize():f} {tier} GPU-hours of "
                       f"{', '.join(m.kinds)} off peak (of {m.peak_gpu_hours[tier].normalize():f}"
                       f" in peak hours; frees up to {m.freed_peak_gpus[tier].normalize():f} "
                       "GPUs for inference at peak)")
        click.echo(f"{m.tenant}: saves {m.saving} {m.currency} in {period} "
                   f"({m.charges_as_run} -> {m.charges_moved} before credits and tax)")
    if not moves:
        click.echo(f"no batch or fine-tuning work in peak hours to move in {period}")
    if out_file is not None:
        atomic_write(out_file, json.dumps([{
            "tenant": m.tenant, "period": m.period, "kinds": list(m.kinds),
            "currency": m.currency, "saving": str(m.saving),
            "charges_as_run": str(m.charges_as_run), "charges_moved": str(m.charges_moved),
            **{key: {t: str(v) for t, v in getattr(m, key).items()} for key in (
                "peak_gpu_hours", "moved_gpu_hours", "unplaced_gpu_hours", "freed_peak_gpus")},
        } for m in moves], indent=2) + "\n")
