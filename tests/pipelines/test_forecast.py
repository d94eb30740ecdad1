"""`tenant_forecasts` and its check through `dg.materialize` against a temp DuckDB warehouse.

Hourly usage is written straight into `usage_hourly` (the table the asset reads), so every
figure is known: acme holds 3 H100s of a 70B model every hour with 2 reserved (plan growth),
zen a noisy 4 to 8 A100s of a 13B model (plan enterprise, minimum 25,000.00)."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from models.ledger import warehouse
from pipelines.analytics.forecast import forecast_interval_covers_month_to_date, tenant_forecasts
from pipelines.resources import BillingConfigResource, WarehouseResource

ROOT = Path(__file__).resolve().parents[2]
FIRST_DAY = date(2026, 9, 10)
TENANTS = """\
tenants:
  acme:
    plan: growth
    start: 2026-01-01
    reservations:
      - {tier: premium, gpus: 2, start: 2026-01-01}
  zen:
    plan: enterprise
    start: 2026-01-01
"""


def write_usage(path: Path, last_day: date, zen_scale: float = 1.0) -> None:
    """acme: 3 GPUs of premium/large every hour; zen: standard/medium, 6 +- 2 GPUs. Days
    after 2026-10-14 hold zen at `zen_scale` times its usual usage."""
    rng = np.random.default_rng(11)
    con = warehouse.connect(path)
    try:
        warehouse.create_schema(con)
        rows = []
        hours = int((last_day - FIRST_DAY).days + 1) * 24
        start = datetime.combine(FIRST_DAY, datetime.min.time(), UTC)
        for i in range(hours):
            hour = start + timedelta(hours=i)
            zen = float(np.clip(6 + 1.2 * rng.standard_normal(), 4, 8))
            if hour.date() > date(2026, 10, 14):
                zen *= zen_scale
            for tenant, tier, size, product, gpus in (
                ("acme", "premium", "large", "H100", 3.0),
                ("zen", "standard", "medium", "A100", round(zen, 3)),
            ):
                rows.append((hour.date(), hour, "c1", "n1", tenant, tier, size, product, None,
                             "m", "inference", Decimal(repr(gpus * 3600)), None, 0, gpus, 1))
        con.executemany("INSERT INTO usage_hourly VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    finally:
        con.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "tenants.yaml").write_text(TENANTS)
    return tmp_path


def materialize(home: Path, day: date) -> dg.ExecuteInProcessResult:
    resources = {
        "warehouse_db": WarehouseResource(path=str(home / "warehouse.duckdb")),
        "billing": BillingConfigResource(
            rate_card_path=str(ROOT / "examples" / "demo" / "rate-card.yaml"),
            tenants_path=str(home / "tenants.yaml")),
    }
    return dg.materialize([tenant_forecasts, forecast_interval_covers_month_to_date],
                          partition_key=f"{day}", resources=resources,
                          instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def query(home: Path, sql: str, params=()) -> list[tuple]:
    con = warehouse.connect(home / "warehouse.duckdb", read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


@pytest.mark.slow
def test_forecasts_are_written_priced_and_rerun_in_place(home):
    write_usage(home / "warehouse.duckdb", date(2026, 10, 14))
    result = materialize(home, date(2026, 10, 14))
    assert result.success
    rows = query(home, "SELECT tenant, period, actual_gpu_hours, gpu_hours, gpu_hours_lo95, "
                 "gpu_hours_hi95, amount, amount_lo95, amount_hi95, models, history_start "
                 "FROM tenant_forecasts ORDER BY tenant")
    acme, zen = rows
    # acme is constant: 3 x 744 GPU-hours and DESIGN.md's acme premium bill (7,698.55: see
    # tests/models/planning/test_forecast.py) in every scenario.
    assert acme[1] == "2026-10"
    assert acme[2] == Decimal(3 * 14 * 24)
    assert acme[3] == acme[4] == acme[5] == Decimal(2232)
    assert acme[6] == acme[7] == acme[8] == Decimal("7698.55")
    assert acme[10] == FIRST_DAY
    # zen: 6 +- GPUs of 13B on A100 is far below the enterprise minimum in every scenario.
    assert zen[4] < zen[3] < zen[5]
    assert zen[6] == zen[7] == zen[8] == Decimal("25000.00")
    assert "standard: ETS(" in zen[9]
    days = query(home, "SELECT count(*), min(forecast_day), max(forecast_day) "
                 "FROM tenant_forecast_days WHERE tenant = 'zen'")
    assert days == [(17, date(2026, 10, 15), date(2026, 10, 31))]
    # No forecast from the day before: the check has nothing to compare and passes.
    assert check(result).passed

    again = materialize(home, date(2026, 10, 14))
    assert again.success
    assert query(home, "SELECT count(*) FROM tenant_forecasts") == [(2,)]
    assert query(home, "SELECT count(*) FROM tenant_forecast_days") == [(34,)]


@pytest.mark.slow
def test_a_confirmed_shift_cuts_the_history(home):
    write_usage(home / "warehouse.duckdb", date(2026, 10, 14))
    con = warehouse.connect(home / "warehouse.duckdb")
    try:
        con.execute("INSERT INTO usage_shifts BY NAME SELECT '2026-10-14' AS day, 'zen' AS tenant, "
                    "'gpu_hours[standard]' AS series_name, '2026-10-01' AS change_date, "
                    "1.0 AS level_before, 3.0 AS level_after, 0.9 AS confidence, "
                    "true AS confirmed, 13 AS days_at_new_level")
    finally:
        con.close()
    assert materialize(home, date(2026, 10, 14)).success
    assert query(home, "SELECT history_start FROM tenant_forecasts WHERE tenant = 'zen'") == [
        (date(2026, 10, 1),)]


@pytest.mark.slow
def test_check_passes_when_todays_actuals_fall_in_yesterdays_interval(home):
    write_usage(home / "warehouse.duckdb", date(2026, 10, 15))
    assert materialize(home, date(2026, 10, 14)).success
    evaluation = check(materialize(home, date(2026, 10, 15)))
    assert evaluation.passed
    assert evaluation.metadata["tenants_compared"].value == 2


@pytest.mark.slow
def test_check_fails_when_actuals_leave_the_interval(home):
    """zen triples on October 15 and acme holds 3 GPUs: acme stays inside its zero-width
    interval, zen is outside; with two tenants one miss is allowed, so zen's alone passes,
    and an acme that stops as well makes two and fails."""
    write_usage(home / "warehouse.duckdb", date(2026, 10, 15), zen_scale=3.0)
    assert materialize(home, date(2026, 10, 14)).success
    evaluation = check(materialize(home, date(2026, 10, 15)))
    assert evaluation.passed
    assert "zen" in evaluation.metadata["outside_95"].value
    con = warehouse.connect(home / "warehouse.duckdb")
    try:
        con.execute("DELETE FROM usage_hourly WHERE tenant = 'acme' AND day = '2026-10-15'")
    finally:
        con.close()
    evaluation = check(materialize(home, date(2026, 10, 15)))
    assert not evaluation.passed
    assert evaluation.metadata["allowed_misses"].value == 1
