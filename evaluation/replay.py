"""`chargeback replay`: a real public cluster trace through the whole pipeline, reconciled.

The trace becomes spool files (collectors/traces.py); the same Dagster jobs as production
ingest, bill and analyse them; then the GPU-hours billed per tenant are compared with those
computed straight from the trace's CSV by an independent query."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import click
import yaml

from models.ledger.usage import RESERVED_TENANTS

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data"
RATE_CARD = ROOT / "examples" / "replay" / "rate-card.yaml"


def write_tenants(path: Path, tenants: list[str]) -> None:
    """Every tenant of the trace on the pay-as-you-go plan (traces carry no contracts)."""
    doc = {"tenants": {t: {"plan": "payg", "start": "2026-01-01"} for t in sorted(tenants)}}
    path.write_text(yaml.safe_dump(doc, sort_keys=True))


def billed_hours(warehouse_path: Path) -> dict[str, int]:
    """Per tenant, the hours its bills rounded to 6 decimals (one quantity per hour, tier and
    size class)."""
    from models.ledger import warehouse

    con = warehouse.connect(warehouse_path, read_only=True)
    try:
        rows = con.execute("SELECT tenant, count(*) FROM (SELECT DISTINCT tenant, hour, "
                           "hardware_tier, size_class FROM usage_hourly) GROUP BY 1").fetchall()
    finally:
        con.close()
    return {tenant: int(n) for tenant, n in rows}


def billed_gpu_hours(warehouse_path: Path, periods: list[str]) -> dict[str, float]:
    from models.billing import lifecycle
    from models.ledger import warehouse

    con = warehouse.connect(warehouse_path, read_only=True)
    try:
        billed: dict[str, Decimal] = {}
        for period in periods:
            for stored in lifecycle.stored(con, period):
                invoice = stored.invoice
                hours = sum((u.gpu_hours for u in invoice.usage), Decimal(0))
                billed[invoice.tenant] = billed.get(invoice.tenant, Decimal(0)) + hours
    finally:
        con.close()
    return {tenant: float(hours) for tenant, hours in billed.items() if hours}


@click.command()
@click.argument("name", type=click.Choice(["alibaba-2025", "alibaba-2023", "alibaba-genai",
                                           "helios"]))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder for the spool, warehouse, exports and Dagster runs of the replay.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=DATA_DIR,
              show_default=True, help="The folder holding alibaba/ and helios/.")
def replay(name: str, out: Path, data_dir: Path) -> None:
    """Replay the trace NAME end to end and reconcile billed GPU-hours with the trace.

    Fails (exit 1) when any tenant's or the total GPU-hours differ by more than 0.001%."""
    if not data_dir.is_dir():
        raise click.ClickException(f"{data_dir}: no such folder; pass --data DIR (the folder "
                                   "with alibaba/ and helios/ from the shared data)")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    # The pipeline's resources are read from the environment when Dagster's definitions load.
    os.environ["CHARGEBACK_HOME"] = str(out)
    os.environ["DAGSTER_HOME"] = str(out / "dagster")
    os.environ["CHARGEBACK_RATE_CARD"] = str(RATE_CARD)
    os.environ["CHARGEBACK_TENANTS"] = str(out / "tenants.yaml")
    for variable in ("CHARGEBACK_WAREHOUSE", "CHARGEBACK_SPOOL", "CHARGEBACK_EXPORTS",
                     "CHARGEBACK_MARTS"):
        os.environ.pop(variable, None)

    from collectors.traces import IMPORTERS, TraceError, expected_gpu_hours, reconcile

    started = time.monotonic()
    try:
        click.echo(f"importing {name} from {data_dir} ...")
        summary = IMPORTERS[name].write(data_dir, out / "spool", progress=True)
        expected = expected_gpu_hours(name, data_dir)
    except TraceError as error:
        raise click.ClickException(str(error)) from None
    tenants = [t for t in expected if t not in RESERVED_TENANTS]
    write_tenants(out / "tenants.yaml", tenants)
    click.echo(f"{summary.rows:,} ledger rows, {len(tenants):,} tenants, "
               f"{summary.start:%Y-%m-%d} .. {summary.end:%Y-%m-%d}")

    from cli.operate import run_range

    last = (summary.end - timedelta(microseconds=1)).date()
    periods = run_range(summary.start.date(), last)
    billed = billed_gpu_hours(out / "warehouse.duckdb", periods)
    wanted = {t: h for t, h in expected.items() if t not in RESERVED_TENANTS}
    report = reconcile(wanted, billed, strict=False,
                       billed_hours=billed_hours(out / "warehouse.duckdb"))
    click.echo(str(report))
    click.echo(f"replay of {name} took {time.monotonic() - started:.0f} s; invoices and "
               f"exports under {out / 'exports'}")
    if not report.ok:
        raise click.ClickException("reconciliation failed: billed GPU-hours differ from the "
                                   "trace by more than 0.001%")
