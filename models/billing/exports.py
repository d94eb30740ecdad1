"""Per-invoice files for finance: PDF for people, CSV and JSON for systems."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import duckdb

from models.billing.invoice_pdf import render_pdf
from models.billing.invoices import LINE_COLUMNS, canonical_json


def invoice_documents(con: duckdb.DuckDBPyConnection, period: str) -> list[dict[str, Any]]:
    """The period's invoices as export documents: the stored document plus its status,
    number and hashes."""
    rows = con.execute(
        "SELECT invoice_id, number, kind, status, adjusts, content_hash, inputs_hash, document "
        "FROM invoices WHERE period = ? ORDER BY invoice_id", [period]).fetchall()
    documents = []
    for invoice_id, number, kind, status, adjusts, content, inputs, text in rows:
        doc = json.loads(text)
        doc.update(invoice_id=invoice_id, number=number, kind=kind, status=status,
                   adjusts=adjusts, content_hash=content, inputs_hash=inputs)
        documents.append(doc)
    return documents


def file_stem(doc: dict[str, Any]) -> str:
    return str(doc["number"] or f"DRAFT-{doc['period']}-{doc['tenant']}")


def lines_csv(doc: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=("number", *LINE_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for n, line in enumerate(doc["lines"], start=1):
        writer.writerow({
            "number": doc["number"] or "", "tenant": doc["tenant"], "period": doc["period"],
            "currency": doc["currency"], "line_no": n, "kind": line["kind"],
            "description": line["description"], "hardware_tier": line["hardware_tier"] or "",
            "size_class": line["size_class"] or "", "quantity": line["quantity"],
            "unit": line["unit"], "unit_price": line["unit_price"], "amount": line["amount"],
        })
    return out.getvalue()


def write_invoice_files(con: duckdb.DuckDBPyConnection, period: str, folder: Path
                        ) -> list[Path]:
    """<stem>.pdf/.csv/.json per invoice; stale drafts' files are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for doc in invoice_documents(con, period):
        stem = file_stem(doc)
        written.append(_write(folder / f"{stem}.json", canonical_json(doc).encode()))
        written.append(_write(folder / f"{stem}.csv", lines_csv(doc).encode()))
        written.append(_write(folder / f"{stem}.pdf", render_pdf(doc)))
    keep = set(written)
    for stale in folder.glob("DRAFT-*"):
        if stale not in keep:
            stale.unlink()
    return written


def _write(path: Path, data: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
    return path
