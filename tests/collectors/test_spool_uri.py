"""The spool at a URI: the same batches written to a local folder, a `file://` URI and a real
S3 wire-protocol server (moto's, on 127.0.0.1) give the same files, days and ledger rows."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cli.collect import collect
from collectors import spool
from collectors.simulate import SOURCE, Batch, simulate
from models.billing.rate_cards import load_rate_cards, rate_card_for
from models.ledger import warehouse
from models.ledger.usage import LEDGER_SCHEMA
from pipelines.ingest.assets import gpu_usage_ledger
from pipelines.ingest.schedules import late_spool_files
from pipelines.resources import BillingConfigResource, SpoolResource, WarehouseResource

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
DAY = date(2026, 9, 1)
MOTO_SERVER = Path(sys.executable).parent / "moto_server"


@pytest.fixture(scope="module")
def batches() -> list[Batch]:
    # The first six hours of a simulated day of the default cluster at 10-minute samples, and
    # the first hour of the next day: two days in the spool, usage and shared-endpoint requests.
    start = datetime(2026, 9, 1, tzinfo=UTC)
    keep = [(start, start + timedelta(hours=6)),
            (start + timedelta(days=1), start + timedelta(days=1, hours=1))]
    return [b for b in simulate(start, 2, interval_s=600)
            if any(a <= b.table["window_start"][0].as_py() < z for a, z in keep)]


def write_all(root: spool.SpoolLocation, batches: list[Batch]) -> list[spool.SpoolLocation]:
    return [f for b in batches
            for f in spool.write_batch(root, b.table, kind=b.kind, source=SOURCE, node=b.node,
                                       batch=b.batch)]


def ledger_rows(root: spool.SpoolLocation) -> tuple[list[tuple[object, ...]], int]:
    """The day's ledger as the ingest asset builds it, and the number of staged request rows."""
    con = warehouse.connect()
    warehouse.create_schema(con)
    loaded = load(con, root)
    rows = con.execute("SELECT * FROM ledger ORDER BY sample_id").fetchall()
    con.close()
    return rows, loaded.request_rows


def load(con, root: spool.SpoolLocation) -> warehouse.Load:  # type: ignore[no-untyped-def]
    """DAY of the spool at `root` into the warehouse, as the ingest asset reads it."""
    return warehouse.load_day(
        con, DAY, rate_card_for(load_rate_cards(DEMO / "rate-card.yaml"), DAY),
        usage=spool.scan(spool.day_files(root, "usage", DAY), "usage"),
        requests=spool.scan(spool.day_files(root, "requests", DAY), "requests"))


def assert_same_rows(a: list[tuple[object, ...]], b: list[tuple[object, ...]]) -> None:
    # Shared-endpoint shares are float sums that DuckDB adds in thread order
    # (models/ledger/sql/apportion.sql), so the last bit differs between any two runs, even over
    # the same folder; everything else must be equal.
    assert len(a) == len(b)
    for row_a, row_b in zip(a, b, strict=True):
        assert len(row_a) == len(row_b)
        for x, y in zip(row_a, row_b, strict=True):
            if isinstance(x, float) and isinstance(y, float):
                assert math.isclose(x, y, rel_tol=1e-12), (row_a, row_b)
            else:
                assert x == y, (row_a, row_b)


def expected_sample_ids(batches: list[Batch], kind: str) -> set[str]:
    return {s for b in batches if b.kind == kind
            for s, t in zip(b.table["sample_id"].to_pylist(),
                            b.table["window_start"].to_pylist(), strict=True)
            if t.date() == DAY}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A real S3 server (moto) on 127.0.0.1 and a free port, stopped by its PID."""
    if not MOTO_SERVER.exists():
        pytest.skip("moto[server] is not installed (dev dependency for the S3 tests)")
    port = free_port()
    server = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"moto_server did not listen on {port}") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        os.kill(server.pid, 15)
        server.wait(timeout=10)


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
           ) -> str:
    """A fresh bucket; returns the spool URI (endpoint and region in the URI's query)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    query = f"endpoint_override={s3_endpoint}&scheme=http&region=us-east-1"
    name = request.node.name.replace("_", "-")[:50].lower()
    admin, _ = pafs.FileSystem.from_uri(f"s3://{name}?{query}&allow_bucket_creation=true")
    admin.create_dir(name)
    return f"s3://{name}/spool?{query}"


def test_local_folder_and_file_uri_give_the_same_ledger(tmp_path, batches):
    folder = tmp_path / "a"
    uri = (tmp_path / "b").as_uri()
    assert uri.startswith("file:///")
    write_all(folder, batches)
    written = write_all(uri, batches)
    assert all(isinstance(f, Path) and f.is_relative_to(tmp_path / "b") for f in written)
    assert list(spool.days(folder)) == list(spool.days(uri)) == [DAY, DAY + timedelta(days=1)]
    assert ([Path(f).relative_to(folder) for f in spool.day_files(folder, "usage", DAY)]
            == [Path(f).relative_to(tmp_path / "b") for f in spool.day_files(uri, "usage", DAY)])

    local, local_requests = ledger_rows(folder)
    via_uri, uri_requests = ledger_rows(uri)
    assert_same_rows(via_uri, local)
    assert uri_requests == local_requests == len(expected_sample_ids(batches, "requests")) > 0
    # Every sample of the day, once (the simulator's own ids, not the warehouse's count); a
    # shared endpoint's sample is split per tenant as `<sample_id>:<tenant>`.
    assert {str(r[0]).split(":")[0] for r in local} == expected_sample_ids(batches, "usage")
    assert len(local) > 500


def test_s3_spool_gives_the_same_files_and_ledger_as_a_local_folder(tmp_path, batches, bucket):
    folder = tmp_path / "spool"
    write_all(folder, batches)
    written = write_all(bucket, batches)
    assert all(isinstance(f, str) and f.startswith(bucket.split("?")[0] + "/")
               and f.endswith("?" + bucket.split("?")[1]) for f in written)
    assert list(spool.days(bucket)) == list(spool.days(folder))
    for kind in ("usage", "requests"):
        local_files = spool.day_files(folder, kind, DAY)
        remote_files = spool.day_files(bucket, kind, DAY)
        assert ([Path(f).relative_to(folder).as_posix() for f in local_files]
                == [str(f).split("?")[0].removeprefix(bucket.split("?")[0] + "/")
                    for f in remote_files])
    # The objects hold exactly what the local files hold, byte for byte after decoding.
    fs, base = pafs.FileSystem.from_uri(bucket)
    local_file = spool.day_files(folder, "usage", DAY)[0]
    key = f"{base}/{Path(local_file).relative_to(folder).as_posix()}"
    assert pq.read_table(key, filesystem=fs).equals(pq.read_table(local_file))

    remote, remote_requests = ledger_rows(bucket)
    local, local_requests = ledger_rows(folder)
    assert_same_rows(remote, local)
    assert remote_requests == local_requests > 0


def test_s3_writes_only_final_keys_and_a_rewrite_replaces_the_object(bucket):
    t0 = datetime(2026, 9, 1, 5, tzinfo=UTC)

    def rows(ids: list[str]) -> pa.Table:
        return pa.Table.from_pylist(
            [{"sample_id": s, "window_start": t0, "duration_s": 60.0, "cluster": "c",
              "node": "n 1", "gpu_uuid": "GPU-1", "gpu_product": "NVIDIA L4",
              "gpu_equivalents": 1.0, "tenant": "t", "workload_kind": "batch",
              "allocated_gpu_seconds": 60.0, "source": "my source"} for s in ids],
            schema=LEDGER_SCHEMA)

    first = spool.write_batch(bucket, rows(["a", "b"]), kind="usage", source="my source",
                              node="n 1", batch="w1")
    again = spool.write_batch(bucket, rows(["a", "c", "d"]), kind="usage", source="my source",
                              node="n 1", batch="w1")
    assert first == again
    fs, base = pafs.FileSystem.from_uri(bucket)
    keys = [i.path for i in fs.get_file_info(pafs.FileSelector(base, recursive=True))
            if i.type == pafs.FileType.File]
    assert keys == [f"{base}/usage/date=2026-09-01/hour=05/source=my_source/node=n_1/w1.parquet"]
    listed = spool.list_day(bucket, "usage", DAY)
    assert [f.location for f in listed] == first
    assert listed[0].size_bytes == fs.get_file_info(keys[0]).size > 0
    assert abs(listed[0].mtime_s - time.time()) < 120

    con = warehouse.connect()
    warehouse.create_schema(con)
    assert load(con, bucket).staged_rows == 3
    # The rows' own source and node, not the sanitized folder names; same from a local copy.
    assert con.execute("SELECT DISTINCT source, node FROM ledger").fetchall() == [
        ("my source", "n 1")]


def test_local_read_keeps_the_rows_source_not_the_folder_name(tmp_path):
    t0 = datetime(2026, 9, 1, 5, tzinfo=UTC)
    table = pa.Table.from_pylist(
        [{"sample_id": "a", "window_start": t0, "duration_s": 60.0, "cluster": "c",
          "node": "gpu node/1", "gpu_uuid": "GPU-1", "gpu_product": "NVIDIA L4",
          "gpu_equivalents": 1.0, "tenant": "t", "workload_kind": "batch",
          "allocated_gpu_seconds": 60.0, "source": "my source"}], schema=LEDGER_SCHEMA)
    files = spool.write_batch(tmp_path, table, kind="usage", source="my source",
                              node="gpu node/1", batch="w")
    assert "source=my_source/node=gpu_node_1" in Path(files[0]).as_posix()
    con = warehouse.connect()
    warehouse.create_schema(con)
    load(con, tmp_path)
    assert con.execute("SELECT source, node FROM ledger").fetchall() == [
        ("my source", "gpu node/1")]


@pytest.mark.slow
def test_ingest_asset_and_late_data_sensor_on_an_s3_spool(tmp_path, batches, bucket):
    write_all(bucket, batches)
    resources = {
        "warehouse_db": WarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
        "spool": SpoolResource(path=bucket),
        "billing": BillingConfigResource(rate_card_path=str(DEMO / "rate-card.yaml"),
                                         tenants_path=str(DEMO / "tenants.yaml")),
    }
    result = dg.materialize([gpu_usage_ledger], resources=resources, partition_key=f"{DAY}",
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    metadata = result.asset_materializations_for_node("gpu_usage_ledger")[0].metadata
    assert metadata["spool_files"].value == len(spool.day_files(bucket, "usage", DAY)) > 0
    assert metadata["staged_rows"].value == len(expected_sample_ids(batches, "usage"))

    def evaluate(cursor: str | None) -> dg.SensorResult:
        context = dg.build_sensor_context(cursor=cursor, resources={"spool": resources["spool"]})
        return late_spool_files(context)  # type: ignore[return-value]

    first = evaluate(None)
    assert first.run_requests == []
    late = next(b for b in batches if b.kind == "usage")
    time.sleep(1.1)  # S3 object times have one-second resolution
    spool.write_batch(bucket, late.table, kind="usage", source=SOURCE, node=late.node,
                      batch="late-arrival")
    second = evaluate(first.cursor)
    assert [r.partition_key for r in second.run_requests] == [f"{DAY}"]


def test_collector_agent_writes_to_an_s3_spool(bucket):
    result = CliRunner().invoke(collect, ["simulate", "--once", "--spool", bucket])
    assert result.exit_code == 0, result.output
    today = datetime.now(UTC).date()
    assert today in list(spool.days(bucket)) or today - timedelta(days=1) in list(
        spool.days(bucket))
    rows = sum(pq.read_table(str(f).split("?")[0].removeprefix("s3://"),
                             filesystem=pafs.FileSystem.from_uri(bucket)[0]).num_rows
               for day in spool.days(bucket) for f in spool.day_files(bucket, "usage", day))
    assert rows > 0


def test_collector_rejects_an_unusable_spool_location():
    result = CliRunner().invoke(collect, ["simulate", "--once", "--spool", "ftp://h/x"])
    assert result.exit_code == 2
    assert "scheme 'ftp' is not supported" in result.output


@pytest.mark.parametrize(("location", "message"), [
    ("ftp://host/spool", "scheme 'ftp' is not supported"),
    ("s3:///spool", "no bucket"),
    ("file://otherhost/spool", "names no host"),
])
def test_unusable_locations_say_what_to_write(location, message):
    with pytest.raises(spool.SpoolLocationError, match=message):
        spool.day_files(location, "usage", DAY)


@pytest.mark.slow
def test_an_unreadable_object_is_moved_to_the_quarantine_prefix(tmp_path, batches, bucket):
    """The ingest asset over an S3 spool with one object cut short: the object is copied under
    `<spool>/quarantine/` and deleted from the day, and the rest of the day loads."""
    write_all(bucket, batches)
    fs, base = pafs.FileSystem.from_uri(bucket)
    victim = str(spool.day_files(bucket, "usage", DAY)[2])
    key = victim.split("?")[0].removeprefix("s3://")
    with fs.open_input_stream(key) as handle:
        data = handle.read()
    lost = set(pq.read_table(pa.BufferReader(data))["sample_id"].to_pylist())
    with fs.open_output_stream(key) as handle:
        handle.write(data[:-64])
    resources = {
        "warehouse_db": WarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
        "spool": SpoolResource(path=bucket),
        "billing": BillingConfigResource(rate_card_path=str(DEMO / "rate-card.yaml"),
                                         tenants_path=str(DEMO / "tenants.yaml")),
    }
    result = dg.materialize([gpu_usage_ledger], resources=resources, partition_key=f"{DAY}",
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    metadata = result.asset_materializations_for_node("gpu_usage_ledger")[0].metadata
    assert metadata["quarantined_files"].value == 1
    assert metadata["staged_rows"].value == len(expected_sample_ids(batches, "usage") - lost)
    moved = key.replace(f"{base}/usage/", f"{base}/{spool.QUARANTINE}/usage/")
    assert fs.get_file_info(key).type == pafs.FileType.NotFound
    with fs.open_input_stream(moved) as handle:
        assert handle.read() == data[:-64]
    assert victim not in spool.day_files(bucket, "usage", DAY)
    con = warehouse.connect(tmp_path / "warehouse.duckdb", read_only=True)
    try:
        assert con.execute("SELECT file, quarantined_as FROM spool_quarantine").fetchall() == [
            (victim, f"s3://{moved}?{bucket.split('?')[1]}")]
    finally:
        con.close()
