"""Small helpers the pages share: reading a mart or saying why not, money, documents."""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, TypeVar

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import gate
from dashboards.auth import load_users
from dashboards.config import users_path
from dashboards.marts import IsolationError, MartMissing, audience_table, tenant_tables
from dashboards.sessions import STORE
from models.billing.exports import FORMATS, MEDIA_TYPES, file_name, render
from models.billing.invoices import StoredInvoice, from_row, lines_csv

log = logging.getLogger("dashboards.access")
T = TypeVar("T")

COLOURS = {"billed": "#1f77b4", "idle": "#bbbbbb", "shared idle": "#8c8c8c",
           "unattributed": "#e377c2", "usage": "#4c78a8", "usage-used": "#17becf",
           "change": "#d62728", "reserved": "#2ca02c", "on-demand": "#ff7f0e",
           "fixed charges": "#9467bd"}
"""One colour per meaning on every chart, so billed and idle (or reserved and on-demand)
never swap between pages."""
TIER_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#edc948", "#76b7b2", "#ff9da7", "#9c755f")
"""Hardware tiers in name order (`tier_scale`); none is a colour of COLOURS, nor a grey, red
or purple, so a tier never looks like idle, a change mark or fixed charges."""


def tier_scale(tiers: Iterable[str], *extra: str) -> alt.Scale:
    """Colours of hardware tiers, given all the tenant's tiers (not one month's): each tier
    gets the same colour on every chart and in every month, and `extra` series (fixed
    charges) their colour of COLOURS. Tiers past the palette's end repeat its colours."""
    names = sorted(set(tiers))
    return alt.Scale(domain=[*names, *extra], range=[
        *(TIER_COLOURS[i % len(TIER_COLOURS)] for i in range(len(names))),
        *(COLOURS[name] for name in extra)])


def _guard(read: Callable[[], T]) -> T:
    try:
        return read()
    except MartMissing as error:
        # The path stays in the server log: a browser is never shown one.
        log.warning("%s", error)
        st.info("No mart published yet: the data appears after the pipeline's next run.")
        st.stop()
    except IsolationError as error:
        # A mart whose contents do not match its name: never show it, whatever it holds.
        log.error("mart isolation check failed: %s", error)
        st.error("This data is not available. The incident has been logged.")
        st.stop()


def tenant_data(*, tenant: str, table: str) -> pd.DataFrame:
    return tenant_frames(tenant=tenant, tables=(table,))[table]


def tenant_frames(*, tenant: str, tables: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """The tables a page needs, read together: one opening of the mart file."""
    return _guard(lambda: tenant_tables(tenant=tenant, tables=tables))


def audience_data(*, audience: str, table: str) -> pd.DataFrame:
    return _guard(lambda: audience_table(audience=audience, table=table))


def money(value: Any, currency: str) -> str:
    return f"{Decimal(str(value)):,.2f} {currency}"


def stored_invoice(row: pd.Series) -> StoredInvoice:
    """The typed invoice of a mart's `invoices` row, through the one codec."""
    return from_row({str(k): v for k, v in row.items()})


def lines_of(invoices: pd.DataFrame) -> str:
    """The lines of the invoices (mart rows) as one CSV, in the invoice-line CSV layout."""
    return lines_csv((s.number, s.invoice)
                     for s in (stored_invoice(row) for _, row in invoices.iterrows()))


def as_float(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """Decimal columns as floats, for charts only (tables keep the exact decimals)."""
    for column in columns:
        frame[column] = frame[column].astype(float)
    return frame


def download(label: str, make: Callable[[], bytes | str], *, file_name: str, mime: str,
             key: str) -> None:
    """A download button whose file is made when it is clicked, for this session only: the
    file is granted to the session record, and the media route serves it to this browser
    while the record lives (dashboards/server.py), never from a cache."""
    token = gate.session_token()

    def generate() -> bytes:
        made = make()
        data = made.encode() if isinstance(made, str) else made
        # Runs on the click, outside the script: a record ended since (signed out, role or
        # password changed) gets nothing.
        STORE.grant(token, load_users(users_path()), hashlib.sha256(data).hexdigest())
        return data

    st.download_button(label, generate, file_name=file_name, mime=mime, key=key,
                       on_click="ignore", icon=":material/download:")


def invoice_downloads(row: pd.Series, *, key: str) -> None:
    stored = stored_invoice(row)
    for column, fmt in zip(st.columns(len(FORMATS)), FORMATS, strict=True):
        with column:
            download(fmt.upper(), functools.partial(render, stored, fmt),
                     file_name=file_name(stored, fmt), mime=MEDIA_TYPES[fmt],
                     key=f"{key}-{fmt}")


def documents_of(invoices: pd.DataFrame) -> list[StoredInvoice]:
    """The typed documents of a mart's `invoices` rows."""
    return [stored_invoice(row) for _, row in invoices.iterrows()]


def document_table(invoices: pd.DataFrame) -> pd.DataFrame:
    """One row per document: what finance files it by (number or statement id, type,
    status, tenant and legal name, dates) and its total as a number, for sorting; show it
    with `money_columns`."""
    rows = []
    for (_, row), stored in zip(invoices.iterrows(), documents_of(invoices), strict=True):
        parties = stored.parties
        rows.append({
            "document": stored.stem, "type": stored.document_type.heading,
            "status": row["display_status"], "tenant": stored.invoice.tenant,
            "legal name": parties.bill_to.party.legal_name if parties else None,
            "period": stored.invoice.period, "issued": stored.issue_date,
            "due": stored.due_date, "total": float(stored.invoice.total),
            "currency": stored.invoice.currency, "corrects": stored.adjusts,
        })
    return pd.DataFrame(rows, columns=["document", "type", "status", "tenant", "legal name",
                                       "period", "issued", "due", "total", "currency",
                                       "corrects"])


def money_columns(frame: pd.DataFrame, *columns: str, minor_unit: int = 2) -> dict[str, Any]:
    """Column settings that show amounts as numbers with thousands separators and their
    currency (so they sort as numbers): the currency in the format when the frame's
    `currency` column holds one, else the amount beside that column (or the currency in the
    column's name)."""
    currencies = set(frame["currency"].dropna()) if "currency" in frame else set()
    suffix = f" {next(iter(currencies))}" if len(currencies) == 1 else ""
    return {column: st.column_config.NumberColumn(column, format=f"%,.{minor_unit}f{suffix}")
            for column in columns}


HOURS = st.column_config.NumberColumn(format="%,.1f")
"""GPU-hours in tables: one decimal, thousands separated, numeric."""
