"""`chargeback bill`: price ledger rows straight into invoices, without Dagster."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import click
import duckdb

from cli import options
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
from models.errors import UserError
from models.files import atomic_write, make_folder, safe_path
from models.ledger import warehouse
from models.ledger.usage import LEDGER_SCHEMA, validate_ledger

MAX_REPORTED = 50


def read_usage(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Ledger rows from Parquet or CSV into the temp table `raw_usage`, typed as the schema."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a usage file")
    if not path.is_file():
        raise UserError(f"{path}: usage file not found")
    suffix = path.suffix.lower()
    quoted = "'" + str(path).replace("'", "''") + "'"
    if suffix == ".parquet":
        source = f"read_parquet({quoted})"
    elif suffix in {".csv", ".gz"}:
        # Types by the header's names, so a file without the header line (or with columns in
        # another order) is refused instead of losing its first row or mixing columns.
        header = f"read_csv({quoted}, header = true, all_varchar = true)"
        try:
            present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {header}"
                                                     ).fetchall()}
        except duckdb.Error as error:
            raise UserError(f"{path}: cannot read as ledger rows: {_reason(error)}") from None
        types = ", ".join(f"'{f.name}': '{_duck_type(f.type)}'" for f in LEDGER_SCHEMA
                          if f.name in present)
        source = f"read_csv({quoted}, header = true, types = {{{types}}})"
    else:
        raise UserError(f"{path}: usage must be a .parquet or .csv file")
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE raw_usage AS SELECT * FROM {source}")
    except duckdb.Error as error:
        raise UserError(f"{path}: cannot read as ledger rows: {_reason(error)}") from None
    present = {row[0] for row in con.execute("DESCRIBE raw_usage").fetchall()}
    missing = [name for name in LEDGER_SCHEMA.names if name not in present]
    if missing:
        raise UserError(f"{path}: missing ledger columns: {', '.join(missing)}")


def _reason(error: duckdb.Error) -> str:
    """DuckDB's message without the echoed input line and the reader's settings dump."""
    text = str(error).split("\n\n")[0]
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.startswith("Original Line:")]
    return "; ".join(lines)[:400]


def _count(problems: Sequence[object]) -> str:
    return f"{len(problems)} problem{'' if len(problems) == 1 else 's'}"


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
        shown = [f"{path}: {p}" for p in problems[:MAX_REPORTED]]
        more = len(problems) - MAX_REPORTED
        raise UserError([f"{_count(problems)} in the usage rows:", *shown]
                        + ([f"... and {more} more"] if more > 0 else []))


def check_period(con: duckdb.DuckDBPyConnection, path: Path, period: str, start: datetime,
                 end: datetime) -> None:
    """None of the file's rows in the period is an error (docs/pricing.md: usage outside the
    period is never silently billed or dropped); some outside is said on stderr."""
    ((inside, total, first, last),) = con.execute(
        "SELECT count(*) FILTER (WHERE window_start >= ? AND window_start < ?), count(*), "
        "min(window_start), max(window_start) FROM raw_usage", [start, end]).fetchall()
    if not total:
        raise UserError(f"{path}: no rows, so nothing to bill: is this the right file?")
    if not inside:
        raise UserError(f"{path}: none of its {total:,} rows falls in --period {period} "
                        f"(rows run from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC): "
                        "is this the right file or month?")
    if inside < total:
        click.echo(f"note: {path}: {total - inside:,} of {total:,} rows lie outside {period} "
                   "and are not on these invoices", err=True)


def price_file(usage: Path, rate_card: Path, tenants_file: Path, period: str
               ) -> list[Invoice]:
    start, end = month_bounds(period)
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
        raise ConfigError([f"{_count(problems)} in the configuration:", *problems])
    card = rate_card_for(cards, start.date())

    con = warehouse.connect()
    warehouse.create_schema(con)
    read_usage(con, usage)
    validate_rows(con, usage)
    check_period(con, usage, period, start, end)
    rows = con.sql("SELECT * FROM raw_usage WHERE window_start >= ? AND window_start < ?",
                   params=[start, end]).to_arrow_table()
    warehouse.load_rows(con, card, rows)  # products missing from the tier map: UnknownProducts

    try:
        return price_period(con, card, tenants, period)
    except UnknownTenants as error:
        raise UserError(f"{usage}: usage of tenants missing from {tenants_file}: "
                        f"{error}") from None
    except ValueError as error:
        # A usage-metered tenant with rows lacking utilization is the operator's to fix.
        raise UserError(f"{usage}: {error}") from None


def invoice_files(invoices: list[Invoice], out: Path) -> dict[Path, bytes]:
    """Every file's bytes, computed before anything is written; names made safe, so a tenant
    called `../x` or `team/a` lands inside `out` like any other."""
    files = {safe_path(out, invoice.tenant, ".json"): canonical_json(document(invoice)).encode()
             for invoice in invoices}
    files[out / "invoices.csv"] = lines_csv((None, i) for i in invoices).encode()
    return files


def write_files(files: dict[Path, bytes], out: Path) -> None:
    """Each file atomically, after checking that none of them can fail for a reason known
    beforehand, so that a refusal leaves `out` as it was."""
    folders = [path for path in files if path.is_dir()]
    if folders:
        raise UserError([f"{path}: is a folder where an invoice file goes; move it or choose "
                         "another --out" for path in folders])
    make_folder(out, "--out")
    for path, data in files.items():
        try:
            atomic_write(path, data)
        except OSError as error:
            raise UserError(f"{path}: cannot be written: {error.strerror or error}") from None


@click.command()
@click.option("--usage", type=click.Path(path_type=Path), required=True,
              help="Ledger rows, Parquet or CSV, with the ledger schema's columns.")
@click.option("--rate-card", type=click.Path(path_type=Path), required=True,
              help="Rate-card YAML (one or more versions).")
@click.option("--tenants", "tenants_file", type=click.Path(path_type=Path), required=True,
              help="Tenants YAML: plan, basis, reservations, credits per tenant.")
@click.option("--period", required=True, callback=options.period,
              help="Billing month, YYYY-MM (UTC).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for <tenant>.json and invoices.csv.")
def bill(usage: Path, rate_card: Path, tenants_file: Path, period: str, out: Path) -> None:
    """Price ledger rows for one month into invoices (no Dagster, no warehouse).

    Writes OUT/<tenant>.json (lines and total as exact decimal strings) and OUT/invoices.csv
    (one row per line). Bad input is reported with file, row and field; exit code 2 and
    nothing is written. A tenant name that is not a plain file name (`team/a`) gets a file
    name of its own, printed beside it."""
    invoices = price_file(usage, rate_card, tenants_file, period)
    files = invoice_files(invoices, out)
    write_files(files, out)
    width = max((len(i.tenant) for i in invoices), default=6)
    for invoice in invoices:
        path = safe_path(out, invoice.tenant, ".json")
        renamed = "" if path.name == f"{invoice.tenant}.json" else f"  ({path.name})"
        click.echo(f"{invoice.tenant:<{width}}  {invoice.plan:<12} "
                   f"{invoice.total:>14,} {invoice.currency}{renamed}")
    click.echo(f"wrote {len(invoices)} invoices to {out}")
