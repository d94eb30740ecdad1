"""Operating the pipeline from the command line: run, close, invoices, demo.

Every command goes through Dagster (in-process, on the instance in $DAGSTER_HOME), so what
the CLI does is exactly what a schedule would do, and the runs show in the Dagster UI."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from cli import options
from models.billing import lifecycle
from models.billing.exports import write_invoice_files
from models.billing.invoices import Status, StoredInvoice
from models.billing.rate_cards import month_bounds
from models.errors import ChargebackError, InternalError, UserError
from models.files import home, make_folder
from models.ledger import warehouse

DEMO_PERIOD = "2026-09"
"""The demo simulates one whole 30-day month, fixed so that its figures are reproducible."""


def _instance() -> Any:
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(home() / "dagster")
    dagster_home = Path(os.environ["DAGSTER_HOME"])
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        from pipelines.resources import ROOT

        shutil.copy(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    return dg.DagsterInstance.get()


def _failed_checks(instance: Any, run_id: str) -> list[str]:
    import dagster as dg

    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    lines = []
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if not evaluation.passed:
            lines.append(f"check {evaluation.check_name} failed on "
                         f"{evaluation.asset_key.to_user_string()}: "
                         + "; ".join(f"{k}={v.value}" for k, v in evaluation.metadata.items()))
    return lines


def execute(job_name: str, partition_key: str | None,
            run_config: dict[str, Any] | None = None, *, through: str | None = None) -> Any:
    """Run a job in-process: for one partition, or for the range `partition_key`..`through`
    in one run (a daily job's backfill: pipelines/partitions.py). The product's own errors
    (a bad rate card, a locked warehouse) come out as raised, so the CLI prints their one-line
    message instead of Dagster's stack trace, which stays in the run's event log for the
    Dagster UI."""
    import dagster as dg

    from pipelines.definitions import defs
    from pipelines.run_workers import fail_dead_runs

    job = defs.resolve_job_def(job_name)
    instance = _instance()
    # A `chargeback run` or a daemon's run killed mid-way is still STARTED and holds the
    # daemon's one writer place (dagster.yaml): fail it now rather than wait for the sensor.
    for line in fail_dead_runs(instance):
        click.echo(f"marked failed: {line}", err=True)
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    tags = None
    if through is not None and through != partition_key:
        from pipelines.partitions import RANGE_END_TAG, RANGE_START_TAG

        assert partition_key is not None, "a range starts at a partition"
        tags = {RANGE_START_TAG: partition_key, RANGE_END_TAG: through}
        where = f"{job_name} for {partition_key}..{through}"
        partition_key = None
    else:
        where = f"{job_name} for {partition_key}" if partition_key else job_name
    try:
        result = job.execute_in_process(
            partition_key=partition_key, instance=instance, tags=tags,
            run_config={**quiet, **(run_config or {})}, raise_on_error=True,
        )
    except ChargebackError:
        raise
    except dg.Failure as failure:
        # An asset refused on purpose (products missing from the tier map, usage of unknown
        # tenants, a broken conservation): its description says what the operator must fix.
        details = [f"{k}: {v.value}" for k, v in failure.metadata.items()]
        raise UserError([f"{where}: {failure.description}", *details]) from None
    except dg.DagsterError as error:
        # A blocking asset check failed (conservation, every row has a tenant): the data or
        # the pipeline is wrong, not the command line.
        runs = instance.get_run_records(dg.RunsFilter(job_name=job_name), limit=1)
        checks = _failed_checks(instance, runs[0].dagster_run.run_id) if runs else []
        raise InternalError([f"{where} failed: {' '.join(str(error).split())}", *checks,
                             "the run's events are in the Dagster UI"]) from error
    if not result.success:
        raise InternalError(f"{where} failed; see run {result.run_id} in the Dagster UI")
    # What an asset warned about (a spool file quarantined) is for the operator to read now,
    # not only in the Dagster UI; the console logger above shows nothing below CRITICAL.
    for entry in instance.all_logs(result.run_id):
        if entry.level == logging.WARNING and not entry.is_dagster_event:
            click.echo(f"note: {where}: {entry.user_message}", err=True)
    return result


def days_between(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def run_range(first: date, last: date, *, quiet: bool = False) -> list[str]:
    """Ingest every day, bill every month touched that has ended, then analyse the last day
    (shifts, recommendations, quota manifests); returns the months billed."""
    from pipelines.partitions import MONTHLY

    days = ingest_range(first, last, quiet=quiet)
    touched = sorted({f"{d:%Y-%m}" for d in days})
    months = [m for m in touched if MONTHLY.has_partition_key(f"{m}-01")]
    for month in sorted(set(touched) - set(months)):
        click.echo(f"note: {month} has not ended: its days are ingested, its invoices are "
                   "made once it ends", err=True)
    for period in tqdm(months, desc="bill months", unit="month", disable=quiet):
        execute("monthly_billing_job", f"{period}-01")
    execute("daily_analytics_job", f"{last}")
    execute("publish_marts_job", None)
    return months


def ingest_range(first: date, last: date, *, quiet: bool = False) -> list[date]:
    """Ingest every day of [first, last]; returns the days."""
    from pipelines.partitions import DAYS_PER_RUN

    days = list(days_between(first, last))
    # A month of days in one run: Dagster's own cost is per run (pipelines/partitions.py).
    with tqdm(total=len(days), desc="ingest days", unit="day", disable=quiet) as bar:
        for at in range(0, len(days), DAYS_PER_RUN):
            chunk = days[at:at + DAYS_PER_RUN]
            execute("daily_usage_job", f"{chunk[0]}", through=f"{chunk[-1]}")
            bar.update(len(chunk))
    return days


def close(period: str) -> None:
    _billable_month(period)
    execute("monthly_billing_job", f"{period}-01",
            {"ops": {"invoices": {"config": {"close": True}}}})
    execute("publish_marts_job", None)


def _resources() -> dict[str, Any]:
    # Imported on use: Dagster takes seconds to import, and a mistyped argument is refused
    # before that.
    from pipelines.resources import default_resources

    return default_resources()


def _warehouse_path() -> Path:
    return Path(_resources()["warehouse_db"].path)


def _exports_path() -> Path:
    return Path(_resources()["outputs"].exports_path)


def _connect() -> Any:
    path = _warehouse_path()
    if not path.is_file():
        raise UserError(f"no warehouse at {path}: run `chargeback run` or `chargeback demo` "
                        "first (or set CHARGEBACK_HOME / CHARGEBACK_WAREHOUSE)")
    return warehouse.connect(path, read_only=True)


def _stored(period: str) -> list[StoredInvoice]:
    con = _connect()
    try:
        return lifecycle.stored(con, period)
    finally:
        con.close()


def _amount(value: Decimal, minor_unit: int) -> str:
    return f"{value:,.{minor_unit}f}"


def _day(_ctx: click.Context, _param: click.Parameter, value: str) -> date:
    """A day that has a daily partition: from the first (CHARGEBACK_START_DATE) to yesterday."""
    from pipelines.partitions import DAILY

    try:
        if len(value) != 10:
            raise ValueError(value)
        day = date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected a day YYYY-MM-DD, got {value!r}") from None
    first, last = DAILY.get_first_partition_key(), DAILY.get_last_partition_key()
    if first is None or last is None or not first <= f"{day}" <= last:
        raise click.BadParameter(
            f"{day}: the pipeline's days run from {first} (CHARGEBACK_START_DATE) to {last} "
            "(the last complete UTC day)")
    return day


def _billable_month(period: str) -> None:
    """A month the billing job has a partition for: begun on or after the first day, over."""
    from pipelines.partitions import MONTHLY

    if not MONTHLY.has_partition_key(f"{period}-01"):
        raise UserError(f"period {period}: not a billing month of the pipeline; months run from "
                        f"{MONTHLY.get_first_partition_key()} (CHARGEBACK_START_DATE) to "
                        f"{MONTHLY.get_last_partition_key()} (the last month that has ended)")


@click.command()
@click.option("--from", "first", required=True, callback=_day, help="First UTC day, YYYY-MM-DD.")
@click.option("--to", "last", required=True, callback=_day,
              help="Last UTC day (inclusive), YYYY-MM-DD.")
def run(first: date, last: date) -> None:
    """Materialize ingest for every day in [FROM, TO], then billing for their months.

    Up to 31 days go in one Dagster run of `daily_usage_job` (a backfill of their daily
    partitions), each month in one of `monthly_billing_job`; reruns replace exactly their
    partitions."""
    if last < first:
        raise click.BadParameter(f"{last} is before --from {first}", param_hint="--to")
    months = run_range(first, last)
    click.echo(f"ingested {(last - first).days + 1} days, billed {', '.join(months) or 'none'}")


@click.command("close")
@click.option("--period", required=True, callback=options.period,
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
@click.option("--period", required=True, callback=options.period,
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
@click.option("--period", required=True, callback=options.period,
              help="Billing month, YYYY-MM.")
def show_invoice(number: str, period: str) -> None:
    """Lines of one invoice (its number, or DRAFT-<period>-<tenant>)."""
    stored = next((s for s in _stored(period) if s.stem == number), None)
    if stored is None:
        raise UserError(f"no invoice {number} in {period}: see `chargeback invoices list "
                        f"--period {period}`")
    invoice = stored.invoice
    click.echo(f"{stored.stem}  {invoice.tenant}  {invoice.period}  plan {invoice.plan}  "
               f"status {stored.status}")
    for line in invoice.lines:
        click.echo(f"  {line.description:<58} {_amount(line.amount, invoice.minor_unit):>14}")
    click.echo(f"  {'total':<58} {_amount(invoice.total, invoice.minor_unit):>14} "
               f"{invoice.currency}")


@invoices.command("export")
@click.option("--period", required=True, callback=options.period,
              help="Billing month, YYYY-MM.")
@click.option("--format", "fmt",
              type=click.Choice(["pdf", "csv", "json", "focus", "register", "journal", "zip"]),
              required=True, help="pdf/csv/json: one file per document; focus: the period's "
              "FOCUS 1.4 datasets (cost and usage, invoice detail, billing period, contract "
              "commitment; Parquet and CSV); register / journal: the period's invoice register "
              "or journal (CSV); zip: every document, the register and the journal in one ZIP.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder.")
def export_invoices(period: str, fmt: str, out: Path) -> None:
    """Write the period's documents (or its FOCUS datasets, register, journal, ZIP) into OUT.

    A period's documents are its invoices and statements and the credit and debit notes
    issued during it."""
    from models.billing.exports import journal_name, period_zip, register_name, zip_name
    from models.billing.focus import provider_of
    from models.billing.focus_datasets import write_focus_export
    from models.billing.journal import journal_csv
    from models.billing.register import register_csv
    from models.files import atomic_write

    billing = _resources()["billing"]
    con = _connect()
    try:
        documents = lifecycle.period_documents(con, period)
        if fmt != "focus" and not documents:
            raise UserError(f"no invoices for {period}: nothing to export")
        books = billing.books() if fmt in ("focus", "journal", "zip") else None
        if fmt == "journal" and books is None:
            raise UserError("no finance file (CHARGEBACK_FINANCE): the journal needs its "
                            "ledger accounts")
        # Everything is made before the folder is: a refused export leaves nothing behind.
        files: list[tuple[str, str | bytes]] = []
        if fmt == "register":
            files = [(register_name(period), register_csv(documents))]
        elif fmt == "journal":
            assert books is not None, "checked above"
            files = [(journal_name(period), journal_csv(documents, period, books.accounts))]
        elif fmt == "zip":
            journal = journal_csv(documents, period, books.accounts) if books else None
            files = [(zip_name(period), period_zip(documents, period, journal))]
        make_folder(out, "--out")
        if fmt == "focus":
            paths = write_focus_export(con, period, out, tenants=billing.tenants(),
                                       cards=billing.rate_cards(),
                                       provider=provider_of(books))
        elif files:
            paths = [atomic_write(out / name, data) for name, data in files]
        else:
            paths = write_invoice_files(documents, out, [fmt])
    finally:
        con.close()
    for path in paths:
        click.echo(str(path))


@click.command()
@click.option("--period", default=DEMO_PERIOD, show_default=True, callback=options.period,
              help="Month to simulate and bill.")
@click.option("--scale", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Copies of the 64-GPU cluster.")
@click.option("--days", type=click.IntRange(1, 31), default=None,
              help="Simulate only the first DAYS days of the month (tests use 2).")
@click.option("--interval", type=click.IntRange(1, 3600), default=60, show_default=True,
              help="Sampling interval, seconds; must divide an hour.")
def demo(period: str, scale: int, days: int | None, interval: int) -> None:
    """Simulate a month of the default cluster, run the pipeline through Dagster, close the
    month and print the invoices."""
    from collectors.simulate import simulate_to_spool

    if 3600 % interval:
        raise click.BadParameter(f"must divide an hour (10, 60, 300...), got {interval}",
                                 param_hint="--interval")
    _billable_month(period)
    start, end = month_bounds(period)
    n_days = min(days or 31, (end - start).days)
    spool = Path(_resources()["spool"].path)
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
    # What `run_range` then `close` would do, less the draft billing run and the marts
    # published in between: the close bills the month again (drafts, then final) and
    # publishes the marts, so the demo waits for each once.
    ingest_range(start.date(), last)
    execute("daily_analytics_job", f"{last}")
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
        billed = [s for s in found if s.document_type.payable]
        shown = [s for s in found if not s.document_type.payable]
        total = sum((s.invoice.total for s in billed), Decimal(0))
        summary = (f"\n{len(billed)} invoices, {_amount(total, first.minor_unit)} "
                   f"{first.currency}")
        if shown:
            total = sum((s.invoice.total for s in shown), Decimal(0))
            summary += (f"; {len(shown)} showback statement{'s' if len(shown) > 1 else ''}, "
                        f"{_amount(total, first.minor_unit)} {first.currency}")
        click.echo(summary)
    for tenant, used, limit, unit, currency, enforcement, runs_out, hold in budgets:
        figure = f"{limit:,.2f} {currency}" if unit == "amount" else f"{limit:,.1f} GPU-hours"
        click.echo(f"budget {tenant}: {used}% of {figure}"
                   + (f", runs out {runs_out}" if runs_out else "")
                   + (f"; queue hold: {hold}" if hold else "")
                   + (f" (enforcement {enforcement})" if enforcement != "off" else ""))
    click.echo(f"documents (PDF, CSV, JSON): {exports}/")
    for label, name in (("invoice register:", f"register-{period}.csv"),
                        ("journal:", f"journal-{period}.csv"),
                        ("FOCUS 1.4 datasets:", "focus.parquet")):
        if (exports / name).exists():
            click.echo(f"{label:<27}{exports / name}")
    click.echo("dashboard:                 .venv/bin/chargeback users add alice --role tenant:acme "
               "(asks for a password; --role finance or operator for the other views), then "
               ".venv/bin/chargeback dashboard")
    click.echo("Dagster UI:                make dagster   (or: DAGSTER_HOME="
               + os.environ.get("DAGSTER_HOME", "") + " .venv/bin/dagster dev)")
    click.echo(f"generated at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
