"""Small helpers the pages share: reading a mart or saying why not, money, documents."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pandas as pd
import streamlit as st

from dashboards import gate
from dashboards.auth import load_users
from dashboards.config import users_path
from dashboards.marts import IsolationError, MartMissing, audience_table, tenant_table
from dashboards.sessions import STORE
from models.billing.exports import file_stem, lines_csv
from models.billing.invoice_pdf import render_pdf
from models.billing.invoices import canonical_json

log = logging.getLogger("dashboards.access")


def _guard(read: Callable[[], pd.DataFrame]) -> pd.DataFrame:
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
    return _guard(lambda: tenant_table(tenant=tenant, table=table))


def audience_data(*, audience: str, table: str) -> pd.DataFrame:
    return _guard(lambda: audience_table(audience=audience, table=table))


def money(value: Any, currency: str) -> str:
    return f"{Decimal(str(value)):,.2f} {currency}"


def export_document(row: pd.Series) -> dict[str, Any]:
    """The stored invoice document with its status, number and hashes (as
    models.billing.exports)."""
    doc: dict[str, Any] = json.loads(row["document"])
    doc.update(invoice_id=row["invoice_id"], number=row["number"], kind=row["kind"],
               status=row["status"], adjusts=row["adjusts"], content_hash=row["content_hash"],
               inputs_hash=row["inputs_hash"])
    return doc


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
    doc = export_document(row)
    stem = file_stem(doc)
    left, middle, right = st.columns(3)
    with left:
        download("PDF", lambda: render_pdf(doc), file_name=f"{stem}.pdf",
                 mime="application/pdf", key=f"{key}-pdf")
    with middle:
        download("CSV", lambda: lines_csv(doc), file_name=f"{stem}.csv", mime="text/csv",
                 key=f"{key}-csv")
    with right:
        download("JSON", lambda: canonical_json(doc), file_name=f"{stem}.json",
                 mime="application/json", key=f"{key}-json")


def invoice_table(invoices: pd.DataFrame) -> pd.DataFrame:
    shown = invoices[["number", "kind", "display_status", "tenant", "period", "plan", "total",
                      "currency", "adjusts", "finalized_at"]].copy()
    shown["number"] = shown["number"].fillna("(draft)")
    shown["total"] = shown["total"].map(lambda v: f"{Decimal(str(v)):,.2f}")
    return shown.rename(columns={"display_status": "status"})
