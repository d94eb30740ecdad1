"""Small helpers the pages share: reading a mart or saying why not, money, documents."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pandas as pd
import streamlit as st

from dashboards.marts import IsolationError, MartMissing, audience_table, tenant_table
from models.billing.exports import FORMATS, MEDIA_TYPES, file_name, render
from models.billing.invoices import StoredInvoice, from_row, lines_csv

log = logging.getLogger("dashboards.access")


def _guard(read: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    try:
        return read()
    except MartMissing as error:
        st.info(str(error))
        st.stop()
    except IsolationError as error:
        # A mart whose contents do not match its name: never show it, whatever it holds.
        log.error("mart isolation check failed: %s", error)
        st.error("This data is not available. The incident has been logged.")
        st.stop()


def tenant_data(*, tenant: str, table: str) -> pd.DataFrame:
    return _guard(lambda: tenant_table(tenant=tenant, table=table))


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


def invoice_downloads(row: pd.Series, *, key: str) -> None:
    stored = stored_invoice(row)
    for column, fmt in zip(st.columns(len(FORMATS)), FORMATS, strict=True):
        column.download_button(fmt.upper(), render(stored, fmt), file_name=file_name(stored, fmt),
                               mime=MEDIA_TYPES[fmt], key=f"{key}-{fmt}",
                               icon=":material/download:")


def invoice_table(invoices: pd.DataFrame) -> pd.DataFrame:
    shown = invoices[["number", "kind", "display_status", "tenant", "period", "plan", "total",
                      "currency", "adjusts", "finalized_at"]].copy()
    shown["number"] = shown["number"].fillna("(draft)")
    shown["total"] = shown["total"].map(lambda v: f"{Decimal(str(v)):,.2f}")
    return shown.rename(columns={"display_status": "status"})
