"""The DuckDB warehouse: ledger loading, shared-endpoint apportionment, hourly rollups.

GPU-seconds are summed as DECIMAL(38, 6), so a sum does not depend on the order DuckDB
happens to add rows in, and reruns give byte-identical invoices."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa

from collectors.spool import SpoolLocation, local_path, read_batches
from models.billing.pricing import UsageHour, quantity
from models.billing.rate_cards import RateCard, Tenant, UnknownProduct
from models.ledger.usage import (
    GPU_SECONDS_TOLERANCE,
    LEDGER_COLUMNS,
    LEDGER_SCHEMA,
    REQUEST_WORK_SCHEMA,
    RESERVED_TENANTS,
)

SQL = Path(__file__).with_name("sql")


def sql(name: str) -> str:
    return (SQL / f"{name}.sql").read_text()


def connect(path: Path | str = ":memory:", *, read_only: bool = False
            ) -> duckdb.DuckDBPyConnection:
    """A connection whose dates and hour boundaries are UTC, whatever the machine's zone."""
    con = duckdb.connect(str(path), read_only=read_only)
    con.execute("SET TimeZone = 'UTC'")
    return con


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(sql("schema"))


def _file_list(files: Sequence[SpoolLocation]) -> str:
    return "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"


def _stage(con: duckdb.DuckDBPyConnection, table: str, columns: str,
           files: Sequence[SpoolLocation], schema: pa.Schema) -> None:
    """`table` = the files' rows, one per sample_id. Local files are read by DuckDB itself;
    object-store files stream through pyarrow (DuckDB would need its httpfs extension,
    downloaded at run time), so memory holds the staged day plus a few record batches."""
    dedup = "QUALIFY row_number() OVER (PARTITION BY sample_id ORDER BY window_start) = 1"
    local = [local_path(f) for f in files]
    if all(p is not None for p in local):
        # Not hive_partitioning: DuckDB would replace the rows' own `source` and `node` by
        # the folder names, which the spool writer sanitizes (`my source` -> `my_source`).
        con.execute(f"CREATE TEMP TABLE {table} AS SELECT {columns} "
                    f"FROM read_parquet({_file_list([p for p in local if p is not None])}, "
                    f"union_by_name = true, hive_partitioning = false) {dedup}")
        return
    name = f"{table}_batches"
    con.register(name, read_batches(files, schema))
    try:
        con.execute(f"CREATE TEMP TABLE {table} AS SELECT {columns} FROM {name} {dedup}")
    finally:
        con.unregister(name)


def stage_usage(con: duckdb.DuckDBPyConnection, files: Sequence[SpoolLocation]) -> int:
    """Load ledger files (local paths or object-store URIs) into the temp table `staged`,
    one row per sample_id."""
    columns = ", ".join(LEDGER_COLUMNS)
    con.execute("DROP TABLE IF EXISTS staged")
    if not files:
        con.execute(f"CREATE TEMP TABLE staged AS SELECT {columns} FROM ledger LIMIT 0")
        return 0
    _stage(con, "staged", columns, files, LEDGER_SCHEMA)
    return _count(con, "staged")


def stage_requests(con: duckdb.DuckDBPyConnection, files: Sequence[SpoolLocation]) -> int:
    con.execute("DROP TABLE IF EXISTS staged_requests")
    if not files:
        con.execute("CREATE TEMP TABLE staged_requests AS SELECT * EXCLUDE (day) "
                    "FROM request_work LIMIT 0")
        return 0
    _stage(con, "staged_requests", "sample_id, window_start, duration_s, cluster, namespace, "
           "model, tenant, request_seconds, tokens, source", files, REQUEST_WORK_SCHEMA)
    return _count(con, "staged_requests")


def classify(con: duckdb.DuckDBPyConnection, card: RateCard) -> list[str]:
    """Hardware tier and size class of every distinct product and size in `staged`.

    Returns the unknown products (an operator must map them; nothing is priced meanwhile)."""
    unknown = []
    tiers = []
    for (product,) in con.execute("SELECT DISTINCT gpu_product FROM staged").fetchall():
        try:
            tiers.append((product, card.tier_of(product)))
        except UnknownProduct as error:
            unknown.append(str(error))
    sizes = [
        (params, card.size_class_of(params))
        for (params,) in con.execute("SELECT DISTINCT model_params_b FROM staged").fetchall()
    ]
    con.execute("CREATE OR REPLACE TEMP TABLE tier_map "
                "(gpu_product VARCHAR, hardware_tier VARCHAR)")
    con.execute("CREATE OR REPLACE TEMP TABLE size_map "
                "(model_params_b DOUBLE, size_class VARCHAR)")
    if tiers:
        con.executemany("INSERT INTO tier_map VALUES (?, ?)", tiers)
    if sizes:
        con.executemany("INSERT INTO size_map VALUES (?, ?)", sizes)
    return unknown


def build_ledger(con: duckdb.DuckDBPyConnection) -> None:
    """`staged` + `staged_requests` -> temp table `classified`: shared endpoints apportioned,
    hardware tier and size class attached (after `classify`)."""
    con.execute(sql("apportion"))


def replace_day(con: duckdb.DuckDBPyConnection, day: date) -> int:
    """Replace exactly one UTC day of the ledger and of the request work."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM ledger WHERE day = ?", [day])
        con.execute("DELETE FROM request_work WHERE day = ?", [day])
        con.execute("INSERT INTO ledger BY NAME SELECT *, ?::DATE AS day FROM classified "
                    "WHERE window_start::DATE = ?", [day, day])
        con.execute("INSERT INTO request_work BY NAME SELECT *, ?::DATE AS day "
                    "FROM staged_requests WHERE window_start::DATE = ?", [day, day])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return _count(con, "ledger WHERE day = ?", [day])


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


def insert_all_days(con: duckdb.DuckDBPyConnection) -> list[date]:
    """Every day in `classified` into the ledger and hourly rollup (for one-shot billing)."""
    days = [d for (d,) in con.execute(
        "SELECT DISTINCT window_start::DATE FROM classified ORDER BY 1").fetchall()]
    for day in days:
        replace_day(con, day)
        rollup_hourly(con, day)
    return days


def conservation_violations(
    con: duckdb.DuckDBPyConnection, day: date, limit: int = 20
) -> list[tuple[object, ...]]:
    """Devices and intervals of `day` where allocated + idle != duration x GPU-equivalents."""
    return con.execute(sql("conservation"), [day, GPU_SECONDS_TOLERANCE, limit]).fetchall()


def usage_hours(
    con: duckdb.DuckDBPyConnection, tenants: Mapping[str, Tenant], start: datetime,
    end: datetime,
) -> dict[str, list[UsageHour]]:
    """Each tenant's hourly GPU-hours per tier and size class under its metering basis, read
    in one query (billing thousands of tenants must not scan the rollup once per tenant)."""
    rows = con.execute(
        "SELECT tenant, hour, hardware_tier, size_class, sum(allocated_gpu_seconds), "
        "sum(used_gpu_seconds), sum(used_missing_rows) FROM usage_hourly "
        "WHERE hour >= ? AND hour < ? AND list_contains(?, tenant) GROUP BY ALL ORDER BY ALL",
        [start, end, sorted(tenants)],
    ).fetchall()
    hours: dict[str, list[UsageHour]] = {name: [] for name in tenants}
    missing: dict[str, int] = {}
    for name, hour, tier, size, allocated, used, used_missing in rows:
        on_usage = tenants[name].basis.value == "usage"
        if on_usage and used_missing:
            missing[name] = missing.get(name, 0) + int(used_missing)
        seconds = used if on_usage else allocated
        if seconds:
            hours[name].append(UsageHour(hour, tier, size, quantity(Decimal(seconds) / 3600)))
    for name in sorted(missing):
        raise ValueError(
            f"tenant {name} is metered on usage, but {missing[name]} ledger rows in "
            f"[{start:%Y-%m-%d}, {end:%Y-%m-%d}) have no utilization (used_gpu_seconds "
            "is null): add a utilization source or switch the tenant to allocation"
        )
    return hours


def tenant_usage_hours(
    con: duckdb.DuckDBPyConnection, tenant: Tenant, start: datetime, end: datetime
) -> list[UsageHour]:
    """One tenant's hourly GPU-hours per tier and size class under its metering basis."""
    return usage_hours(con, {tenant.name: tenant}, start, end)[tenant.name]


def billable_tenants(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> list[str]:
    reserved = ", ".join(f"'{t}'" for t in sorted(RESERVED_TENANTS))
    return [
        t for (t,) in con.execute(
            f"SELECT DISTINCT tenant FROM usage_hourly WHERE hour >= ? AND hour < ? "
            f"AND tenant NOT IN ({reserved}) ORDER BY 1", [start, end]
        ).fetchall()
    ]


def _count(con: duckdb.DuckDBPyConnection, table: str, params: list[object] | None = None
           ) -> int:
    row = con.execute(f"SELECT count(*) FROM {table}", params or []).fetchone()
    return int(row[0]) if row else 0
