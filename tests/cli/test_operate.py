"""`chargeback run`, `close` and `invoices list/show/export` as a user runs them: the real
command in its own process, on a temp home with one simulated day of the default cluster."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pypdf import PdfReader

from collectors.simulate import simulate_to_spool
from models.billing import lifecycle
from models.billing.invoices import LINE_COLUMNS, StoredInvoice, decode
from models.ledger import warehouse

PERIOD = "2026-09"
DAY = "2026-09-01"
TENANTS = 12
"""The default cluster's tenants (examples/demo/tenants.yaml)."""
pytestmark = pytest.mark.slow


def chargeback(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHARGEBACK_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    for name in ("CHARGEBACK_WAREHOUSE", "CHARGEBACK_SPOOL", "CHARGEBACK_EXPORTS",
                 "CHARGEBACK_MARTS", "CHARGEBACK_RATE_CARD", "CHARGEBACK_TENANTS"):
        env.pop(name, None)
    return subprocess.run([str(Path(sys.executable).with_name("chargeback")), *args],
                          cwd=home, env=env, capture_output=True, text=True, timeout=600,
                          check=False)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def stored(home: Path) -> list[StoredInvoice]:
    con = warehouse.connect(home / "warehouse.duckdb", read_only=True)
    try:
        return lifecycle.stored(con, PERIOD)
    finally:
        con.close()


@pytest.fixture(scope="module")
def drafted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`chargeback run` over one simulated day: the month's drafts."""
    home = tmp_path_factory.mktemp("operate")
    simulate_to_spool(home / "spool", datetime(2026, 9, 1, tzinfo=UTC), 1, interval_s=900)
    out = ok(chargeback(home, "run", "--from", DAY, "--to", DAY))
    assert f"ingested 1 days, billed {PERIOD}" in out
    return home


@pytest.fixture(scope="module")
def closed(drafted: Path) -> Path:
    """The same home after `chargeback close`."""
    out = ok(chargeback(drafted, "close", "--period", PERIOD))
    assert f"{PERIOD} closed: {TENANTS} final invoices and adjustments" in out
    return drafted


def listed(out: str) -> dict[str, tuple[str, str, str]]:
    """number -> (status, tenant, total) from `invoices list`."""
    rows = {}
    for line in out.splitlines()[1:]:
        number, status, tenant, _plan, total, currency = line.split()
        assert currency == "USD"
        rows[number] = (status, tenant, total)
    return rows


def test_run_bills_drafts_that_list_shows(drafted: Path) -> None:
    invoices = stored(drafted)
    assert len(invoices) == TENANTS
    rows = listed(ok(chargeback(drafted, "invoices", "list", "--period", PERIOD)))
    assert rows == {s.stem: ("draft", s.invoice.tenant, f"{s.invoice.total:,.2f}")
                    for s in invoices}
    assert "DRAFT-2026-09-acme" in rows


def test_show_prints_every_line_of_one_invoice(drafted: Path) -> None:
    (acme,) = [s for s in stored(drafted) if s.invoice.tenant == "acme"]
    out = ok(chargeback(drafted, "invoices", "show", "DRAFT-2026-09-acme", "--period", PERIOD))
    lines = out.splitlines()
    assert lines[0].split() == ["DRAFT-2026-09-acme", "acme", PERIOD, "plan",
                                acme.invoice.plan, "status", "draft"]
    assert len(lines) == len(acme.invoice.lines) + 2
    for text, line in zip(lines[1:], acme.invoice.lines, strict=False):
        assert text.split()[:-1] == line.description.split()
        assert text.split()[-1] == f"{line.amount:,.2f}"
    assert lines[-1].split() == ["total", f"{acme.invoice.total:,.2f}", "USD"]


@pytest.mark.parametrize("fmt", ["json", "csv", "pdf"])
def test_export_writes_one_file_per_invoice(drafted: Path, tmp_path: Path, fmt: str) -> None:
    out = ok(chargeback(drafted, "invoices", "export", "--period", PERIOD, "--format", fmt,
                        "--out", str(tmp_path)))
    invoices = {s.stem: s for s in stored(drafted)}
    assert sorted(out.split()) == sorted(str(tmp_path / f"{n}.{fmt}") for n in invoices)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    for number, s in invoices.items():
        data = (tmp_path / f"{number}.{fmt}").read_bytes()
        if fmt == "json":
            doc = json.loads(data)
            assert decode(doc) == s.invoice
            assert (doc["invoice_id"], doc["status"], doc["content_hash"]) == (
                s.invoice_id, "draft", s.content_hash)
        elif fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(data.decode())))
            assert rows
            assert tuple(rows[0]) == LINE_COLUMNS
            charged = [r for r in rows if r["kind"] != "token_memo"]
            assert [(r["kind"], r["description"], Decimal(r["quantity"]), Decimal(r["amount"]))
                    for r in charged] == [(x.kind.value, x.description, x.quantity, x.amount)
                                          for x in s.invoice.lines]
            # Tokens are memo rows beside the lines: counted, never charged twice.
            memo = [r for r in rows if r["kind"] == "token_memo"]
            assert [(r["quantity"], r["amount"]) for r in memo] == [
                (str(n), "") for t in s.invoice.tokens for n in (t.input_tokens, t.output_tokens)]
        else:
            text = [line for page in PdfReader(io.BytesIO(data)).pages
                    for line in page.extract_text().splitlines()]
            # lumen is a showback tenant (examples/demo/tenants.yaml): a statement.
            heading = "Statement" if s.invoice.tenant == "lumen" else "Invoice"
            assert text[0] == f"{heading} DRAFT (not final)"
            assert f"Tenant {s.invoice.tenant}" in text
            for line in s.invoice.lines:
                assert any(t.startswith(line.description) and t.endswith(
                    f"{line.amount:,.2f} USD") for t in text), line.description
            assert f"Total {s.invoice.total:,.2f} USD" in text


def test_export_focus_ties_to_the_invoices(drafted: Path, tmp_path: Path) -> None:
    out = ok(chargeback(drafted, "invoices", "export", "--period", PERIOD, "--format",
                        "focus", "--out", str(tmp_path)))
    assert sorted(Path(p).name for p in out.split()) == sorted(
        f"{stem}.{ext}" for stem in ("focus", "focus-invoice-detail", "focus-billing-period",
                                     "focus-contract-commitment")
        for ext in ("csv", "metadata.json", "parquet"))
    billed: dict[str, Decimal] = defaultdict(Decimal)
    for row in pq.read_table(tmp_path / "focus.parquet").to_pylist():
        billed[row["InvoiceId"] or row["SubAccountId"]] += row["BilledCost"]
    # A showback statement is no invoice: its rows have no InvoiceId, and the same figures.
    assert dict(billed) == {s.invoice_id if s.document_type.payable else s.invoice.tenant:
                            s.invoice.total for s in stored(drafted)}


def test_close_numbers_the_invoices_once(closed: Path) -> None:
    invoices = stored(closed)
    rows = listed(ok(chargeback(closed, "invoices", "list", "--period", PERIOD)))
    # lumen is a showback tenant: a statement with no number; the others' invoices are
    # numbered without a gap.
    numbers = [f"INV-{PERIOD}-{n:04d}" for n in range(1, TENANTS)]
    assert sorted(rows) == [*numbers, f"STATEMENT-{PERIOD}-lumen"]
    assert {status for status, _, _ in rows.values()} == {"final"}
    # Numbered in tenant order, with the totals the drafts had.
    assert [rows[n][1] for n in numbers] == sorted(
        s.invoice.tenant for s in invoices if s.invoice.tenant != "lumen")
    out = ok(chargeback(closed, "invoices", "show", numbers[0], "--period", PERIOD))
    assert out.splitlines()[0].endswith("status final")
    # Closing again changes nothing.
    before = [(s.invoice_id, s.content_hash) for s in invoices]
    ok(chargeback(closed, "close", "--period", PERIOD))
    assert [(s.invoice_id, s.content_hash) for s in stored(closed)] == before


def test_register_journal_and_zip_of_a_closed_month_reconcile(closed: Path,
                                                               tmp_path: Path) -> None:
    payable = [s for s in stored(closed) if s.document_type.payable]
    billed = sum((s.invoice.total for s in payable), Decimal(0))
    names = {}
    for fmt in ("register", "journal", "zip"):
        (path,) = ok(chargeback(closed, "invoices", "export", "--period", PERIOD, "--format",
                                fmt, "--out", str(tmp_path))).split()
        names[fmt] = Path(path)
    with names["register"].open(newline="") as handle:
        register = list(csv.DictReader(handle))
    assert sorted(r["document_number"] for r in register) == sorted(
        s.number for s in payable)
    assert sum(Decimal(r["total"]) for r in register) == billed
    with names["journal"].open(newline="") as handle:
        journal = list(csv.DictReader(handle))
    assert sum(Decimal(r["debit"]) for r in journal) == sum(
        Decimal(r["credit"]) for r in journal) == billed
    with zipfile.ZipFile(names["zip"]) as archive:
        entries = set(archive.namelist())
        assert archive.read(f"{PERIOD}/{names['journal'].name}") == names["journal"].read_bytes()
    assert {f"{PERIOD}/{s.stem}.{ext}" for s in stored(closed)
            for ext in ("pdf", "csv", "json")} <= entries


@pytest.mark.parametrize(("args", "message"), [
    (("invoices", "show", "INV-1999-01-0001", "--period", PERIOD), "no invoice INV-1999-01-0001"),
    (("invoices", "list", "--period", "2026-13"), "2026-13"),
    (("invoices", "export", "--period", PERIOD, "--format", "xml", "--out", "x"), "xml"),
    (("run", "--from", "2026-09-02", "--to", DAY), "is before --from 2026-09-02"),
    (("run", "--from", "2026-09-31", "--to", DAY), "expected a day YYYY-MM-DD"),
    (("close", "--period", "September"), "September"),
])
def test_a_mistake_is_refused_with_exit_code_2(drafted: Path, args: tuple[str, ...],
                                               message: str) -> None:
    before = [(s.invoice_id, s.content_hash) for s in stored(drafted)]
    done = chargeback(drafted, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert [(s.invoice_id, s.content_hash) for s in stored(drafted)] == before
