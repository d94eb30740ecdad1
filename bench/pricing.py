"""Benchmark: price a month of hourly usage for many tenants, set-wise
(models.billing.pricing_sql, what the close runs) and tenant by tenant with the Decimal engine
(models.billing.pricing.price_invoice, its oracle).

Synthetic and seeded: each tenant uses 1-3 hardware tiers x 1-2 size classes every hour of
October 2026 (744 hours), at its own level with hourly noise and idle hours; about two fifths
hold reservations, a fifth have prepaid credit. Timed: `price_all` over all tenants (from a
DuckDB table of the usage rows, as the close reads them from the warehouse), and
`price_invoice` per tenant; building the usage rows (and loading that table) is reported
apart. Both are compared with one pass of Decimal
additions over the same rows (what any exact-money engine must at least do), and the
set-wise invoices are checked against the Decimal engine's, document by document.

Run: .venv/bin/python -m bench.pricing [--tenants 10000] [--seed 7] [--decimal-tenants N]"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa

from models.billing.invoices import canonical_json, document
from models.billing.pricing import Invoice, UsageHour, price_invoice
from models.billing.pricing_sql import price_all
from models.billing.rate_cards import (
    Basis,
    CreditGrant,
    Isolation,
    Reservation,
    SlaClass,
    Tenant,
    load_rate_cards,
)

CARD_PATH = Path(__file__).resolve().parents[1] / "examples" / "design-example" / "rate-card.yaml"
PERIOD = "2026-10"
START = datetime(2026, 10, 1, tzinfo=UTC)
HOURS = 744
TIERS = ("premium", "standard", "economy")
SIZES = ("small", "medium", "large", "xlarge")
RESERVING = {"premium": 0.5, "standard": 0.2}
"""Chance that a tenant using the tier holds a reservation of it."""
START_US = (START - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
HOUR_US = 3_600_000_000


def synthetic_tenant(rng: random.Random, number: int
                     ) -> tuple[Tenant, list[tuple[int, str, str, Decimal]]]:
    """A tenant and its usage rows (hour index, tier, size class, GPU-hours at 6 decimals)."""
    usage: list[tuple[int, str, str, Decimal]] = []
    levels: dict[str, float] = {}
    for tier in rng.sample(TIERS, rng.randint(1, 3)):
        for size in rng.sample(SIZES, rng.randint(1, 2)):
            level = rng.uniform(0.25, 8.0)
            levels[tier] = levels.get(tier, 0.0) + level
            idle_share = rng.uniform(0.0, 0.3)
            for hour in range(HOURS):
                if rng.random() < idle_share:
                    continue
                gpu_hours = max(0.0, rng.gauss(level, level / 4))
                usage.append((hour, tier, size, Decimal(f"{gpu_hours:.6f}")))
    reservations = tuple(
        Reservation(tier, Decimal(max(1, int(level * 0.7))), START, None)
        for tier, level in levels.items()
        if rng.random() < RESERVING.get(tier, 0.0)
    )
    credits = ((CreditGrant(Decimal(rng.randint(1, 50) * 100), START - timedelta(days=30)),)
               if rng.random() < 0.2 else ())
    tenant = Tenant(
        name=f"tenant-{number:05d}", plan=rng.choice(("growth", "enterprise")),
        basis=Basis.ALLOCATION, isolation=Isolation.POOL, sla_class=SlaClass.STANDARD,
        start=START - timedelta(days=rng.randint(-20, 400)), end=None,
        namespaces=(f"ns-{number}",), reservations=reservations, credits=credits,
    )
    return tenant, usage


def usage_batch(name: str, usage: list[tuple[int, str, str, Decimal]]) -> pa.RecordBatch:
    return pa.record_batch({
        "tenant": pa.array([name] * len(usage), pa.string()),
        "hour": pa.array([START_US + h * HOUR_US for h, _, _, _ in usage],
                         pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "hardware_tier": pa.array([tier for _, tier, _, _ in usage], pa.string()),
        "size_class": pa.array([size for _, _, size, _ in usage], pa.string()),
        "gpu_hours_micro": pa.array([int(gpu_hours.scaleb(6)) for _, _, _, gpu_hours in usage],
                                    pa.int64()),
    })


def digest(invoice: Invoice) -> str:
    return hashlib.sha256(canonical_json(document(invoice)).encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--decimal-tenants", type=int, default=None,
                        help="price only the first N tenants with the Decimal engine too "
                             "(default: all)")
    args = parser.parse_args()
    decimal_tenants = args.tenants if args.decimal_tenants is None else args.decimal_tenants

    design = load_rate_cards(CARD_PATH)[0]
    # The design example reserves only premium GPUs; the benchmark reserves standard ones too.
    card = replace(design, tiers=tuple(
        replace(t, reserved_price=Decimal("1.40")) if t.name == "standard" else t
        for t in design.tiers))
    rng = random.Random(args.seed)
    generate_s = baseline_s = 0.0
    per_tenant: list[float] = []
    rows = 0
    tenants: dict[str, Tenant] = {}
    batches: list[pa.RecordBatch] = []
    oracle: dict[str, str] = {}
    for number in range(args.tenants):
        began = time.perf_counter()
        tenant, usage = synthetic_tenant(rng, number)
        tenants[tenant.name] = tenant
        batches.append(usage_batch(tenant.name, usage))
        generate_s += time.perf_counter() - began
        began = time.perf_counter()
        sum((gpu_hours for _, _, _, gpu_hours in usage), Decimal(0))
        baseline_s += time.perf_counter() - began
        rows += len(usage)
        if number < decimal_tenants:
            began = time.perf_counter()
            hours = [UsageHour(START + timedelta(hours=h), tier, size, gpu_hours)
                     for h, tier, size, gpu_hours in usage]
            generate_s += time.perf_counter() - began
            began = time.perf_counter()
            invoice = price_invoice(tenant, card, PERIOD, hours)
            per_tenant.append(time.perf_counter() - began)
            oracle[tenant.name] = digest(invoice)
    table = pa.Table.from_batches(batches)
    del batches

    # The close prices from a DuckDB table (warehouse.create_usage_micro), so the rows are
    # loaded into one first, untimed like building them.
    con = duckdb.connect()
    began = time.perf_counter()
    con.register("usage_arrow", table)
    con.execute("CREATE TABLE usage_rows AS SELECT * FROM usage_arrow")
    con.unregister("usage_arrow")
    del table
    generate_s += time.perf_counter() - began
    began = time.perf_counter()
    month = price_all(con, card, tenants, PERIOD, "usage_rows")
    set_wise_s = time.perf_counter() - began
    con.close()
    invoices = list(month.invoices.values())
    lines = sum(len(i.lines) for i in invoices)
    billed = sum((i.total for i in invoices), Decimal(0))
    cells = sum(len(i.hours) for i in invoices)
    mismatched = sum(digest(month.invoices[name]) != oracle[name] for name in oracle)
    if mismatched:
        raise SystemExit(f"{mismatched} set-wise invoices differ from the Decimal engine's")

    table_rows = [
        ("tenants", f"{args.tenants:,}"),
        ("usage rows (tenant x hour x tier x size)", f"{rows:,}"),
        ("invoice lines", f"{lines:,}"),
        ("netting cells", f"{cells:,}"),
        ("billed total (USD)", f"{billed:,}"),
        ("baseline: one Decimal sum over the rows (s)", f"{baseline_s:.2f}"),
        ("set-wise engine (price_all, what the close runs)", ""),
        ("  pricing time (s)", f"{set_wise_s:.2f}"),
        ("  tenants / s", f"{args.tenants / set_wise_s:,.0f}"),
        ("  usage rows / s", f"{rows / set_wise_s:,.0f}"),
        ("  tenants priced by the Decimal engine instead", f"{month.fallback:,}"),
        ("pricing time / baseline", f"{set_wise_s / baseline_s:.2f}x"),
    ]
    if per_tenant:
        decimal_s = sum(per_tenant)
        ordered = sorted(per_tenant)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        # The Decimal engine's time over all tenants: measured on the first N, scaled by rows
        # when N is less than all.
        share = len(per_tenant) / args.tenants
        table_rows += [
            (f"Decimal engine (price_invoice), {len(per_tenant):,} tenants", ""),
            ("  pricing time (s)", f"{decimal_s:.2f}"),
            ("  ms per tenant, mean", f"{1000 * decimal_s / len(per_tenant):.2f}"),
            ("  ms per tenant, median", f"{1000 * statistics.median(per_tenant):.2f}"),
            ("  ms per tenant, p99", f"{1000 * p99:.2f}"),
            ("  invoices identical to the set-wise engine's", f"{len(oracle):,}"),
            ("Decimal engine time / baseline" + ("" if share == 1 else " (on its tenants)"),
             f"{decimal_s / (baseline_s * share):.2f}x"),
            ("set-wise speed-up over the Decimal engine",
             f"{decimal_s / share / set_wise_s:.1f}x"),
        ]
    table_rows.append(("building usage rows (s, not timed above)", f"{generate_s:.2f}"))
    width = max(len(name) for name, _ in table_rows)
    print(f"pricing, {PERIOD} ({HOURS} h), seed {args.seed}")
    for name, value in table_rows:
        print(f"  {name:<{width}}  {value:>16}")


if __name__ == "__main__":
    main()
