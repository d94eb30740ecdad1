"""Reads from the published marts, scoped by audience.

A tenant's reads open that tenant's own mart file, read-only, at the path derived from the
tenant name of the authenticated identity; no other file can be named from a tenant page.
Cached functions take the tenant (or audience) as a named argument, part of the cache key, and
the file's modification time, so a republished mart is read afresh.

A page reads the tables it needs in one go (`tenant_tables`): opening a mart file costs more
than reading its small tables (0.15-0.25 s a file opened per table on the 2-core machine, for
tables of a few hundred rows; bench/dashboard_render.py), so a tenant's first page reads all
the small page tables (`PAGE_TABLES`) with one opening and the other pages find them cached."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dashboards.config import marts_dir
from models.errors import InternalError, UserError
from models.ledger import warehouse
from models.marts import INFERENCE_TABLES, finance_mart_path, operator_mart_path, tenant_mart_path


class MartMissing(UserError):
    pass


class IsolationError(InternalError):
    pass


TENANT_TABLES = frozenset({
    "meta", "usage_hourly", "usage_daily", "cost_daily", "periods", "invoices", "invoice_lines",
    "reservations", "usage_shifts", "tier_change_recommendations",
    "reservation_recommendations", "scheduler_quota_changes", "budget_holds",
    "tenant_forecasts", "tenant_forecast_days", "tenant_budgets", "tenant_budget_days",
    *INFERENCE_TABLES})
FINANCE_TABLES = frozenset({
    "meta", "invoices", "invoice_lines", "periods", "revenue", "revenue_vs_capacity",
    "coverage_daily", "node_days", "spool_quarantine", "collection_gaps", "period_documents",
    "journal", "journal_problems", "idle_by_cause", "idle_reserved_by_holder",
    "revenue_forecast"})
PAGE_TABLES = ("periods", "usage_daily", "cost_daily", "invoices", "usage_shifts",
               "tier_change_recommendations", "reservation_recommendations",
               "dedicated_reservation_recommendations", "off_peak_recommendations",
               "tenant_forecasts", "tenant_budgets", "tenant_budget_days",
               "tenant_forecast_days", "budget_holds")
"""The small tables the tenant pages read (a few hundred rows each for a year), read together
at a tenant's first page so that switching to the next page finds them cached instead of
opening the file again (a cold page switch took twice a warm one; docs/benchmarks.md)."""
OPERATOR_TABLES = frozenset({
    "meta", "utilization_hourly", "demand_hour_of_day", "node_days", "usage_shifts",
    "tier_change_recommendations", "reservation_recommendations", "scheduler_quota_changes",
    "budget_holds", *INFERENCE_TABLES})


def _version(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        raise MartMissing(f"{path}: no mart published yet; run the pipeline "
                          "(its tenant_marts asset publishes the marts)") from None


def _read(path: Path, tables: tuple[str, ...], allowed: frozenset[str],
          expect: tuple[str, str | None]) -> dict[str, pd.DataFrame]:
    """The tables of one mart file through one connection; an empty frame for a table the
    file does not hold (an analytics table not written yet)."""
    refused = [table for table in tables if table not in allowed]
    if refused:
        raise ValueError(f"tables {refused} are not published to this audience")
    con = warehouse.connect(path, read_only=True)
    try:
        meta = con.execute("SELECT kind, tenant FROM meta").fetchone()
        if meta != expect:
            raise IsolationError(f"{path}: holds {meta}, expected {expect}")
        present = {name for (name,) in con.execute(
            "SELECT table_name FROM information_schema.tables").fetchall()}
        return {table: con.execute(f"SELECT * FROM {table}").df() if table in present
                else pd.DataFrame() for table in tables}
    finally:
        con.close()


@st.cache_data(show_spinner=False, max_entries=512)
def _tenant_tables(*, tenant: str, tables: tuple[str, ...], marts: str, version: int
                   ) -> dict[str, pd.DataFrame]:
    return _read(tenant_mart_path(Path(marts), tenant), tables, TENANT_TABLES,
                 ("tenant", tenant))


@st.cache_data(show_spinner=False, max_entries=128)
def _audience_table(*, audience: str, table: str, marts: str, version: int) -> pd.DataFrame:
    if audience == "finance":
        return _read(finance_mart_path(Path(marts)), (table,), FINANCE_TABLES,
                     ("finance", None))[table]
    return _read(operator_mart_path(Path(marts)), (table,), OPERATOR_TABLES,
                 ("operator", None))[table]


def tenant_tables(*, tenant: str, tables: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """Tables of the tenant's own mart, read together (copies: callers may change them)."""
    root = marts_dir()
    try:
        path = tenant_mart_path(root, tenant)
    except FileNotFoundError:  # no names key: nothing was ever published here
        raise MartMissing(f"{root}: no mart published yet; run the pipeline (its "
                          "tenant_marts asset publishes the marts)") from None
    version = _version(path)
    read = PAGE_TABLES if set(tables) <= set(PAGE_TABLES) else tables
    frames = _tenant_tables(tenant=tenant, tables=read, marts=str(root), version=version)
    return {table: frames[table].copy() for table in tables}


def audience_table(*, audience: str, table: str) -> pd.DataFrame:
    """One table of the finance or operator mart."""
    if audience not in ("finance", "operator"):
        raise ValueError(f"audience must be finance or operator, got {audience!r}")
    root = marts_dir()
    path = finance_mart_path(root) if audience == "finance" else operator_mart_path(root)
    return _audience_table(audience=audience, table=table, marts=str(root),
                           version=_version(path)).copy()
