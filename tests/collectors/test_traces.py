"""Trace importers on small real slices (tests/fixtures/traces) and on the full shared files.

Expected figures come from the CSV rows themselves, read here with the csv module and
models.ledger.usage.split_by_hour, never from the importer's own output."""

from __future__ import annotations

import csv
import shutil
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from collectors.traces import (
    ALIBABA_2023_PRODUCTS,
    IMPORTERS,
    OVERFLOW_NODE,
    TRACE_START,
    AzureLLM,
    ReconciliationError,
    TraceError,
    expected_gpu_hours,
    reconcile,
    spool_gpu_hours,
)
from models.ledger.usage import (
    IDLE_TENANT,
    SHARED_IDLE_TENANT,
    SHARED_TENANT,
    split_by_hour,
    validate_ledger,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"
HOUR = 3600.0


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def ledger(spool: Path, where: str = "true") -> list[tuple]:
    """Ledger rows of a spool as (tenant, gpu_uuid, node, window_start, duration_s,
    gpu_equivalents, allocated_gpu_seconds, pod, gpu_product)."""
    with duckdb.connect() as con:
        return con.execute(
            "SELECT tenant, gpu_uuid, node, window_start, duration_s, gpu_equivalents, "
            "allocated_gpu_seconds, pod, gpu_product "
            f"FROM read_parquet('{spool}/usage/**/*.parquet', hive_partitioning = false) "
            f"WHERE {where}"
        ).fetchall()


def sample_problems(spool: Path, limit: int = 3000) -> list:
    with duckdb.connect() as con:
        table = con.sql(
            f"SELECT * FROM read_parquet('{spool}/usage/**/*.parquet', hive_partitioning = false) "
            f"USING SAMPLE {limit} ROWS"
        ).to_arrow_table()
    assert table.num_rows > 0
    return validate_ledger(table.to_pylist())


def at(seconds: float) -> datetime:
    return TRACE_START + timedelta(seconds=seconds)


def device_hours(rows: list[tuple]) -> dict[tuple[str, datetime], float]:
    """Allocated GPU-seconds (all tenants) per device and UTC hour."""
    total: dict[tuple[str, datetime], float] = defaultdict(float)
    for _, uuid, _, start, _, _, allocated, _, _ in rows:
        total[(uuid, start.replace(minute=0, second=0, microsecond=0))] += allocated
    return total


# ---------------------------------------------------------------------------------------------
# alibaba-2025


@pytest.fixture(scope="module")
def dlrm(tmp_path_factory: pytest.TempPathFactory):
    spool = tmp_path_factory.mktemp("dlrm")
    summary = IMPORTERS["alibaba-2025"].write(FIXTURES, spool)
    csv_rows = read_rows(FIXTURES / "alibaba" / "disaggregated_DLRM_trace.csv")
    return spool, summary, csv_rows


def _dlrm_interval(row: dict[str, str], end: float) -> tuple[float, float]:
    return (float(row["scheduled_time"] or 0), float(row["deletion_time"] or end))


def _dlrm_end(csv_rows: list[dict[str, str]]) -> float:
    return max(float(r[c]) for r in csv_rows
               for c in ("creation_time", "scheduled_time", "deletion_time") if r[c])


def test_dlrm_rows_are_hour_pieces_of_each_gpu_instance(dlrm):
    spool, summary, csv_rows = dlrm
    end = _dlrm_end(csv_rows)
    pieces = 0
    for row in csv_rows:
        s, e = _dlrm_interval(row, end)
        pieces += int(row["gpu_request"]) * len(split_by_hour(at(s), at(e)))
    assert pieces > 0
    assert summary.rows == pieces == len(ledger(spool))
    # An instance scheduled at the slice's last instant (app_88) holds nothing.
    gpu_apps = {r["app_name"] for r in csv_rows if int(r["gpu_request"]) > 0
                and _dlrm_interval(r, end)[1] > _dlrm_interval(r, end)[0]}
    assert summary.tenants == len(gpu_apps)
    assert {r[0] for r in ledger(spool)} == gpu_apps
    assert summary.end == at(end)


def test_dlrm_empty_times_count_from_trace_start_and_to_trace_end(dlrm):
    spool, _, csv_rows = dlrm
    end = _dlrm_end(csv_rows)
    hn = [r for r in csv_rows if r["role"] == "HN"]
    both_empty = next(r for r in hn if not r["scheduled_time"] and not r["deletion_time"])
    only_deleted = next(r for r in hn if not r["scheduled_time"] and r["deletion_time"])
    only_scheduled = next(r for r in hn if r["scheduled_time"] and not r["deletion_time"])
    for row, (s, e) in (
        (both_empty, (0.0, end)),
        (only_deleted, (0.0, float(only_deleted["deletion_time"]))),
        (only_scheduled, (float(only_scheduled["scheduled_time"]), end)),
    ):
        rows = ledger(spool, f"pod = '{row['instance_sn']}'")
        first = min(r[3] for r in rows)
        last = max(r[3] + timedelta(seconds=r[4]) for r in rows)
        assert (first, last) == (at(s), at(e)), row["instance_sn"]
        assert sum(r[6] for r in rows) == pytest.approx(e - s)


def test_dlrm_no_device_holds_more_than_one_gpu(dlrm):
    spool, _, _ = dlrm
    rows = ledger(spool)
    assert all(r[5] == 1.0 and r[6] <= r[4] <= HOUR for r in rows)
    assert max(device_hours(rows).values()) <= HOUR
    assert {r[8] for r in rows} == {"NVIDIA A10"}


def test_dlrm_rows_validate_and_reconcile(dlrm):
    spool, summary, _ = dlrm
    assert sample_problems(spool) == []
    report = reconcile(expected_gpu_hours("alibaba-2025", FIXTURES), spool_gpu_hours(spool))
    assert report.ok
    assert report.total.billed_gpu_hours == pytest.approx(summary.gpu_hours)


# ---------------------------------------------------------------------------------------------
# alibaba-2023 (one import of the slice spans the trace's 149 days: ~3,600 hourly files)


@pytest.fixture(scope="module")
def openb(tmp_path_factory: pytest.TempPathFactory):
    spool = tmp_path_factory.mktemp("openb")
    summary = IMPORTERS["alibaba-2023"].write(FIXTURES, spool)
    pods = read_rows(FIXTURES / "alibaba" / "openb_pod_list_default.csv")
    nodes = read_rows(FIXTURES / "alibaba" / "openb_node_list_gpu_node.csv")
    return spool, summary, pods, nodes


def _openb_end(pods: list[dict[str, str]]) -> float:
    return max(float(p[c]) for p in pods
               for c in ("creation_time", "deletion_time", "scheduled_time") if p[c])


@pytest.mark.slow
def test_openb_conserves_every_listed_gpu_every_hour(openb):
    spool, _, pods, nodes = openb
    end = _openb_end(pods)
    hours = split_by_hour(at(0), at(end))
    per_device = device_hours(ledger(spool))
    devices = {uuid for uuid, _ in per_device}
    assert len(devices) == sum(int(n["gpu"]) for n in nodes)
    assert len(per_device) == len(devices) * len(hours)
    expected = {start: seconds for start, seconds in hours}
    assert hours[-1][1] == end % HOUR  # the trace ends mid-hour
    for (uuid, hour), seconds in per_device.items():
        assert seconds == pytest.approx(expected[hour], abs=1e-6), (uuid, hour)


@pytest.mark.slow
def test_openb_shares_never_exceed_a_gpu_at_any_instant(openb):
    spool, _, pods, _ = openb
    share = {p["name"]: int(p["gpu_milli"]) for p in pods}
    end = _openb_end(pods)
    # Rows share their device-hour's window and the device's 1.0 GPU-equivalents; the pod's
    # fraction of the GPU and of the hour is in its allocated seconds. The instants a pod
    # held its devices come from the trace itself.
    held = {p["name"]: (at(float(p["scheduled_time"])),
                        at(float(p["deletion_time"]) if p["deletion_time"] else end))
            for p in pods if p["scheduled_time"]}
    span: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for _, uuid, _, _start, duration, equivalents, allocated, pod, _ in ledger(
        spool, f"tenant != '{IDLE_TENANT}'"
    ):
        assert equivalents == 1.0
        assert allocated <= duration * share[pod] / 1000 + 1e-6
        span[(uuid, pod)] = held[pod]
    events: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    for (uuid, pod), (lo, hi) in span.items():
        events[uuid] += [(lo, share[pod]), (hi, -share[pod])]
    shared_devices = 0
    for uuid, changes in events.items():
        load = peak = 0
        for _, delta in sorted(changes, key=lambda c: (c[0], c[1])):
            load += delta
            peak = max(peak, load)
        assert peak <= 1000, uuid
        shared_devices += sum(1 for _, d in changes if d > 0) > 1 and peak > 0
    fractional = [p for p in pods if p["num_gpu"] == "1" and int(p["gpu_milli"]) < 1000]
    assert fractional
    assert shared_devices > 0


@pytest.mark.slow
def test_openb_pods_placement_tenants_and_products(openb):
    spool, summary, pods, nodes = openb
    rows = ledger(spool, f"tenant != '{IDLE_TENANT}'")
    devices_of: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for _tenant, uuid, node, _s, _d, _e, _a, pod, _p in rows:
        devices_of[pod].add((node, uuid))
    for pod in pods:
        gpus = int(pod["num_gpu"])
        if gpus == 0 or not pod["scheduled_time"] or pod["scheduled_time"] == pod["deletion_time"]:
            assert pod["name"] not in devices_of
            continue
        placed = devices_of[pod["name"]]
        assert len(placed) == gpus, pod["name"]
        assert len({node for node, _ in placed}) == 1  # a multi-GPU pod sits on one node
    assert any(int(p["num_gpu"]) > 1 for p in pods)
    never = sum(1 for p in pods if int(p["num_gpu"]) > 0 and not p["scheduled_time"])
    assert summary.notes[0].startswith(f"{never} GPU pods never scheduled")
    assert {r[0] for r in rows} == {f"qos-{p['qos'].lower()}" for p in pods
                                    if int(p["num_gpu"]) > 0 and p["scheduled_time"]}
    model_of = {n["sn"]: ALIBABA_2023_PRODUCTS[n["model"]] for n in nodes}
    assert all(r[8] == model_of[r[2]] for r in ledger(spool))


@pytest.mark.slow
def test_openb_rows_validate_and_reconcile_with_idle(openb):
    spool, summary, _, _ = openb
    assert sample_problems(spool) == []
    expected = expected_gpu_hours("alibaba-2023", FIXTURES)
    assert IDLE_TENANT in expected
    report = reconcile(expected, spool_gpu_hours(spool))
    assert report.ok
    assert summary.idle_gpu_hours == pytest.approx(expected[IDLE_TENANT])


@pytest.mark.slow
def test_openb_pods_that_do_not_fit_go_to_an_overflow_node(tmp_path: Path):
    data = tmp_path / "data"
    (data / "alibaba").mkdir(parents=True)
    shutil.copy(FIXTURES / "alibaba" / "openb_pod_list_default.csv", data / "alibaba")
    # The slice's nodes without its G2 ones: 25 GPUs for a peak of ~38 in use.
    nodes = (FIXTURES / "alibaba" / "openb_node_list_gpu_node.csv").read_text().splitlines()
    (data / "alibaba" / "openb_node_list_gpu_node.csv").write_text(
        "\n".join(n for n in nodes if not n.endswith(",G2")) + "\n"
    )
    spool = tmp_path / "spool"
    summary = IMPORTERS["alibaba-2023"].write(data, spool)
    assert any("did not fit" in note for note in summary.notes)
    rows = ledger(spool)
    assert any(r[2] == OVERFLOW_NODE for r in rows)
    hour_length = dict(split_by_hour(at(0), at(_openb_end(read_rows(
        data / "alibaba" / "openb_pod_list_default.csv")))))
    for (uuid, hour), seconds in device_hours(rows).items():  # overflow devices conserve too
        assert seconds == pytest.approx(hour_length[hour], abs=1e-6), (uuid, hour)
    expected = expected_gpu_hours("alibaba-2023", data)
    billed = spool_gpu_hours(spool)
    pods_only = {t: h for t, h in expected.items() if t != IDLE_TENANT}
    assert reconcile(pods_only, {t: h for t, h in billed.items() if t != IDLE_TENANT}).ok
    # The overflow devices are capacity the node list does not have: idle says so.
    assert billed[IDLE_TENANT] > expected[IDLE_TENANT]


def test_openb_unknown_gpu_model_is_named_with_its_row(tmp_path: Path):
    data = tmp_path / "data"
    (data / "alibaba").mkdir(parents=True)
    shutil.copy(FIXTURES / "alibaba" / "openb_pod_list_default.csv", data / "alibaba")
    (data / "alibaba" / "openb_node_list_gpu_node.csv").write_text(
        "sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,P100\nn1,64000,262144,2,X9\n"
    )
    with pytest.raises(TraceError, match=r"openb_node_list_gpu_node.csv: row 3: model: .*'X9'"):
        IMPORTERS["alibaba-2023"].write(data, tmp_path / "spool")


# ---------------------------------------------------------------------------------------------
# alibaba-genai


@pytest.fixture(scope="module")
def genai(tmp_path_factory: pytest.TempPathFactory):
    spool = tmp_path_factory.mktemp("genai")
    summary = IMPORTERS["alibaba-genai"].write(FIXTURES, spool)
    requests = []
    for r in read_rows(FIXTURES / "alibaba" / "lora_request_trace.csv"):
        if float(r["exec_time_seconds"]) > 0:
            stamp = datetime.fromisoformat(r["gmt_create"])
            requests.append((r["groupId"], stamp, stamp + timedelta(seconds=float(
                r["exec_time_seconds"]))))
    first_day = min(s for _, s, _ in requests).replace(hour=0, minute=0, second=0)
    shifted = [(g, at((s - first_day).total_seconds()), at((e - first_day).total_seconds()))
               for g, s, e in requests]
    return spool, summary, shifted


def _work(spool: Path) -> list[tuple]:
    with duckdb.connect() as con:
        return con.execute(
            "SELECT tenant, window_start, duration_s, request_seconds, namespace, model FROM "
            f"read_parquet('{spool}/requests/**/*.parquet', hive_partitioning = false)"
        ).fetchall()


def test_genai_endpoint_holds_peak_concurrency_every_hour(genai):
    spool, summary, requests = genai
    peak = max(sum(1 for _, s, e in requests if s <= t < e) for _, t, _ in requests)
    first = min(s for _, s, _ in requests).replace(minute=0, second=0)
    last = max(e for _, _, e in requests)
    hours = split_by_hour(first, last)
    rows = ledger(spool)
    assert {r[0] for r in rows} == {SHARED_TENANT}
    assert len({r[1] for r in rows}) == peak
    assert len(rows) == peak * len(hours) == summary.rows
    assert all(r[4] == r[6] == HOUR and r[5] == 1.0 for r in rows)
    assert summary.notes == (f"endpoint of {peak} GPUs (peak concurrent requests)",)


def test_genai_request_work_is_execution_seconds_split_at_hours(genai):
    spool, summary, requests = genai
    expected: dict[tuple[str, datetime], float] = defaultdict(float)
    crossing = 0
    for group, s, e in requests:
        pieces = split_by_hour(s, e)
        crossing += len(pieces) > 1
        for start, seconds in pieces:
            expected[(group, start.replace(minute=0, second=0))] += seconds
    assert crossing > 0  # the slice has requests running over an hour boundary
    work = _work(spool)
    assert summary.request_rows == len(work) == len(expected)
    assert {(t, w): pytest.approx(s) for t, w, _, s, _, _ in work} == expected
    assert {(ns, m, d) for _, _, d, _, ns, m in work} == {("genai-shared", "stable-diffusion",
                                                            HOUR)}
    shared = {(r[3]) for r in ledger(spool)}
    assert {w for _, w, *_ in work} <= shared  # every work hour has endpoint capacity


def test_genai_apportioned_from_spool_reconciles_with_the_csv(genai):
    spool, summary, _ = genai
    assert sample_problems(spool) == []
    # Apportion the spool's __shared__ hours by its request work (the pipeline's rule),
    # independently of expected_gpu_hours' query over the CSV.
    with duckdb.connect() as con:
        rows = con.execute(f"""
            WITH cap AS (SELECT window_start, sum(allocated_gpu_seconds) AS s
                         FROM read_parquet('{spool}/usage/**/*.parquet') GROUP BY 1),
            work AS (SELECT window_start, tenant, request_seconds
                     FROM read_parquet('{spool}/requests/**/*.parquet')),
            total AS (SELECT window_start, sum(request_seconds) AS w FROM work GROUP BY 1)
            SELECT tenant, sum(cap.s * request_seconds / total.w) / 3600
            FROM work JOIN total USING (window_start) JOIN cap USING (window_start)
            GROUP BY tenant
            UNION ALL
            SELECT '{SHARED_IDLE_TENANT}', coalesce(sum(s), 0) / 3600 FROM cap
            WHERE window_start NOT IN (SELECT window_start FROM total)
        """).fetchall()
    billed = {t: h for t, h in rows}
    expected = expected_gpu_hours("alibaba-genai", FIXTURES)
    assert reconcile(expected, billed).ok
    assert sum(expected.values()) == pytest.approx(summary.gpu_hours)
    assert billed[SHARED_IDLE_TENANT] > 0  # the slice has hours with no requests


# ---------------------------------------------------------------------------------------------
# helios


@pytest.fixture(scope="module")
def helios(tmp_path_factory: pytest.TempPathFactory):
    spool = tmp_path_factory.mktemp("helios")
    summary = IMPORTERS["helios"].write(FIXTURES, spool)
    vcs = {p.name.split("_")[0]: read_rows(p)
           for p in sorted((FIXTURES / "helios" / "earth_vcs").glob("*.csv"))}
    return spool, summary, vcs


def test_helios_running_minutes_per_vc_and_hour(helios):
    spool, summary, vcs = helios
    rows = ledger(spool)
    for vc, minutes in vcs.items():
        expected: dict[datetime, float] = defaultdict(float)
        for m in minutes:
            offset = datetime.fromisoformat(m["time"]) - datetime(2020, 5, 1)  # noqa: DTZ001
            expected[at(offset.total_seconds()).replace(minute=0)] += 60 * int(
                m["running_gpu_num"])
        got: dict[datetime, float] = defaultdict(float)
        for r in rows:
            if r[0] == vc:
                got[r[3]] += r[6]
        assert got == expected, vc
    assert summary.tenants == len(vcs)
    assert {r[8] for r in rows} == {"Tesla V100-SXM2-32GB"}


def test_helios_quota_devices_conserve_each_hour(helios):
    spool, _, vcs = helios
    rows = ledger(spool)
    per_device = device_hours(rows)
    for vc, minutes in vcs.items():
        quota = int(minutes[0]["total_gpu_num"])
        present: dict[datetime, int] = defaultdict(int)
        for m in minutes:
            offset = datetime.fromisoformat(m["time"]) - datetime(2020, 5, 1)  # noqa: DTZ001
            present[at(offset.total_seconds()).replace(minute=0)] += 1
        mine = {k: v for k, v in per_device.items() if k[0].startswith(f"GPU-{vc}-")}
        assert len({uuid for uuid, _ in mine}) == quota
        assert len(mine) == quota * len(present)
        for (uuid, hour), seconds in mine.items():
            assert seconds == 60 * present[hour], (uuid, hour)
    assert min(present.values()) < 60  # the slice ends mid-hour


def test_helios_validates_and_reconciles(helios):
    spool, _, _ = helios
    assert sample_problems(spool) == []
    assert reconcile(expected_gpu_hours("helios", FIXTURES), spool_gpu_hours(spool)).ok


def test_helios_running_above_quota_is_rejected_with_its_row(tmp_path: Path):
    folder = tmp_path / "helios" / "earth_vcs"
    folder.mkdir(parents=True)
    source = FIXTURES / "helios" / "earth_vcs" / "vcJLV_cluster_sequence_vc.csv"
    lines = source.read_text().splitlines()
    fields = lines[3].split(",")
    fields[8] = "17"  # running_gpu_num over the quota of 16
    lines[3] = ",".join(fields)
    (folder / source.name).write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceError, match=r"vcJLV_cluster_sequence_vc.csv: row 4: "
                                         r"running_gpu_num 17 exceeds .* quota"):
        IMPORTERS["helios"].write(tmp_path, tmp_path / "spool")


def test_missing_column_names_the_file_and_column(tmp_path: Path):
    (tmp_path / "alibaba").mkdir()
    (tmp_path / "alibaba" / "disaggregated_DLRM_trace.csv").write_text(
        "instance_sn,app_name,gpu_request\ni0,app_0,1\n"
    )
    with pytest.raises(TraceError, match=r"disaggregated_DLRM_trace.csv: missing column\(s\) "
                                         r"creation_time, scheduled_time, deletion_time"):
        IMPORTERS["alibaba-2025"].write(tmp_path, tmp_path / "spool")


# ---------------------------------------------------------------------------------------------
# reconcile


def test_reconcile_tolerance_is_one_thousandth_of_a_percent():
    assert reconcile({"a": 100_000.0, "b": 5.0}, {"a": 100_000.9, "b": 5.0}).ok
    with pytest.raises(ReconciliationError) as failure:
        reconcile({"a": 100_000.0, "b": 5.0}, {"a": 100_001.1, "b": 5.0})
    assert [line.tenant for line in failure.value.report.failures] == ["a", "TOTAL"]
    assert "MISMATCH" in str(failure.value)


def test_reconcile_reports_every_mismatch_including_missing_tenants():
    report = reconcile({"a": 10.0, "b": 0.0}, {"a": 10.0, "c": 1.0}, strict=False)
    assert not report.ok
    assert [line.tenant for line in report.failures] == ["c", "TOTAL"]
    report = reconcile({"a": 10.0, "x": 1.0}, {"a": 11.0}, strict=False)
    assert [line.tenant for line in report.failures] == ["a", "x"]  # total matches: 11 = 11


# ---------------------------------------------------------------------------------------------
# Full shared files


@pytest.mark.slow
@pytest.mark.parametrize("name", ["helios", "alibaba-genai", "alibaba-2025"])
def test_full_trace_reconciles(name: str, shared_data: Path, tmp_path: Path):
    summary = IMPORTERS[name].write(shared_data, tmp_path)
    expected = expected_gpu_hours(name, shared_data)
    if name == "alibaba-genai":
        assert sum(expected.values()) == pytest.approx(summary.gpu_hours, rel=1e-9)
        assert len([t for t in expected if t != SHARED_IDLE_TENANT]) == summary.tenants
    else:
        assert reconcile(expected, spool_gpu_hours(tmp_path)).ok
    assert sample_problems(tmp_path) == []


@pytest.mark.parametrize(("row", "message"), [
    ("2023-11-16 18:15:50.9951690,-3,10", r"row 3: ContextTokens: not a token count: -3"),
    ("2023-11-16 18:15:50.9951690,12,lots", r"row 3: GeneratedTokens: not a token count"),
    ("yesterday,12,10", r"row 3: TIMESTAMP: not a timestamp: 'yesterday'"),
])
def test_azure_llm_bad_rows_name_file_row_and_field(tmp_path: Path, row: str,
                                                    message: str) -> None:
    folder = tmp_path / "azure-llm"
    folder.mkdir()
    header = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    good = "2023-11-16 18:15:46.6805900,374,44\n"
    (folder / "AzureLLMInferenceTrace_code.csv").write_text(header + good)
    (folder / "AzureLLMInferenceTrace_conv.csv").write_text(header + good + row + "\n")
    with pytest.raises(TraceError, match=r"AzureLLMInferenceTrace_conv.csv: " + message):
        AzureLLM().write(tmp_path, tmp_path / "spool")
    assert not (tmp_path / "spool").exists()


def test_azure_llm_request_work_per_tenant_and_minute(tmp_path: Path) -> None:
    folder = tmp_path / "azure-llm"
    folder.mkdir()
    header = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    (folder / "AzureLLMInferenceTrace_code.csv").write_text(
        header + "2023-11-16 18:15:01.5,1000,10\n2023-11-16 18:15:59.9,3000,30\n")
    (folder / "AzureLLMInferenceTrace_conv.csv").write_text(
        header + "2023-11-16 18:17:00.0,500,200\n")
    summary = AzureLLM().write(tmp_path, tmp_path / "spool")
    con = duckdb.connect()
    work = con.execute(
        "SELECT tenant, minute(window_start), requests, input_tokens, output_tokens, "
        "prefill_seconds, decode_seconds FROM read_parquet($1) ORDER BY 2",
        [str(tmp_path / "spool" / "requests" / "**" / "*.parquet")]).fetchall()
    assert [w[:5] for w in work] == [("code", 15, 2, 4000, 40), ("conversation", 17, 1, 500, 200)]
    assert work[0][5] == pytest.approx(4000 * 0.0003)
    assert work[1][6] == pytest.approx(200 * 0.0013)
    # One 8-GPU server suffices; held for minutes 18:15..18:17, the idle minute 18:16 included.
    assert summary.gpu_hours == pytest.approx(8 * 3 / 60)
