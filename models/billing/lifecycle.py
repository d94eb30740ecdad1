"""The invoice lifecycle: drafts, finalization on close, adjustments after close.

A final invoice is never changed. When its period's inputs change later (late usage, a
corrected rate card), the next run issues an adjustment: a note whose lines are the
difference between what should have been billed and what was billed, linked to the original.
Numbers, hashes and documents depend only on the inputs, so reruns are byte-identical.

The warehouse keeps each document (canonical JSON, models.billing.invoices), its lines as
rows for SQL, and the invoice's hourly netting in `invoice_hours`: thousands of cells a month
per tenant would swell every JSON file finance downloads, so the netting sits beside the
document, written in the same transaction."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal

import duckdb
import pyarrow as pa

from models.billing.invoices import (
    STORED_COLUMNS,
    DocumentKind,
    Parties,
    Status,
    StoredInvoice,
    canonical_json,
    content_hash,
    document,
    from_row,
)
from models.billing.pricing import HourUse, Invoice, InvoiceLine, LineKind, NettedHour
from models.billing.pricing_sql import NettingCells
from models.billing.rate_cards import month_bounds

ZERO = Decimal(0)
ADJUSTMENT_PREFIX = "adjustment: "
_HOURS_SCHEMA = pa.schema([
    ("invoice_id", pa.string()), ("hour", pa.timestamp("us", tz="UTC")),
    ("hardware_tier", pa.string()), ("size_class", pa.string()),
    ("reservation_id", pa.string()), ("hour_use", pa.string()),
    ("gpu_hours", pa.decimal128(24, 6)),
])


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


def stored(con: duckdb.DuckDBPyConnection, period: str | None = None,
           status: Status | None = None, *,
           finalized_in: tuple[datetime, datetime] | None = None,
           with_hours: bool = False) -> list[StoredInvoice]:
    """The stored invoices and adjustment notes (of `period`, with `status`, finalized in
    [start, end)), in invoice_id order, decoded through the codec. `with_hours` also reads
    each one's hourly netting."""
    query = f"SELECT {', '.join(STORED_COLUMNS)} FROM invoices WHERE true"
    params: list[object] = []
    if period is not None:
        query += " AND period = ?"
        params.append(period)
    if status is not None:
        query += " AND status = ?"
        params.append(status.value)
    if finalized_in is not None:
        query += " AND finalized_at >= ? AND finalized_at < ?"
        params += list(finalized_in)
    found = [from_row(dict(zip(STORED_COLUMNS, row, strict=True)))
             for row in con.execute(query + " ORDER BY invoice_id", params).fetchall()]
    if not with_hours:
        return found
    hours = netting(con, [s.invoice_id for s in found])
    return [replace(s, invoice=replace(s.invoice, hours=hours.get(s.invoice_id, ())))
            for s in found]


def netting(con: duckdb.DuckDBPyConnection, invoice_ids: Sequence[str]
            ) -> dict[str, tuple[NettedHour, ...]]:
    """The stored hourly netting of each invoice, in the order pricing produced it."""
    found: dict[str, list[NettedHour]] = defaultdict(list)
    for invoice_id, hour, tier, size, reservation, use, gpu_hours in con.execute(
            "SELECT invoice_id, hour, hardware_tier, size_class, reservation_id, hour_use, "
            "gpu_hours FROM invoice_hours WHERE list_contains(?, invoice_id) "
            "ORDER BY invoice_id, hour, hardware_tier, size_class NULLS LAST, "
            "reservation_id NULLS FIRST", [list(invoice_ids)]).fetchall():
        found[invoice_id].append(NettedHour(hour, tier, size, reservation, HourUse(use),
                                            gpu_hours))
    return {invoice_id: tuple(cells) for invoice_id, cells in found.items()}


def is_closed(con: duckdb.DuckDBPyConnection, period: str) -> bool:
    row = con.execute("SELECT count(*) FROM period_closes WHERE period = ?", [period]).fetchone()
    return bool(row and row[0])


def credit_spent_before(con: duckdb.DuckDBPyConnection, tenant: str, period: str) -> Decimal:
    row = con.execute(
        "SELECT coalesce(sum(credit_applied), 0) FROM invoices "
        "WHERE tenant = ? AND period < ? AND status = 'final'", [tenant, period]
    ).fetchone()
    return Decimal(row[0]) if row else ZERO


@contextlib.contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """All of a step's statements or none: a run killed half-way through closing a period
    must not leave half its invoices numbered (the next close would number them again)."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _dates(parties: Parties | None, issued: datetime) -> tuple[date, date | None]:
    """Issue date (UTC) and due date (issue date plus the payment terms) of a document
    finalized at `issued`."""
    day = issued.date()
    if parties is None:
        return day, None
    return day, day + timedelta(days=parties.bill_to.payment_terms_days)


def _insert(con: duckdb.DuckDBPyConnection, invoice_id: str, invoice: Invoice, *,
            kind: DocumentKind, status: Status, number: str | None, adjusts: str | None,
            inputs: str, finalized_at: datetime | None, parties: Parties | None) -> None:
    issued, due = (None, None) if finalized_at is None else _dates(parties, finalized_at)
    doc = document(invoice, kind=kind, number=number, adjusts=adjusts, parties=parties,
                   issue_date=issued, due_date=due)
    con.execute(
        "INSERT INTO invoices VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [invoice_id, number, kind.value, status.value, invoice.tenant, invoice.period,
         invoice.plan, invoice.currency, invoice.total, invoice.credit_applied, adjusts,
         invoice.rate_card_version, content_hash(doc), inputs, canonical_json(doc),
         finalized_at],
    )
    if invoice.lines:
        con.executemany(
            "INSERT INTO invoice_lines VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [[invoice_id, n, line.kind.value, line.description, line.hardware_tier,
              line.size_class, line.quantity, line.unit, line.unit_price, line.amount]
             for n, line in enumerate(invoice.lines, start=1)],
        )
    if isinstance(invoice.hours, NettingCells):  # the set-wise engine's: already columns
        cells_table = invoice.hours.arrow()
        table = cells_table.add_column(
            0, "invoice_id", pa.array([invoice_id] * cells_table.num_rows, pa.string()))
        _insert_hours(con, table)
    elif invoice.hours:
        cells = invoice.hours
        table = pa.table([
            [invoice_id] * len(cells), [c.hour for c in cells],
            [c.hardware_tier for c in cells], [c.size_class for c in cells],
            [c.reservation_id for c in cells], [c.use.value for c in cells],
            [c.gpu_hours for c in cells]], schema=_HOURS_SCHEMA)
        _insert_hours(con, table)


def _insert_hours(con: duckdb.DuckDBPyConnection, table: pa.Table) -> None:
    con.register("invoice_hours_new", table.cast(_HOURS_SCHEMA))
    try:
        con.execute("INSERT INTO invoice_hours SELECT * FROM invoice_hours_new")
    finally:
        con.unregister("invoice_hours_new")


def _delete(con: duckdb.DuckDBPyConnection, where: str, params: Sequence[object]) -> None:
    """Delete the invoices matching `where` (over `invoices`) with their lines and netting."""
    ids = f"SELECT invoice_id FROM invoices WHERE {where}"
    con.execute(f"DELETE FROM invoice_lines WHERE invoice_id IN ({ids})", list(params))
    con.execute(f"DELETE FROM invoice_hours WHERE invoice_id IN ({ids})", list(params))
    con.execute(f"DELETE FROM invoices WHERE {where}", list(params))


def _next_in_sequence(con: duckdb.DuckDBPyConnection, prefix: str) -> str:
    """`<prefix><n>` with n one above the numbers already issued under `prefix`: finals are
    never deleted, so a sequence has no gaps."""
    row = con.execute("SELECT count(*) FROM invoices WHERE starts_with(number, ?)",
                      [prefix]).fetchone()
    return f"{prefix}{(row[0] if row else 0) + 1:04d}"


def write_drafts(con: duckdb.DuckDBPyConnection, period: str, invoices: Iterable[Invoice],
                 inputs: str, now: datetime, *,
                 parties: Mapping[str, Parties] | None = None) -> dict[str, int]:
    """Replace the period's drafts; after close, issue adjustment notes for what changed.

    `parties` gives each tenant's issuer and bill-to blocks (the tenants file's `billing:`
    block); a tenant without one gets documents without them. An adjustment note of a
    chargeback tenant is a credit note (`CN-<year>-<n>`, total below zero) or a debit note
    (`DN-<year>-<n>`), each its own gapless sequence per year of issue; a showback tenant's
    is a statement correction with no number. Returns counts: drafts written, adjustments
    issued."""
    parties = parties or {}
    counts = {"drafts": 0, "adjustments": 0}
    with _transaction(con):
        _delete(con, "period = ? AND status = 'draft'", [period])
        closed = is_closed(con, period)
        finals = stored(con, period, Status.FINAL)
        for invoice in invoices:
            party = parties.get(invoice.tenant)
            if not closed:
                _insert(con, f"draft:{period}:{invoice.tenant}", invoice,
                        kind=DocumentKind.INVOICE, status=Status.DRAFT, number=None,
                        adjusts=None, inputs=inputs, finalized_at=None, parties=party)
                counts["drafts"] += 1
                continue
            billed = [f for f in finals if f.invoice.tenant == invoice.tenant]
            delta = _delta_lines(invoice, [f.invoice for f in billed])
            if not delta:
                continue
            original = next((f.stem for f in billed if f.kind is DocumentKind.INVOICE), None)
            credit = -sum((x.amount for x in delta if x.kind is LineKind.CREDIT), ZERO)
            # The note is the delta alone: its usage and netting stay with the invoice.
            note = replace(invoice, lines=tuple(delta), usage=(), hours=(),
                           credit_applied=credit)
            number: str | None
            if party is not None and party.showback:
                corrections = sum(1 for f in billed if f.kind is DocumentKind.ADJUSTMENT)
                number, note_id = None, f"STATEMENT-{period}-{invoice.tenant}-C{corrections + 1}"
            else:
                kind = "CN" if note.total < 0 else "DN"
                number = note_id = _next_in_sequence(con, f"{kind}-{now:%Y}-")
            _insert(con, note_id, note, kind=DocumentKind.ADJUSTMENT, status=Status.FINAL,
                    number=number, adjusts=original, inputs=inputs, finalized_at=now,
                    parties=party)
            counts["adjustments"] += 1
    return counts


def _delta_lines(new: Invoice, billed: Sequence[Invoice]) -> list[InvoiceLine]:
    """Lines that turn what was billed (invoice + earlier adjustments) into `new`.

    Lines are matched by everything but quantity and amount; a line whose amount or quantity
    changed yields one delta line with the differences."""
    def key(line: InvoiceLine) -> InvoiceLine:
        # An earlier adjustment's lines carry the prefix; they net against the same line.
        return replace(line, description=line.description.removeprefix(ADJUSTMENT_PREFIX),
                       quantity=ZERO, amount=ZERO)

    totals: dict[InvoiceLine, list[Decimal]] = defaultdict(lambda: [ZERO, ZERO])
    for invoice in billed:
        for line in invoice.lines:
            totals[key(line)][0] -= line.quantity
            totals[key(line)][1] -= line.amount
    for line in new.lines:
        totals[key(line)][0] += line.quantity
        totals[key(line)][1] += line.amount
    delta = [replace(line, description=ADJUSTMENT_PREFIX + line.description, quantity=qty,
                     amount=amount)
             for line, (qty, amount) in totals.items() if qty or amount]
    return sorted(delta, key=lambda line: (line.kind.value, line.description))


def close_period(con: duckdb.DuckDBPyConnection, period: str, now: datetime) -> list[str]:
    """Finalize the period's drafts: numbers (`INV-<period>-<n>`, gapless in tenant order),
    issue and due dates, content hashes; the drafts become finals. A showback tenant's draft
    becomes its statement `STATEMENT-<period>-<tenant>`, with no number.

    Closing twice is a no-op: returns the numbers and statement ids finalized by this call."""
    finalized = []
    with _transaction(con):
        if is_closed(con, period):
            return []
        drafts = stored(con, period, Status.DRAFT)
        sequence = 0
        for draft in sorted(drafts, key=lambda d: d.invoice.tenant):
            number: str | None
            if draft.parties is not None and draft.parties.showback:
                number, final_id = None, f"STATEMENT-{period}-{draft.invoice.tenant}"
            else:
                sequence += 1
                number = final_id = f"INV-{period}-{sequence:04d}"
            con.execute("DELETE FROM invoice_lines WHERE invoice_id = ?", [draft.invoice_id])
            con.execute("DELETE FROM invoices WHERE invoice_id = ?", [draft.invoice_id])
            _insert(con, final_id, draft.invoice, kind=DocumentKind.INVOICE,
                    status=Status.FINAL, number=number, adjusts=None,
                    inputs=draft.inputs_hash, finalized_at=now, parties=draft.parties)
            # The netting priced the draft; it moves with it, untouched.
            con.execute("UPDATE invoice_hours SET invoice_id = ? WHERE invoice_id = ?",
                        [final_id, draft.invoice_id])
            finalized.append(final_id)
        con.execute("INSERT INTO period_closes VALUES (?, ?)", [period, now])
    return finalized


def period_documents(con: duckdb.DuckDBPyConnection, period: str, *,
                     with_hours: bool = False) -> list[StoredInvoice]:
    """The documents of billing period `period` as finance books them: every draft or final
    invoice (or statement) of the period, and every adjustment note issued during it
    (finalized in the month, whatever period it corrects), in invoice_id order. FOCUS, the
    register, the journal and a period's ZIP all list these."""
    start, end = month_bounds(period)
    return sorted(
        [*(s for s in stored(con, period, with_hours=with_hours)
           if s.kind is DocumentKind.INVOICE),
         *(s for s in stored(con, status=Status.FINAL, finalized_in=(start, end))
           if s.kind is DocumentKind.ADJUSTMENT)],
        key=lambda s: s.invoice_id)
