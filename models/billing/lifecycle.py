"""The invoice lifecycle: drafts, finalization on close, adjustments after close.

A final invoice is never changed. When its period's inputs change later (late usage, a
corrected rate card), the next run issues an adjustment: a note whose lines are the
difference between what should have been billed and what was billed, linked to the original.
Numbers, hashes and documents depend only on the inputs, so reruns are byte-identical."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import duckdb

from models.billing.invoices import canonical_json, content_hash, invoice_document
from models.billing.pricing import Invoice

ZERO = Decimal(0)
ADJUSTMENT_PREFIX = "adjustment: "


@dataclass(frozen=True)
class StoredInvoice:
    invoice_id: str
    number: str | None
    kind: str
    status: str
    tenant: str
    period: str
    total: Decimal
    adjusts: str | None
    inputs_hash: str
    document: dict[str, Any]


def inputs_hash(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime,
                config_digest: str) -> str:
    """A digest of the ledger partitions a period was computed from, and the configuration."""
    rows = con.execute(
        "SELECT day, count(*), sum(allocated_gpu_seconds::DECIMAL(38, 6)), "
        "sum(used_gpu_seconds::DECIMAL(38, 6)), bit_xor(hash(sample_id)) "
        "FROM ledger WHERE window_start >= ? AND window_start < ? GROUP BY day ORDER BY day",
        [start, end],
    ).fetchall()
    text = json.dumps([[str(v) for v in row] for row in rows]) + config_digest
    return hashlib.sha256(text.encode()).hexdigest()


def stored(con: duckdb.DuckDBPyConnection, period: str, status: str | None = None
           ) -> list[StoredInvoice]:
    query = ("SELECT invoice_id, number, kind, status, tenant, period, total, adjusts, "
             "inputs_hash, document FROM invoices WHERE period = ?")
    params: list[object] = [period]
    if status:
        query += " AND status = ?"
        params.append(status)
    return [
        StoredInvoice(invoice_id=row[0], number=row[1], kind=row[2], status=row[3],
                      tenant=row[4], period=row[5], total=row[6], adjusts=row[7],
                      inputs_hash=row[8], document=json.loads(row[9]))
        for row in con.execute(query + " ORDER BY invoice_id", params).fetchall()
    ]


def is_closed(con: duckdb.DuckDBPyConnection, period: str) -> bool:
    row = con.execute("SELECT count(*) FROM period_closes WHERE period = ?", [period]).fetchone()
    return bool(row and row[0])


def credit_spent_before(con: duckdb.DuckDBPyConnection, tenant: str, period: str) -> Decimal:
    row = con.execute(
        "SELECT coalesce(sum(credit_applied), 0) FROM invoices "
        "WHERE tenant = ? AND period < ? AND status = 'final'", [tenant, period]
    ).fetchone()
    return Decimal(row[0]) if row else ZERO


def _insert(con: duckdb.DuckDBPyConnection, *, invoice_id: str, number: str | None, kind: str,
            status: str, doc: dict[str, Any], inputs: str, adjusts: str | None,
            finalized_at: datetime | None) -> None:
    con.execute(
        "INSERT INTO invoices VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [invoice_id, number, kind, status, doc["tenant"], doc["period"], doc["plan"],
         doc["currency"], Decimal(doc["total"]), Decimal(doc["credit_applied"]), adjusts,
         doc["rate_card_version"], content_hash(doc), inputs, canonical_json(doc),
         finalized_at],
    )
    if not doc["lines"]:
        return
    con.executemany(
        "INSERT INTO invoice_lines VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [[invoice_id, n, line["kind"], line["description"], line["hardware_tier"],
          line["size_class"], Decimal(line["quantity"]), line["unit"],
          Decimal(line["unit_price"]), Decimal(line["amount"])]
         for n, line in enumerate(doc["lines"], start=1)],
    )


def write_drafts(con: duckdb.DuckDBPyConnection, period: str, invoices: Sequence[Invoice],
                 inputs: str, now: datetime) -> dict[str, int]:
    """Replace the period's drafts; after close, issue adjustments for what changed.

    Returns counts: drafts written, adjustments issued."""
    con.execute("DELETE FROM invoice_lines WHERE invoice_id IN "
                "(SELECT invoice_id FROM invoices WHERE period = ? AND status = 'draft')",
                [period])
    con.execute("DELETE FROM invoices WHERE period = ? AND status = 'draft'", [period])
    closed = is_closed(con, period)
    finals = stored(con, period, "final")
    counts = {"drafts": 0, "adjustments": 0}
    for invoice in invoices:
        doc = invoice_document(invoice)
        if not closed:
            _insert(con, invoice_id=f"draft:{period}:{invoice.tenant}", number=None,
                    kind="invoice", status="draft", doc=doc, inputs=inputs, adjusts=None,
                    finalized_at=None)
            counts["drafts"] += 1
            continue
        billed = [f for f in finals if f.tenant == invoice.tenant]
        delta = _delta_lines(doc, [f.document for f in billed])
        if not delta:
            continue
        original = next((f.number for f in billed if f.kind == "invoice"), None)
        sequence = sum(1 for f in billed if f.kind == "adjustment") + 1
        number = f"ADJ-{period}-{invoice.tenant}-{sequence}"
        credit = -sum((Decimal(x["amount"]) for x in delta if x["kind"] == "credit"), ZERO)
        adjustment = dict(doc, lines=delta, usage=[], kind="adjustment", number=number,
                          adjusts=original, credit_applied=str(credit),
                          total=str(sum((Decimal(x["amount"]) for x in delta), ZERO)))
        _insert(con, invoice_id=number, number=number, kind="adjustment", status="final",
                doc=adjustment, inputs=inputs, adjusts=original, finalized_at=now)
        counts["adjustments"] += 1
    return counts


def _delta_lines(new: dict[str, Any], billed: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lines that turn what was billed (invoice + earlier adjustments) into `new`.

    Lines are matched by (kind, description, tier, size class, unit, unit price); a line
    whose amount or quantity changed yields one delta line with the differences."""
    def key(line: dict[str, Any]) -> tuple[Any, ...]:
        # An earlier adjustment's lines carry the prefix; they net against the same line.
        return (line["kind"], line["description"].removeprefix(ADJUSTMENT_PREFIX),
                line["hardware_tier"], line["size_class"], line["unit"], line["unit_price"])

    totals: dict[tuple[Any, ...], list[Decimal]] = defaultdict(lambda: [ZERO, ZERO])
    for doc in billed:
        for line in doc["lines"]:
            totals[key(line)][0] -= Decimal(line["quantity"])
            totals[key(line)][1] -= Decimal(line["amount"])
    for line in new["lines"]:
        totals[key(line)][0] += Decimal(line["quantity"])
        totals[key(line)][1] += Decimal(line["amount"])
    delta = []
    for (kind, description, tier, size, unit, price), (qty, amount) in totals.items():
        if qty or amount:
            delta.append({"kind": kind, "description": ADJUSTMENT_PREFIX + description,
                          "hardware_tier": tier, "size_class": size, "quantity": str(qty),
                          "unit": unit, "unit_price": price, "amount": str(amount)})
    return sorted(delta, key=lambda line: (line["kind"], line["description"]))


def close_period(con: duckdb.DuckDBPyConnection, period: str, now: datetime) -> list[str]:
    """Finalize the period's drafts: numbers, content hashes; the drafts become finals.

    Closing twice is a no-op: returns the numbers finalized by this call."""
    if is_closed(con, period):
        return []
    drafts = stored(con, period, "draft")
    numbers = []
    for sequence, draft in enumerate(sorted(drafts, key=lambda d: d.tenant), start=1):
        number = f"INV-{period}-{sequence:04d}"
        doc = dict(draft.document, number=number, kind="invoice")
        con.execute("DELETE FROM invoice_lines WHERE invoice_id = ?", [draft.invoice_id])
        con.execute("DELETE FROM invoices WHERE invoice_id = ?", [draft.invoice_id])
        _insert(con, invoice_id=number, number=number, kind="invoice", status="final", doc=doc,
                inputs=draft.inputs_hash, adjusts=None, finalized_at=now)
        numbers.append(number)
    con.execute("INSERT INTO period_closes VALUES (?, ?)", [period, now])
    return numbers
