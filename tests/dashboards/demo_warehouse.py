"""A small real warehouse for the dashboard tests: DESIGN.md's worked example (October 2026),
closed, plus idle and unattributed capacity, a tenant whose name is an attack string, and late
usage that yields an adjustment after close. Built with the same functions the pipeline uses.

Figures a test may rely on, each reasoned from DESIGN.md rather than read from the code:
- acme INV total 10,252.15 USD and zen 25,000.00 USD (DESIGN.md's worked example).
- EVIL (plan growth, 24 L4 GPU-hours of an 8B model): 24 x 0.60 = 14.40, discount 5% -0.72,
  base fee 500.00 -> 513.68.
- acme's late usage (10 L4 GPU-hours, 8B, after close): 6.00 - 5% = debit note DN-2026-0001
  of 5.70.
- The analytics of October 31 as the pipeline writes them, priced by the real engines under
  the demo rate card (next month's): acme's standard GPUs fell from 6 to 2 on October 19, so
  November projects 2 x 720 = 1,440 GPU-hours x 1.10 = 1,584 units at 1.90 = 3,009.60 plus
  its premium reservation 2 x 720 x 2.60 = 3,744.00; growth adds 500.00 and takes 5% off
  (7,103.12), starter adds 50.00 (6,803.60): switch to starter, saving 299.52 a month. Its
  3 premium GPUs every hour against 2 reserved: a month is 3 x 730 = 2,190 GPU-hours x 1.25
  = 2,737.5 units, in the 3.50 band, so an on-demand GPU-hour costs 3.50 x 1.25 x 0.95 =
  4.15625; keeping 2 costs 3,796.00 + 730 x 4.15625 = 6,830.06, reserving 3 costs 5,694.00:
  saving 1,136.06 a month.
- Inference (what latency_slas and off_peak_recommendations write for October 31, by the real
  engines): acme declares a P95 target of 6 s; on team-acme/llama-3.1-70b it serves 20
  requests a minute within 3 s on 2 GPUs, and in two bursts (10:00-10:30, 15:00-15:20) 80 a
  minute taking up to 9 s on 3.4 GPUs: a breach (9 > 6 x 1.2), so a dedicated reservation
  of 4 premium GPUs (3.4 rounded up) at 4 x 730 x 2.60 = 7,592.00 USD a month. Its batch
  work on 2 economy GPUs from 08:00 to 20:00 on October 26-30 (peak hours under the demo
  card) moves off peak and saves what the invoice engine prices. Its October invoice carries
  180M input and 45M output tokens of llama-3.1-70b (memo lines; totals unchanged). zen, with
  no target, serves 10 requests a minute on team-zen/mistral-7b within 2 s, without bursts.
- Every tenant has a billing block (legal name, cost center, GL account, 30 days' terms), the
  finance file is the demo's: documents carry issuer and bill-to blocks, the journal posts."""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from models.billing import lifecycle
from models.billing.books import load_books
from models.billing.invoices import Parties
from models.billing.pricing import ModelWork, UsageHour, price_invoice, quantity
from models.billing.rate_cards import (
    BillingMode,
    BillingProfile,
    Party,
    Tenant,
    load_rate_cards,
    load_tenants,
    month_bounds,
    rate_card_for,
)
from models.ledger import warehouse
from models.ledger.usage import IDLE_TENANT, UNATTRIBUTED_TENANT, ledger_table, make_sample_id
from models.marts import publish_marts
from models.planning.latency import report_frames, report_of
from models.planning.off_peak import moves_frame, off_peak_move
from models.planning.reservations import recommend_for_tenants
from models.planning.shifts import SHIFTS_SCHEMA
from models.planning.tier_changes import TIER_CHANGE_SCHEMA, gpu_hours_series, recommend_tier_change

DEMO_CARD = Path(__file__).resolve().parents[2] / "examples" / "demo" / "rate-card.yaml"
ANALYSIS_DAY = date(2026, 10, 31)
PLAN_SAVING = "299.52"
RESERVATION_SAVING = "1136.06"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "design-example"
FINANCE = Path(__file__).resolve().parents[2] / "examples" / "demo" / "finance.yaml"
PERIOD = "2026-10"
EVIL = "../x'; DROP TABLE invoices; --"
TOTALS = {"acme": "10252.15", "zen": "25000.00", EVIL: "513.68"}
ADJUSTMENT_TOTAL = "5.70"
ADJUSTMENT = "DN-2026-0001"
INFERENCE_MODEL = "llama-3.1-70b"
ACME_TARGET = Decimal("6")
ACME_TOKENS = (180_000_000, 45_000_000)
DEDICATED_GPUS = 4
DEDICATED_COST = "7592.00"
BURSTS = ((10 * 60, 10 * 60 + 30), (15 * 60, 15 * 60 + 20))
"""acme's burst minutes of October 31 (start, end), UTC."""
QUARANTINED_FILE = ("/var/chargeback/spool/usage/date=2026-10-12/hour=07/source=nvml/"
                    "node=gpu-7/batch-0.parquet")


def _rows(tenant: str, product: str, gpus: int, first_hour: int, hours: int,
          model: str | None, params: float | None, node: str) -> list[dict[str, object]]:
    start = datetime(2026, 10, 1, tzinfo=UTC)
    out = []
    for hour in range(first_hour, first_hour + hours):
        moment = start + timedelta(hours=hour)
        for gpu in range(gpus):
            uuid = f"GPU-{node}-{gpu}"
            out.append({
                "sample_id": make_sample_id("example", node, uuid, tenant, moment.isoformat()),
                "window_start": moment, "duration_s": 3600.0, "cluster": "example",
                "node": node, "gpu_uuid": uuid, "gpu_product": product, "mig_profile": None,
                "gpu_equivalents": 1.0, "tenant": tenant, "namespace": None, "pod": None,
                "pod_uid": None,
                "workload_kind": "idle" if tenant == IDLE_TENANT else "inference",
                "model": model, "model_params_b": params, "allocated_gpu_seconds": 3600.0,
                "used_gpu_seconds": 0.0 if tenant == IDLE_TENANT else 3600.0 * 0.5,
                "memory_used_bytes": None, "source": "example",
            })
    return out


def _load(con, rows, card) -> None:  # type: ignore[no-untyped-def]
    warehouse.load_rows(con, card, ledger_table(rows))


def _bill(con, tenants: dict[str, Tenant], card, now: datetime) -> None:  # type: ignore[no-untyped-def]
    start, end = month_bounds(PERIOD)
    row = con.execute("SELECT sum(allocated_gpu_seconds) FROM ledger WHERE tenant = 'acme' "
                      "AND model = ?", [INFERENCE_MODEL]).fetchone()
    work = {"acme": [ModelWork(INFERENCE_MODEL, *ACME_TOKENS, Decimal("0.35"),
                               quantity(Decimal(row[0]) / 3600))]}
    invoices = [price_invoice(t, card, PERIOD, warehouse.tenant_usage_hours(con, t, start, end),
                              work=work.get(name, ()))
                for name, t in sorted(tenants.items())]
    books = load_books(FINANCE)
    parties = {name: Parties(books.issuer, t.billing) for name, t in tenants.items()
               if t.billing is not None}
    lifecycle.write_drafts(con, PERIOD, invoices, "test-inputs", now, parties=parties)


def _advise(con, tenants: dict[str, Tenant]) -> None:  # type: ignore[no-untyped-def]
    """acme's plan and reservation recommendations of October 31 (module docstring)."""
    card = load_rate_cards(DEMO_CARD)[0]
    days = [date(2026, 10, 1) + timedelta(days=i) for i in range(31)]
    usage = pl.DataFrame({"tenant": "acme", "day": days, "hardware_tier": "standard",
                          "size_class": "medium",
                          "gpu_hours": [(6.0 if d.day < 19 else 2.0) * 24 for d in days]})
    shift = {"tenant": "acme", "series_name": gpu_hours_series("standard"),
             "change_date": date(2026, 10, 19), "level_before": 144.0, "level_after": 48.0,
             "relative_change": -2 / 3, "confidence": 0.97, "confirmed": True,
             "days_at_new_level": 13}
    shifts = pl.DataFrame([shift], schema=SHIFTS_SCHEMA)
    change = recommend_tier_change(tenants["acme"], card, usage, shifts, ANALYSIS_DAY)
    assert change is not None
    warehouse.replace_analysis(con, "usage_shifts", shifts, ANALYSIS_DAY)
    warehouse.replace_analysis(con, "tier_change_recommendations",
                               pl.DataFrame([asdict(change)], schema=TIER_CHANGE_SCHEMA),
                               ANALYSIS_DAY)
    as_of = datetime(2026, 11, 1, tzinfo=UTC)
    start = as_of - timedelta(days=28)
    acme = {"acme": tenants["acme"]}
    result = recommend_for_tenants(
        warehouse.hourly_demand(con, start, as_of).filter(pl.col("tenant") == "acme"),
        [row for row in warehouse.size_mix(con, start, as_of) if row[0] == "acme"],
        warehouse.hours_observed(con, start, as_of), acme, card, as_of=as_of)
    warehouse.replace_analysis(con, "reservation_recommendations", result.recommendations,
                               ANALYSIS_DAY)


def _inference(con, tenants: dict[str, Tenant]) -> None:  # type: ignore[no-untyped-def]
    """acme's latency and off-peak analysis of October 31 (module docstring), stored as the
    assets store it."""
    card = load_rate_cards(DEMO_CARD)[0]
    start = datetime.combine(ANALYSIS_DAY, datetime.min.time(), UTC)
    rows = []
    for minute in range(24 * 60):
        burst = any(lo <= minute < hi for lo, hi in BURSTS)
        n, slow, gpus = (80, 9.0, 3.4) if burst else (20, 3.0, 2.0)
        # The server's fixed bounds; 95% of requests within `slow` seconds, the rest within
        # the next bound.
        bounds = (1.0, 2.0, 3.0, 4.5, 6.0, 9.0, 12.0, 18.0, float("inf"))
        buckets = [{"le": le, "count": 0 if le < slow else round(n * 0.95) if le == slow
                    else n} for le in bounds]
        rows.append(("acme", "team-acme", INFERENCE_MODEL, "premium",
                     start + timedelta(minutes=minute), 60.0, n, buckets, gpus * 60))
    # zen declares no target: its steady traffic is measured, never judged against one.
    rows += [("zen", "team-zen", "mistral-7b", "premium", start + timedelta(minutes=minute),
              60.0, 10, [{"le": le, "count": 0 if le < 2.0 else 10}
                         for le in (1.0, 2.0, float("inf"))], 60.0)
             for minute in range(24 * 60)]
    report = report_of(rows, tenants, card)
    for table, frame in report_frames(report, rows, start, start + timedelta(days=1)).items():
        warehouse.replace_analysis(con, table, frame, ANALYSIS_DAY)
    batch = [(UsageHour(datetime(2026, 10, day, hour, tzinfo=UTC), "economy", "small",
                        Decimal(2)), "batch") for day in range(26, 31) for hour in range(8, 20)]
    move = off_peak_move(tenants["acme"], card, PERIOD, batch)
    assert move is not None
    warehouse.replace_analysis(con, "off_peak_recommendations", moves_frame([move]),
                               ANALYSIS_DAY)


def build(home: Path) -> dict[str, Tenant]:
    """var-like folder: home/warehouse.duckdb, home/marts. Returns the tenants."""
    cards = load_rate_cards(EXAMPLE / "rate-card.yaml")
    card = rate_card_for(cards, month_bounds(PERIOD)[0].date())
    tenants = load_tenants(EXAMPLE / "tenants.yaml", cards)
    tenants["acme"] = replace(tenants["acme"], p95_latency_seconds=ACME_TARGET)
    tenants[EVIL] = replace(tenants["acme"], name=EVIL, reservations=(), namespaces=(),
                            display_name=EVIL, p95_latency_seconds=None)
    for number, name in enumerate(sorted(tenants), start=1):
        tenants[name] = replace(tenants[name], billing=BillingProfile(
            Party(f"{name} Ltd."), BillingMode.CHARGEBACK, 30, f"CC-{number}", "6100"))
    home.mkdir(parents=True, exist_ok=True)
    con = warehouse.connect(home / "warehouse.duckdb")
    warehouse.create_schema(con)
    design = pq.read_table(EXAMPLE / "usage.parquet").to_pylist()
    extra = (_rows(IDLE_TENANT, "NVIDIA H100 80GB HBM3", 1, 0, 744, None, None, "spare-h100")
             + _rows(UNATTRIBUTED_TENANT, "NVIDIA L4", 1, 48, 24, "mystery", 3.0, "l4-pool")
             + _rows(EVIL, "NVIDIA L4", 1, 100, 24, "llama-3.1-8b", 8.0, "l4-pool"))
    _load(con, design + extra, card)
    closed_at = datetime(2026, 11, 1, 6, tzinfo=UTC)
    _bill(con, tenants, card, closed_at)
    lifecycle.close_period(con, PERIOD, closed_at)
    # Late usage for the closed month: the next run issues an adjustment to acme's invoice.
    # A rerun rewrites whole days, so it reloads everything with the late rows added.
    late = _rows("acme", "NVIDIA L4", 1, 480, 10, "llama-3.1-8b", 8.0, "l4-late")
    _load(con, design + extra + late, card)
    _bill(con, tenants, card, closed_at + timedelta(days=1))
    # What the analytics assets write: one day's analysis per run, rewritten by day.
    _advise(con, tenants)
    _inference(con, tenants)
    con.execute("""INSERT INTO usage_shifts BY NAME SELECT * FROM (VALUES
        (DATE '2026-10-30', 'acme', 'gpu_hours[premium]', DATE '2026-10-20', 70.0, 72.0),
        (DATE '2026-10-31', 'acme', 'gpu_hours[premium]', DATE '2026-10-21', 72.0, 96.0),
        (DATE '2026-10-31', 'zen', 'gpu_hours[premium]', DATE '2026-10-21', 48.0, 0.0))
        t(day, tenant, series_name, change_date, level_before, level_after),
        (SELECT 0.9 AS confidence, true AS confirmed, 3 AS days_at_new_level)""")
    con.execute("""INSERT INTO scheduler_quota_changes BY NAME SELECT * FROM (VALUES
        (TIMESTAMPTZ '2026-11-01 00:00Z', 'ResourceQuota', 'team-acme', 'gpu-chargeback',
         'requests.nvidia.com/gpu', 2, 3, 3, 3, 'recommended', true, 'dry-run'))
        t(changed_at, kind, namespace, name, resource, before_gpus, after_gpus, in_use_gpus,
          recommended_gpus, rule, dry_run, outcome)""")
    # What tenant_forecasts and tenant_budgets write for the day of October 20: acme has
    # spent 8,000.00 of a 10,000.00 USD budget, 400.00 a day, so the point forecast reaches it
    # by the end of October 25; zen's ClusterQueue was held by its budget.
    con.execute("""INSERT INTO tenant_forecasts BY NAME SELECT DATE '2026-10-20' AS day,
        'acme' AS tenant, '2026-10' AS period, TIMESTAMPTZ '2026-10-21 00:00Z' AS as_of,
        DATE '2026-09-20' AS history_start, 'premium: ETS(A,N,A)' AS models, 'USD' AS currency,
        'design-example' AS rate_card_version, 1000 AS actual_gpu_hours, 1550 AS gpu_hours,
        1500 AS gpu_hours_lo80, 1600 AS gpu_hours_hi80, 1450 AS gpu_hours_lo95,
        1650 AS gpu_hours_hi95, 12400 AS amount, 12000 AS amount_lo80, 12800 AS amount_hi80,
        11600 AS amount_lo95, 13200 AS amount_hi95""")
    con.execute("""INSERT INTO tenant_forecast_days BY NAME SELECT DATE '2026-10-20' AS day,
        'acme' AS tenant, '2026-10' AS period, DATE '2026-10-20' + i::INTEGER AS forecast_day,
        1000 + 50 * i AS gpu_hours, 1000 + 45 * i AS gpu_hours_lo80,
        1000 + 55 * i AS gpu_hours_hi80, 1000 + 40 * i AS gpu_hours_lo95,
        1000 + 60 * i AS gpu_hours_hi95 FROM range(1, 12) t(i)""")
    con.execute("""INSERT INTO tenant_budgets BY NAME SELECT DATE '2026-10-20' AS day,
        'acme' AS tenant, '2026-10' AS period, TIMESTAMPTZ '2026-10-21 00:00Z' AS as_of,
        'amount' AS unit, 'USD' AS currency, 10000 AS limit_value, 8000 AS spent,
        8000 AS spent_amount, 1000 AS spent_gpu_hours, 80 AS used_pct, 12400 AS forecast,
        11600 AS forecast_lo95, 13200 AS forecast_hi95, 124 AS forecast_pct,
        DATE '2026-10-25' AS runs_out_on, 'on' AS enforcement""")
    con.execute("""INSERT INTO tenant_budget_days BY NAME SELECT DATE '2026-10-20' AS day,
        'acme' AS tenant, '2026-10' AS period, DATE '2026-09-30' + i::INTEGER AS budget_day,
        CASE WHEN i <= 20 THEN 400 * i END AS actual,
        CASE WHEN i > 20 THEN 400 * i END AS forecast,
        CASE WHEN i > 20 THEN 380 * i END AS forecast_lo80,
        CASE WHEN i > 20 THEN 420 * i END AS forecast_hi80,
        CASE WHEN i > 20 THEN 360 * i END AS forecast_lo95,
        CASE WHEN i > 20 THEN 440 * i END AS forecast_hi95 FROM range(1, 32) t(i)""")
    con.execute("""INSERT INTO budget_holds VALUES (DATE '2026-10-28', 'zen', '2026-10',
        'ClusterQueue', NULL, 'zen-queue', 'hold', 'None', 'Hold',
        '100.00% of the 2026-10 budget spent by 2026-10-28',
        TIMESTAMPTZ '2026-10-29 01:30Z', 'applied')""")
    # A spool file the ingest could not read (what pipelines.ingest.assets.load_spool_day
    # records when it quarantines one).
    warehouse.record_quarantine(con, warehouse.QuarantinedFile(
        date(2026, 10, 12), "usage", QUARANTINED_FILE, QUARANTINED_FILE.replace(
            "spool/usage/", "spool/quarantine/usage/"), 1234,
        "not a readable Parquet file: Parquet magic bytes not found in footer",
        datetime(2026, 10, 13, 0, 30, tzinfo=UTC)))
    publish_marts(con, home / "marts", tenants, now=closed_at + timedelta(days=1),
                  books=load_books(FINANCE, cards))
    con.close()
    return tenants
