"""A real public cluster trace through the whole pipeline, reconciled (`chargeback replay`).

The trace becomes spool files (collectors/traces.py); the same Dagster jobs as production
ingest, bill and analyse them (the CLI runs them between `import_trace` and `reconcile_replay`);
then the GPU-hours billed per tenant are compared with those computed straight from the trace's
CSV by an independent query."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import yaml

from collectors.traces import (
    IMPORTERS,
    ReconcileReport,
    expected_gpu_hours,
    expected_tokens,
    reconcile,
)
from models.billing.rate_cards import load_rate_cards
from models.files import atomic_write
from models.ledger.usage import RESERVED_TENANTS

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data"
RATE_CARD = ROOT / "examples" / "replay" / "rate-card.yaml"
TRACES = tuple(IMPORTERS)


@dataclass(frozen=True)
class ImportedTrace:
    rows: int
    tenants: list[str]
    expected: dict[str, float]
    """GPU-hours per tenant straight from the trace's CSV, reserved buckets included."""
    start: datetime
    end: datetime


def configure(out: Path) -> None:
    """Point the pipeline's resources (read from the environment when Dagster's definitions
    load) at `out`: its own spool, warehouse, exports and Dagster instance."""
    os.environ["CHARGEBACK_HOME"] = str(out)
    os.environ["DAGSTER_HOME"] = str(out / "dagster")
    os.environ["CHARGEBACK_RATE_CARD"] = str(RATE_CARD)
    os.environ["CHARGEBACK_TENANTS"] = str(out / "tenants.yaml")
    os.environ["CHARGEBACK_FINANCE"] = str(out / "finance.yaml")
    for variable in ("CHARGEBACK_WAREHOUSE", "CHARGEBACK_SPOOL", "CHARGEBACK_EXPORTS",
                     "CHARGEBACK_MARTS"):
        os.environ.pop(variable, None)


def import_trace(name: str, data_dir: Path, out: Path) -> ImportedTrace:
    """The trace `name` as spool files under `out/spool`, a tenants file with every tenant
    of the trace on the pay-as-you-go plan (traces carry no contracts), and the finance file.

    Each tenant is shown its cost as a showback statement: a trace's users are a cluster's
    internal teams, with no legal entity, cost center or payment terms to invoice. The
    finance file names the issuer and has a ledger account per tier of the replay rate card
    (docs/finance.md; showback posts no journal)."""
    summary = IMPORTERS[name].write(data_dir, out / "spool", progress=True)
    expected = expected_gpu_hours(name, data_dir)
    tenants = sorted(t for t in expected if t not in RESERVED_TENANTS)
    doc = {"tenants": {t: {"plan": "payg", "start": "2026-01-01",
                           "billing": {"legal_name": t, "mode": "showback",
                                       "payment_terms_days": 0}} for t in tenants}}
    atomic_write(out / "tenants.yaml", yaml.safe_dump(doc, sort_keys=True))
    tiers = sorted({tier.name for card in load_rate_cards(RATE_CARD) for tier in card.tiers})
    books = {"issuer": {"legal_name": "Replay GPU platform"},
             "ledger": {"platform_cost_center": "REPLAY", "accounts": {
                 "revenue": {tier: f"40{i:02d}" for i, tier in enumerate(tiers, start=1)},
                 "reservations": "4100", "base_fees": "4200", "true_ups": "4300",
                 "discounts": "4900", "prepaid_credits": "2450", "adjustments": "4800",
                 "tax": "2200"}}}
    atomic_write(out / "finance.yaml", yaml.safe_dump(books, sort_keys=True))
    return ImportedTrace(summary.rows, tenants, expected, summary.start, summary.end)


def billed_hours(warehouse_path: Path) -> dict[str, int]:
    """Per tenant, the hours its bills rounded to 6 decimals (one quantity per hour, tier and
    size class)."""
    from models.ledger import warehouse

    con = warehouse.connect(warehouse_path, read_only=True)
    try:
        rows = con.execute("SELECT tenant, count(*) FROM (SELECT DISTINCT tenant, hour, "
                           "hardware_tier, size_class FROM usage_hourly) GROUP BY 1").fetchall()
    finally:
        con.close()
    return {tenant: int(n) for tenant, n in rows}


def billed_gpu_hours(warehouse_path: Path, periods: list[str]) -> dict[str, float]:
    from models.billing import lifecycle
    from models.ledger import warehouse

    con = warehouse.connect(warehouse_path, read_only=True)
    try:
        billed: dict[str, Decimal] = {}
        for period in periods:
            for stored in lifecycle.stored(con, period):
                invoice = stored.invoice
                hours = sum((u.gpu_hours for u in invoice.usage), Decimal(0))
                billed[invoice.tenant] = billed.get(invoice.tenant, Decimal(0)) + hours
    finally:
        con.close()
    return {tenant: float(hours) for tenant, hours in billed.items() if hours}


def reconcile_replay(trace: ImportedTrace, out: Path, periods: list[str]) -> ReconcileReport:
    """Billed GPU-hours of the replay's warehouse against the trace's own figures."""
    wanted = {t: h for t, h in trace.expected.items() if t not in RESERVED_TENANTS}
    warehouse_path = out / "warehouse.duckdb"
    return reconcile(wanted, billed_gpu_hours(warehouse_path, periods), strict=False,
                     billed_hours=billed_hours(warehouse_path))


@dataclass(frozen=True)
class TokenReport:
    """Tokens per tenant on the invoices against the trace's CSVs (exact), and the shared
    endpoint's GPU-seconds against its capacity."""

    tokens: dict[str, tuple[tuple[int, int], tuple[int, int]]]
    """tenant -> ((input, output) expected, (input, output) invoiced)"""
    capacity_gpu_seconds: float
    ledger_gpu_seconds: dict[str, float]
    """tenant (and __shared_idle__) -> GPU-seconds the ledger gave it on the endpoint"""
    prices: tuple[str, ...] = ()
    """Each invoice's effective cost per million tokens, by model."""

    @property
    def ok(self) -> bool:
        tokens_exact = all(want == got for want, got in self.tokens.values())
        total = sum(self.ledger_gpu_seconds.values())
        return tokens_exact and abs(total - self.capacity_gpu_seconds) <= 1e-6 * max(
            1.0, self.capacity_gpu_seconds)

    def __str__(self) -> str:
        out = [f"{'tenant':<14} {'input tokens':>14} {'invoiced':>14} {'output tokens':>14} "
               f"{'invoiced':>14}"]
        for tenant, ((i, o), (bi, bo)) in sorted(self.tokens.items()):
            mark = "" if (i, o) == (bi, bo) else "  MISMATCH"
            out.append(f"{tenant:<14} {i:>14,} {bi:>14,} {o:>14,} {bo:>14,}{mark}")
        parts = ", ".join(f"{t} {s:,.3f}" for t, s in sorted(self.ledger_gpu_seconds.items()))
        out.append(f"endpoint capacity {self.capacity_gpu_seconds:,.3f} GPU-s; ledger: {parts}; "
                   f"sum {sum(self.ledger_gpu_seconds.values()):,.3f}")
        out += self.prices
        out.append("tokens exact, GPU-seconds conserved" if self.ok else "FAILED")
        return "\n".join(out)


def reconcile_tokens(data_dir: Path, out: Path, periods: list[str]) -> TokenReport:
    """The azure-llm replay's tokens as its invoices show them, and the endpoint's
    GPU-seconds, from its warehouse."""
    from models.billing import lifecycle
    from models.ledger import warehouse

    con = warehouse.connect(out / "warehouse.duckdb", read_only=True)
    try:
        billed: dict[str, tuple[int, int]] = {}
        prices: dict[str, list[str]] = {}
        for period in periods:
            for invoice in (s.invoice for s in lifecycle.stored(con, period)):
                for t in invoice.tokens:
                    i, o = billed.get(invoice.tenant, (0, 0))
                    billed[invoice.tenant] = (i + t.input_tokens, o + t.output_tokens)
                    prices.setdefault(invoice.tenant, []).append(
                        f"{invoice.tenant} {period} {t.model}: {t.cost_per_million_input} "
                        f"{invoice.currency} per million input tokens, "
                        f"{t.cost_per_million_output} per million output tokens "
                        f"({t.input_cost + t.output_cost} {invoice.currency} of GPU charges)")
        ledger = con.execute(
            "SELECT tenant, sum(allocated_gpu_seconds) FROM ledger WHERE cluster = 'azure-llm' "
            "GROUP BY 1").fetchall()
        # Capacity: every GPU of the endpoint, every interval it was held.
        (capacity,) = con.execute(
            "SELECT sum(gpus * duration_s) FROM (SELECT window_start, duration_s, "
            "count(DISTINCT gpu_uuid) AS gpus FROM ledger WHERE cluster = 'azure-llm' "
            "GROUP BY ALL)").fetchone() or (0.0,)
    finally:
        con.close()
    expected = expected_tokens(data_dir)
    return TokenReport(
        {t: (expected.get(t, (0, 0)), billed.get(t, (0, 0))) for t in expected.keys() | billed},
        float(capacity or 0.0), {str(t): float(s) for t, s in ledger},
        tuple(line for tenant in sorted(prices) for line in prices[tenant]))
