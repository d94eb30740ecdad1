"""Operating the pipeline from the command line: run, close, invoices, demo.

Every command goes through Dagster (in-process, on the instance in $DAGSTER_HOME), so what
the CLI does is exactly what a schedule would do, and the runs show in the Dagster UI."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from models.billing import lifecycle
from models.billing.exports import write_invoice_files
from models.billing.invoices import Status, StoredInvoice
from models.billing.rate_cards import month_bounds
from models.ledger import warehouse
from pipelines.resources import ROOT, default_resources, home

DEMO_PERIOD = "2026-09"
"""The demo simulates one whole 30-day month, fixed so that its figures are reproducible."""


class CommandError(click.ClickException):
    exit_code = 1


def _instance() -> Any:
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(home() / "dagster")
    dagster_home = Path(os.environ["DAGSTER_HOME"])
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        shutil.copy(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    return dg.DagsterInstance.get()


def _failure_text(result: Any) -> str:
    lines = []
    for event in result.all_events:
        if event.event_type_value in ("STEP_FAILURE", "RUN_FAILURE") and event.message:
            lines.append(event.message)
        data = getattr(event, "event_specific_data", None)
        error = getattr(data, "error", None)
        if error is not None:
            lines.append(error.message.strip())
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            lines.append(f"check {evaluation.check_name} failed on "
                         f"{evaluation.asset_key.to_user_string()}: "
                         + "; ".join(f"{k}={v.value}" for k, v in evaluation.metadata.items()))
    return "\n".join(dict.fromkeys(lines)) or "see the run in the Dagster UI"


def execute(job_name: str, partition_key: str | None,
            run_config: dict[str, Any] | None = None) -> Any:
    from pipelines.definitions import defs
    from pipelines.run_workers import fail_dead_runs

    job = defs.resolve_job_def(job_name)
    instance = _instance()
    # A `chargeback run` or a daemon's run killed mid-way is still STARTED and holds the
    # daemon's one writer place (dagster.yaml): fail it now rather than wait for the sensor.
    for line in fail_dead_runs(instance):
        click.echo(f"marked failed: {line}", err=True)
    # The CLI shows progress bars; Dagster's step-by-step log stays in the run's event log.
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    result = job.execute_in_process(
        partition_key=partition_key, instance=instance,
        run_config={**quiet, **(run_config or {})}, raise_on_error=False,
    )
    if not result.success:
        raise CommandError(f"{job_name} failed for {partition_key}:\n{_failure_text(result)}")
    return result


def days_between(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def run_range(first: date, last: date, *, quiet: bool = False) -> list[str]:
    """Ingest every day, bill every month touched, then analyse the last day (shifts,
    recommendations, quota manifests); returns the months billed."""
    days = list(days_between(first, last))
    for day in tqdm(days, desc="ingest days", unit="day", disable=quiet):
        execute("daily_usage_job", f"{day}")
    months = sorted({f"{d:%Y-%m}" for d in days})
    for period in tqdm(months, desc="bill months", unit="month", disable=quiet):
        execute("monthly_billing_job", f"{period}-01")
    execute("daily_analytics_job", f"{last}")
    execute("publish_marts_job", None)
    return months


def close(period: str) -> None:
    month_bounds(period)
    execute("monthly_billing_job", f"{period}-01",
            {"ops": {"invoices": {"config": {"close": True}}}})
    execute("publish_marts_job", None)


def _warehouse_path() -> Path:
    return Path(default_resources()["warehouse_db"].path)  # type: ignore[attr-defined]


def _exports_path() -> Path:
    return Path(default_resources()["outputs"].exports_path)  # type: ignore[attr-defined]


def _stored(period: str) -> list[StoredInvoice]:
    path = _warehouse_path()
    if not path.exists():
        raise CommandError(f"no warehouse at {path}: run `chargeback run` or `chargeback demo`")
    con = warehouse.connect(path, read_only=True)
    try:
        return lifecycle.stored(con, period)
    finally:
        con.close()


def _amount(value: Decimal, minor_unit: int) -> str:
    return f"{value:,.{minor_unit}f}"


def _parse_day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected YYYY-MM-DD, got {value!r}") from None


def _period(value: str) -> str:
    try:
        month_bounds(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    return value


@click.command()
@click.option("--from", "first", required=True, help="First UTC day, YYYY-MM-DD.")
@click.option("--to", "last", required=True, help="Last UTC day (inclusive), YYYY-MM-DD.")
def run(first: str, last: str) -> None:
    """Materialize ingest for every day in [FROM, TO], then billing for their months.

    Each day is one Dagster run of `daily_usage_job`, each month one of
    `monthly_billing_job`; reruns replace exactly their partitions."""
    start, end = _parse_day(first), _parse_day(last)
    if end < start:
        raise click.BadParameter("--to is before --from")
    months = run_range(start, end)
    click.echo(f"ingested {(end - start).days + 1} days, billed {', '.join(months)}")


@click.command("close")
@click.option("--period", required=True, callback=lambda c, p, v: _period(v),
              help="Billing month to close, YYYY-MM.")
def close_command(period: str) -> None:
    """Finalize a month: drafts become numbered, hashed invoices that never change.

    Usage arriving later for the month produces adjustment notes on the next run."""
    close(period)
    finals = [s for s in _stored(period) if s.status is Status.FINAL]
    click.echo(f"{period} closed: {len(finals)} final invoices and adjustments")


@click.group()
def invoices() -> None:
    """List, show and export invoices (reads the warehouse; run while no pipeline writes)."""


@invoices.command("list")
@click.option("--period", required=True, callback=lambda c, p, v: _period(v),
              help="Billing month, YYYY-MM.")
def list_invoices(period: str) -> None:
    """One line per invoice or adjustment of the period."""
    found = _stored(period)
    if not found:
        click.echo(f"no invoices for {period}")
        return
    click.echo(f"{'number':<24} {'status':<6} {'tenant':<14} {'plan':<11} {'total':>14}")
    for stored in found:
        invoice = stored.invoice
        click.echo(f"{stored.stem:<24} {stored.status:<6} {invoice.tenant:<14} "
                   f"{invoice.plan:<11} {_amount(invoice.total, invoice.minor_unit):>14} "
                   f"{invoice.currency}")


@invoices.command("show")
@click.argument("number")
@click.option("--period", required=True, callback=lambda c, p, v: _period(v),
              help="Billing month, YYYY-MM.")
def show_invoice(number: str, period: str) -> None:
    """Lines of one invoice (its number, or DRAFT-<period>-<tenant>)."""
    stored = next((s for s in _stored(period) if s.stem == number), None)
    if stored is None:
        raise click.BadParameter(f"no invoice {number} in {period}: see `chargeback invoices "
                                 "list`", param_hint="NUMBER")
    invoice = stored.invoice
    click.echo(f"{stored.stem}  {invoice.tenant}  {invoice.period}  plan {invoice.plan}  "
               f"status {stored.status}")
    for line in invoice.lines:
        click.echo(f"  {line.description:<58} {_amount(line.amount, invoice.minor_unit):>14}")
    click.echo(f"  {'total':<58} {_amount(invoice.total, invoice.minor_unit):>14} "
               f"{invoice.currency}")


@invoices.command("export")
@click.option("--period", required=True, callback=lambda c, p, v: _period(v),
              help="Billing month, YYYY-MM.")
@click.option("--format", "fmt", type=click.Choice(["pdf", "csv", "json", "focus"]),
              required=True, help="pdf/csv/json: one file per invoice; focus: the period's "
              "FOCUS cost-and-usage export (Parquet and CSV).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder.")
def export_invoices(period: str, fmt: str, out: Path) -> None:
    """Write the period's invoices (or its FOCUS export) into OUT."""
    if fmt == "focus":
        from models.billing.focus import write_focus_export

        tenants = default_resources()["billing"].tenants()  # type: ignore[attr-defined]
        con = warehouse.connect(_warehouse_path(), read_only=True)
        try:
            paths = write_focus_export(con, period, out, tenants=tenants)
        finally:
            con.close()
    else:
        paths = write_invoice_files(_stored(period), out, [fmt])
    for path in paths:
        click.echo(str(path))


@click.command()
@click.option("--period", default=DEMO_PERIOD, show_default=True, callback=lambda c, p, v:
              _period(v), help="Month to simulate and bill.")
@click.option("--scale", default=1, show_default=True, help="Copies of the 64-GPU cluster.")
@click.option("--days", type=int, default=None,
              help="Simulate only the first DAYS days of the month (tests use 2).")
@click.option("--interval", default=60, show_default=True, help="Sampling interval, seconds.")
def demo(period: str, scale: int, days: int | None, interval: int) -> None:
    """Simulate a month of the default cluster, run the pipeline through Dagster, close the
    month and print the invoices."""
    from collectors.simulate import simulate_to_spool

    start, end = month_bounds(period)
    n_days = days or (end - start).days
    spool = Path(default_resources()["spool"].path)  # type: ignore[attr-defined]
    click.echo(f"simulating {n_days} days of the default cluster (x{scale}) into {spool}")
    with tqdm(total=n_days, desc="simulate", unit="day") as bar:
        seen: set[str] = set()

        def tick(batch: Any) -> None:
            day = batch.batch[4:12]
            if day not in seen:
                seen.add(day)
                bar.update(1 if len(seen) > 1 else 0)

        simulate_to_spool(spool, start, n_days, interval_s=interval, scale=scale,
                          progress=tick)
        bar.update(bar.total - bar.n)
    last = (start + timedelta(days=n_days - 1)).date()
    run_range(start.date(), last)
    close(period)
    _print_demo(period)


def _print_demo(period: str) -> None:
    path = _warehouse_path()
    con = warehouse.connect(path, read_only=True)
    try:
        start, end = month_bounds(period)
        hours = {(t, tier): h for t, tier, h in con.execute(
            "SELECT tenant, hardware_tier, sum(allocated_gpu_seconds) / 3600 FROM usage_hourly "
            "WHERE hour >= ? AND hour < ? GROUP BY ALL", [start, end]).fetchall()}
        found = lifecycle.stored(con, period)
        budgets = con.execute(
            "SELECT b.tenant, b.used_pct, b.limit_value, b.unit, b.currency, b.enforcement, "
            "b.runs_out_on, h.outcome FROM tenant_budgets b LEFT JOIN budget_holds h "
            "ON h.day = b.day AND h.tenant = b.tenant AND h.action = 'hold' "
            "WHERE b.day = (SELECT max(day) FROM tenant_budgets) ORDER BY b.tenant").fetchall()
    finally:
        con.close()
    tiers = sorted({tier for _, tier in hours})
    header = f"{'tenant':<10} {'plan':<11}" + "".join(f"{t + ' GPU-h':>16}" for t in tiers)
    click.echo("\n" + header + f"{'total':>15}  number")
    for stored in found:
        invoice = stored.invoice
        cells = "".join(f"{hours.get((invoice.tenant, t), 0):>16,.1f}" for t in tiers)
        click.echo(f"{invoice.tenant:<10} {invoice.plan:<11}{cells}"
                   f"{_amount(invoice.total, invoice.minor_unit):>15}  {stored.stem}")
    exports = _exports_path() / period
    if found:
        first = found[0].invoice
        total = sum((s.invoice.total for s in found), Decimal(0))
        click.echo(f"\n{len(found)} invoices, {_amount(total, first.minor_unit)} "
                   f"{first.currency}")
    for tenant, used, limit, unit, currency, enforcement, runs_out, hold in budgets:
        figure = f"{limit:,.2f} {currency}" if unit == "amount" else f"{limit:,.1f} GPU-hours"
        click.echo(f"budget {tenant}: {used}% of {figure}"
                   + (f", runs out {runs_out}" if runs_out else "")
                   + (f"; queue hold: {hold}" if hold else "")
                   + (f" (enforcement {enforcement})" if enforcement != "off" else ""))
    click.echo(f"invoice PDFs, CSV, JSON: {exports}/")
    focus = exports / "focus.parquet"
    if focus.exists():
        click.echo(f"FOCUS export:            {focus} (and focus.csv)")
    click.echo("dashboard:               .venv/bin/chargeback users add alice --role tenant:acme "
               "(asks for a password; --role finance or operator for the other views), then "
               ".venv/bin/chargeback dashboard")
    click.echo("Dagster UI:              make dagster   (or: DAGSTER_HOME="
               + os.environ.get("DAGSTER_HOME", "") + " .venv/bin/dagster dev)")
    click.echo(f"generated at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
