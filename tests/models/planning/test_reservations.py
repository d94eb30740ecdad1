from datetime import UTC, datetime, timedelta
from decimal import Decimal

import duckdb
import numpy as np
import polars as pl
import pytest

from models.planning.reservations import (
    DemandDistribution,
    SlaClass,
    TierPrices,
    cost_of,
    cost_optimal_reservation,
    decay_weights,
    expected_cost,
    overflow_pools,
    recommend_reservations,
    recommend_units,
    size_overflow_pool,
)

PRICES = TierPrices(Decimal("2.20"), Decimal("1.40"))  # break-even 0.636...
START = datetime(2026, 11, 1, tzinfo=UTC)


def frame(rows: list[tuple[str, str, str | None, int, float]]) -> pl.DataFrame:
    """rows of (tenant, tier, mig_profile, hour offset from START, demand_gpus)."""
    return pl.DataFrame(
        [(t, tier, mig, START + timedelta(hours=h), d) for t, tier, mig, h, d in rows],
        schema={
            "tenant": pl.String,
            "hardware_tier": pl.String,
            "mig_profile": pl.String,
            "hour": pl.Datetime("us", "UTC"),
            "demand_gpus": pl.Float64,
        },
        orient="row",
    )


# Eight equally weighted hours: P(d>=1) = 7/8, P(d>=2) = 5/8, P(d>=3) = 2/8, P(d>=4) = 0.
EIGHT = DemandDistribution.of([0, 1, 1, 2, 2, 2, 3, 3])


@pytest.mark.parametrize(
    ("break_even", "expected"),
    [
        ("0.25", 3),  # P(d>=3) = 0.25 reaches it exactly: the third GPU still pays off
        ("0.26", 2),
        ("0.625", 2),
        ("0.6364", 1),
        ("0.875", 1),
        ("0.9", 0),
    ],
)
def test_largest_k_whose_tail_reaches_the_price_ratio(break_even: str, expected: int) -> None:
    assert EIGHT.tail(1) == 7 / 8
    assert EIGHT.tail(2) == 5 / 8
    assert EIGHT.tail(3) == 2 / 8
    assert cost_optimal_reservation(EIGHT, Decimal(break_even)) == expected


def test_the_rule_minimises_expected_cost_by_brute_force() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        dist = DemandDistribution.of(rng.gamma(2.0, 3.0, size=200), rng.random(200))
        costs = {k: expected_cost(dist, k, Decimal(1), PRICES).total for k in range(0, 40)}
        best = min(costs.values())
        k = cost_optimal_reservation(dist, PRICES.break_even)
        # Cents of rounding aside, no other k is cheaper than the rule's.
        assert costs[k] - best <= Decimal("0.02")


def test_fractional_demand_counts_the_used_share_of_the_kth_gpu() -> None:
    # 1.5 GPUs every hour: the second GPU is used half of every hour, so it pays off only when
    # reserved costs at most half the on-demand price.
    dist = DemandDistribution.of([1.5] * 10)
    assert dist.tail(2) == pytest.approx(0.5)
    assert cost_optimal_reservation(dist, Decimal("0.5")) == 2
    assert cost_optimal_reservation(dist, Decimal("0.51")) == 1


def test_decay_weights_halve_every_half_life() -> None:
    assert decay_weights([0, 24, 48], 24).tolist() == [1.0, 0.5, 0.25]
    with pytest.raises(ValueError, match="half-life"):
        decay_weights([0], 0)


def test_decay_follows_a_recent_drop_in_demand() -> None:
    # 48 old hours at 4 GPUs, then the last 24 at 1 GPU. Unweighted P(d>=4) = 2/3 >= 0.636:
    # reserve 4. With a 24 h half-life the old hours weigh 0.5 * (1 - 1/4) against
    # (1 - 1/2) for the recent ones: P(d>=4) = 0.375 / 0.875 = 0.43, so only 1 GPU pays off.
    rows = [("t", "std", None, h, 4.0) for h in range(48)]
    rows += [("t", "std", None, h, 1.0) for h in range(48, 72)]
    demand = frame(rows)
    flat = recommend_reservations(demand, {"std": PRICES}, half_life_hours=1e9)
    decayed = recommend_reservations(demand, {"std": PRICES}, half_life_hours=24)
    assert flat["recommended_gpus"].to_list() == [4]
    assert decayed["recommended_gpus"].to_list() == [1]
    ages = np.arange(72)[::-1]
    w = decay_weights(ages, 24)
    assert DemandDistribution.of([4] * 48 + [1] * 24, w).tail(4) == pytest.approx(0.375 / 0.875)


def test_latency_sensitive_tenants_get_at_least_their_p95() -> None:
    # 18 hours at 1 GPU, 2 at 5: the cumulative share at 1 GPU is 0.90 < 0.95, so P95 = 5,
    # while the 2nd GPU is used 10% of hours and does not pay off.
    dist = DemandDistribution.of([1] * 18 + [5] * 2)
    assert dist.quantile(0.95) == 5
    assert recommend_units(dist, PRICES, SlaClass.STANDARD) == 1
    assert recommend_units(dist, PRICES, SlaClass.LATENCY_SENSITIVE) == 5

    rows = [
        (t, "std", None, h, 1.0 if h < 18 else 5.0) for t in ("web", "batch") for h in range(20)
    ]
    recs = recommend_reservations(
        frame(rows), {"std": PRICES}, sla_classes={"web": "latency-sensitive"}, half_life_hours=1e9
    ).sort("tenant")
    assert recs["tenant"].to_list() == ["batch", "web"]
    assert recs["recommended_gpus"].to_list() == [1, 5]
    assert recs["cost_optimal_gpus"].to_list() == [1, 1]
    assert recs["sla_class"].to_list() == ["standard", "latency-sensitive"]


def test_overflow_pool_of_independent_bursts_is_below_the_sum_of_p95s() -> None:
    # Four tenants, each bursting 10 GPUs over its reservation in 6 of 100 hours: alone, each
    # one's P95 overflow is 10 (94% of hours at 0). Bursts in different hours: the summed
    # overflow is 10 in 24 hours and 0 in 76, so its P95 is 10, not 40.
    disjoint = np.zeros((100, 4))
    for tenant in range(4):
        disjoint[tenant * 6 : tenant * 6 + 6, tenant] = 10
    assert size_overflow_pool(disjoint).pool_units == 10
    assert size_overflow_pool(disjoint).sum_of_individual_units == 40
    # Bursts that always coincide need the full sum: the pool is no smaller.
    together = np.zeros((100, 4))
    together[:6, :] = 10
    assert size_overflow_pool(together).pool_units == 40

    rng = np.random.default_rng(1)
    independent = (rng.random((1000, 8)) < 0.1) * rng.integers(1, 9, size=(1000, 8))
    size = size_overflow_pool(independent)
    assert size.pool_units < size.sum_of_individual_units


def test_overflow_pools_over_recommendations() -> None:
    # Two tenants reserve 1 GPU each (their tail at 2 is 6/100); bursts to 11 in different hours.
    rows = []
    for h in range(100):
        rows.append(("a", "std", None, h, 11.0 if h < 6 else 1.0))
        rows.append(("b", "std", None, h, 11.0 if 50 <= h < 56 else 1.0))
    demand = frame(rows)
    recs = recommend_reservations(demand, {"std": PRICES}, half_life_hours=1e9)
    assert recs["recommended_gpus"].to_list() == [1, 1]
    pools = overflow_pools(demand, recs, half_life_hours=1e9)
    assert pools.select("hardware_tier", "pool_gpus", "sum_of_tenant_overflow_gpus").rows() == [
        ("std", 10, 20)
    ]


def test_expected_monthly_costs_in_decimal() -> None:
    # Demand 0, 1, 2, 3 GPUs equally often; reserve 1 (P(d>=2) = 0.5 < 0.636).
    # Reserved: 1 x 730 x 1.40 = 1,022.00. Overflow: E[max(0, d - 1)] = 0.75 GPU per hour,
    # 547.5 GPU-hours x 2.20 = 1,204.50. None: 1.5 x 730 x 2.20 = 2,409.00.
    # Current 3: 3 x 730 x 1.40 = 3,066.00, no overflow.
    demand = frame([("t", "std", None, h, float(h % 4)) for h in range(100)])
    recs = recommend_reservations(
        demand, {"std": PRICES}, current_reserved={("t", "std", None): 3}, half_life_hours=1e9
    )
    row = recs.row(0, named=True)
    assert row["recommended_gpus"] == 1
    assert row["expected_monthly_cost_recommended"] == Decimal("2226.50")
    assert row["expected_monthly_cost_none"] == Decimal("2409.00")
    assert row["expected_monthly_cost_current"] == Decimal("3066.00")
    assert row["expected_overflow_gpu_hours_per_month"] == Decimal("547.500000")
    assert row["expected_overflow_hours_per_month"] == pytest.approx(0.5 * 730)
    assert isinstance(row["expected_monthly_cost_recommended"], Decimal)


def test_line_amounts_round_half_up_to_the_cent() -> None:
    # 0.5 GPU-hours at 0.01 is 0.005: half-up gives 0.01 where banker's rounding gives 0.00.
    cost = cost_of(Decimal("0.5"), Decimal("0.5"), TierPrices(Decimal("0.01"), Decimal("0.01")))
    assert (cost.reserved_amount, cost.on_demand_amount, cost.total) == (
        Decimal("0.01"),
        Decimal("0.01"),
        Decimal("0.02"),
    )


def test_mig_rows_count_instances() -> None:
    # Three 1g.10gb instances (3/7 of a GPU) every hour: reserve exactly 3 instances, not 4
    # from 3.0000000001 in binary. 3 x 730 x 1/7 GPU-hours x 1.40 = 438.00.
    demand = frame([("t", "std", "1g.10gb", h, 3 / 7) for h in range(50)])
    row = recommend_reservations(demand, {"std": PRICES}).row(0, named=True)
    assert row["recommended_gpus"] == 3
    assert row["unit_gpu_equivalents"] == pytest.approx(1 / 7)
    assert row["expected_monthly_cost_recommended"] == Decimal("438.00")


def test_missing_hours_are_zero_demand_from_the_first_hour() -> None:
    # Demand 2 in hours 0..4 of a 10-hour history (hours 5..9 have no rows): P(d>=1) = 0.5.
    demand = frame([("t", "std", None, h, 2.0) for h in range(5)])
    as_of = START + timedelta(hours=10)
    row = recommend_reservations(demand, {"std": PRICES}, as_of=as_of, half_life_hours=1e9).row(
        0, named=True
    )
    assert row["hours_observed"] == 10
    assert row["recommended_gpus"] == 0
    assert row["as_of"] == as_of


def test_bad_input_reports_every_problem() -> None:
    demand = frame([("t", "gold", None, 0, 1.0), ("u", "silver", None, 0, 1.0)])
    with pytest.raises(ValueError, match=r"'gold'.*'silver'.*sla_class 'urgent'"):
        recommend_reservations(demand, {}, sla_classes={"t": "urgent"})
    with pytest.raises(ValueError, match="must be a UTC datetime"):
        recommend_reservations(
            demand.with_columns(pl.col("hour").dt.replace_time_zone(None)), {"gold": PRICES}
        )
    with pytest.raises(ValueError, match=r"rows \[0\]"):
        recommend_reservations(
            demand.with_columns(pl.Series("demand_gpus", [-1.0, 1.0])), {"gold": PRICES}
        )


def test_costs_store_exactly_in_parquet_and_duckdb(tmp_path) -> None:
    demand = frame([("t", "std", None, h, float(h % 4)) for h in range(100)])
    recs = recommend_reservations(demand, {"std": PRICES}, half_life_hours=1e9)
    path = tmp_path / "recs.parquet"
    recs.write_parquet(path)
    con = duckdb.connect()
    kind, value = con.execute(
        "SELECT typeof(expected_monthly_cost_recommended), expected_monthly_cost_recommended "
        f"FROM read_parquet('{path}')"
    ).fetchone()
    assert (kind, value) == ("DECIMAL(18,2)", Decimal("2226.50"))
