"""Published data marts: one read-only DuckDB file per tenant, one for finance, one for operators.

The dashboards never open the warehouse (DuckDB allows one writer, and a tenant session must
not be able to reach other tenants' rows by any query). After each pipeline run the warehouse
connection copies exactly each audience's rows into its own file: a tenant's file holds nothing
but that tenant's rows, so isolation does not depend on a WHERE clause in the dashboard.

Invoices are read as typed objects (models.billing.lifecycle.stored); their figures come from
pricing and are never recomputed here. Cost by day is an estimate: invoices price a month, not
a day. Each tier's on-demand charge after its share of the plan discount
(pricing.on_demand_by_tier) is spread over the tenant's GPU-hours of that tier, and the fixed
charges (reservations, base fee, true-up, credits) evenly over the period's hours, so a closed
month's daily costs add up to its invoice total (to rounding). The forecast to month end is
pricing.forecast_total. Reserved, used and covered GPUs per hour are the invoice's own netting
(`invoice_hours`)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from models.billing import lifecycle
from models.billing.books import Books
from models.billing.idle import IdleCause, idle_by_cause, split_value
from models.billing.invoices import DocumentKind, Status, StoredInvoice
from models.billing.journal import JOURNAL_COLUMNS, journal_rows
from models.billing.pricing import LineKind, allocate, forecast_total, on_demand_by_tier
from models.billing.rate_cards import Tenant, month_bounds
from models.errors import UserError
from models.ledger.gaps import GAP_RANGES
from models.ledger.usage import (
    IDLE_TENANT,
    RESERVED_TENANTS,
    SHARED_IDLE_TENANT,
    UNATTRIBUTED_TENANT,
)

FINANCE = "finance"
OPERATOR = "operator"
TENANTS_DIR = "tenants"
NAMES_KEY = ".names.key"

# Written by the analytics assets when they run; published when present, skipped otherwise.
# Forecasts and budgets carry money: each tenant sees its own, operators none of them (they
# see the queue holds budgets make); finance sees the forecast revenue (`revenue_forecast`).
MONEY_ANALYTICS_TABLES = ("tenant_forecasts", "tenant_forecast_days", "tenant_budgets",
                          "tenant_budget_days")
# Inference (latency SLAs, bursts, off-peak moves) is published like the rest: each tenant its
# own rows; operators in GPUs and GPU-hours, without the money (OPERATOR_WITHHELD).
INFERENCE_TABLES = ("latency_findings", "burst_episodes", "request_rates",
                    "dedicated_reservation_recommendations", "off_peak_recommendations")
ANALYTICS_TABLES = ("usage_shifts", "tier_change_recommendations", "reservation_recommendations",
                    "scheduler_quota_changes", "budget_holds", *MONEY_ANALYTICS_TABLES,
                    *INFERENCE_TABLES)

VARIABLE_KINDS = (LineKind.USAGE, LineKind.BAND_FEE, LineKind.TOKENS, LineKind.DISCOUNT)
HOUR = timedelta(hours=1)
STAGE = "mart_stage"
"""In-memory database attached while publishing: every tenant's rows of each tenant table,
computed once for all tenants and sorted by an integer tenant key, so that a tenant's file is
a filtered copy whose filter skips other tenants' row groups (string zone maps compare only a
prefix, so tenant names with a long common prefix would not)."""
PUBLISH_WORKERS = 4
"""Tenant files in flight at once; on 2 cores 4 beat 2 and 8 added nothing (bench/marts.py)."""
ZERO = Decimal(0)


def _names_key(marts_dir: Path, *, create: bool = False) -> bytes:
    """The secret that tenant mart names are derived from, kept beside the marts (0600).
    Publishing creates it once; readers only read it (no key: nothing published yet)."""
    path = marts_dir / NAMES_KEY
    if create and not path.exists():
        fd, tmp = tempfile.mkstemp(dir=marts_dir, prefix=".tmp-key-")
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
            os.close(fd)
            os.chmod(tmp, 0o600)
            # A link, unlike a rename, fails if another publisher created the key meanwhile.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    key = path.read_bytes()
    if len(key) != 32:
        raise ValueError(f"{path}: expected a 32-byte key, found {len(key)} bytes; delete the "
                         "marts folder and publish again")
    return key


def tenant_mart_path(marts_dir: Path, tenant: str) -> Path:
    """`tenants/<HMAC of the name>.duckdb`: nothing a tenant is called (`../x'; DROP`) can leave
    the folder or reach SQL, and without the key nobody can tell which file is whose.
    FileNotFoundError when no marts were published to `marts_dir` yet."""
    digest = hmac.new(_names_key(marts_dir), tenant.encode(), hashlib.sha256).hexdigest()
    return marts_dir / TENANTS_DIR / f"{digest[:32]}.duckdb"


def finance_mart_path(marts_dir: Path) -> Path:
    return marts_dir / f"{FINANCE}.duckdb"


def operator_mart_path(marts_dir: Path) -> Path:
    return marts_dir / f"{OPERATOR}.duckdb"


@dataclass(frozen=True)
class _Horizon:
    data_from: datetime | None
    data_to: datetime | None
    """Exclusive: the hour after the last hour with any data in the warehouse."""


def publish_marts(
    con: duckdb.DuckDBPyConnection,
    marts_dir: Path,
    tenants: Mapping[str, Tenant] | Iterable[str],
    *,
    now: datetime | None = None,
    workers: int | None = None,
    books: Books | None = None,
) -> list[Path]:
    """Write every tenant's mart, the finance mart and the operator mart; returns their paths.

    `con` is the warehouse connection (models.ledger.warehouse.connect); `tenants` names the
    tenants that get a mart (a tenants mapping, or names). `workers` tenant files are
    written at once, each on its own cursor of `con` (default: PUBLISH_WORKERS). `books`
    (the finance file) gives the ledger accounts of the finance mart's journal; without it
    the finance mart has no journal."""
    published_at = now or datetime.now(UTC)
    names = sorted(tenants)
    for name in names:
        if name in RESERVED_TENANTS:
            raise ValueError(f"tenant {name!r}: reserved names have no mart of their own")
    if workers is not None and workers < 1:
        raise ValueError(f"publish_marts: workers must be at least 1, got {workers}")
    # Only the owner (the pipeline and the dashboard's user) may list or open the marts.
    for folder in (marts_dir, marts_dir / TENANTS_DIR):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
    _names_key(marts_dir, create=True)
    horizon = _horizon(con)
    present = _present_tables(con)
    con.execute(f"DETACH DATABASE IF EXISTS {STAGE}")
    con.execute(f"ATTACH ':memory:' AS {STAGE}")
    try:
        _stage(con, names, horizon)
        _stage_finance(con, names, horizon, books)
        for name, query in _staged_tables(present):
            con.execute(f"CREATE TABLE {STAGE}.{name} AS {query}")
        paths = _publish_tenants(con, marts_dir, names, horizon, published_at,
                                 _tenant_tables(present), workers or PUBLISH_WORKERS)
        paths.append(_publish(con, finance_mart_path(marts_dir), "mart",
                              (FINANCE, None, published_at, horizon),
                              _finance_tables(present)))
        paths.append(_publish(con, operator_mart_path(marts_dir), "mart",
                              (OPERATOR, None, published_at, horizon),
                              _operator_tables(present)))
    finally:
        for table in ("mart_invoices", "mart_rates", "mart_periods", *_FINANCE_STAGED):
            con.execute(f"DROP TABLE IF EXISTS {table}")
        con.execute("DROP VIEW IF EXISTS mart_usage")
        con.execute(f"DETACH DATABASE IF EXISTS {STAGE}")
    return paths


def _publish_tenants(con: duckdb.DuckDBPyConnection, marts_dir: Path, names: Sequence[str],
                     horizon: _Horizon, published_at: datetime,
                     tables: Sequence[tuple[str, str]], workers: int) -> list[Path]:
    """Every tenant's file, `workers` at a time. A file costs a dozen small statements and a
    checkpoint, mostly one core's work between waits on the disk, so two cores keep more than
    one file in flight. Cursors share the database (and the staged tables) but not temp tables
    or settings, hence the staging database and the time zone copied here. The first failure
    stops the others taking new tenants and is raised; files already moved into place are
    complete, and the rest keep their previous version."""
    row = con.execute("SELECT current_setting('TimeZone')").fetchone()
    zone = str(row[0] if row else "UTC").replace("'", "''")
    todo = iter(list(enumerate(names)))
    lock = threading.Lock()
    failed = threading.Event()

    def work(slot: int) -> None:
        with con.cursor() as cur:
            cur.execute(f"SET TimeZone = '{zone}'")
            while not failed.is_set():
                with lock:
                    item = next(todo, None)
                if item is None:
                    return
                key, name = item
                try:
                    _publish(cur, tenant_mart_path(marts_dir, name), f"mart_{slot}",
                             ("tenant", name, published_at, horizon), tables, key)
                except BaseException:
                    failed.set()
                    raise

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="publish-marts") as pool:
        futures = [pool.submit(work, slot) for slot in range(min(workers, len(names)))]
        try:
            for future in futures:
                future.result()
        except BaseException:  # an interrupt here too: let the workers stop, then raise
            failed.set()
            raise
    return [tenant_mart_path(marts_dir, name) for name in names]


def _horizon(con: duckdb.DuckDBPyConnection) -> _Horizon:
    row = con.execute("SELECT min(hour), max(hour) FROM usage_hourly").fetchone()
    if not row or row[0] is None:
        return _Horizon(None, None)
    return _Horizon(row[0].astimezone(UTC), row[1].astimezone(UTC) + HOUR)


def _present_tables(con: duckdb.DuckDBPyConnection) -> dict[str, bool]:
    """Analytics tables that exist -> whether they have a `tenant` column."""
    rows = con.execute(
        "SELECT table_name, bool_or(column_name = 'tenant') FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_catalog = current_database() "
        "GROUP BY table_name").fetchall()
    return {name: bool(has_tenant) for name, has_tenant in rows if name in ANALYTICS_TABLES}


def _stage(con: duckdb.DuckDBPyConnection, names: Sequence[str], horizon: _Horizon) -> None:
    """Tables shared by every mart: the published tenants with their keys, their hourly usage,
    invoices with display status, cost rates, periods and reservations."""
    con.execute(f"CREATE TABLE {STAGE}.tenants AS SELECT unnest(range(?))::INTEGER AS _mart_key, "
                "unnest(?::VARCHAR[]) AS tenant", [len(names), list(names)])
    con.execute(f"CREATE OR REPLACE TEMP VIEW mart_usage AS SELECT k._mart_key, u.* "
                f"FROM usage_hourly u JOIN {STAGE}.tenants k ON k.tenant = u.tenant")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE mart_invoices AS
        SELECT i.invoice_id, i.number, i.kind, i.status,
               CASE WHEN i.status = 'final' AND i.kind = 'invoice' AND EXISTS (
                        SELECT 1 FROM invoices a WHERE a.kind = 'adjustment'
                        AND a.adjusts = i.number) THEN 'adjusted'
                    ELSE i.status END AS display_status,
               i.tenant, i.period, i.plan, i.currency, i.total, i.credit_applied, i.adjusts,
               i.rate_card_version, i.content_hash, i.inputs_hash, i.finalized_at, i.document
        FROM invoices i""")
    rates: list[tuple[Any, ...]] = []
    periods: list[tuple[Any, ...]] = []
    # An invoice and its adjustment notes together are what the period was billed.
    billed: dict[tuple[str, str], list[StoredInvoice]] = {}
    for stored in lifecycle.stored(con):
        billed.setdefault((stored.invoice.tenant, stored.invoice.period), []).append(stored)
    hours: dict[tuple[str, str, str], dict[str, Decimal]] = {}
    for tenant, period, basis, tier, gpu_hours in con.execute(
            "SELECT tenant, strftime(hour, '%Y-%m'), unnest(['allocation', 'usage']), "
            "hardware_tier, unnest([coalesce(sum(allocated_gpu_seconds), 0), "
            "coalesce(sum(used_gpu_seconds), 0)])::DECIMAL(38, 6) / 3600 FROM usage_hourly "
            "GROUP BY tenant, strftime(hour, '%Y-%m'), hardware_tier").fetchall():
        hours.setdefault((tenant, period, basis), {})[tier] = Decimal(gpu_hours)
    for (tenant, period), documents in billed.items():
        documents.sort(key=lambda s: s.kind is not DocumentKind.INVOICE)
        invoice = documents[0].invoice
        lines = [line for s in documents for line in s.invoice.lines]
        total = sum((s.invoice.total for s in documents), ZERO)
        hours_by_tier = hours.get((tenant, period, invoice.basis), {})
        for tier, amount in on_demand_by_tier(lines).items():
            if amount and hours_by_tier.get(tier):
                rates.append((tenant, period, invoice.basis, tier,
                              amount / hours_by_tier[tier]))
        variable = sum((line.amount for line in lines if line.kind in VARIABLE_KINDS), ZERO)
        start, end = month_bounds(period)
        period_hours = (end - start) // HOUR
        elapsed = _elapsed_hours(start, end, horizon)
        # A closed month's bill is what it is, however many hours had data.
        closed = any(s.status is Status.FINAL for s in documents)
        forecast = total if closed else forecast_total(invoice, period_hours, elapsed)
        periods.append((tenant, period, invoice.currency, start, end, period_hours, elapsed,
                         closed, (total - variable) / period_hours, total, variable,
                         total - variable, forecast))
    con.execute("CREATE OR REPLACE TEMP TABLE mart_rates (tenant VARCHAR, period VARCHAR, "
                "basis VARCHAR, hardware_tier VARCHAR, cost_per_gpu_hour DECIMAL(38, 12))")
    con.execute("CREATE OR REPLACE TEMP TABLE mart_periods (tenant VARCHAR, period VARCHAR, "
                "currency VARCHAR, period_start TIMESTAMPTZ, period_end TIMESTAMPTZ, "
                "period_hours INTEGER, elapsed_hours INTEGER, closed BOOLEAN, "
                "fixed_per_hour DECIMAL(38, 12), billed_total DECIMAL(18, 4), "
                "on_demand_amount DECIMAL(18, 4), fixed_amount DECIMAL(18, 4), "
                "forecast_total DECIMAL(18, 4))")
    _insert(con, "mart_rates", rates)
    _insert(con, "mart_periods", periods)


_FINANCE_STAGED = ("mart_period_documents", "mart_journal", "mart_journal_problems",
                   "mart_idle_by_cause", "mart_idle_reserved_by_holder")


def _stage_finance(con: duckdb.DuckDBPyConnection, names: Sequence[str], horizon: _Horizon,
                   books: Books | None) -> None:
    """The finance mart's own tables: which documents each billing period has (its invoices
    and statements, and the notes issued during it: lifecycle.period_documents), the
    period's journal lines (or why there are none), and idle capacity by cause."""
    periods = [p for (p,) in con.execute(
        "SELECT period FROM invoices UNION SELECT strftime(finalized_at, '%Y-%m') FROM invoices "
        "WHERE kind = 'adjustment' ORDER BY 1").fetchall()]
    documents: list[tuple[Any, ...]] = []
    journal: list[tuple[Any, ...]] = []
    problems: list[tuple[Any, ...]] = []
    for period in periods:
        found = lifecycle.period_documents(con, period)
        documents += [(period, s.invoice_id) for s in found]
        if books is None:
            continue
        try:
            journal += [(period, *(row[c] for c in JOURNAL_COLUMNS))
                        for row in journal_rows(found, period, books.accounts)]
        except UserError as error:
            # The dashboards must publish even when finance's configuration is incomplete:
            # the page says why this period has no journal.
            problems += [(period, problem) for problem in error.problems]
    con.execute("CREATE OR REPLACE TEMP TABLE mart_period_documents (period VARCHAR, "
                "invoice_id VARCHAR)")
    _insert(con, "mart_period_documents", documents)
    con.execute("CREATE OR REPLACE TEMP TABLE mart_journal (period VARCHAR, "
                + ", ".join(f"{c} VARCHAR" for c in JOURNAL_COLUMNS) + ")")
    _insert(con, "mart_journal", journal)
    con.execute("CREATE OR REPLACE TEMP TABLE mart_journal_problems (period VARCHAR, "
                "problem VARCHAR)")
    _insert(con, "mart_journal_problems", problems)

    idle: list[tuple[Any, ...]] = []
    holders: list[tuple[Any, ...]] = []
    if horizon.data_from is not None and horizon.data_to is not None:
        # A tier nobody was billed for has no realized price, so its idle has no value (null,
        # as in revenue_vs_capacity), only GPU-hours.
        values: dict[tuple[str, str], tuple[Decimal | None, str | None]] = {
            (p, tier): (value, currency) for p, tier, value, currency in con.execute(
                f"""SELECT c.period, c.hardware_tier, c.idle_value,
                           (SELECT any_value(currency) FROM mart_periods m
                            WHERE m.period = c.period)
                    FROM ({_REVENUE_VS_CAPACITY}) c""").fetchall()}
        cent = Decimal("0.01")
        for split in idle_by_cause(con, horizon.data_from, horizon.data_to, names):
            value, currency = values.get((split.period, split.hardware_tier), (None, None))
            worth: dict[IdleCause, Decimal | None] = (
                dict(split_value(value, split, cent)) if value is not None
                else dict.fromkeys(IdleCause))
            idle += [(split.period, split.hardware_tier, order, cause.value, cause.label,
                      split.gpu_hours[cause], worth[cause], currency)
                     for order, cause in enumerate(IdleCause, start=1)]
            names_of = sorted(split.reserved_by_holder)
            reserved = worth[IdleCause.RESERVED_UNUSED]
            shares: list[Decimal | None] = [None] * len(names_of)
            if reserved is not None and names_of:
                shares = list(allocate(reserved, [split.reserved_by_holder[n] for n in names_of],
                                       cent) if reserved else [ZERO] * len(names_of))
            holders += [(split.period, split.hardware_tier, n, split.reserved_by_holder[n], v,
                         currency) for n, v in zip(names_of, shares, strict=True)]
    con.execute("CREATE OR REPLACE TEMP TABLE mart_idle_by_cause (period VARCHAR, "
                "hardware_tier VARCHAR, cause_order INTEGER, cause VARCHAR, "
                "cause_label VARCHAR, gpu_hours DECIMAL(38, 6), value DECIMAL(18, 2), "
                "currency VARCHAR)")
    _insert(con, "mart_idle_by_cause", idle)
    con.execute("CREATE OR REPLACE TEMP TABLE mart_idle_reserved_by_holder (period VARCHAR, "
                "hardware_tier VARCHAR, tenant VARCHAR, gpu_hours DECIMAL(38, 6), "
                "value DECIMAL(18, 2), currency VARCHAR)")
    _insert(con, "mart_idle_reserved_by_holder", holders)


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """All rows in one statement: executemany runs one statement per row, seconds for a few
    thousand tenants. Values travel as text, column by column, and DuckDB casts them to the
    column types; Decimals in positional notation, so nothing passes through a float."""
    if not rows:
        return
    columns = [[None if v is None else format(v, "f") if isinstance(v, Decimal) else str(v)
                for v in column] for column in zip(*rows, strict=True)]
    unnests = ", ".join("unnest(?::VARCHAR[])" for _ in columns)
    con.execute(f"INSERT INTO {table} SELECT {unnests}", columns)


def _elapsed_hours(start: datetime, end: datetime, horizon: _Horizon) -> int:
    if horizon.data_to is None or horizon.data_to <= start:
        return 0
    return (min(end, horizon.data_to) - start) // HOUR


def _publish(cur: duckdb.DuckDBPyConnection, path: Path, alias: str,
             meta: tuple[str, str | None, datetime, _Horizon],
             tables: Sequence[tuple[str, str]], key: int | None = None) -> Path:
    """Fill a new file under a temporary name beside `path`, then move it into place.

    `$key` in a query is the tenant's key in the staged tables. All tables are created in one
    transaction: one commit, then the checkpoint on DETACH writes and fsyncs the file before
    it is renamed, so a reader opening `path` finds either the old file or this one whole."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".duckdb")
    os.close(fd)
    os.unlink(tmp)  # DuckDB creates the file itself; an empty file is not a database
    quoted = tmp.replace("'", "''")
    kind, tenant, published_at, horizon = meta
    # Small blocks: a tenant's mart is mostly small tables, and thousands of files add up.
    cur.execute(f"ATTACH '{quoted}' AS {alias} (BLOCK_SIZE 16384)")
    try:
        cur.execute("BEGIN")
        cur.execute(f"CREATE TABLE {alias}.meta AS SELECT ?::VARCHAR AS kind, "
                    "?::VARCHAR AS tenant, ?::TIMESTAMPTZ AS published_at, "
                    "?::TIMESTAMPTZ AS data_from, ?::TIMESTAMPTZ AS data_to",
                    [kind, tenant, published_at, horizon.data_from, horizon.data_to])
        for name, query in tables:
            cur.execute(f"CREATE TABLE {alias}.{name} AS {query.replace('$key', '?')}",
                        [key] * query.count("$key"))
        cur.execute("COMMIT")
        cur.execute(f"DETACH {alias}")
        os.chmod(tmp, 0o400)
        os.replace(tmp, path)
    except BaseException:
        # Whether a transaction is still open depends on where it failed (COMMIT ends it).
        with contextlib.suppress(duckdb.Error):
            cur.execute("ROLLBACK")
        cur.execute(f"DETACH DATABASE IF EXISTS {alias}")
        for leftover in (Path(tmp), Path(tmp + ".wal")):
            leftover.unlink(missing_ok=True)
        raise
    return path


# The tenant tables for every published tenant at once, each led by `_mart_key` and sorted by
# it; a tenant's file gets its key's rows without the key. Within a key, rows keep the order
# the dashboards read them in.
_USAGE_HOURLY = """
    SELECT _mart_key, hour, hardware_tier, size_class, coalesce(model, '(unknown)') AS model,
           mig_profile, workload_kind,
           (sum(allocated_gpu_seconds) / 3600)::DECIMAL(38, 6) AS allocated_gpu_hours,
           (sum(used_gpu_seconds) / 3600)::DECIMAL(38, 6) AS used_gpu_hours,
           sum(peak_gpus) AS peak_gpus
    FROM mart_usage GROUP BY ALL ORDER BY ALL"""

_USAGE_DAILY = """
    WITH per_hour AS (
        SELECT _mart_key, day, hour, hardware_tier, size_class,
               coalesce(model, '(unknown)') AS model,
               sum(allocated_gpu_seconds) AS allocated, sum(used_gpu_seconds) AS used,
               sum(peak_gpus) AS gpus
        FROM mart_usage GROUP BY ALL)
    SELECT _mart_key, day, hardware_tier, size_class, model,
           (sum(allocated) / 3600)::DECIMAL(38, 6) AS allocated_gpu_hours,
           (sum(used) / 3600)::DECIMAL(38, 6) AS used_gpu_hours,
           max(gpus) AS peak_gpus
    FROM per_hour GROUP BY ALL ORDER BY ALL"""

# Usage rows priced at their tier's rate of the month, by model and workload kind, plus one row a
# day of fixed charges.
_COST_DAILY = f"""
    WITH usage AS (
        SELECT u._mart_key, u.day, strftime(u.hour, '%Y-%m') AS period, u.hardware_tier,
               u.size_class, coalesce(u.model, '(unknown)') AS model, u.workload_kind,
               sum(CASE WHEN r.basis = 'usage' THEN u.used_gpu_seconds
                        ELSE u.allocated_gpu_seconds END) / 3600 AS gpu_hours,
               any_value(r.cost_per_gpu_hour) AS rate
        FROM mart_usage u
        LEFT JOIN mart_rates r ON r.tenant = u.tenant AND r.hardware_tier = u.hardware_tier
             AND r.period = strftime(u.hour, '%Y-%m')
        GROUP BY ALL),
    spread AS (
        SELECT k._mart_key, p.*,
               CASE WHEN p.closed THEN p.period_hours ELSE p.elapsed_hours END AS hours
        FROM mart_periods p JOIN {STAGE}.tenants k ON k.tenant = p.tenant
        WHERE p.fixed_per_hour <> 0),
    fixed AS (
        SELECT p._mart_key, d::DATE AS day, p.period,
               p.fixed_per_hour * least(24, p.hours - datediff('hour', p.period_start, d))
                   AS cost
        FROM spread p,
             range(p.period_start, p.period_start + to_hours(p.hours), INTERVAL 1 DAY) AS t(d))
    SELECT _mart_key, day, period, 'on-demand' AS charge, hardware_tier, size_class, model,
           workload_kind, gpu_hours::DECIMAL(38, 6) AS gpu_hours,
           coalesce(gpu_hours * rate, 0)::DECIMAL(18, 4) AS cost
    FROM usage
    UNION ALL
    SELECT _mart_key, day, period, 'fixed', NULL, NULL, NULL, NULL, 0, cost::DECIMAL(18, 4)
    FROM fixed
    ORDER BY ALL"""

# The netting each invoice was priced with, per hour and tier where the tenant holds
# reserved GPUs, up to the last hour with data: the same covered GPU-hours as the invoice.
_RESERVATIONS = f"""
    SELECT k._mart_key, h.hour, h.hardware_tier,
           sum(h.gpu_hours) FILTER (WHERE h.reservation_id IS NOT NULL)::DECIMAL(38, 6)
               AS reserved_gpus,
           coalesce(sum(h.gpu_hours) FILTER (WHERE h.size_class IS NOT NULL), 0)
               ::DECIMAL(38, 6) AS used_gpus,
           coalesce(sum(h.gpu_hours) FILTER (WHERE h.hour_use = 'covered'), 0)
               ::DECIMAL(38, 6) AS covered_gpus
    FROM invoice_hours h JOIN invoices i USING (invoice_id)
    JOIN {STAGE}.tenants k ON k.tenant = i.tenant
    WHERE i.kind = 'invoice'
      AND h.hour < (SELECT max(hour) + INTERVAL 1 HOUR FROM usage_hourly)
    GROUP BY ALL HAVING sum(h.gpu_hours) FILTER (WHERE h.reservation_id IS NOT NULL) > 0
    ORDER BY ALL"""

_PERIODS = f"""
    SELECT k._mart_key, p.period, p.currency, p.period_start, p.period_end, p.period_hours,
           p.elapsed_hours, p.closed, p.billed_total, p.on_demand_amount, p.fixed_amount,
           p.forecast_total
    FROM mart_periods p JOIN {STAGE}.tenants k ON k.tenant = p.tenant
    ORDER BY k._mart_key, p.period"""

_INVOICES = f"""
    SELECT k._mart_key, i.* FROM mart_invoices i JOIN {STAGE}.tenants k ON k.tenant = i.tenant
    ORDER BY k._mart_key, i.period, i.invoice_id"""

_LINES = f"""
    SELECT k._mart_key, l.* FROM invoice_lines l JOIN invoices i USING (invoice_id)
    JOIN {STAGE}.tenants k ON k.tenant = i.tenant
    ORDER BY k._mart_key, l.invoice_id, l.line_no"""


def _staged_tables(present: Mapping[str, bool]) -> list[tuple[str, str]]:
    """(name, query for every tenant): what `_tenant_tables` copies from, one tenant a file."""
    tables = [("usage_hourly", _USAGE_HOURLY), ("usage_daily", _USAGE_DAILY),
              ("cost_daily", _COST_DAILY), ("periods", _PERIODS), ("invoices", _INVOICES),
              ("invoice_lines", _LINES), ("reservations", _RESERVATIONS)]
    # An analytics table keeps its own row order within a tenant, as a filtered scan would.
    tables += [(name, f"""
        SELECT k._mart_key, t.* EXCLUDE (_mart_row)
        FROM (SELECT *, row_number() OVER () AS _mart_row FROM {name}) t
        JOIN {STAGE}.tenants k ON k.tenant = t.tenant
        ORDER BY k._mart_key, t._mart_row""")
               for name, has_tenant in present.items() if has_tenant]
    return tables


def _tenant_tables(present: Mapping[str, bool]) -> list[tuple[str, str]]:
    """(name, query for the tenant whose key is `$key`) for every table of a tenant's mart."""
    return [(name, f"SELECT * EXCLUDE (_mart_key) FROM {STAGE}.{name} WHERE _mart_key = $key")
            for name, _ in _staged_tables(present)]


_CAPACITY = f"""
    SELECT strftime(hour, '%Y-%m') AS period, hardware_tier,
           sum(allocated_gpu_seconds) / 3600 AS capacity_gpu_hours,
           sum(allocated_gpu_seconds) FILTER (WHERE tenant NOT IN
               ('{IDLE_TENANT}', '{SHARED_IDLE_TENANT}', '{UNATTRIBUTED_TENANT}')) / 3600
               AS tenant_gpu_hours,
           coalesce(sum(allocated_gpu_seconds) FILTER (WHERE tenant = '{IDLE_TENANT}'), 0)
               / 3600 AS idle_gpu_hours,
           coalesce(sum(allocated_gpu_seconds) FILTER (WHERE tenant = '{SHARED_IDLE_TENANT}'),
                    0) / 3600 AS shared_idle_gpu_hours,
           coalesce(sum(allocated_gpu_seconds) FILTER (WHERE tenant = '{UNATTRIBUTED_TENANT}'),
                    0) / 3600 AS unattributed_gpu_hours
    FROM usage_hourly GROUP BY ALL"""

# Idle and unattributed GPU-hours are valued at the tier's realized price (revenue per
# attributed GPU-hour): what the capacity would have earned had it been billed.
_REVENUE_VS_CAPACITY = f"""
    WITH capacity AS ({_CAPACITY}),
    revenue AS (
        SELECT r.period, r.hardware_tier,
               sum(r.cost_per_gpu_hour * t.hours) AS on_demand_revenue
        FROM mart_rates r JOIN (
            SELECT tenant, strftime(hour, '%Y-%m') AS period, hardware_tier,
                   sum(allocated_gpu_seconds) / 3600 AS hours
            FROM usage_hourly GROUP BY ALL) t USING (tenant, period, hardware_tier)
        GROUP BY ALL)
    SELECT c.period, c.hardware_tier,
           c.capacity_gpu_hours::DECIMAL(38, 6) AS capacity_gpu_hours,
           coalesce(c.tenant_gpu_hours, 0)::DECIMAL(38, 6) AS tenant_gpu_hours,
           c.idle_gpu_hours::DECIMAL(38, 6) AS idle_gpu_hours,
           c.shared_idle_gpu_hours::DECIMAL(38, 6) AS shared_idle_gpu_hours,
           c.unattributed_gpu_hours::DECIMAL(38, 6) AS unattributed_gpu_hours,
           coalesce(r.on_demand_revenue, 0)::DECIMAL(18, 2) AS on_demand_revenue,
           (coalesce(r.on_demand_revenue, 0) / nullif(c.tenant_gpu_hours, 0))
               ::DECIMAL(18, 4) AS realized_price_per_gpu_hour,
           ((c.idle_gpu_hours + c.shared_idle_gpu_hours) * coalesce(r.on_demand_revenue, 0)
               / nullif(c.tenant_gpu_hours, 0))::DECIMAL(18, 2) AS idle_value,
           (c.unattributed_gpu_hours * coalesce(r.on_demand_revenue, 0)
               / nullif(c.tenant_gpu_hours, 0))::DECIMAL(18, 2) AS unattributed_value
    FROM capacity c LEFT JOIN revenue r USING (period, hardware_tier)
    ORDER BY ALL"""

_REVENUE = """
    SELECT period, currency, count(*) FILTER (WHERE kind = 'invoice') AS invoices,
           count(*) FILTER (WHERE kind = 'adjustment') AS adjustments,
           bool_and(status = 'final') AS closed,
           sum(total) AS billed_total,
           sum(total) FILTER (WHERE kind = 'adjustment') AS adjustments_total,
           sum(credit_applied) AS credit_applied
    FROM invoices GROUP BY ALL ORDER BY ALL"""

_COVERAGE = f"""
    SELECT day,
           (sum(allocated_gpu_seconds) / 3600)::DECIMAL(38, 6) AS capacity_gpu_hours,
           (coalesce(sum(allocated_gpu_seconds) FILTER (WHERE tenant NOT IN
               ('{IDLE_TENANT}', '{SHARED_IDLE_TENANT}', '{UNATTRIBUTED_TENANT}')), 0) / 3600)
               ::DECIMAL(38, 6) AS tenant_gpu_hours,
           (coalesce(sum(allocated_gpu_seconds) FILTER (WHERE tenant = '{UNATTRIBUTED_TENANT}'),
               0) / 3600)::DECIMAL(38, 6) AS unattributed_gpu_hours,
           (coalesce(sum(allocated_gpu_seconds) FILTER (WHERE tenant IN
               ('{IDLE_TENANT}', '{SHARED_IDLE_TENANT}')), 0) / 3600)
               ::DECIMAL(38, 6) AS idle_gpu_hours,
           (1 - coalesce(sum(allocated_gpu_seconds) FILTER (WHERE tenant = '{UNATTRIBUTED_TENANT}'),
               0) / nullif(sum(allocated_gpu_seconds) FILTER (WHERE tenant NOT IN
               ('{IDLE_TENANT}', '{SHARED_IDLE_TENANT}')), 0))::DOUBLE AS attributed_share,
           sum(used_missing_rows) AS rows_without_utilization,
           sum(ledger_rows) AS ledger_rows
    FROM usage_hourly GROUP BY day ORDER BY day"""

# Every node seen in the warehouse against every day in its range: a node that reported on
# some days and not others has a collector to look at.
_NODE_DAYS = """
    WITH days AS (
        SELECT d::DATE AS day FROM (SELECT min(day) AS lo, max(day) AS hi FROM usage_hourly),
             range(lo, hi + INTERVAL 1 DAY, INTERVAL 1 DAY) AS t(d)),
    seen AS (
        SELECT cluster, node, day, count(DISTINCT hour) AS hours_reported
        FROM usage_hourly GROUP BY ALL)
    SELECT n.cluster, n.node, d.day, coalesce(s.hours_reported, 0) AS hours_reported
    FROM (SELECT DISTINCT cluster, node FROM usage_hourly) n CROSS JOIN days d
    LEFT JOIN seen s ON s.cluster = n.cluster AND s.node = n.node AND s.day = d.day
    ORDER BY ALL"""


# Each tenant's month-end forecast of the latest analysis of each period, with its ranges.
_REVENUE_FORECAST = """
    SELECT period, tenant, day AS forecast_of, currency, amount, amount_lo80, amount_hi80,
           amount_lo95, amount_hi95
    FROM tenant_forecasts f
    WHERE day = (SELECT max(day) FROM tenant_forecasts g WHERE g.period = f.period)
    ORDER BY ALL"""


def _finance_tables(present: Mapping[str, bool]) -> list[tuple[str, str]]:
    forecast = [("revenue_forecast", _REVENUE_FORECAST)] if "tenant_forecasts" in present else []
    return [*forecast,
        ("invoices", "SELECT * FROM mart_invoices ORDER BY period, tenant, invoice_id"),
        ("period_documents", "SELECT * FROM mart_period_documents ORDER BY ALL"),
        ("journal", "SELECT * FROM mart_journal ORDER BY period, line_no::INTEGER"),
        ("journal_problems", "SELECT * FROM mart_journal_problems ORDER BY ALL"),
        ("idle_by_cause", "SELECT * FROM mart_idle_by_cause ORDER BY ALL"),
        ("idle_reserved_by_holder", "SELECT * FROM mart_idle_reserved_by_holder ORDER BY ALL"),
        ("invoice_lines", "SELECT i.tenant, i.period, l.* FROM invoice_lines l "
                          "JOIN invoices i USING (invoice_id) ORDER BY l.invoice_id, l.line_no"),
        ("periods", "SELECT * FROM mart_periods ORDER BY period, tenant"),
        ("revenue", _REVENUE),
        ("revenue_vs_capacity", _REVENUE_VS_CAPACITY),
        ("coverage_daily", _COVERAGE),
        ("node_days", _NODE_DAYS),
        ("spool_quarantine", "SELECT * FROM spool_quarantine ORDER BY day, quarantined_at, file"),
        # What collectors could not read: no rows exist for it (models/ledger/gaps.py).
        ("collection_gaps", GAP_RANGES.format(where="true")),
    ]


_UTILIZATION = f"""
    SELECT hour, hardware_tier,
           (sum(allocated_gpu_seconds) / 3600)::DOUBLE AS capacity_gpus,
           (coalesce(sum(allocated_gpu_seconds) FILTER (WHERE tenant NOT IN
               ('{IDLE_TENANT}', '{SHARED_IDLE_TENANT}')), 0) / 3600)::DOUBLE AS allocated_gpus,
           (coalesce(sum(used_gpu_seconds) FILTER (WHERE tenant NOT IN
               ('{IDLE_TENANT}', '{SHARED_IDLE_TENANT}')), 0) / 3600)::DOUBLE AS used_gpus,
           (coalesce(sum(allocated_gpu_seconds) FILTER (WHERE tenant = '{IDLE_TENANT}'), 0)
               / 3600)::DOUBLE AS idle_gpus,
           (coalesce(sum(allocated_gpu_seconds) FILTER (WHERE tenant = '{SHARED_IDLE_TENANT}'),
               0) / 3600)::DOUBLE AS shared_idle_gpus
    FROM usage_hourly GROUP BY ALL ORDER BY ALL"""

_HOUR_OF_DAY = f"""
    WITH per_hour AS (
        SELECT tenant, hour, sum(allocated_gpu_seconds) / 3600 AS gpus
        FROM usage_hourly
        WHERE tenant NOT IN ('{IDLE_TENANT}', '{SHARED_IDLE_TENANT}')
        GROUP BY ALL)
    SELECT tenant, hour(hour) AS hour_of_day, avg(gpus)::DOUBLE AS mean_gpus,
           max(gpus)::DOUBLE AS peak_gpus
    FROM per_hour GROUP BY ALL ORDER BY ALL"""


OPERATOR_WITHHELD = {
    "tier_change_recommendations": ("projected_bills", "current_plan_total",
                                    "recommended_plan_total", "currency"),
    "reservation_recommendations": ("currency", "expected_monthly_cost_recommended",
                                    "expected_monthly_cost_current",
                                    "expected_monthly_cost_none"),
    "dedicated_reservation_recommendations": ("currency", "monthly_cost",
                                              "cost_per_late_request"),
    "off_peak_recommendations": ("currency", "charges_as_run", "charges_moved", "saving"),
}
"""Columns of analytics tables that are money (a tenant's projected bill, the expected cost of a
reservation at its prices, a dedicated reservation's cost, an off-peak move's charges and
saving): never in the operator mart. Operators decide capacity on GPUs: recommended and
cost-optimal units, the break-even utilization, the p95 demand, GPUs for a breached SLA,
GPU-hours moved off peak and the GPUs that frees."""


def _operator_tables(present: Mapping[str, bool]) -> list[tuple[str, str]]:
    # Operators run capacity, not billing: their mart has GPU-hours and recommendations, and
    # no invoice, line, revenue, projected-bill or expected-cost figure. A plan recommendation
    # reaches them as the change, its rule, the shift behind it and the projected GPU-hours.
    def query(name: str) -> str:
        withheld = OPERATOR_WITHHELD.get(name)
        return (f"SELECT * EXCLUDE ({', '.join(withheld)}) FROM {name}" if withheld
                else f"SELECT * FROM {name}")
    return [("utilization_hourly", _UTILIZATION), ("demand_hour_of_day", _HOUR_OF_DAY),
            ("node_days", _NODE_DAYS),
            *[(name, query(name)) for name in present if name not in MONEY_ANALYTICS_TABLES]]
