"""Benchmark: price a month of hourly usage for many tenants with models.billing.pricing.

Synthetic and seeded: each tenant uses 1-3 hardware tiers x 1-2 size classes every hour of
October 2026 (744 hours), at its own level with hourly noise and idle hours; about two fifths
hold reservations, a fifth have prepaid credit. Only `price_invoice` is timed; building the
usage rows is reported apart, and the floor it is compared with is one pass of Decimal
additions over the same rows (what any exact-money engine must at least do).

Run: .venv/bin/python -m bench.pricing [--tenants 10000] [--seed 7]"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from models.billing.pricing import UsageHour, price_invoice
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


def synthetic_tenant(rng: random.Random, number: int) -> tuple[Tenant, list[UsageHour]]:
    hours = [START + timedelta(hours=h) for h in range(HOURS)]
    usage: list[UsageHour] = []
    levels: dict[str, float] = {}
    for tier in rng.sample(TIERS, rng.randint(1, 3)):
        for size in rng.sample(SIZES, rng.randint(1, 2)):
            level = rng.uniform(0.25, 8.0)
            levels[tier] = levels.get(tier, 0.0) + level
            idle_share = rng.uniform(0.0, 0.3)
            for hour in hours:
                if rng.random() < idle_share:
                    continue
                gpu_hours = max(0.0, rng.gauss(level, level / 4))
                usage.append(UsageHour(hour, tier, size, Decimal(f"{gpu_hours:.6f}")))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    design = load_rate_cards(CARD_PATH)[0]
    # The design example reserves only premium GPUs; the benchmark reserves standard ones too.
    card = replace(design, tiers=tuple(
        replace(t, reserved_price=Decimal("1.40")) if t.name == "standard" else t
        for t in design.tiers))
    rng = random.Random(args.seed)
    generate_s = baseline_s = 0.0
    per_tenant: list[float] = []
    rows = lines = 0
    billed = Decimal(0)
    for number in range(args.tenants):
        began = time.perf_counter()
        tenant, usage = synthetic_tenant(rng, number)
        generate_s += time.perf_counter() - began
        began = time.perf_counter()
        invoice = price_invoice(tenant, card, PERIOD, usage)
        per_tenant.append(time.perf_counter() - began)
        began = time.perf_counter()
        sum((u.gpu_hours for u in usage), Decimal(0))
        baseline_s += time.perf_counter() - began
        rows += len(usage)
        lines += len(invoice.lines)
        billed += invoice.total

    total_s = sum(per_tenant)
    ordered = sorted(per_tenant)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    table = [
        ("tenants", f"{args.tenants:,}"),
        ("usage rows (tenant x hour x tier x size)", f"{rows:,}"),
        ("invoice lines", f"{lines:,}"),
        ("billed total (USD)", f"{billed:,}"),
        ("pricing time (s)", f"{total_s:.2f}"),
        ("tenants / s", f"{args.tenants / total_s:,.0f}"),
        ("ms per tenant, mean", f"{1000 * total_s / args.tenants:.2f}"),
        ("ms per tenant, median", f"{1000 * statistics.median(per_tenant):.2f}"),
        ("ms per tenant, p99", f"{1000 * p99:.2f}"),
        ("usage rows / s", f"{rows / total_s:,.0f}"),
        ("baseline: one Decimal sum over the rows (s)", f"{baseline_s:.2f}"),
        ("pricing time / baseline", f"{total_s / baseline_s:.1f}x"),
        ("building usage rows (s, not timed above)", f"{generate_s:.2f}"),
    ]
    width = max(len(name) for name, _ in table)
    print(f"price_invoice, {PERIOD} ({HOURS} h), seed {args.seed}")
    for name, value in table:
        print(f"  {name:<{width}}  {value:>16}")


if __name__ == "__main__":
    main()
