"""`chargeback demo` as a user runs it, on a small cluster: two days at five-minute samples."""

from __future__ import annotations

import csv
import json
import os
import re
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.focus_validator import OPERATING_MODEL, validate

REPO = Path(__file__).resolve().parents[2]
TENANTS = ("acme", "zen", "orbit", "nimbus", "helix", "quanta", "lumen", "vega", "kite",
           "pixel", "sable", "terra")


@pytest.mark.slow
def test_demo_prints_invoices_and_writes_files(tmp_path: Path) -> None:
    env = {**os.environ, "CHARGEBACK_HOME": str(tmp_path / "home"),
           "DAGSTER_HOME": str(tmp_path / "dagster")}
    for name in ("CHARGEBACK_WAREHOUSE", "CHARGEBACK_SPOOL", "CHARGEBACK_EXPORTS",
                 "CHARGEBACK_MARTS"):
        env.pop(name, None)

    done = subprocess.run(
        [str(Path(sys.executable).with_name("chargeback")), "demo", "--days", "2",
         "--interval", "300"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    rows = {m["tenant"]: m for m in re.finditer(
        r"^(?P<tenant>[a-z]+)\s+(?P<plan>starter|growth|enterprise)\s+.*?"
        r"(?P<total>[\d,]+\.\d\d)\s+(?P<number>INV-2026-09-\d{4}|STATEMENT-2026-09-lumen)$",
        out, re.MULTILINE)}
    assert sorted(rows) == sorted(TENANTS)
    assert rows["zen"]["plan"] == "enterprise"
    # lumen is a showback tenant (examples/demo/tenants.yaml): a statement, not an invoice.
    assert rows["lumen"]["number"] == "STATEMENT-2026-09-lumen"
    # zen's usage is far below its plan's 25,000.00 minimum: the true-up makes it exactly that.
    assert rows["zen"]["total"] == "25,000.00"
    summary = re.search(r"^11 invoices, ([\d,]+\.\d\d) USD; 1 showback statement, "
                        r"([\d,]+\.\d\d) USD$", out, re.MULTILINE)
    assert summary is not None
    invoiced = sum(Decimal(m["total"].replace(",", "")) for t, m in rows.items() if t != "lumen")
    assert Decimal(summary[1].replace(",", "")) == invoiced
    assert summary[2] == rows["lumen"]["total"]

    # zen's budget (30,000.00 USD) counts the minimum accrued evenly: 2 of 30 days is
    # 1,666.67 USD, 5.56%.
    assert re.search(r"^budget zen: 5\.56% of 30,000\.00 USD$", out, re.MULTILINE), out
    exports = tmp_path / "home" / "exports" / "2026-09"
    assert f"{exports}/" in out
    for m in rows.values():
        for ext in ("pdf", "csv", "json"):
            assert (exports / f"{m['number']}.{ext}").stat().st_size > 0
        doc = json.loads((exports / f"{m['number']}.json").read_text())
        assert doc["status"] == "final"
        assert f"{Decimal(doc['total']):,.2f}" == m["total"]
        assert (exports / f"{m['number']}.pdf").read_bytes().startswith(b"%PDF-")
    _finance_files_reconcile(exports, invoiced)
    assert "Dagster UI:" in out
    assert "chargeback dashboard" in out
    # Everything went through Dagster, on its instance: one run for the days (a backfill of
    # their partitions), the last day's analytics, then one billing run that drafts and closes
    # (no draft run before it: the close's own drafts are the same).
    con = sqlite3.connect(tmp_path / "dagster" / "history" / "runs.db")
    try:
        runs = con.execute("SELECT pipeline_name, status, count(*) FROM runs "
                           "GROUP BY 1, 2").fetchall()
    finally:
        con.close()
    counts = {(job, status): n for job, status, n in runs}
    assert counts[("daily_usage_job", "SUCCESS")] == 1
    assert counts[("daily_analytics_job", "SUCCESS")] == 1
    assert counts[("monthly_billing_job", "SUCCESS")] == 1
    assert all(status == "SUCCESS" for _, status, _ in runs), runs


def _finance_files_reconcile(exports: Path, invoiced: Decimal) -> None:
    """The month's FOCUS 1.4 datasets pass the spec-derived validator with zero violations;
    the register, the journal and FOCUS's billed cost equal the documents to the cent."""
    datasets = {dataset: pq.read_table(exports / f"{stem}.parquet") for dataset, stem in (
        ("CostAndUsage", "focus"), ("InvoiceDetail", "focus-invoice-detail"),
        ("BillingPeriod", "focus-billing-period"),
        ("ContractCommitment", "focus-contract-commitment"))}
    assert validate(datasets, OPERATING_MODEL) == []
    with (exports / "register-2026-09.csv").open(newline="") as handle:
        register = list(csv.DictReader(handle))
    assert len(register) == 11  # the invoices; lumen's statement is not a payable document
    assert sum(Decimal(r["total"]) for r in register) == invoiced
    with (exports / "journal-2026-09.csv").open(newline="") as handle:
        journal = list(csv.DictReader(handle))
    assert sum(Decimal(r["debit"]) for r in journal) == sum(
        Decimal(r["credit"]) for r in journal) == invoiced
    assert "lumen" not in {r["tenant"] for r in journal}
    billed = sum((Decimal(v) for v in datasets["CostAndUsage"].column("BilledCost").to_pylist()),
                 Decimal(0))
    statement = json.loads((exports / "STATEMENT-2026-09-lumen.json").read_text())
    assert billed == invoiced + Decimal(statement["total"])
