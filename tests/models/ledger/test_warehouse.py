"""The warehouse: a file another process holds, loads that write a day whole or not at all, and
the declared schema as the one place tables come from."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.billing.rate_cards import load_rate_cards, rate_card_for
from models.errors import TransientError
from models.ledger import warehouse
from models.ledger.usage import ledger_table, make_sample_id

ROOT = Path(__file__).resolve().parents[3]
CARD = rate_card_for(load_rate_cards(ROOT / "examples" / "demo" / "rate-card.yaml"),
                     date(2026, 9, 1))
DAY = date(2026, 9, 1)


def _rows(hours: int, *, tenant: str = "acme", product: str = "NVIDIA L4",
          day: date = DAY) -> list[dict[str, Any]]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return [{"sample_id": make_sample_id(tenant, product, h, day), "window_start":
             start + timedelta(hours=h), "duration_s": 3600.0, "cluster": "c", "node": "n",
             "gpu_uuid": "GPU-1", "gpu_product": product, "mig_profile": None,
             "gpu_equivalents": 1.0, "tenant": tenant, "namespace": None, "pod": None,
             "pod_uid": None, "workload_kind": "batch", "model": "m", "model_params_b": 8.0,
             "allocated_gpu_seconds": 3600.0, "used_gpu_seconds": 1800.0,
             "memory_used_bytes": None, "source": "test"} for h in range(hours)]


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A second process with the warehouse file open for writing, as a running Dagster job
    has it; stopped by its own PID."""
    path = tmp_path / "warehouse.duckdb"
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys, duckdb\n"
         f"con = duckdb.connect({str(path)!r})\nprint('open', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "open"
        yield path, process
    finally:
        process.kill()
        process.wait(timeout=30)


@pytest.mark.parametrize("read_only", [False, True])
def test_a_warehouse_held_by_another_process_is_a_transient_error(holder, read_only):
    path, process = holder
    with pytest.raises(TransientError) as info:
        warehouse.connect(path, read_only=read_only)
    assert str(info.value) == (
        f"{path} is in use by another process (PID {process.pid}): wait for the running job "
        "or stop it, then retry")
    assert info.value.retry
    process.kill()
    process.wait(timeout=30)
    warehouse.connect(path, read_only=read_only).close()


def _warehouse(tmp_path: Path) -> Any:
    con = warehouse.connect(tmp_path / "w.duckdb")
    warehouse.create_schema(con)
    return con


def _ledger(con: Any) -> list[tuple[Any, ...]]:
    return con.execute("SELECT day, tenant, count(*), sum(allocated_gpu_seconds) FROM ledger "
                       "GROUP BY ALL ORDER BY ALL").fetchall()


def test_load_day_replaces_exactly_its_day_and_is_idempotent(tmp_path):
    con = _warehouse(tmp_path)
    rows = _rows(24) + _rows(3, day=DAY + timedelta(days=1))
    first = warehouse.load_day(con, DAY, CARD, usage=ledger_table(rows))
    assert (first.days, first.staged_rows, first.ledger_rows, first.tenants) == ((DAY,), 27, 24, 1)
    # The same rows twice in one load, and the load again: one row per sample and day.
    again = warehouse.load_day(con, DAY, CARD, usage=ledger_table(rows + rows))
    assert again.staged_rows == 27
    assert _ledger(con) == [(DAY, "acme", 24, 24 * 3600.0)]
    warehouse.load_day(con, DAY, CARD, usage=ledger_table(_rows(2)))
    assert _ledger(con) == [(DAY, "acme", 2, 2 * 3600.0)]


def test_parquet_files_and_arrow_rows_load_the_same(tmp_path):
    files = []
    for i, part in enumerate((_rows(12), _rows(24)[12:])):
        files.append(tmp_path / f"part-{i}.parquet")
        pq.write_table(ledger_table(part), files[-1])
    con = _warehouse(tmp_path)
    warehouse.load_day(con, DAY, CARD, usage=files)
    from_files = con.execute("SELECT * FROM ledger ORDER BY sample_id").fetchall()
    warehouse.load_day(con, DAY, CARD, usage=pq.ParquetDataset(files).read().to_reader())
    assert con.execute("SELECT * FROM ledger ORDER BY sample_id").fetchall() == from_files
    assert len(from_files) == 24


def test_unknown_products_load_nothing(tmp_path):
    con = _warehouse(tmp_path)
    warehouse.load_day(con, DAY, CARD, usage=ledger_table(_rows(3)))
    with pytest.raises(warehouse.UnknownProducts, match="Acme Quantum Accelerator"):
        warehouse.load_day(con, DAY, CARD, usage=ledger_table(
            _rows(5) + _rows(1, tenant="zen", product="Acme Quantum Accelerator")))
    assert _ledger(con) == [(DAY, "acme", 3, 3 * 3600.0)]


@pytest.mark.parametrize("damage", ["truncated", "not parquet", "tenant empty",
                                    "tenant missing", "wrong type"])
def test_unreadable_rows_load_nothing(tmp_path, damage):
    con = _warehouse(tmp_path)
    warehouse.load_day(con, DAY, CARD, usage=ledger_table(_rows(3)))
    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    pq.write_table(ledger_table(_rows(24)), good)
    table = ledger_table(_rows(2, tenant="zen"))
    if damage == "truncated":
        pq.write_table(table, bad)
        bad.write_bytes(bad.read_bytes()[:-100])
    elif damage == "not parquet":
        bad.write_text("tenant,gpu_seconds\nzen,3600\n")
    elif damage == "tenant empty":
        pq.write_table(table.set_column(table.schema.get_field_index("tenant"), "tenant",
                                        pa.array([None, None], pa.string())), bad)
    elif damage == "tenant missing":
        pq.write_table(table.drop_columns(["tenant"]), bad)
    else:
        pq.write_table(table.set_column(table.schema.get_field_index("window_start"),
                                        "window_start", pa.array(["yesterday", "today"])), bad)
    with pytest.raises(warehouse.UnreadableRows):
        warehouse.load_day(con, DAY, CARD, usage=[good, bad])
    assert _ledger(con) == [(DAY, "acme", 3, 3 * 3600.0)]


def test_load_rows_loads_and_rolls_up_every_day(tmp_path):
    con = _warehouse(tmp_path)
    loaded = warehouse.load_rows(con, CARD, ledger_table(
        _rows(24) + _rows(5, day=DAY + timedelta(days=1))))
    assert loaded.days == (DAY, DAY + timedelta(days=1))
    assert con.execute("SELECT day, sum(allocated_gpu_hours) FROM tenant_usage_daily "
                       "GROUP BY ALL ORDER BY ALL").fetchall() == [
        (DAY, 24), (DAY + timedelta(days=1), 5)]
    assert warehouse.hourly_differences(con, DAY) == []


def test_every_table_is_declared_in_the_schema_file():
    """No module creates a permanent table of its own: CREATE TABLE appears in SQL files under
    models/ledger/sql, and in Python only for temp tables and the marts' own files."""
    con = warehouse.connect()
    warehouse.create_schema(con)
    declared = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() "
                                          "WHERE NOT temporary").fetchall()}
    assert {"ledger", "request_work", "usage_hourly", "tenant_usage_daily", "invoices",
            "invoice_lines", "period_closes", "usage_shifts", "tier_change_recommendations",
            "reservation_recommendations", "reservation_overflow_pools",
            "scheduler_quota_changes", "spool_quarantine"} <= declared
    offenders = []
    for package in ("models", "pipelines", "collectors", "cli", "evaluation"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    text = " ".join(node.value.upper().split())
                    if ("CREATE TABLE" in text or "CREATE OR REPLACE TABLE" in text) and not (
                            "TEMP" in text or path.name == "marts.py"):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_models_import_nothing_from_the_adapters():
    """models/ is the domain: collectors, pipelines, dashboards and cli build on it, never the
    other way round."""
    imports = []
    for path in sorted((ROOT / "models").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            imports += [f"{path.relative_to(ROOT)}: {n}" for n in names
                        if n.split(".")[0] in ("collectors", "pipelines", "dashboards", "cli",
                                               "evaluation", "dagster", "streamlit")]
    assert imports == []
