"""Files for finance: each document as PDF for people, CSV and JSON for systems; per period
the invoice register, the journal, and a ZIP of all of it.

The one way these files are made and written: the billing asset, `chargeback invoices
export` and the dashboards' downloads all render through `render` and `period_zip`, and every
file is written atomically under a safe name (models.files)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

from models.billing.books import Accounts
from models.billing.invoice_pdf import render_pdf
from models.billing.invoices import StoredInvoice, canonical_json, export_document, lines_csv
from models.billing.journal import journal_csv
from models.billing.rate_cards import month_bounds
from models.billing.register import register_csv
from models.files import atomic_write, safe_path

FORMATS = ("pdf", "csv", "json")
MEDIA_TYPES = {"pdf": "application/pdf", "csv": "text/csv", "json": "application/json"}


def render(stored: StoredInvoice, fmt: str) -> bytes:
    """The invoice as a file of format `fmt` (one of FORMATS)."""
    if fmt == "json":
        return canonical_json(export_document(stored)).encode()
    if fmt == "csv":
        return lines_csv([(stored.number, stored.invoice)]).encode()
    if fmt == "pdf":
        return render_pdf(stored)
    raise ValueError(f"invoice files are {', '.join(FORMATS)}, not {fmt!r}")


def file_name(stored: StoredInvoice, fmt: str) -> str:
    """`<number>.<fmt>`, or DRAFT-<period>-<tenant>.<fmt> made safe for any tenant name."""
    return safe_path(Path("."), stored.stem, f".{fmt}").name


def write_invoice_files(invoices: Sequence[StoredInvoice], folder: Path,
                        formats: Sequence[str] = FORMATS, *, prune_drafts: bool = False
                        ) -> list[Path]:
    """One file per invoice and format in `folder`, each written atomically. With
    `prune_drafts`, draft files of invoices no longer in `invoices` are removed (a period's
    drafts become numbered invoices on close). Every file is rendered before the first is
    written, so a failure leaves the folder as it was."""
    files = {folder / file_name(stored, fmt): render(stored, fmt)
             for stored in invoices for fmt in formats}
    written = [atomic_write(path, data) for path, data in files.items()]
    if prune_drafts:
        keep = set(written)
        for stale in folder.glob("DRAFT-*"):
            if stale not in keep:
                stale.unlink()
    return written


def register_name(period: str) -> str:
    return f"register-{period}.csv"


def journal_name(period: str) -> str:
    return f"journal-{period}.csv"


def zip_name(period: str) -> str:
    return f"documents-{period}.zip"


def write_period_files(documents: Sequence[StoredInvoice], period: str, folder: Path,
                       accounts: Accounts | None) -> list[Path]:
    """The period's register and, when ledger accounts are configured, its journal."""
    written = [atomic_write(folder / register_name(period), register_csv(documents))]
    if accounts is not None:
        written.append(atomic_write(folder / journal_name(period),
                                    journal_csv(documents, period, accounts)))
    return written


def period_zip(documents: Sequence[StoredInvoice], period: str, journal: str | None) -> bytes:
    """A ZIP of the period's documents (every format of each), its register and its journal
    (CSV text, from `journal_csv`; None when no ledger accounts are configured), in a folder
    named after the period. Entries carry the period's end as their time, so the same
    documents always make the same bytes."""
    _, end = month_bounds(period)
    stamp = end.timetuple()[:6]
    entries = [(file_name(stored, fmt), render(stored, fmt))
               for stored in documents for fmt in FORMATS]
    entries.append((register_name(period), register_csv(documents).encode()))
    if journal is not None:
        entries.append((journal_name(period), journal.encode()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(entries):
            info = zipfile.ZipInfo(f"{period}/{name}", date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return out.getvalue()
