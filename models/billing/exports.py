"""Per-invoice files for finance: PDF for people, CSV and JSON for systems.

The one way invoice files are made and written: the billing asset, `chargeback invoices
export` and the dashboards' downloads all render through `render`, and every file is written
atomically under a safe name (models.files)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from models.billing.invoice_pdf import render_pdf
from models.billing.invoices import StoredInvoice, canonical_json, export_document, lines_csv
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
