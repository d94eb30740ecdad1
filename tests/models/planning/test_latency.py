"""Latency SLAs under bursts: P95 as Prometheus reads it, the burst rule on real traces, and
the dedicated-reservation rule."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pytest
import requests

from models.billing.rate_cards import ConfigError, load_rate_cards, load_tenants
from models.planning.latency import (
    BurstRule,
    Interval,
    burst_flags,
    dedicated_reservation,
    endpoint_latency,
    histogram_quantile,
    merge_buckets,
    requests_over,
)
from tests.prometheus_server import Series, prometheus_with_history, to_openmetrics

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
INF = math.inf

CASES = {
    # le -> cumulative count, as the simulator and vLLM write them
    "typical": [(0.5, 2), (1.0, 10), (2.0, 40), (5.0, 90), (10.0, 99), (INF, 100)],
    "in_inf": [(1.0, 50), (2.0, 90), (INF, 100)],
    "first": [(0.25, 97), (0.5, 99), (INF, 100)],
    "sparse": [(0.1, 0), (1.0, 0), (30.0, 3), (60.0, 3), (INF, 4)],
}
T = 1_700_000_000.0


def test_p95_is_what_prometheus_histogram_quantile_returns(tmp_path):
    # Two rows per case with the same bounds, summed by le as `sum by (le)` does.
    series = []
    for case, buckets in CASES.items():
        for part, scale in (("a", 1), ("b", 3)):
            for le, count in buckets:
                series.append(Series("e2e_bucket", {"case": case, "part": part,
                                                    "le": "+Inf" if le == INF else repr(le)},
                                     [(T, float(count * scale))]))
    with prometheus_with_history(to_openmetrics(series, {}), tmp_path) as url:
        for case, buckets in CASES.items():
            merged = merge_buckets([buckets, [(le, c * 3) for le, c in buckets]])
            for q in (0.5, 0.9, 0.95, 0.99):
                answer = requests.get(f"{url}/api/v1/query", params={
                    "query": f'histogram_quantile({q}, sum by (le) (e2e_bucket{{case="{case}"}}))',
                    "time": T}, timeout=10).json()
                (result,) = answer["data"]["result"]
                assert histogram_quantile(q, merged) == pytest.approx(
                    float(result["value"][1]), rel=1e-12), (case, q)


def test_p95_is_undefined_without_observations_or_inf_bucket():
    assert histogram_quantile(0.95, [(1.0, 0), (INF, 0)]) is None
    assert histogram_quantile(0.95, [(1.0, 3), (2.0, 5)]) is None
    assert histogram_quantile(0.95, []) is None


def test_requests_over_a_target_interpolate_inside_its_bucket():
    buckets = [(1.0, 10), (2.0, 30), (INF, 40)]
    assert requests_over(1.5, buckets) == 20
    assert requests_over(0.5, buckets) == 35
    # Beyond the highest finite bound only the +Inf bucket is known to be slower.
    assert requests_over(3.0, buckets) == 10


def _minutes(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) * 60


def test_a_burst_is_a_multiple_of_the_trailing_median_and_does_not_raise_its_own_base():
    values = np.r_[np.full(60, 10.0), np.full(30, 25.0), np.full(30, 10.0)]
    flags = burst_flags(_minutes(120), values, BurstRule(factor=2.0, base_minutes=60))
    # 30 minutes at 2.5x: all bursts, since the median of the hour before stays at 10.
    assert flags.tolist() == [False] * 60 + [True] * 30 + [False] * 30


def test_no_burst_before_the_base_has_enough_intervals_and_gaps_are_not_zeros():
    rule = BurstRule(factor=2.0, base_minutes=60, min_base_intervals=10)
    assert not burst_flags(_minutes(5), np.array([1.0, 1, 1, 1, 50]), rule).any()
    # Ten observed minutes then a 40-minute gap: the base is those ten, not zeros.
    epoch = np.r_[_minutes(10), 50 * 60.0]
    values = np.r_[np.full(10, 10.0), 15.0]
    assert not burst_flags(epoch, values, rule).any()
    assert burst_flags(epoch, np.r_[np.full(10, 10.0), 20.0], rule)[-1]


def _independent_flags(con: duckdb.DuckDBPyConnection, table: str, factor: float,
                       base_minutes: int, min_base: int) -> list[bool]:
    """The rule as one DuckDB window query: the median over the trailing window, excluding
    the interval itself."""
    rows = con.execute(f"""
        SELECT v >= {factor} * median(v) OVER w AND v > 0
               AND count(v) OVER w >= {min_base}
        FROM {table}
        WINDOW w AS (ORDER BY t RANGE BETWEEN {base_minutes * 60} PRECEDING AND 1 PRECEDING)
        ORDER BY t""").fetchall()
    return [bool(r[0]) for r in rows]


def test_bursts_of_the_azure_code_and_conversation_services():
    """Real per-second arrivals (Azure LLM inference trace, one hour): per 10 s, the code
    service (bursty by its own publication) is in bursts far more often than the
    conversation service, and each flag agrees with an independent window query."""
    rule = BurstRule(factor=2.0, base_minutes=5, min_base_intervals=10)
    share = {}
    con = duckdb.connect()
    for service in ("code", "conv"):
        path = DATA / "azure-llm" / f"AzureLLMInferenceTrace_{service}.csv"
        con.execute(f"""
            CREATE OR REPLACE TABLE arrivals AS
            WITH a AS (SELECT epoch(TIMESTAMP::TIMESTAMP) AS s FROM read_csv('{path}')),
            bins AS (SELECT range AS t FROM range(
                (SELECT floor(min(s) / 10)::BIGINT * 10 FROM a),
                (SELECT max(s) FROM a)::BIGINT + 1, 10))
            SELECT bins.t::DOUBLE AS t, count(a.s)::DOUBLE / 10 AS v
            FROM bins LEFT JOIN a ON floor(a.s / 10) * 10 = bins.t
            GROUP BY bins.t ORDER BY bins.t""")
        t, v = (np.array(c) for c in zip(*con.execute(
            "SELECT t, v FROM arrivals ORDER BY t").fetchall(), strict=True))
        flags = burst_flags(t, v, rule)
        assert flags.tolist() == _independent_flags(con, "arrivals", 2.0, 5, 10)
        share[service] = flags.mean()
    assert share["code"] > 2 * share["conv"]
    assert share["code"] > 0.05


def test_gpu_demand_bursts_of_alibaba_pods_agree_with_the_window_query():
    """GPU demand (duty cycle) of the pods of the Alibaba trace, sampled about once a minute:
    bursts are a minority of each pod's intervals, each one at least twice its hour's median."""
    path = DATA / "alibaba" / "pod_gpu_duty_cycle_anon.00.csv"
    con = duckdb.connect()
    pods = [r[0] for r in con.execute(
        f"SELECT container_ip FROM read_csv('{path}') GROUP BY 1 HAVING count(*) > 400 "
        "ORDER BY 1 LIMIT 12").fetchall()]
    assert len(pods) == 12
    rule = BurstRule(factor=2.0, base_minutes=60, min_base_intervals=10)
    flagged = 0
    for pod in pods:
        con.execute(f"""CREATE OR REPLACE TABLE demand AS
            SELECT timestamp_anon AS t, value / 100 AS v FROM read_csv('{path}')
            WHERE container_ip = '{pod}' ORDER BY t""")
        t, v = (np.array(c) for c in zip(*con.execute(
            "SELECT t, v FROM demand ORDER BY t").fetchall(), strict=True))
        flags = burst_flags(t, v, rule)
        assert flags.tolist() == _independent_flags(con, "demand", 2.0, 60, 10), pod
        assert flags.mean() < 0.5, pod
        flagged += int(flags.sum())
    assert flagged > 0


def _intervals(p95_calm: float, p95_burst: float) -> list[Interval]:
    """Two hours at 20 requests/min on 0.5 GPU, then 10 minutes at 80 requests/min on 1.6 GPUs
    with slower requests."""
    start = datetime(2026, 9, 1, tzinfo=UTC)
    out = []
    for m in range(130):
        burst = m >= 120
        n = 80 if burst else 20
        slow = p95_burst if burst else p95_calm
        # 95% of requests within `slow` seconds, the rest within twice that.
        buckets = [(slow / 2, 0), (slow, round(n * 0.95)), (slow * 2, n), (INF, n)]
        out.append(Interval(start + timedelta(minutes=m), 60.0, n, buckets,
                            (1.6 if burst else 0.5) * 60))
    return out


def test_a_tenant_whose_p95_in_bursts_exceeds_its_target_by_20pct_gets_a_dedicated_reservation():
    finding = endpoint_latency("pixel", "shared", "llama", "h100", Decimal("4"),
                               _intervals(3.0, 8.0), BurstRule())
    assert [e.intervals for e in finding.episodes] == [10]
    assert finding.episodes[0].start == datetime(2026, 9, 1, 2, tzinfo=UTC)
    assert finding.p95_in_bursts_s == pytest.approx(8.0)
    assert finding.p95_out_of_bursts_s == pytest.approx(3.0)
    assert finding.breached
    assert finding.burst_demand_gpus == pytest.approx(1.6)
    reservation = dedicated_reservation(finding, "team-pixel", {"h100": Decimal("2.10")}, "EUR")
    assert reservation is not None
    assert reservation.gpus == 2
    assert reservation.monthly_cost == Decimal("3066.00")  # 2 GPUs x 730 h x 2.10
    # In bursts no request is within 4 s (the first bucket, le = 4 s, holds none): all late.
    assert finding.requests_in_bursts == 800
    assert finding.late_requests_in_bursts == 800
    assert reservation.late_requests_per_month == round(800 * 730 / (130 / 60))
    recommendation = reservation.recommendation()
    assert (recommendation.tenant, recommendation.namespace, recommendation.recommended_gpus,
            recommendation.sla_class) == ("pixel", "team-pixel", 2, "latency-sensitive")


def test_within_the_margin_or_without_a_target_no_reservation():
    within = endpoint_latency("pixel", "shared", "llama", "h100", Decimal("4"),
                              _intervals(3.0, 4.8), BurstRule())
    assert not within.breached  # 4.8 s is exactly 1.2 x 4 s: not more than 20% above
    assert dedicated_reservation(within, "team-pixel", {"h100": Decimal(2)}, "EUR") is None
    undeclared = endpoint_latency("pixel", "shared", "llama", "h100", None,
                                  _intervals(3.0, 30.0), BurstRule())
    assert not undeclared.breached
    assert undeclared.late_requests_in_bursts == 0


def test_a_single_busy_minute_is_noise_not_a_burst_episode():
    intervals = _intervals(3.0, 3.0)[:121]  # two calm hours, then one minute at 4x
    finding = endpoint_latency("pixel", "shared", "llama", "h100", Decimal("4"), intervals,
                               BurstRule(min_episode_s=180))
    assert finding.episodes == ()
    assert finding.requests_in_bursts == 0
    assert finding.p95_in_bursts_s is None


CARDS = Path(__file__).resolve().parents[2] / "fixtures" / "rate-cards"


@pytest.mark.parametrize(("written", "expected"), [
    ('"6"', Decimal(6)), ('"0.350"', Decimal("0.350")), ("2", Decimal(2)),
])
def test_a_declared_p95_target_loads_as_exact_seconds(tmp_path, written, expected):
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANT.format(target=written))
    (tenant,) = load_tenants(path, load_rate_cards(CARDS / "good.yaml")).values()
    assert tenant.p95_latency_seconds == expected


@pytest.mark.parametrize(("written", "message"), [
    ("0.35", "must be a decimal number written as a string"),
    ('"0"', "must be above 0 seconds"),
    ('"-1"', "must be at least 0"),
    ('"350000"', "must be at most 86,400"),
    ('"fast"', "not a decimal number"),
])
def test_a_bad_p95_target_names_the_file_tenant_and_field(tmp_path, written, message):
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANT.format(target=written))
    with pytest.raises(ConfigError) as caught:
        load_tenants(path, load_rate_cards(CARDS / "good.yaml"))
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: tenants.pixel.p95_latency_seconds: {message}"), problem


TENANT = """tenants:
  pixel:
    plan: growth
    namespaces: [team-pixel]
    start: 2026-01-01
    p95_latency_seconds: {target}
"""
