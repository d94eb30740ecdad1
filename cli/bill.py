"""`chargeback bill`: price ledger rows straight into invoices, without Dagster."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import click
import duckdb

from models.billing.invoices import canonical_json, document, lines_csv
from models.billing.period import UnknownTenants, price_period
from models.billing.pricing import Invoice
from models.billing.rate_cards import (
    ConfigError,
    load_rate_cards,
    load_tenants,
    month_bounds,
    rate_card_for,
)
from models.ledger import warehouse
from models.ledger.usage import LEDGER_SCHEMA, validate_ledger

MAX_REPORTED = 50


class BadInput(click.ClickException):
    exit_code = 2


def read_usage(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Ledger rows from Parquet or CSV into the temp table `raw_usage`, typed as the schema."""
    if not path.is_file():
        raise BadInput(f"{path}: usage file not found")
    suffix = path.suffix.lower()
    quoted = "'" + str(path).replace("'", "''") + "'"
    if suffix == ".parquet":
        source = f"read_parquet({quoted})"
    elif suffix in {".csv", ".gz"}:
        types = {f.name: _duck_type(f.type) for f in LEDGER_SCHEMA}
        column_types = ", ".join(f"'{k}': '{v}'" for k, v in types.items())
        source = f"read_csv({quoted}, header = true, columns = {{{column_types}}})"
    else:
        raise BadInput(f"{path}: usage must be a .parquet or .csv file")
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE raw_usage AS SELECT * FROM {source}")
    except duckdb.Error as error:
        raise BadInput(f"{path}: cannot read as ledger rows: {error}") from None
    present = {row[0] for row in con.execute("DESCRIBE raw_usage").fetchall()}
    missing = [name for name in LEDGER_SCHEMA.names if name not in present]
    if missing:
        raise BadInput(f"{path}: missing ledger columns: {', '.join(missing)}")


def _duck_type(arrow_type: object) -> str:
    text = str(arrow_type)
    if text.startswith("timestamp"):
        return "TIMESTAMPTZ"
    return {"string": "VARCHAR", "double": "DOUBLE", "int64": "BIGINT"}[text]


def validate_rows(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    columns = ", ".join(LEDGER_SCHEMA.names)
    cursor = con.execute(f"SELECT {columns} FROM raw_usage")
    names = [d[0] for d in cursor.description]
    rows = (dict(zip(names, values, strict=True)) for values in cursor.fetchall())
    problems = validate_ledger(rows)
    if problems:
        shown = "\n".join(f"{path}: {p}" for p in problems[:MAX_REPORTED])
        more = len(problems) - MAX_REPORTED
        raise BadInput(f"{len(problems)} problems in the usage rows:\n{shown}"
                       + (f"\n... and {more} more" if more > 0 else ""))


def price_file(usage: Path, rate_card: Path, tenants_file: Path, period: str
               ) -> list[Invoice]:
    try:
        start, end = month_bounds(period)
    except ValueError as error:
        raise BadInput(str(error)) from None
    problems: list[str] = []
    cards = tenants = None
    try:
        cards = load_rate_cards(rate_card)
    except ConfigError as error:
        problems += error.problems
    try:
        tenants = load_tenants(tenants_file, cards or ())
    except ConfigError as error:
        problems += error.problems
    if problems or cards is None or tenants is None:
        raise BadInput(f"{len(problems)} problems in the configuration:\n" + "\n".join(problems))
    try:
        card = rate_card_for(cards, start.date())
    except ConfigError as error:
        raise BadInput(str(error)) from None

    con = warehouse.connect()
    warehouse.create_schema(con)
    read_usage(con, usage)
    validate_rows(con, usage)
    rows = con.sql("SELECT * FROM raw_usage WHERE window_start >= ? AND window_start < ?",
                   params=[start, end]).to_arrow_table()
    try:
        warehouse.load_rows(con, card, rows)
    except warehouse.UnknownProducts as error:
        raise BadInput(str(error)) from None

    try:
        invoices = price_period(con, card, tenants, period)
    except UnknownTenants as error:
        raise BadInput(f"{usage}: usage of tenants missing from {tenants_file}: "
                       f"{error}") from None
    except ConfigError as error:
        raise BadInput("\n".join(error.problems)) from None
    except ValueError as error:
        # A usage-metered tenant with rows lacking utilization is the operator's to fix.
        raise BadInput(f"{usage}: {error}") from None
    return invoices


def write_invoices(invoices: list[Invoice], out: Path) -> None:
    """All files or none: written in a temporary folder beside `out`, then moved in."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        staging = Path(tmp)
        (staging / "invoices.csv").write_text(lines_csv((None, i) for i in invoices))
        for invoice in invoices:
            (staging / f"{invoice.tenant}.json").write_text(canonical_json(document(invoice)))
        for path in sorted(staging.iterdir()):
            shutil.move(str(path), out / path.name)


@click.command()
@click.option("--usage", type=click.Path(path_type=Path), required=True,
              help="Ledger rows, Parquet or CSV, with the ledger schema's columns.")
@click.option("--rate-card", type=click.Path(path_type=Path), required=True,
              help="Rate-card YAML (one or more versions).")
@click.option("--tenants", "tenants_file", type=click.Path(path_type=Path), required=True,
              help="Tenants YAML: plan, basis, reservations, credits per tenant.")
@click.option("--period", required=True, help="Billing month, YYYY-MM (UTC).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder for <tenant>.json and invoices.csv.")
def bill(usage: Path, rate_card: Path, tenants_file: Path, period: str, out: Path) -> None:
    """Price ledger rows for one month into invoices (no Dagster, no warehouse).

    Writes OUT/<tenant>.json (lines and total as exact decimal strings) and OUT/invoices.csv
    (one row per line). Bad input is reported with file, row and field; exit code 2 and
    nothing is written."""
    invoices = price_file(usage, rate_card, tenants_file, period)
    write_invoices(invoices, out)
    width = max((len(i.tenant) for i in invoices), default=6)
    for invoice in invoices:
        click.echo(f"{invoice.tenant:<{width}}  {invoice.plan:<12} "
                   f"{invoice.total:>14,} {invoice.currency}")
    click.echo(f"wrote {len(invoices)} invoices to {out}")
