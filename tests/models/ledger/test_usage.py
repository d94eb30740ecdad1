"""The ledger schema and its row validation (issue 2, build item 3)."""

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from models.ledger.usage import (
    LEDGER_COLUMNS,
    LEDGER_SCHEMA,
    RowProblem,
    ledger_table,
    make_sample_id,
    split_by_hour,
    validate_ledger,
)

NOW = datetime(2026, 11, 1, tzinfo=UTC)
START = datetime(2026, 10, 5, 12, tzinfo=UTC)


def row(**changes: Any) -> dict[str, Any]:
    """One valid row: a 3g.40gb MIG instance (3/7 of an H100) held for 10 minutes."""
    base: dict[str, Any] = {
        "sample_id": make_sample_id("test", "node-1", "MIG-1", START.isoformat()),
        "window_start": START, "duration_s": 600.0, "cluster": "c1", "node": "node-1",
        "gpu_uuid": "MIG-1", "gpu_product": "NVIDIA H100 80GB HBM3", "mig_profile": "3g.40gb",
        "gpu_equivalents": 3 / 7, "tenant": "acme", "namespace": "team-acme", "pod": "p-0",
        "pod_uid": "uid-0", "workload_kind": "inference", "model": "llama-3.1-70b",
        "model_params_b": 70.0, "allocated_gpu_seconds": 600.0 * 3 / 7,
        "used_gpu_seconds": 100.0, "memory_used_bytes": 2**30, "source": "test",
    }
    base.update(changes)
    return base


def fields(problems: list[RowProblem]) -> set[tuple[int, str]]:
    return {(p.row, p.field) for p in problems}


def test_schema_has_the_issue_columns_in_order() -> None:
    assert LEDGER_COLUMNS == (
        "sample_id", "window_start", "duration_s", "cluster", "node", "gpu_uuid", "gpu_product",
        "mig_profile", "gpu_equivalents", "tenant", "namespace", "pod", "pod_uid",
        "workload_kind", "model", "model_params_b", "allocated_gpu_seconds",
        "used_gpu_seconds", "memory_used_bytes", "source",
    )
    assert LEDGER_SCHEMA.field("window_start").type == pa.timestamp("us", tz="UTC")
    # Nullable exactly where DESIGN.md allows it.
    nullable = {f.name for f in LEDGER_SCHEMA if f.nullable}
    assert nullable == {"mig_profile", "namespace", "pod", "pod_uid", "model", "model_params_b",
                        "used_gpu_seconds", "memory_used_bytes"}


def test_valid_rows_have_no_problems_and_fit_the_schema() -> None:
    rows = [row(), row(sample_id="other", mig_profile=None, gpu_equivalents=1.0,
                       allocated_gpu_seconds=600.0, used_gpu_seconds=None, model_params_b=None)]
    assert validate_ledger(rows, now=NOW) == []
    table = ledger_table(rows)
    assert table.schema == LEDGER_SCHEMA
    assert table.num_rows == 2


def test_sample_id_is_deterministic_and_distinguishes_parts() -> None:
    assert make_sample_id("a", 1, None) == make_sample_id("a", 1, None)
    assert make_sample_id("a", 1) != make_sample_id("a", 2)
    # Parts are separated, so shifting a character between parts changes the id.
    assert make_sample_id("ab", "c") != make_sample_id("a", "bc")


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"duration_s": -600.0}, "duration_s", "negative"),
        ({"allocated_gpu_seconds": -1.0}, "allocated_gpu_seconds", "negative"),
        ({"used_gpu_seconds": -1.0}, "used_gpu_seconds", "negative"),
        ({"duration_s": math.nan}, "duration_s", "not a number"),
        ({"allocated_gpu_seconds": math.nan}, "allocated_gpu_seconds", "not a number"),
        ({"used_gpu_seconds": math.nan}, "used_gpu_seconds", "not a number"),
        # 3/7 of a GPU for 600 s is 257.14 GPU-seconds; a whole GPU's 600 is too many.
        ({"allocated_gpu_seconds": 600.0, "used_gpu_seconds": 10.0}, "allocated_gpu_seconds",
         "exceeds duration_s x gpu_equivalents"),
        ({"used_gpu_seconds": 300.0}, "used_gpu_seconds", "exceeds allocated"),
        ({"window_start": datetime(2026, 10, 5, 12)}, "window_start", "naive"),  # noqa: DTZ001
        ({"window_start": NOW + timedelta(hours=1)}, "window_start", "in the future"),
        ({"window_start": "2026-10-05T12:00:00Z"}, "window_start", "not a timestamp"),
        ({"workload_kind": "mining"}, "workload_kind", "unknown 'mining'"),
        ({"gpu_equivalents": 1.5, "allocated_gpu_seconds": 600.0}, "gpu_equivalents",
         r"must be in \(0, 1\]"),
        ({"tenant": None}, "tenant", "must not be empty"),
    ],
)
def test_each_bad_row_is_reported_with_its_field_and_reason(
    changes: dict[str, Any], field: str, reason: str
) -> None:
    rows = [row(sample_id="good"), row(**changes)]
    problems = validate_ledger(rows, now=NOW)
    assert problems, changes
    assert all(p.row == 1 for p in problems), problems
    matching = [p for p in problems if p.field == field]
    assert matching, problems
    assert any(re.search(reason, p.message) for p in matching), matching
    assert str(matching[0]).startswith(f"row 1: {field}: ")


def test_missing_column_is_reported() -> None:
    bad = row()
    del bad["source"]
    assert fields(validate_ledger([bad], now=NOW)) == {(0, "source")}


def test_every_problem_of_every_row_is_reported_not_only_the_first() -> None:
    rows = [
        row(sample_id="a", duration_s=-1.0, workload_kind="mining"),
        row(sample_id="b"),
        row(sample_id="c", window_start=NOW + timedelta(days=1), used_gpu_seconds=math.nan),
    ]
    # A negative duration also leaves no capacity for the row's allocation: both are said.
    assert fields(validate_ledger(rows, now=NOW)) == {
        (0, "duration_s"), (0, "allocated_gpu_seconds"), (0, "workload_kind"),
        (2, "window_start"), (2, "used_gpu_seconds"),
    }


def test_duplicate_sample_id_counts_once_when_identical_and_fails_when_different() -> None:
    same = [row(), row()]
    assert validate_ledger(same, now=NOW) == []
    different = [row(), row(sample_id="x"), row(used_gpu_seconds=50.0)]
    problems = validate_ledger(different, now=NOW)
    assert fields(problems) == {(2, "sample_id")}
    assert "duplicate of row 0" in problems[0].message


def test_a_window_inside_allocation_tolerance_is_accepted() -> None:
    # Collectors sum floats in different orders; a rounding error of far below a
    # microsecond of a GPU-second is not a conservation break.
    capacity = 600.0 * 3 / 7
    assert validate_ledger([row(allocated_gpu_seconds=capacity + 1e-9)], now=NOW) == []


def test_split_by_hour_cuts_at_hour_boundaries() -> None:
    start = datetime(2026, 10, 5, 11, 45, tzinfo=UTC)
    pieces = split_by_hour(start, start + timedelta(minutes=90))
    assert pieces == [
        (start, 900.0),
        (datetime(2026, 10, 5, 12, tzinfo=UTC), 3600.0),
        (datetime(2026, 10, 5, 13, tzinfo=UTC), 900.0),
    ]
    assert split_by_hour(start, start) == []
