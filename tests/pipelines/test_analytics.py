"""The analytics assets on the demo's simulated cluster, through the real Dagster jobs.

The simulator injects two sustained shifts (collectors.simulate.INJECTED_SHIFTS: quanta 2 -> 6
H100 on day 12, lumen 6 -> 2 A100 on day 18, from 00:00 UTC) and keeps five tenants steady
(STEADY_TENANTS). A shift is confirmed after 3 days at the new level (the default), so the
analysis of the injected day + 2 is the first that can confirm it: that is where it must be."""

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
import yaml

from collectors.simulate import INJECTED_SHIFTS, STEADY_TENANTS, simulate_to_spool
from models.planning.shifts import DEFAULT_CONFIRM_DAYS
from models.planning.tier_changes import gpu_hours_series
from pipelines.analytics import assets as analytics_assets
from pipelines.analytics import checks as analytics_checks
from pipelines.ingest import assets as ingest_assets
from pipelines.ingest import checks as ingest_checks
from pipelines.jobs import daily_analytics_job, daily_usage_job
from pipelines.resources import (
    BillingConfigResource,
    KubernetesResource,
    OutputsResource,
    PrometheusResource,
    SpoolResource,
    WarehouseResource,
)

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
START = date(2026, 9, 1)
LAST_SHIFT_DAY = max(day for day, _, _ in INJECTED_SHIFTS.values())
DAYS = LAST_SHIFT_DAY + DEFAULT_CONFIRM_DAYS
"""Simulated days: up to the first day that can confirm the later shift (21)."""
TIERS = {"quanta": "premium", "lumen": "standard"}
"""The hardware tier of each injected shift (H100, A100 on the demo rate card)."""


def confirmation_day(tenant: str) -> date:
    return START + timedelta(days=INJECTED_SHIFTS[tenant][0] + DEFAULT_CONFIRM_DAYS - 1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """21 simulated days ingested, analytics run on each confirmation day and the last day."""
    root = tmp_path_factory.mktemp("analytics")
    # 5-minute samples: the shifts are daily steps, so finer sampling adds time, not signal.
    simulate_to_spool(root / "spool", START, DAYS, interval_s=300)
    resources = {
        "warehouse_db": WarehouseResource(path=str(root / "warehouse.duckdb")),
        "spool": SpoolResource(path=str(root / "spool")),
        "billing": BillingConfigResource(rate_card_path=str(DEMO / "rate-card.yaml"),
                                         tenants_path=str(DEMO / "tenants.yaml")),
        "outputs": OutputsResource(exports_path=str(root / "exports"),
                                   marts_path=str(root / "marts")),
        "prometheus": PrometheusResource(url="http://127.0.0.1:1"),
        "kubernetes": KubernetesResource(kubeconfig="", apply=False),
    }
    defs = dg.Definitions(
        assets=dg.load_assets_from_modules([ingest_assets, analytics_assets]),
        asset_checks=dg.load_asset_checks_from_modules([ingest_checks, analytics_checks]),
        jobs=[daily_usage_job, daily_analytics_job],
        resources=resources,
    )
    instance = dg.DagsterInstance.ephemeral()

    def run(job: str, day: date) -> dg.ExecuteInProcessResult:
        result = defs.resolve_job_def(job).execute_in_process(partition_key=f"{day}",
                                                              instance=instance)
        assert result.success
        failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
        assert not failed, failed
        return result

    for i in range(DAYS):
        run("daily_usage_job", START + timedelta(days=i))
    analysed = sorted({*(confirmation_day(t) for t in INJECTED_SHIFTS),
                       START + timedelta(days=DAYS - 1)})
    for day in analysed:
        run("daily_analytics_job", day)
    return {"root": root, "warehouse": root / "warehouse.duckdb", "run": run,
            "last": analysed[-1]}


def read(cluster, query: str, params=()) -> pl.DataFrame:
    con = duckdb.connect(str(cluster["warehouse"]), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return pl.from_arrow(con.sql(query, params=list(params)).to_arrow_table())
    finally:
        con.close()


@pytest.mark.slow
@pytest.mark.parametrize("tenant", sorted(INJECTED_SHIFTS))
def test_injected_shift_is_confirmed_within_the_confirmation_delay(cluster, tenant):
    day, before_gpus, after_gpus = INJECTED_SHIFTS[tenant]
    injected = START + timedelta(days=day)
    shifts = read(cluster, "SELECT * FROM usage_shifts WHERE day = ? AND tenant = ? "
                  "AND series_name = ?", [confirmation_day(tenant), tenant,
                                          gpu_hours_series(TIERS[tenant])])
    assert shifts.height == 1, shifts
    shift = shifts.row(0, named=True)
    assert shift["confirmed"]
    assert shift["change_date"] == injected
    # Levels in GPU-hours per day: the simulated GPUs held all day.
    assert shift["level_before"] == pytest.approx(before_gpus * 24, rel=0.02)
    assert shift["level_after"] == pytest.approx(after_gpus * 24, rel=0.02)

    # The day before, only DEFAULT_CONFIRM_DAYS - 1 days at the new level exist: not confirmed.
    # (Checked on the stored analysis of an earlier day where there is one.)
    earlier = read(cluster, "SELECT * FROM usage_shifts WHERE day < ? AND tenant = ? "
                   "AND change_date = ? AND confirmed", [confirmation_day(tenant), tenant,
                                                         injected])
    assert earlier.is_empty()


@pytest.mark.slow
def test_shifts_yield_tier_changes_and_steady_tenants_get_none(cluster):
    changes = read(cluster, "SELECT * FROM tier_change_recommendations ORDER BY day, tenant")
    assert not changes.filter(pl.col("tenant").is_in(STEADY_TENANTS)).height, changes
    steady_shifts = read(cluster, "SELECT * FROM usage_shifts WHERE confirmed AND "
                         "list_contains(?, tenant)", [list(STEADY_TENANTS)])
    assert steady_shifts.is_empty(), steady_shifts

    # quanta: 6 H100 x 744 h of October = 4,464 GPU-hours, beyond growth's [500, 3000).
    quanta = changes.filter((pl.col("tenant") == "quanta")
                            & (pl.col("day") == confirmation_day("quanta"))).row(0, named=True)
    assert (quanta["rule"], quanta["current_plan"], quanta["recommended_plan"]) == (
        "out_of_range", "growth", "enterprise")
    assert quanta["change_date"] == START + timedelta(days=INJECTED_SHIFTS["quanta"][0])
    assert float(quanta["projected_gpu_hours"]) == pytest.approx(6 * 744, rel=0.02)
    # lumen: down to 2 A100 = 1,488 GPU-hours, inside growth's range, where starter's 50.00
    # base fee beats growth's 500.00 less 5% (see tests/models/test_tier_changes.py).
    lumen = changes.filter((pl.col("tenant") == "lumen")
                           & (pl.col("day") == confirmation_day("lumen"))).row(0, named=True)
    assert (lumen["rule"], lumen["recommended_plan"]) == ("cheaper", "starter")
    assert lumen["recommended_plan_total"] < lumen["current_plan_total"]


@pytest.mark.slow
def test_reservations_and_quota_manifests_for_the_demo_tenants(cluster):
    last = cluster["last"]
    recs = read(cluster, "SELECT * FROM reservation_recommendations WHERE day = ?", [last])
    by_key = {(r["tenant"], r["hardware_tier"], r["mig_profile"]): r
              for r in recs.iter_rows(named=True)}
    # acme holds 2 reserved premium GPUs (tenants.yaml) and runs 3 H100 every hour: at a
    # break-even below 1, all 3 pay off.
    acme = by_key[("acme", "premium", None)]
    assert (acme["current_reserved_gpus"], acme["recommended_gpus"]) == (2, 3)
    assert acme["expected_monthly_cost_recommended"] <= acme["expected_monthly_cost_current"]
    # zen is latency-sensitive: its MIG 2g.20gb instance is reserved whatever the price.
    zen_mig = by_key[("zen", "premium", "2g.20gb")]
    assert zen_mig["sla_class"] == "latency-sensitive"
    assert zen_mig["recommended_gpus"] >= 1
    assert not any(t.startswith("__") for t, _, _ in by_key)
    pools = read(cluster, "SELECT * FROM reservation_overflow_pools WHERE day = ?", [last])
    assert set(pools["hardware_tier"]) >= {"premium", "standard", "economy"}

    folder = cluster["root"] / "exports" / "quotas" / f"{last}"
    quota = yaml.safe_load((folder / "resourcequota-team-acme.gpu-chargeback.yaml").read_text())
    assert quota["spec"]["hard"] == {"requests.nvidia.com/gpu": "3"}
    zen = yaml.safe_load((folder / "resourcequota-team-zen.gpu-chargeback.yaml").read_text())
    assert zen["spec"]["hard"]["requests.nvidia.com/mig-2g.20gb"] == "1"
    queue = yaml.safe_load((folder / "clusterqueue-acme.yaml").read_text())
    assert queue["apiVersion"] == "kueue.x-k8s.io/v1beta2"
    changes = read(cluster, "SELECT * FROM scheduler_quota_changes WHERE outcome = 'manifest' "
                   "AND changed_at = ?::TIMESTAMPTZ", [f"{last + timedelta(days=1)} 00:00Z"])
    assert "team-acme" in set(changes["namespace"].drop_nulls())


@pytest.mark.slow
def test_rerunning_a_day_replaces_its_rows(cluster):
    last = cluster["last"]
    tables = ("usage_shifts", "tier_change_recommendations", "reservation_recommendations",
              "reservation_overflow_pools")
    query = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t} WHERE day = ?" for t in tables)
    before = read(cluster, query, [last] * len(tables))
    quota_rows = read(cluster, "SELECT count(*) AS n FROM scheduler_quota_changes")
    cluster["run"]("daily_analytics_job", last)
    assert read(cluster, query, [last] * len(tables)).equals(before)
    assert read(cluster, "SELECT count(*) AS n FROM scheduler_quota_changes").equals(quota_rows)


def test_code_location_has_the_analytics_job_and_schedule():
    from pipelines.definitions import defs

    job = defs.resolve_job_def("daily_analytics_job")
    assert job.partitions_def is not None
    assert defs.resolve_schedule_def("daily_analytics").job_name == "daily_analytics_job"
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {"usage_shifts", "tier_change_recommendations", "reservation_recommendations",
            "scheduler_quotas"} <= keys
