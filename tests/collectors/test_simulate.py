from datetime import UTC, date, datetime

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from collectors import spool
from collectors.simulate import (
    GROWTH,
    INJECTED_SHIFTS,
    SHARED_ENDPOINT_TENANTS,
    SHARED_LULL_HOURS,
    SHARED_MODEL,
    SHARED_NAMESPACE,
    STEADY_TENANTS,
    TENANTS,
    Simulation,
    default_cluster,
    simulate,
    simulate_to_spool,
)
from models.ledger.usage import (
    GPU_SECONDS_TOLERANCE,
    IDLE_TENANT,
    LEDGER_SCHEMA,
    REQUEST_WORK_SCHEMA,
    SHARED_TENANT,
    UNATTRIBUTED_TENANT,
    validate_ledger,
)

START = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def month() -> Simulation:
    return Simulation(default_cluster(), START, 30)


@pytest.fixture(scope="module")
def day13(month: Simulation) -> pa.Table:
    return pa.concat_tables(month.node_days(13).values())


def gpus_per_day(sim: Simulation, days: list[int]) -> dict[tuple[str, int], float]:
    """Mean GPU-equivalents held per tenant and day (allocated GPU-seconds / 86400)."""
    out: dict[tuple[str, int], float] = {}
    con = duckdb.connect()
    for day in days:
        con.register("t", pa.concat_tables(sim.node_days(day).values()))
        for tenant, gpus in con.execute(
            "SELECT tenant, sum(allocated_gpu_seconds) / 86400 FROM t GROUP BY tenant"
        ).fetchall():
            out[tenant, day] = gpus
    return out


def test_cluster_has_the_described_shape():
    cluster = default_cluster()
    assert cluster.gpu_count == 64
    products = {(d.product, d.mig_profile) for p in cluster.pools for d in p.devices}
    assert products == {
        ("NVIDIA H100 80GB HBM3", None), ("NVIDIA H100 80GB HBM3", "3g.40gb"),
        ("NVIDIA H100 80GB HBM3", "2g.20gb"), ("NVIDIA H100 80GB HBM3", "1g.10gb"),
        ("NVIDIA A100-SXM4-80GB", None), ("NVIDIA L4", None), ("Tesla T4", None),
    }
    tenants = {w.tenant for p in cluster.pools for w in p.workloads}
    # kite/pixel/sable also run their own pods; sable only uses the shared endpoint.
    assert tenants | set(SHARED_ENDPOINT_TENANTS) == {*TENANTS, SHARED_TENANT, UNATTRIBUTED_TENANT}
    assert len(TENANTS) == 12
    assert default_cluster(4).gpu_count == 4 * 64


def test_same_seed_same_rows_other_seed_other_rows():
    def first_day(seed: int) -> list[pa.Table]:
        return [b.table for b in simulate(START, 1, seed=seed)]

    a, b, c = first_day(7), first_day(7), first_day(8)
    assert len(a) == len(b)
    assert all(x.equals(y) for x, y in zip(a, b, strict=True))
    assert not all(x.equals(y) for x, y in zip(a, c, strict=True))


def test_node_days_are_each_pools_rows_of_the_node_in_time_order():
    # The rows as the simulator made them before node_days sorted a whole day at once: each
    # pool's rows of the node, pools in order, then a stable sort by window_start.
    sim = Simulation(default_cluster(scale=2), START, 3)
    pools = [sim.pool_day(p, 2) for p in range(len(sim.cluster.pools))]
    days = sim.node_days(2)
    assert list(days) == sim.cluster.nodes
    for i, node in enumerate(sim.cluster.nodes):
        expected = pa.concat_tables(
            [t.filter(pa.array(node_of == i)) for t, node_of in pools]).sort_by("window_start")
        assert days[node].equals(expected), node


def test_gpu_seconds_are_conserved_per_device_and_interval(day13: pa.Table):
    con = duckdb.connect()
    con.register("t", day13)
    worst, devices_intervals, bad_equivalents = con.execute(
        """
        SELECT max(abs(allocated - capacity)), count(*), sum(CAST(n_eq > 1 AS INT)) FROM (
            SELECT gpu_uuid, window_start, sum(allocated_gpu_seconds) AS allocated,
                   max(duration_s * gpu_equivalents) AS capacity,
                   count(DISTINCT gpu_equivalents) AS n_eq
            FROM t GROUP BY gpu_uuid, window_start)
        """
    ).fetchone()
    assert worst < GPU_SECONDS_TOLERANCE
    assert devices_intervals == 76 * 1440  # 60 whole GPUs + 16 MIG instances, every minute
    assert bad_equivalents == 0


def test_rows_pass_ledger_validation(day13: pa.Table):
    assert day13.schema.equals(LEDGER_SCHEMA)
    # Every pool and row kind appears within an hour; validation is per row, so a sample of
    # the morning (notebooks, batch, idle, time-sliced) stands for the day.
    sample = day13.filter(pa.compute.equal(
        pa.compute.hour(day13["window_start"]), 9)).to_pylist()
    assert validate_ledger(sample) == []
    assert pa.compute.count_distinct(day13["sample_id"]).as_py() == day13.num_rows
    kinds = set(day13["workload_kind"].to_pylist())
    assert {"inference", "batch", "fine-tuning", "notebook", "idle"} <= kinds
    idle = day13.filter(pa.compute.equal(day13["tenant"], IDLE_TENANT))
    assert pa.compute.max(idle["used_gpu_seconds"]).as_py() == 0


def test_time_sliced_pods_hold_quarters_and_halves(day13: pa.Table):
    t4 = day13.filter(pa.compute.equal(day13["gpu_product"], "Tesla T4"))
    shares = {round(r["allocated_gpu_seconds"] / r["duration_s"], 9)
              for r in t4.select(["allocated_gpu_seconds", "duration_s", "tenant"]).to_pylist()
              if r["tenant"] == "terra"}
    assert shares == {0.5, 0.25}


def test_injected_shifts_and_growth_are_in_the_data(month: Simulation):
    quanta_day, q_before, q_after = INJECTED_SHIFTS["quanta"]
    lumen_day, l_before, l_after = INJECTED_SHIFTS["lumen"]
    days = [quanta_day - 1, quanta_day, lumen_day - 1, lumen_day, 0, 29]
    gpus = gpus_per_day(month, days)
    assert gpus["quanta", quanta_day - 1] == pytest.approx(q_before)
    assert gpus["quanta", quanta_day] == pytest.approx(q_after)
    assert gpus["lumen", lumen_day - 1] == pytest.approx(l_before)
    assert gpus["lumen", lumen_day] == pytest.approx(l_after)
    first, last = GROWTH["helix"]
    assert gpus["helix", 0] == pytest.approx(first, abs=0.5)
    assert gpus["helix", 29] == pytest.approx(last, abs=0.5)
    for tenant in ("acme", "terra", "kite"):
        assert tenant in STEADY_TENANTS
        assert gpus[tenant, 0] == pytest.approx(gpus[tenant, 29])
    # nimbus: 8 GPUs from 01:00 to 06:00 UTC = 40 GPU-hours a day.
    assert gpus["nimbus", 0] == pytest.approx(8 * 5 / 24)


def test_orbit_is_bursty_around_200_jobs_a_minute(day13: pa.Table):
    con = duckdb.connect()
    con.register("t", day13)
    mean, peak = con.execute(
        """SELECT avg(g), max(g) FROM (SELECT window_start, sum(allocated_gpu_seconds) / 60 g
           FROM t WHERE tenant = 'orbit' GROUP BY window_start)"""
    ).fetchone()
    # 200 jobs/min x 1 s each = 3.3 GPUs on average; bursts at 3x the rate reach ~10.
    assert 2.5 < mean < 4.5
    assert peak > 2.5 * mean


def test_shared_endpoint_rows_and_request_work(month: Simulation, day13: pa.Table):
    shared = day13.filter(pa.compute.equal(day13["tenant"], SHARED_TENANT))
    assert set(shared["namespace"].to_pylist()) == {SHARED_NAMESPACE}
    assert set(shared["model"].to_pylist()) == {SHARED_MODEL}
    assert pa.compute.sum(shared["allocated_gpu_seconds"]).as_py() == pytest.approx(2 * 86400)

    requests = month.requests_day(0, 13)
    assert requests.schema.equals(REQUEST_WORK_SCHEMA)
    assert set(requests["tenant"].to_pylist()) == set(SHARED_ENDPOINT_TENANTS)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("r", requests)
    # Shares are of the work (prefill + decode); request seconds add queueing, which a
    # tenant's bursts raise for its own requests most.
    totals = dict(con.execute(
        "SELECT tenant, sum(prefill_seconds + decode_seconds) FROM r GROUP BY tenant").fetchall())
    overall = sum(totals.values())
    for tenant, share in SHARED_ENDPOINT_TENANTS.items():
        assert totals[tenant] / overall == pytest.approx(share, abs=0.05)
    busy_minutes = con.execute("SELECT count(DISTINCT window_start) FROM r").fetchone()[0]
    lull = con.execute(
        f"SELECT count(*) FROM r WHERE hour(window_start) >= {SHARED_LULL_HOURS[0]} "
        f"AND hour(window_start) < {SHARED_LULL_HOURS[1]}").fetchone()[0]
    assert lull == 0
    assert busy_minutes <= 1440 - 60
    assert pa.compute.min(requests["request_seconds"]).as_py() > 0
    # Tokens, phases and latency histograms of each interval agree with its requests.
    for row in requests.slice(0, 200).to_pylist():
        assert row["input_tokens"] > 0
        assert row["output_tokens"] >= 0
        assert row["prefill_seconds"] + row["decode_seconds"] <= row["request_seconds"]
        for column in ("latency_buckets", "ttft_buckets"):
            counts = [b["count"] for b in row[column]]
            assert counts == sorted(counts)  # cumulative
            assert row[column][-1] == {"le": float("inf"), "count": row["requests"]}


def test_unattributed_pods_appear(month: Simulation):
    seen = sum(
        pa.compute.sum(pa.compute.equal(t["tenant"], UNATTRIBUTED_TENANT)).as_py() or 0
        for day in range(5) for t in month.node_days(day).values()
    )
    assert seen > 0


def test_scale_copies_nodes_and_tenants():
    cluster = default_cluster(2)
    assert len(cluster.nodes) == 2 * len(default_cluster().nodes)
    tenants = {w.tenant for p in cluster.pools for w in p.workloads}
    assert {"acme", "acme-1", "quanta-1"} <= tenants


def test_start_must_be_a_utc_midnight():
    with pytest.raises(ValueError, match="midnight"):
        next(simulate(datetime(2026, 10, 1, 5, tzinfo=UTC), 1))
    with pytest.raises(ValueError, match="divide an hour"):
        next(simulate(START, 1, interval_s=7))


def test_simulate_to_spool_writes_one_file_per_node_and_hour(tmp_path):
    summary = simulate_to_spool(tmp_path, date(2026, 10, 1), 1, interval_s=300)
    usage = spool.day_files(tmp_path, "usage", date(2026, 10, 1))
    requests = spool.day_files(tmp_path, "requests", date(2026, 10, 1))
    assert len(usage) == 8 * 24
    assert len(requests) == 24 - (SHARED_LULL_HOURS[1] - SHARED_LULL_HOURS[0])
    assert summary.files == len(usage) + len(requests)
    assert sum(pq.read_metadata(p).num_rows for p in usage) == summary.usage_rows
    # Written again (a rerun), the spool holds the same files, not a second copy.
    simulate_to_spool(tmp_path, date(2026, 10, 1), 1, interval_s=300)
    assert spool.day_files(tmp_path, "usage", date(2026, 10, 1)) == usage
