"""The DuckDB warehouse: its declared schema (sql/schema.sql) and the named operations and
queries every caller uses, so that each load, rollup and check is written once.

Loading takes rows as the caller has them: local Parquet files (DuckDB reads them itself, the
fastest way), or an Arrow stream or table (an object-store spool streamed by pyarrow, a user's
usage file, rows built in a test). Where the files come from and how they are listed is the
spool's business (collectors/spool.py); this module reads no spool layout and imports nothing
from collectors/.

GPU-seconds are summed as DECIMAL(38, 6), so a sum does not depend on the order DuckDB
happens to add rows in, and reruns give byte-identical invoices."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeAlias, cast

import duckdb
import polars as pl
import pyarrow as pa

from models.billing.pricing import ModelWork, UsageHour, quantity
from models.billing.rate_cards import RateCard, Tenant, UnknownProduct
from models.errors import TransientError, UserError
from models.ledger.usage import (
    DECODE_GPU_SECONDS_PER_TOKEN,
    GPU_SECONDS_TOLERANCE,
    LEDGER_COLUMNS,
    PREFILL_GPU_SECONDS_PER_TOKEN,
    REQUEST_WORK_SCHEMA,
    RESERVED_TENANTS,
    UNATTRIBUTED_TENANT,
)

SQL = Path(__file__).with_name("sql")
REQUEST_COLUMNS = tuple(REQUEST_WORK_SCHEMA.names)
REQUEST_MEASURES = frozenset(f.name for f in REQUEST_WORK_SCHEMA if f.nullable)

Rows: TypeAlias = Sequence[Path] | pa.RecordBatchReader | pa.Table
"""Ledger or request-work rows to load: local Parquet files, or Arrow data in the schema."""

_LOCK_HOLDER = re.compile(r"\(PID (\d+)\)")
_RESERVED = ", ".join(f"'{t}'" for t in sorted(RESERVED_TENANTS))
# What a file or stream that cannot be taken as rows raises while it is read or inserted: not
# Parquet, truncated, a column of the wrong type, a required value missing.
_UNREADABLE = (duckdb.IOException, duckdb.InvalidInputException, duckdb.ConversionException,
               duckdb.ConstraintException, pa.ArrowException, OSError)


def sql(name: str) -> str:
    return (SQL / f"{name}.sql").read_text()


class UnknownProducts(UserError):
    """GPU products the rate card's tier map does not name: an operator must map them; nothing
    is loaded meanwhile (a silent default tier would misprice them)."""


class UnreadableRows(TransientError):
    """Rows of a load could not be read or did not fit the schema. The caller finds the file at
    fault (the spool quarantines it) and loads again; if no file is at fault, the cause was the
    storage and a later run may succeed."""


def connect(path: Path | str = ":memory:", *, read_only: bool = False
            ) -> duckdb.DuckDBPyConnection:
    """A connection whose dates and hour boundaries are UTC, whatever the machine's zone.

    DuckDB lets one process open a file for writing (or several for reading only); when
    another process holds it, this raises TransientError naming that process. A file that is
    not a DuckDB database raises UserError."""
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.CatalogException:
        # DuckDB reads some names as something other than a database file (`x.csv` opened
        # read-only: "Cannot launch in-memory database in read-only mode").
        raise UserError(f"{path}: not a DuckDB warehouse file") from None
    except duckdb.IOException as error:
        if "not a valid DuckDB database file" in str(error):
            raise UserError(f"{path}: not a DuckDB warehouse file") from None
        if "Could not set lock" not in str(error):
            raise
        holder = _LOCK_HOLDER.search(str(error))
        pid = f" (PID {holder[1]})" if holder else ""
        raise TransientError(
            f"{path} is in use by another process{pid}: wait for the running job or stop it, "
            "then retry") from None
    con.execute("SET TimeZone = 'UTC'")
    return con


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Every table of the warehouse (sql/schema.sql); existing tables are left as they are,
    except a `request_work` of the first schema (one `tokens` column, request seconds
    required), which gains the measures of today's (its token totals, of no known kind, go)."""
    # Every Dagster asset and check opens the warehouse through here (14 times a daily run):
    # running the 22 CREATE statements cost 70 ms CPU an opening, looking them up 4 ms.
    schema = sql("schema")
    present = {name for (name,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = current_schema()"
    ).fetchall()}
    if not set(re.findall(r"^CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+(\w+)", schema, re.M)
               ) <= present:
        con.execute(schema)
    columns = {name for (name,) in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = 'request_work' "
        "AND schema_name = current_schema()").fetchall()}
    if "tokens" in columns:
        with con.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("ALTER TABLE request_work ALTER request_seconds DROP NOT NULL")
            cur.execute("ALTER TABLE request_work DROP COLUMN tokens")
            for name, kind in (("requests", "BIGINT"), ("prefill_seconds", "DOUBLE"),
                               ("decode_seconds", "DOUBLE"), ("input_tokens", "BIGINT"),
                               ("output_tokens", "BIGINT"),
                               ("latency_buckets", "STRUCT(le DOUBLE, count BIGINT)[]"),
                               ("ttft_buckets", "STRUCT(le DOUBLE, count BIGINT)[]")):
                cur.execute(f"ALTER TABLE request_work ADD COLUMN {name} {kind}")
            cur.execute("COMMIT")


# --- loading -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Load:
    """What one load put into the warehouse."""

    days: tuple[date, ...]
    staged_rows: int
    """Usage rows read, one per sample_id."""
    request_rows: int
    ledger_rows: int
    """Ledger rows of the loaded days, shared endpoints apportioned."""
    tenants: int


def load_day(con: duckdb.DuckDBPyConnection, day: date, card: RateCard, *, usage: Rows,
             requests: Rows = ()) -> Load:
    """Replace exactly one UTC day of the ledger and of the request work with `usage` and
    `requests` (rows of other days are ignored): one row per sample_id, shared endpoints
    apportioned, hardware tier and size class attached. The ledger is not rolled up here:
    `rollup_hourly` and `rollup_daily` are steps of their own, each checked.

    Raises UnknownProducts or UnreadableRows, and then writes nothing."""
    staged, request_rows, _ = _stage(con, usage, requests, card, [day])
    return Load((day,), staged, request_rows, *_day_counts(con, [day]))


def load_rows(con: duckdb.DuckDBPyConnection, card: RateCard, usage: Rows, requests: Rows = ()
              ) -> Load:
    """Load every day `usage` covers and roll each up, hourly and daily: the whole path for
    one-shot billing (`chargeback bill`) and for warehouses built in one go (tests, benches)."""
    staged, request_rows, days = _stage(con, usage, requests, card, None)
    for day in days:
        rollup_hourly(con, day)
        rollup_daily(con, day)
    return Load(tuple(days), staged, request_rows, *_day_counts(con, days))


def _stage(con: duckdb.DuckDBPyConnection, usage: Rows, requests: Rows, card: RateCard,
           days: Sequence[date] | None) -> tuple[int, int, list[date]]:
    """Stage the rows (temp tables `staged` and `staged_requests`, one row per sample_id),
    then replace `days` of the ledger and the request work with them, classified and
    apportioned (None: every day they cover). Returns the staged counts and the days
    replaced."""
    try:
        _stage_rows(con, "staged", "ledger", LEDGER_COLUMNS, usage)
        _stage_rows(con, "staged_requests", "request_work", REQUEST_COLUMNS, requests,
                    optional=REQUEST_MEASURES)
        _classify(con, card)
        _check_request_measures(con)
        if days is None:
            days = [d for (d,) in con.execute(
                "SELECT DISTINCT window_start::DATE FROM staged ORDER BY 1").fetchall()]
        _replace_days(con, days)
    except _UNREADABLE as error:
        # A value the declared columns refuse (a NOT NULL one empty) fails the insert, which
        # is rolled back: like a file that cannot be read, nothing of the load is written.
        raise UnreadableRows(f"the rows to load cannot be read: {error}") from error
    return _count(con, "staged"), _count(con, "staged_requests"), list(days)


class MixedRequestWork(UserError):
    """Tenants of one endpoint-interval whose request work shares no measure: apportioning
    them would compare seconds with tokens. The request sources must report a common one."""


def _check_request_measures(con: duckdb.DuckDBPyConnection) -> None:
    mixed = con.execute(
        "SELECT cluster, namespace, model, window_start, string_agg(DISTINCT tenant, ', ' "
        "ORDER BY tenant) FROM staged_requests GROUP BY cluster, namespace, model, "
        "window_start HAVING NOT (bool_and(prefill_seconds IS NOT NULL AND decode_seconds IS "
        "NOT NULL) OR bool_and(request_seconds IS NOT NULL) OR bool_and(input_tokens IS NOT "
        "NULL AND output_tokens IS NOT NULL)) ORDER BY ALL LIMIT 20").fetchall()
    if mixed:
        raise MixedRequestWork([
            f"request work of endpoint {c}/{ns}/{m} at {at.isoformat()}: tenants {tenants} "
            "have no measure in common (prefill and decode seconds, request seconds, or input "
            "and output tokens); make their request sources report one"
            for c, ns, m, at, tenants in mixed])


def _stage_rows(con: duckdb.DuckDBPyConnection, table: str, like: str,
                columns: Sequence[str], rows: Rows, optional: frozenset[str] = frozenset()
                ) -> None:
    """`optional`: columns a file may lack (written by an older collector): read as null,
    "not reported"."""
    # The temp table takes the declared table's types, so a value that does not convert fails
    # here, while reading.
    names = ", ".join(columns)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {names} FROM {like} LIMIT 0")
    if isinstance(rows, pa.RecordBatchReader | pa.Table):
        view = f"{table}_arrow"
        con.register(view, rows)
        try:
            con.execute(f"INSERT INTO {table} BY NAME SELECT {names} FROM {view}")
        finally:
            con.unregister(view)
    elif rows:
        # Not hive_partitioning: DuckDB would replace the rows' own `source` and `node` by the
        # folder names, which the spool writer sanitizes (`my source` -> `my_source`).
        files = "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in rows) + "]"
        source = f"read_parquet({files}, union_by_name = true, hive_partitioning = false)"
        selected = names
        if optional:
            present = {c for c, *_ in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
            selected = ", ".join(c if c in present or c not in optional else f"NULL AS {c}"
                                 for c in columns)
        con.execute(f"INSERT INTO {table} BY NAME SELECT {selected} FROM {source}")
    # One row per sample_id (a batch the spool received twice). Duplicates are rare, and
    # counting them costs a tenth of what a window over every row read costs (measured:
    # docs/benchmarks.md), so the window runs only when there are some.
    row = con.execute(f"SELECT count(*) > count(DISTINCT sample_id) FROM {table}").fetchone()
    if row and row[0]:
        con.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} QUALIFY "
                    "row_number() OVER (PARTITION BY sample_id ORDER BY window_start) > 1)")


def _classify(con: duckdb.DuckDBPyConnection, card: RateCard) -> None:
    """Temp tables `tier_map` and `size_map`: the hardware tier and size class of every
    distinct product and model size staged."""
    unknown, tiers = [], []
    for (product,) in con.execute("SELECT DISTINCT gpu_product FROM staged ORDER BY 1"
                                  ).fetchall():
        try:
            tiers.append((product, card.tier_of(product)))
        except UnknownProduct as error:
            unknown.append(str(error))
    if unknown:
        raise UnknownProducts(unknown)
    sizes = [(params, card.size_class_of(params)) for (params,) in con.execute(
        "SELECT DISTINCT model_params_b FROM staged").fetchall()]
    con.execute("CREATE OR REPLACE TEMP TABLE tier_map (gpu_product VARCHAR, "
                "hardware_tier VARCHAR)")
    con.execute("CREATE OR REPLACE TEMP TABLE size_map (model_params_b DOUBLE, "
                "size_class VARCHAR)")
    if tiers:
        con.executemany("INSERT INTO tier_map VALUES (?, ?)", tiers)
    if sizes:
        con.executemany("INSERT INTO size_map VALUES (?, ?)", sizes)


def _replace_days(con: duckdb.DuckDBPyConnection, days: Sequence[date]) -> None:
    """`days` of `staged` (classified and apportioned: sql/apportion.sql) and of
    `staged_requests` in place of the stored days, all or none."""
    con.execute("BEGIN TRANSACTION")
    try:
        for table in ("ledger", "request_work"):
            con.execute(f"DELETE FROM {table} WHERE list_contains(?, day)", [list(days)])
        con.execute("INSERT INTO ledger BY NAME SELECT *, window_start::DATE AS day "
                    f"FROM ({sql('apportion')}) WHERE list_contains(?, window_start::DATE)",
                    [PREFILL_GPU_SECONDS_PER_TOKEN, DECODE_GPU_SECONDS_PER_TOKEN, list(days)])
        con.execute("INSERT INTO request_work BY NAME SELECT *, window_start::DATE AS day "
                    "FROM staged_requests WHERE list_contains(?, window_start::DATE)",
                    [list(days)])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _day_counts(con: duckdb.DuckDBPyConnection, days: Sequence[date]) -> tuple[int, int]:
    row = con.execute("SELECT count(*), count(DISTINCT tenant) FROM ledger "
                      "WHERE list_contains(?, day)", [list(days)]).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def rollup_hourly(con: duckdb.DuckDBPyConnection, day: date) -> int:
    """Replace one day of `usage_hourly` from the ledger."""
    con.execute("DELETE FROM usage_hourly WHERE day = ?", [day])
    con.execute(sql("hourly"), [day])
    return _count(con, "usage_hourly WHERE day = ?", [day])


def rollup_daily(con: duckdb.DuckDBPyConnection, day: date) -> int:
    """Replace one day of `tenant_usage_daily` from the hourly rollup."""
    con.execute("DELETE FROM tenant_usage_daily WHERE day = ?", [day])
    con.execute(sql("daily"), [day])
    return _count(con, "tenant_usage_daily WHERE day = ?", [day])


# --- spool quarantine --------------------------------------------------------------------------

@dataclass(frozen=True)
class QuarantinedFile:
    """A spool file the ingest could not read, moved out of the spool (a `spool_quarantine`
    row)."""

    day: date
    kind: str
    file: str
    quarantined_as: str
    size_bytes: int | None
    reason: str
    quarantined_at: datetime


def record_quarantine(con: duckdb.DuckDBPyConnection, entry: QuarantinedFile) -> None:
    con.execute("INSERT INTO spool_quarantine VALUES (?, ?, ?, ?, ?, ?, ?)", list(astuple(entry)))


def quarantined(con: duckdb.DuckDBPyConnection, day: date) -> list[QuarantinedFile]:
    rows = con.execute("SELECT * FROM spool_quarantine WHERE day = ? ORDER BY quarantined_at, "
                       "file", [day]).fetchall()
    return [QuarantinedFile(*row) for row in rows]


# --- checks ------------------------------------------------------------------------------------

def conservation_violations(
    con: duckdb.DuckDBPyConnection, day: date, limit: int = 20
) -> list[tuple[object, ...]]:
    """Devices and intervals of `day` where allocated + idle != duration x GPU-equivalents."""
    return con.execute(sql("conservation"), [day, GPU_SECONDS_TOLERANCE, limit]).fetchall()


# What the conservation check of a day reads, per day of [$1, $2]: the ledger rows (a count,
# and the sum of a hash of exactly the columns conservation.sql reads, so that any change to
# them, one row or many, changes it) and the collection gaps overlapping the day.
_CONSERVATION_INPUTS = """
WITH days AS (SELECT unnest(generate_series($1::DATE, $2::DATE, INTERVAL 1 DAY))::DATE AS day),
usage AS (
    SELECT day, count(*) AS ledger_rows,
           sum(hash(cluster, node, gpu_uuid, window_start, duration_s, gpu_equivalents,
                    allocated_gpu_seconds, source)) AS ledger_fingerprint
    FROM ledger WHERE day >= $1 AND day <= $2 GROUP BY day
),
gaps AS (
    SELECT d.day, sum(hash(g.gap_id, g.window_start, g.window_end, g.cluster, g.node,
                           g.gpu_uuid, g.source)) AS gaps_fingerprint
    FROM days d JOIN collection_gaps g
      ON g.window_end > d.day::TIMESTAMPTZ AND g.window_start < (d.day + 1)::TIMESTAMPTZ
    GROUP BY d.day
)
SELECT u.day, u.ledger_rows, u.ledger_fingerprint,
       coalesce(g.gaps_fingerprint, 0) AS gaps_fingerprint
FROM usage u LEFT JOIN gaps g USING (day)
"""


def _conservation_rule() -> str:
    """What a recorded check is valid for: the check's query, its tolerance and what the
    record fingerprints. A change to any of them makes every record stale."""
    rule = f"{sql('conservation')}\n{GPU_SECONDS_TOLERANCE!r}\n{_CONSERVATION_INPUTS}"
    return hashlib.sha256(rule.encode()).hexdigest()


def check_conservation(con: duckdb.DuckDBPyConnection, day: date, limit: int = 20
                       ) -> list[tuple[object, ...]]:
    """`conservation_violations` of `day`; when there are none, records what passed in
    `conservation_checks` (read in the same transaction as the check), so that a later
    `unconfirmed_days` can tell whether the day has changed since."""
    con.execute("BEGIN TRANSACTION")
    try:
        violations = conservation_violations(con, day, limit)
        con.execute("DELETE FROM conservation_checks WHERE day = ?", [day])
        if not violations:
            con.execute("INSERT INTO conservation_checks (day, ledger_rows, ledger_fingerprint, "
                        "gaps_fingerprint, rule, checked_at) SELECT *, $3, now() "
                        f"FROM ({_CONSERVATION_INPUTS})", [day, day, _conservation_rule()])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return violations


def unconfirmed_days(con: duckdb.DuckDBPyConnection, first: date, last: date) -> list[date]:
    """Days of `first`..`last` with ledger rows that no passed conservation check vouches
    for: never checked, failed, or changed since (their rows, their gaps, or the check)."""
    return [day for (day,) in con.execute(
        f"SELECT i.day FROM ({_CONSERVATION_INPUTS}) i LEFT JOIN conservation_checks c "
        "ON c.day = i.day AND c.rule = $3 AND c.ledger_rows = i.ledger_rows "
        "AND c.ledger_fingerprint = i.ledger_fingerprint "
        "AND c.gaps_fingerprint = i.gaps_fingerprint WHERE c.day IS NULL ORDER BY i.day",
        [first, last, _conservation_rule()]).fetchall()]


def unattributed_gpu_seconds(con: duckdb.DuckDBPyConnection, day: date) -> tuple[float, float]:
    """(GPU-seconds without a tenant, GPU-seconds allocated to anyone but idle) on `day`."""
    row = con.execute(
        "SELECT coalesce(sum(allocated_gpu_seconds) FILTER (WHERE tenant = $1), 0), "
        "coalesce(sum(allocated_gpu_seconds) FILTER (WHERE tenant NOT LIKE '\\_\\_%' "
        "ESCAPE '\\' OR tenant = $1), 0) FROM ledger WHERE day = $2",
        [UNATTRIBUTED_TENANT, day]).fetchone()
    return (float(row[0]), float(row[1])) if row else (0.0, 0.0)


def hourly_differences(con: duckdb.DuckDBPyConnection, day: date
                       ) -> list[tuple[str, Decimal | None, Decimal | None]]:
    """Tenants whose GPU-seconds on `day` differ between the ledger and the hourly rollup:
    (tenant, ledger, hourly)."""
    return con.execute(
        "WITH l AS (SELECT tenant, sum(allocated_gpu_seconds::DECIMAL(38, 6)) AS s "
        "FROM ledger WHERE day = $1 GROUP BY ALL), "
        "h AS (SELECT tenant, sum(allocated_gpu_seconds) AS s FROM usage_hourly "
        "WHERE day = $1 GROUP BY ALL) "
        "SELECT coalesce(l.tenant, h.tenant), l.s, h.s FROM l FULL JOIN h USING (tenant) "
        "WHERE l.s IS DISTINCT FROM h.s ORDER BY 1", [day]).fetchall()


# --- billing reads -----------------------------------------------------------------------------

def usage_hours(
    con: duckdb.DuckDBPyConnection, tenants: Mapping[str, Tenant], start: datetime,
    end: datetime, token_models: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, list[UsageHour]]:
    """Each tenant's hourly GPU-hours per tier and size class under its metering basis, read
    in one query (billing thousands of tenants must not scan the rollup once per tenant).
    `token_models`: per tenant, the models billed by tokens, whose GPU-hours are left out.
    The rows of `create_usage_micro` as exact decimals, so both engines bill the same
    quantities."""
    table = "usage_hours_micro"
    create_usage_micro(con, table, tenants, start, end, token_models)
    try:
        rows = con.execute(f"SELECT tenant, hour, hardware_tier, size_class, gpu_hours_micro "
                           f"FROM {table} WHERE gpu_hours_micro IS NOT NULL "
                           "ORDER BY ALL").fetchall()
    finally:
        con.execute(f"DROP TABLE IF EXISTS {table}")
    hours: dict[str, list[UsageHour]] = {name: [] for name in tenants}
    for name, hour, tier, size, micro in rows:
        hours[name].append(UsageHour(hour, tier, size, Decimal(int(micro)).scaleb(-6)))
    return hours


def create_usage_micro(
    con: duckdb.DuckDBPyConnection, table: str, tenants: Mapping[str, Tenant], start: datetime,
    end: datetime, token_models: Mapping[str, Iterable[str]] | None = None,
) -> None:
    """Each tenant's hourly usage under its metering basis as the temporary table `table`
    (tenant, hour, hardware_tier, size_class, gpu_hours_micro: HUGEINT millionths of a
    GPU-hour, rounded half-up as `quantity` rounds, exact; missing: ledger rows without
    utilization of a usage-metered tenant). The set-wise engine (models.billing.pricing_sql)
    prices all tenants from it without a row in Python; `usage_hours` reads it for the Decimal
    engine. Refuses usage-metered tenants with rows that have no utilization."""
    left_out = sorted(f"{tenant}\x1f{model}" for tenant, models in (token_models or {}).items()
                      for model in models)
    on_usage = sorted(name for name, tenant in tenants.items() if tenant.basis.value == "usage")
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {table} AS "
        "WITH h AS (SELECT tenant, hour, hardware_tier, size_class, "
        "    sum(CASE WHEN list_contains($on_usage, tenant) THEN used_gpu_seconds "
        "             ELSE allocated_gpu_seconds END) AS seconds, "
        "    sum(used_missing_rows) FILTER (WHERE list_contains($on_usage, tenant)) AS missing "
        "  FROM usage_hourly "
        "  WHERE hour >= $start AND hour < $end AND list_contains($tenants, tenant) "
        "  AND (model IS NULL OR NOT list_contains($left_out, tenant || chr(31) || model)) "
        "  GROUP BY ALL) "
        # Half-up to a millionth of an hour: seconds are DECIMAL(38, 6), so this is exact.
        "SELECT tenant, hour, hardware_tier, size_class, "
        "  ((seconds * 1000000)::HUGEINT + 1800) // 3600 AS gpu_hours_micro, missing "
        "FROM h WHERE seconds <> 0 OR missing > 0",
        {"start": start, "end": end, "tenants": sorted(tenants), "left_out": left_out,
         "on_usage": on_usage})
    missing = con.execute(f"SELECT tenant, sum(missing)::BIGINT FROM {table} WHERE missing > 0 "
                          "GROUP BY ALL ORDER BY 1 LIMIT 1").fetchall()
    for name, rows in missing:
        raise ValueError(
            f"tenant {name} is metered on usage, but {rows} ledger rows in "
            f"[{start:%Y-%m-%d}, {end:%Y-%m-%d}) have no utilization (used_gpu_seconds "
            "is null): add a utilization source or switch the tenant to allocation"
        )


def model_work(
    con: duckdb.DuckDBPyConnection, tenants: Mapping[str, Tenant], start: datetime,
    end: datetime,
) -> dict[str, list[ModelWork]]:
    """Each tenant's tokens per model in [start, end) from the request work, with the share of
    prefill in the model's work (measured prefill and decode seconds where the server reported
    them, else the cost model's GPU-seconds per token) and the model's GPU-hours on the
    tenant's ledger under its basis."""
    rows = con.execute(
        """
        WITH w AS (
            SELECT tenant, model, sum(input_tokens) AS input_tokens,
                   sum(output_tokens) AS output_tokens,
                   sum(coalesce(prefill_seconds, input_tokens * $p)) AS prefill,
                   sum(coalesce(decode_seconds, output_tokens * $d)) AS decode
            FROM request_work
            WHERE window_start >= $start AND window_start < $end
              AND list_contains($tenants, tenant)
            GROUP BY ALL
            HAVING sum(input_tokens) IS NOT NULL OR sum(output_tokens) IS NOT NULL),
        g AS (
            SELECT tenant, model, sum(allocated_gpu_seconds) AS allocated,
                   sum(used_gpu_seconds) AS used
            FROM ledger
            WHERE window_start >= $start AND window_start < $end
              AND list_contains($tenants, tenant)
            GROUP BY ALL)
        SELECT w.*, g.allocated, g.used FROM w LEFT JOIN g USING (tenant, model)
        ORDER BY tenant, model
        """,
        {"p": PREFILL_GPU_SECONDS_PER_TOKEN, "d": DECODE_GPU_SECONDS_PER_TOKEN,
         "start": start, "end": end, "tenants": sorted(tenants)},
    ).fetchall()
    work: dict[str, list[ModelWork]] = {name: [] for name in tenants}
    for name, model, given, generated, prefill, decode, allocated, used in rows:
        seconds = used if tenants[name].basis.value == "usage" else allocated
        phases = (prefill or 0.0) + (decode or 0.0)
        share = Decimal(prefill or 0.0) / Decimal(phases) if phases else Decimal(0)
        work[name].append(ModelWork(
            model, int(given or 0), int(generated or 0), share.quantize(Decimal("0.000001")),
            quantity(Decimal(seconds or 0.0) / 3600)))
    return work


def tenant_usage_hours(
    con: duckdb.DuckDBPyConnection, tenant: Tenant, start: datetime, end: datetime
) -> list[UsageHour]:
    """One tenant's hourly GPU-hours per tier and size class under its metering basis."""
    return usage_hours(con, {tenant.name: tenant}, start, end)[tenant.name]


def first_usage_hour(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """The first hour of `usage_hourly` (None when empty): hours before it are unknown."""
    ((first,),) = con.execute("SELECT min(hour) FROM usage_hourly").fetchall()
    return cast(datetime | None, first)


def billable_tenants(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> list[str]:
    return [
        t for (t,) in con.execute(
            f"SELECT DISTINCT tenant FROM usage_hourly WHERE hour >= ? AND hour < ? "
            f"AND tenant NOT IN ({_RESERVED}) ORDER BY 1", [start, end]
        ).fetchall()
    ]


# --- analytics ---------------------------------------------------------------------------------

def replace_analysis(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, day: date
                     ) -> int:
    """The analysis of `day` in place of the stored one: `frame`'s rows, by column name, into
    the declared `table` (an analytics table of sql/schema.sql) with `day` set."""
    rows = frame.to_arrow()
    con.register("analysis_rows", rows)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"DELETE FROM {table} WHERE day = ?", [day])
            con.execute(f"INSERT INTO {table} BY NAME SELECT ?::DATE AS day, * "
                        "FROM analysis_rows", [day])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.unregister("analysis_rows")
    return frame.height


def _frame(con: duckdb.DuckDBPyConnection, query: str, params: Sequence[Any]) -> pl.DataFrame:
    frame = pl.from_arrow(con.sql(query, params=list(params)).to_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def daily_usage(con: duckdb.DuckDBPyConnection, usage_basis: Sequence[str], first: date,
                last: date) -> pl.DataFrame:
    """Daily GPU-hours per tenant, tier and size class (`tenant, day, hardware_tier,
    size_class, gpu_hours`), used GPU-hours for the tenants in `usage_basis`, allocated for
    every other tenant."""
    return _frame(
        con,
        "SELECT tenant, day, hardware_tier, size_class, "
        "CASE WHEN list_contains(?, tenant) THEN used_gpu_hours ELSE allocated_gpu_hours END "
        "AS gpu_hours FROM tenant_usage_daily "
        f"WHERE day BETWEEN ? AND ? AND tenant NOT IN ({_RESERVED}) ORDER BY ALL",
        [list(usage_basis), first, last],
    )


def daily_peaks(con: duckdb.DuckDBPyConnection, first: date, last: date) -> pl.DataFrame:
    """Peak concurrent GPUs per tenant and day, all tiers together (`tenant, day, peak_gpus`:
    per hour summed over nodes, then the day's maximum, as tenant_usage_daily does per tier)."""
    return _frame(
        con,
        "SELECT tenant, day, max(gpus) AS peak_gpus FROM ("
        "  SELECT day, hour, tenant, sum(peak_gpus) AS gpus FROM usage_hourly"
        f"  WHERE day BETWEEN ? AND ? AND tenant NOT IN ({_RESERVED}) GROUP BY ALL"
        ") GROUP BY ALL ORDER BY ALL",
        [first, last],
    )


def shifts_of(con: duckdb.DuckDBPyConnection, day: date) -> pl.DataFrame:
    """The usage shifts found by the analysis of `day` (without the `day` column)."""
    return _frame(con, "SELECT * EXCLUDE (day) FROM usage_shifts WHERE day = ?", [day])


def confirmed_shifts(con: duckdb.DuckDBPyConnection, day: date
                     ) -> dict[str, dict[str, list[date]]]:
    """tenant -> series name -> change dates of the confirmed shifts of the analysis of `day`."""
    out: dict[str, dict[str, list[date]]] = {}
    for tenant, series, change in con.execute(
        "SELECT tenant, series_name, change_date FROM usage_shifts "
        "WHERE day = ? AND confirmed ORDER BY ALL", [day]).fetchall():
        out.setdefault(tenant, {}).setdefault(series, []).append(change)
    return out


def tier_changes_without_shift(con: duckdb.DuckDBPyConnection, day: date
                               ) -> list[tuple[str, str, date]]:
    """Tier-change recommendations of `day` whose evidence is no confirmed shift of the same
    analysis: (tenant, series_name, change_date)."""
    return con.execute(
        "SELECT r.tenant, r.series_name, r.change_date FROM tier_change_recommendations r "
        "WHERE r.day = ? AND NOT EXISTS (SELECT 1 FROM usage_shifts s WHERE s.day = r.day "
        "AND s.tenant = r.tenant AND s.series_name = r.series_name "
        "AND s.change_date = r.change_date AND s.confirmed) ORDER BY ALL", [day]).fetchall()


def hourly_demand(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime
                  ) -> pl.DataFrame:
    """Concurrent GPU demand per tenant, tier, MIG profile and hour in [start, end)
    (`tenant, hardware_tier, mig_profile, hour, demand_gpus`)."""
    return _frame(
        con,
        "SELECT tenant, hardware_tier, mig_profile, hour, "
        # At the ledger's 6 decimals of a GPU-hour: one 2g.20gb instance for an hour is
        # 0.285714 GPU-hours, not 0.2857143 (a sum of rounded seconds), which the
        # recommender would read as a hair over one instance and round up to two.
        "round(sum(allocated_gpu_seconds) / 3600, 6)::DOUBLE AS demand_gpus "
        "FROM usage_hourly "
        f"WHERE hour >= ? AND hour < ? AND tenant NOT IN ({_RESERVED}) "
        "GROUP BY ALL ORDER BY ALL",
        [start, end],
    )


def size_mix(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime
             ) -> list[tuple[str, str, str, Decimal]]:
    """GPU-hours per tenant, tier and size class in [start, end)."""
    return con.execute(
        "SELECT tenant, hardware_tier, size_class, "
        "(sum(allocated_gpu_seconds) / 3600)::DECIMAL(38, 6) "
        f"FROM usage_hourly WHERE hour >= ? AND hour < ? AND tenant NOT IN ({_RESERVED}) "
        "GROUP BY ALL ORDER BY ALL", [start, end]).fetchall()


def hours_observed(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime
                   ) -> dict[tuple[str, str], int]:
    """(tenant, tier) -> hours from its first hour with usage in [start, end) to `end`."""
    return {
        (t, h): int(n) for t, h, n in con.execute(
            "SELECT tenant, hardware_tier, date_diff('hour', min(hour), ?::TIMESTAMPTZ) "
            f"FROM usage_hourly WHERE hour >= ? AND hour < ? AND tenant NOT IN ({_RESERVED})"
            " GROUP BY ALL", [end, start, end]).fetchall()
    }


def reservation_recommendations(con: duckdb.DuckDBPyConnection, day: date
                                ) -> list[tuple[str, str, str | None, int, float]]:
    """The recommendations of `day`: (tenant, tier, MIG profile, recommended units,
    GPU-equivalents of one unit)."""
    return con.execute(
        "SELECT tenant, hardware_tier, mig_profile, recommended_gpus, unit_gpu_equivalents "
        "FROM reservation_recommendations WHERE day = ? ORDER BY ALL", [day]).fetchall()


def gpus_in_use_at_end_of(con: duckdb.DuckDBPyConnection, day: date
                          ) -> dict[tuple[str, str, str | None], float]:
    """(tenant, tier, MIG profile) -> GPU-equivalents held in the last hour of `day`."""
    return {
        (t, h, m): float(n) for t, h, m, n in con.execute(
            "SELECT tenant, hardware_tier, mig_profile, sum(peak_gpus) FROM usage_hourly "
            "WHERE hour = (SELECT max(hour) FROM usage_hourly WHERE day = ?) GROUP BY ALL",
            [day]).fetchall()
    }


def overflow_pools_of(con: duckdb.DuckDBPyConnection, day: date
                      ) -> dict[tuple[str, str | None], int]:
    """(tier, MIG profile) -> shared overflow pool of `day`'s analysis, in GPUs or instances."""
    return {(t, m): int(n) for t, m, n in con.execute(
        "SELECT hardware_tier, mig_profile, pool_gpus FROM reservation_overflow_pools "
        "WHERE day = ?", [day]).fetchall()}


def tier_products(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime
                  ) -> dict[str, list[str]]:
    """tier -> the GPU products of its devices in [start, end), idle devices included."""
    products: dict[str, list[str]] = {}
    for tier, product in con.execute(
            "SELECT DISTINCT hardware_tier, gpu_product FROM usage_hourly "
            "WHERE hour >= ? AND hour < ? ORDER BY ALL", [start, end]).fetchall():
        products.setdefault(tier, []).append(product)
    return products


def node_gpus(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime
              ) -> list[tuple[str, str, str, int, bool]]:
    """(tier, GPU product, node, GPUs, has MIG instances) of every node in [start, end): its
    GPUs are the most GPU-hours it accounted for in an hour (idle included, so by
    conservation its capacity)."""
    return [(t, p, n, round(g), bool(m)) for t, p, n, g, m in con.execute(
        "WITH hourly AS (SELECT hardware_tier, gpu_product, node, hour, "
        "sum(allocated_gpu_seconds) / 3600 AS gpus, bool_or(mig_profile IS NOT NULL) AS mig "
        "FROM usage_hourly WHERE hour >= ? AND hour < ? GROUP BY ALL) "
        "SELECT hardware_tier, gpu_product, node, max(gpus)::DOUBLE, bool_or(mig) "
        "FROM hourly GROUP BY ALL ORDER BY ALL", [start, end]).fetchall()]


def workload_kinds(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime
                   ) -> dict[tuple[str, str, str | None], list[str]]:
    """(tenant, tier, MIG profile) -> the workload kinds it ran in [start, end)."""
    kinds: dict[tuple[str, str, str | None], list[str]] = {}
    for tenant, tier, mig, kind in con.execute(
            "SELECT DISTINCT tenant, hardware_tier, mig_profile, workload_kind FROM usage_hourly "
            f"WHERE hour >= ? AND hour < ? AND tenant NOT IN ({_RESERVED}) ORDER BY ALL",
            [start, end]).fetchall():
        kinds.setdefault((tenant, tier, mig), []).append(kind)
    return kinds


def reservation_costs(con: duckdb.DuckDBPyConnection, day: date
                      ) -> list[tuple[str, str, str | None, str, int, Decimal, str]]:
    """`day`'s recommendations as (tenant, tier, MIG profile, SLA class, units, expected
    monthly cost with them, currency)."""
    return con.execute(
        "SELECT tenant, hardware_tier, mig_profile, sla_class, recommended_gpus, "
        "expected_monthly_cost_recommended, currency FROM reservation_recommendations "
        "WHERE day = ? ORDER BY ALL", [day]).fetchall()


def latest_recommendation_day(con: duckdb.DuckDBPyConnection) -> date | None:
    row = con.execute("SELECT max(day) FROM reservation_recommendations").fetchone()
    return row[0] if row else None


# --- scheduler quota changes -------------------------------------------------------------------

MANIFEST_OUTCOME = "manifest"
"""scheduler_quota_changes.outcome of a figure written as a manifest only (no cluster)."""
IN_FORCE_OUTCOMES = ("applied", "unchanged", MANIFEST_OUTCOME)
"""Outcomes after which the row's after_gpus is what the scheduler holds (or, with manifests
only, what GitOps was given)."""

QuotaFigure = tuple[str, str | None, str, str | None, str]
"""(kind, namespace, name, flavor, resource): one quota figure of scheduler_quota_changes."""


def record_quota_changes(con: duckdb.DuckDBPyConnection, rows: Sequence[tuple[Any, ...]], *,
                         day: date | None = None, replace_manifests: bool = False) -> int:
    """Append rows (scheduler_quota_changes' columns after `day`) for the partition `day`;
    with `replace_manifests`, in place of the day's earlier `manifest` rows (a rerun writes
    the day's manifests again)."""
    con.execute("BEGIN TRANSACTION")
    try:
        if replace_manifests:
            con.execute("DELETE FROM scheduler_quota_changes WHERE day = ? AND outcome = ?",
                        [day, MANIFEST_OUTCOME])
        if rows:
            con.executemany("INSERT INTO scheduler_quota_changes VALUES "
                            f"(?, {', '.join('?' * len(rows[0]))})",
                            [[day, *r] for r in rows])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return len(rows)


def last_quota_targets(con: duckdb.DuckDBPyConnection, before: datetime
                       ) -> dict[QuotaFigure, int]:
    """Each quota figure's last value in force before `before` (see IN_FORCE_OUTCOMES)."""
    rows = con.execute(
        "SELECT kind, namespace, name, flavor, resource, arg_max(after_gpus, changed_at) "
        "FROM scheduler_quota_changes WHERE changed_at < ? AND list_contains(?, outcome) "
        "GROUP BY ALL", [before, list(IN_FORCE_OUTCOMES)]).fetchall()
    return {(k, ns, n, f, r): int(v) for k, ns, n, f, r, v in rows}


def quota_changes_below_use(con: duckdb.DuckDBPyConnection, day: date) -> list[tuple[Any, ...]]:
    """Figures the partition `day` lowered below what is in use."""
    return con.execute(
        "SELECT kind, namespace, name, flavor, resource, before_gpus, after_gpus, in_use_gpus "
        "FROM scheduler_quota_changes WHERE day = ? AND after_gpus < in_use_gpus "
        "AND (before_gpus IS NULL OR after_gpus < before_gpus) ORDER BY ALL", [day]).fetchall()


# --- budgets -----------------------------------------------------------------------------------

FORECAST_SCENARIOS = ("point", "lo80", "hi80", "lo95", "hi95")
HOLD_IN_FORCE_OUTCOMES = ("applied", MANIFEST_OUTCOME)
"""budget_holds outcomes after which the queue's stopPolicy is the row's (or, with manifests
only, what GitOps was given)."""


def month_forecasts(con: duckdb.DuckDBPyConnection, day: date
                    ) -> dict[str, tuple[dict[str, Decimal], dict[str, Decimal],
                                         dict[str, list[tuple[date, Decimal]]]]]:
    """tenant -> (GPU-hours, amount, cumulative GPU-hours by remaining day), each by scenario,
    of the `tenant_forecasts` analysis of `day`."""
    def col(prefix: str, scenario: str) -> str:
        return prefix if scenario == "point" else f"{prefix}_{scenario}"

    out: dict[str, tuple[dict[str, Decimal], dict[str, Decimal],
                         dict[str, list[tuple[date, Decimal]]]]] = {}
    n = len(FORECAST_SCENARIOS)
    for tenant, *values in con.execute(
            "SELECT tenant, " + ", ".join(col(p, s) for p in ("gpu_hours", "amount")
                                          for s in FORECAST_SCENARIOS)
            + " FROM tenant_forecasts WHERE day = ? ORDER BY tenant", [day]).fetchall():
        out[tenant] = (dict(zip(FORECAST_SCENARIOS, values[:n], strict=True)),
                       dict(zip(FORECAST_SCENARIOS, values[n:], strict=True)),
                       {s: [] for s in FORECAST_SCENARIOS})
    for tenant, forecast_day, *values in con.execute(
            "SELECT tenant, forecast_day, " + ", ".join(col("gpu_hours", s)
                                                        for s in FORECAST_SCENARIOS)
            + " FROM tenant_forecast_days WHERE day = ? ORDER BY tenant, forecast_day",
            [day]).fetchall():
        if tenant in out:
            for scenario, value in zip(FORECAST_SCENARIOS, values, strict=True):
                out[tenant][2][scenario].append((forecast_day, value))
    return out


def pending_budget_alerts(con: duckdb.DuckDBPyConnection, day: date) -> list[tuple[Any, ...]]:
    """The thresholds the analysis of `day` found crossed that no alert was sent for yet:
    budget_thresholds' columns after `day`."""
    return con.execute(
        "SELECT t.tenant, t.period, t.basis, t.percent, t.unit, t.currency, t.limit_value, "
        "t.threshold, t.crossed_on, t.value, t.runs_out_on FROM budget_thresholds t "
        "WHERE t.day = ? AND NOT EXISTS (SELECT 1 FROM budget_alerts a "
        "WHERE a.tenant = t.tenant AND a.period = t.period AND a.basis = t.basis "
        "AND a.percent = t.percent AND a.unit = t.unit AND a.limit_value = t.limit_value) "
        "ORDER BY t.tenant, t.basis, t.percent", [day]).fetchall()


def record_budget_alert(con: duckdb.DuckDBPyConnection, row: Sequence[Any]) -> None:
    """Append one sent alert (budget_alerts' columns), at once: a crash after sending others
    must not send this one again."""
    con.execute(f"INSERT INTO budget_alerts VALUES ({', '.join('?' * len(row))})", list(row))


STOP_POLICY_ACTIONS = ("hold", "release")
"""budget_holds actions of a queue's stopPolicy (set by the budget path)."""
BORROWING_ACTIONS = ("no-borrowing", "restore-borrowing")
"""budget_holds actions of a ClusterQueue's borrowingLimit 0 (set by the quota path)."""


def held_queues(con: duckdb.DuckDBPyConnection, before: datetime,
                actions: tuple[str, str] = STOP_POLICY_ACTIONS
                ) -> list[tuple[str, str | None, str, str, str]]:
    """(kind, namespace, name, tenant, period) of each queue whose last budget change of the
    kind `actions` (hold, release) in force before `before` was the hold."""
    return [tuple(r) for r in con.execute(
        "SELECT kind, namespace, name, arg_max(tenant, changed_at), arg_max(period, changed_at) "
        "FROM budget_holds WHERE changed_at < ? AND list_contains(?, outcome) "
        "AND list_contains(?, action) GROUP BY ALL "
        "HAVING arg_max(action, changed_at) = ? ORDER BY ALL",
        [before, list(HOLD_IN_FORCE_OUTCOMES), list(actions), actions[0]]).fetchall()]


def budget_exhaustion(con: duckdb.DuckDBPyConnection, day: date
                      ) -> dict[str, tuple[str, Decimal, bool]]:
    """tenant -> (period, used_pct, whole budget spent) of the budgets analysis of `day`."""
    return {tenant: (period, used_pct, bool(exhausted)) for tenant, period, used_pct, exhausted
            in con.execute("SELECT tenant, period, used_pct, spent >= limit_value "
                           "FROM tenant_budgets WHERE day = ?", [day]).fetchall()}


def latest_budgets(con: duckdb.DuckDBPyConnection
                   ) -> list[tuple[str, str, str, str | None, Decimal, Decimal, date | None,
                                   dict[str, Decimal], list[tuple[str, Decimal]]]]:
    """The budgets of the latest analysed day, by tenant: (tenant, period, unit, currency,
    limit_value, spent, runs_out_on, {scenario: month-end forecast in the budget's unit} (empty
    without a forecast), [(basis, percent) of each threshold crossed])."""
    ((day,),) = con.execute("SELECT max(day) FROM tenant_budgets").fetchall()
    if day is None:
        return []
    forecasts = {tenant: (dict(zip(FORECAST_SCENARIOS, values[:5], strict=True)),
                          dict(zip(FORECAST_SCENARIOS, values[5:], strict=True)))
                 for tenant, *values in con.execute(
                     "SELECT tenant, gpu_hours, gpu_hours_lo80, gpu_hours_hi80, gpu_hours_lo95, "
                     "gpu_hours_hi95, amount, amount_lo80, amount_hi80, amount_lo95, amount_hi95 "
                     "FROM tenant_forecasts WHERE day = ?", [day]).fetchall()}
    crossed: dict[str, list[tuple[str, Decimal]]] = {}
    for tenant, basis, percent in con.execute(
            "SELECT tenant, basis, percent FROM budget_thresholds WHERE day = ? ORDER BY ALL",
            [day]).fetchall():
        crossed.setdefault(tenant, []).append((basis, percent))
    out = []
    for tenant, period, unit, currency, limit, spent, runs_out_on, forecast in con.execute(
            "SELECT tenant, period, unit, currency, limit_value, spent, runs_out_on, forecast "
            "FROM tenant_budgets WHERE day = ? ORDER BY tenant", [day]).fetchall():
        gpu_hours, amount = forecasts.get(tenant, ({}, {}))
        scenarios = {} if forecast is None else amount if unit == "amount" else gpu_hours
        out.append((tenant, period, unit, currency, limit, spent, runs_out_on, scenarios,
                    crossed.get(tenant, [])))
    return out


def record_budget_holds(con: duckdb.DuckDBPyConnection, rows: Sequence[tuple[Any, ...]], *,
                        day: date, actions: tuple[str, str] = STOP_POLICY_ACTIONS) -> int:
    """Append rows (budget_holds' columns after `day`) for the partition `day`, in place of
    the day's earlier `manifest` rows of the same `actions` (a rerun writes the day's
    manifests again; the stopPolicy and borrowing paths each replace only their own)."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM budget_holds WHERE day = ? AND outcome = ? "
                    "AND list_contains(?, action)", [day, MANIFEST_OUTCOME, list(actions)])
        if rows:
            con.executemany(f"INSERT INTO budget_holds VALUES (?, {', '.join('?' * len(rows[0]))})",
                            [[day, *r] for r in rows])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return len(rows)


def _count(con: duckdb.DuckDBPyConnection, table: str, params: list[object] | None = None
           ) -> int:
    row = con.execute(f"SELECT count(*) FROM {table}", params or []).fetchone()
    return int(row[0]) if row else 0


def endpoint_intervals(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime
                       ) -> list[tuple[Any, ...]]:
    """Each tenant's request work per endpoint (namespace, model) and interval in
    [start, end), with its GPU-seconds there from the ledger and the endpoint's hardware tier:
    (tenant, namespace, model, hardware_tier, window_start, duration_s, requests,
    latency_buckets, gpu_seconds), in time order per tenant and endpoint."""
    return con.execute(
        """
        WITH w AS (
            SELECT tenant, namespace, model, window_start, max(duration_s) AS duration_s,
                   sum(requests) AS requests,
                   flatten(list(latency_buckets) FILTER (latency_buckets IS NOT NULL))
                       AS latency_buckets
            FROM request_work
            WHERE window_start >= $start AND window_start < $end
            GROUP BY ALL),
        g AS (
            SELECT tenant, namespace, model, window_start, any_value(hardware_tier) AS tier,
                   sum(allocated_gpu_seconds) AS gpu_seconds
            FROM ledger
            WHERE window_start >= $start AND window_start < $end
            GROUP BY ALL)
        SELECT w.tenant, w.namespace, w.model,
               any_value(g.tier) OVER (PARTITION BY w.tenant, w.namespace, w.model),
               w.window_start, w.duration_s, coalesce(w.requests, 0), w.latency_buckets,
               coalesce(g.gpu_seconds, 0)
        FROM w LEFT JOIN g USING (tenant, namespace, model, window_start)
        ORDER BY w.tenant, w.namespace, w.model, w.window_start
        """, {"start": start, "end": end}).fetchall()


def usage_hours_by_kind(con: duckdb.DuckDBPyConnection, tenants: Mapping[str, Tenant],
                        start: datetime, end: datetime) -> dict[str, list[tuple[UsageHour, str]]]:
    """`usage_hours` with each row's workload kind (batch, fine-tuning, inference, ...), under
    the tenant's metering basis; a usage-basis hour without utilization counts as unknown
    work, so `usage_hours` is the one to bill with."""
    rows = con.execute(
        "SELECT tenant, hour, hardware_tier, size_class, workload_kind, "
        "sum(allocated_gpu_seconds), sum(used_gpu_seconds) FROM usage_hourly "
        "WHERE hour >= ? AND hour < ? AND list_contains(?, tenant) GROUP BY ALL ORDER BY ALL",
        [start, end, sorted(tenants)]).fetchall()
    hours: dict[str, list[tuple[UsageHour, str]]] = {name: [] for name in tenants}
    for name, hour, tier, size, kind, allocated, used in rows:
        seconds = used if tenants[name].basis.value == "usage" else allocated
        if seconds:
            hours[name].append((UsageHour(hour, tier, size, quantity(Decimal(seconds) / 3600)),
                                kind))
    return hours
