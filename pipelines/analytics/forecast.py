"""Month-end forecasts per tenant (models/planning/forecast.py) and their calibration check.

`tenant_forecasts` rewrites its partition day's rows of two tables:
- `tenant_forecasts`: one row per tenant, the month's GPU-hours and invoice total with 80% and
  95% intervals, and the GPU-hours used so far;
- `tenant_forecast_days`: one row per tenant and remaining day of the month, the cumulative
  month-to-date GPU-hours expected by that day's end with the same intervals (a fan chart, and
  what the check compares the next day's actuals with)."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import dagster as dg
import duckdb
import numpy as np
import polars as pl
from scipy.stats import binom

from models.billing.pricing import HOUR, UsageHour
from models.billing.rate_cards import Tenant, month_bounds, rate_card_for
from models.ledger import warehouse
from models.planning.forecast import (
    DEFAULT_LOOKBACK_DAYS,
    SCENARIOS,
    SeriesHistory,
    TenantForecast,
    forecast_tenant,
)
from models.planning.tier_changes import gpu_hours_series
from pipelines.partitions import DAILY, partition_day
from pipelines.resources import BillingConfigResource, WarehouseResource

GROUP = "analytics"
FORECASTS_TABLE = "tenant_forecasts"
FORECAST_DAYS_TABLE = "tenant_forecast_days"
CHECK_LEVEL = 95
ALLOWED_MISS_PROBABILITY = 0.01
"""The check fails when more tenants miss the 95% interval than calibrated intervals would
let miss with probability 1%: a miss or two among many tenants is what 95% means."""

def _column(prefix: str, scenario: str) -> str:
    return prefix if scenario == "point" else f"{prefix}_{scenario}"


def _series(hours: list[UsageHour], first_hour: datetime, as_of: datetime
            ) -> list[SeriesHistory]:
    """One dense hourly series per hardware tier from `first_hour` to `as_of`, all size
    classes together, with the size mix of its last 7 days (all of it when those are empty)."""
    n = (as_of - first_hour) // HOUR
    recent_from = as_of - timedelta(days=7)
    by_tier: dict[str, np.ndarray] = {}
    sizes: dict[str, dict[str, Decimal]] = {}
    recent: dict[str, dict[str, Decimal]] = {}
    for h in hours:
        if h.hour < first_hour:
            continue
        values = by_tier.setdefault(h.hardware_tier, np.zeros(n))
        values[(h.hour - first_hour) // HOUR] += float(h.gpu_hours)
        for bucket in (sizes, *((recent,) if h.hour >= recent_from else ())):
            mix = bucket.setdefault(h.hardware_tier, {})
            mix[h.size_class] = mix.get(h.size_class, Decimal(0)) + h.gpu_hours
    out = []
    for tier, values in sorted(by_tier.items()):
        mix = recent.get(tier) or sizes[tier]
        total = sum(mix.values(), Decimal(0))
        out.append(SeriesHistory(tier, first_hour, values,
                                 {size: float(v / total) for size, v in sorted(mix.items())}))
    return out


def _confirmed_shifts(con: duckdb.DuckDBPyConnection, day: date
                      ) -> dict[str, dict[str, list[date]]]:
    """tenant -> series name -> change dates of the confirmed shifts of the day's analysis."""
    out: dict[str, dict[str, list[date]]] = {}
    for tenant, series, change in con.execute(
        "SELECT tenant, series_name, change_date FROM usage_shifts "
        "WHERE day = ? AND confirmed ORDER BY ALL", [day]).fetchall():
        out.setdefault(tenant, {}).setdefault(series, []).append(change)
    return out


GPU_HOURS = pl.Decimal(18, 6)
MONEY = pl.Decimal(18, 4)
FORECAST_SCHEMA: dict[str, pl.DataType] = {
    "day": pl.Date(), "tenant": pl.String(), "period": pl.String(),
    "as_of": pl.Datetime("us", "UTC"), "history_start": pl.Date(), "models": pl.String(),
    "currency": pl.String(), "rate_card_version": pl.String(),
    "actual_gpu_hours": GPU_HOURS,
    **{_column("gpu_hours", s): GPU_HOURS for s in SCENARIOS},
    **{_column("amount", s): MONEY for s in SCENARIOS},
}
FORECAST_DAYS_SCHEMA: dict[str, pl.DataType] = {
    "day": pl.Date(), "tenant": pl.String(), "period": pl.String(),
    "forecast_day": pl.Date(),
    **{_column("gpu_hours", s): GPU_HOURS for s in SCENARIOS},
}


def _frames(day: date, forecasts: list[TenantForecast]) -> tuple[pl.DataFrame, pl.DataFrame]:
    rows = [{
        "day": day, "tenant": f.tenant, "period": f.period, "as_of": f.as_of,
        "history_start": f.history_start,
        "models": "; ".join(f"{tier}: {model}" for tier, model in sorted(f.models.items())),
        "currency": f.currency, "rate_card_version": f.rate_card_version,
        "actual_gpu_hours": f.actual_gpu_hours,
        **{_column("gpu_hours", s): f.gpu_hours[s] for s in SCENARIOS},
        **{_column("amount", s): f.amount[s] for s in SCENARIOS},
    } for f in forecasts]
    days = [{
        "day": day, "tenant": f.tenant, "period": f.period, "forecast_day": d,
        **{_column("gpu_hours", s): f.cumulative[s][i][1] for s in SCENARIOS},
    } for f in forecasts for i, (d, _) in enumerate(f.cumulative["point"])]
    return (pl.DataFrame(rows, schema=FORECAST_SCHEMA),
            pl.DataFrame(days, schema=FORECAST_DAYS_SCHEMA))


class ForecastsConfig(dg.Config):
    lookback_days: int = DEFAULT_LOOKBACK_DAYS
    """Days of history before the forecast (cut at a confirmed shift)."""


@dg.asset(partitions_def=DAILY, group_name=GROUP,
          deps=[dg.AssetKey("gpu_usage_hourly"), dg.AssetKey("usage_shifts")])
def tenant_forecasts(
    context: dg.AssetExecutionContext,
    config: ForecastsConfig,
    warehouse_db: WarehouseResource,
    billing: BillingConfigResource,
) -> dg.MaterializeResult:
    """Each tenant's month-end GPU-hours and spend with 80% and 95% intervals, priced."""
    day = partition_day(context)
    as_of = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    period = f"{day:%Y-%m}"
    start, end = month_bounds(period)
    card = rate_card_for(billing.rate_cards(), start.date())
    tenants = billing.tenants()
    lookback = as_of - timedelta(days=config.lookback_days)
    with warehouse_db.connect() as con:
        ((first,),) = con.execute("SELECT min(hour) FROM usage_hourly").fetchall()
        # Hours before the warehouse's first are unknown, not idle: history starts there.
        data_start = first if first is not None else as_of
        seen = set(warehouse.billable_tenants(con, min(lookback, start), as_of))
        unknown = sorted(seen - set(tenants))
        active: dict[str, Tenant] = {
            name: t for name, t in sorted(tenants.items())
            if name in seen or (t.start < end and (t.end is None or t.end > start))
        }
        history = warehouse.usage_hours(con, active, min(lookback, start), as_of)
        shifts = _confirmed_shifts(con, day)
        forecasts = []
        for name, tenant in active.items():
            tenant_start = tenant.start.replace(hour=0, minute=0, second=0, microsecond=0)
            first_hour = max(lookback, data_start.astimezone(UTC).replace(
                hour=0, minute=0, second=0, microsecond=0), tenant_start)
            first_hour = min(first_hour, as_of)
            tenant_shifts = shifts.get(name, {})
            series = _series(history[name], first_hour, as_of)
            forecasts.append(forecast_tenant(
                tenant, card, as_of, series,
                [h for h in history[name] if h.hour >= start],
                shifts={s.hardware_tier: tenant_shifts.get(gpu_hours_series(s.hardware_tier), [])
                        for s in series},
                lookback_days=config.lookback_days,
            ))
        frame, days = _frames(day, forecasts)
        warehouse.replace_analysis(con, FORECASTS_TABLE, frame.drop("day"), day)
        warehouse.replace_analysis(con, FORECAST_DAYS_TABLE, days.drop("day"), day)
    return dg.MaterializeResult(metadata={
        "rows": frame.height,
        "period": period,
        "rate_card_version": card.version,
        "forecasts": "\n".join(
            f"{f.tenant}: {f.gpu_hours['point']} GPU-h [{f.gpu_hours['lo95']}, "
            f"{f.gpu_hours['hi95']}], {f.amount['point']} {f.currency} [{f.amount['lo95']}, "
            f"{f.amount['hi95']}]" for f in forecasts) or "none",
        "skipped_tenants_not_in_tenants_file": ", ".join(unknown) or "none",
    })


@dg.asset_check(asset=tenant_forecasts)
def forecast_interval_covers_month_to_date(
    context: dg.AssetCheckExecutionContext, warehouse_db: WarehouseResource
) -> dg.AssetCheckResult:
    """Yesterday's 95% interval for today's month-to-date GPU-hours holds today's actual, for
    all but as many tenants as calibrated intervals would miss (1% false-alarm rate)."""
    day = partition_day(context)
    with warehouse_db.connect() as con:
        rows = con.execute(
            f"SELECT d.tenant, f.actual_gpu_hours, d.gpu_hours_lo{CHECK_LEVEL}, "
            f"d.gpu_hours_hi{CHECK_LEVEL}, d.gpu_hours_lo80, d.gpu_hours_hi80 "
            f"FROM {FORECAST_DAYS_TABLE} d JOIN {FORECASTS_TABLE} f "
            "ON f.day = d.forecast_day AND f.tenant = d.tenant AND f.period = d.period "
            "WHERE d.day = ? AND d.forecast_day = ? ORDER BY d.tenant",
            [day - timedelta(days=1), day]).fetchall()
    misses = [r for r in rows if not r[2] <= r[1] <= r[3]]
    inside_80 = sum(1 for r in rows if r[4] <= r[1] <= r[5])
    allowed = int(binom.ppf(1 - ALLOWED_MISS_PROBABILITY, len(rows), 1 - CHECK_LEVEL / 100))
    return dg.AssetCheckResult(
        passed=len(misses) <= allowed,
        metadata={
            "tenants_compared": len(rows),
            f"outside_{CHECK_LEVEL}": "\n".join(
                f"{t}: actual {a}, interval [{lo}, {hi}]" for t, a, lo, hi, *_ in misses
            ) or "none",
            "allowed_misses": allowed,
            "coverage_80": round(inside_80 / len(rows), 3) if rows else "no forecast from "
            "yesterday for today in this month",
        },
    )

