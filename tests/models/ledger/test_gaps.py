"""Gap records in a real DuckDB warehouse: loading a day from spool files, merging them into
ranges, and how the conservation check treats a device-interval inside a gap: it may hold
less than capacity (what could not be read is missing, not idle), never more, and only a gap
of its own source, place and time excuses it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from collectors import spool
from models.ledger import gaps, warehouse
from models.ledger.gaps import GAP_SCHEMA, Gap, GapReason, gap_table
from models.ledger.usage import LEDGER_COLUMNS

DAY = date(2026, 11, 3)
T = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)


@pytest.fixture
def con():
    con = warehouse.connect()
    warehouse.create_schema(con)
    yield con
    con.close()


def ledger(con, rows: list[tuple[str, str, int, float, str, str]]) -> None:
    """(node, device, minute, allocated seconds, tenant, source) rows of 60 s, 1 GPU each."""
    for node, device, minute, allocated, tenant, source in rows:
        values = {
            "sample_id": f"{device}-{minute}-{tenant}-{source}", "window_start":
            T + timedelta(minutes=minute), "duration_s": 60.0, "cluster": "c", "node": node,
            "gpu_uuid": device, "gpu_product": "L4", "mig_profile": None,
            "gpu_equivalents": 1.0, "tenant": tenant, "namespace": None, "pod": None,
            "pod_uid": None, "workload_kind": "batch", "model": None, "model_params_b": None,
            "allocated_gpu_seconds": allocated, "used_gpu_seconds": None,
            "memory_used_bytes": None, "source": source, "hardware_tier": "economy",
            "size_class": "unknown", "day": DAY,
        }
        columns = [*LEDGER_COLUMNS, "hardware_tier", "size_class", "day"]
        con.execute(f"INSERT INTO ledger ({', '.join(columns)}) VALUES "
                    f"({', '.join('?' * len(columns))})", [values[c] for c in columns])


def load(con, *records: Gap) -> int:
    table = gap_table(records)
    return gaps.replace_day(con, DAY, pa.RecordBatchReader.from_batches(
        GAP_SCHEMA, table.to_batches()))


def gap(node: str | None, device: str | None, minute: int, minutes: int = 1,
        source: str = "pods", reason: GapReason = GapReason.MALFORMED_OBJECT,
        detail: str = "Pod ns/p: status.startTime: 'x' is not an RFC 3339 time") -> Gap:
    return Gap(source, "c", node, device, T + timedelta(minutes=minute),
               T + timedelta(minutes=minute + minutes), reason, detail)


def violations(con) -> set[tuple[str, int]]:
    return {(device, int((start - T).total_seconds()) // 60)
            for _c, _n, device, start, *_ in warehouse.conservation_violations(con, DAY)}


# One node, two GPUs, minute 0: n1/gpu0 is fully read (pod + idle); n1/gpu1 lacks its idle
# rows (only a pod's 20 s), as the pod collector writes it beside an unreadable pod.
PARTIAL = [
    ("n1", "n1/gpu0", 0, 40.0, "acme", "pods"),
    ("n1", "n1/gpu0", 0, 20.0, "__idle__", "pods"),
    ("n1", "n1/gpu1", 0, 20.0, "zen", "pods"),
]


def test_missing_rows_without_a_gap_break_conservation(con) -> None:
    ledger(con, PARTIAL)
    assert violations(con) == {("n1/gpu1", 0)}


@pytest.mark.parametrize("record", [
    gap("n1", None, 0),  # the node
    gap("n1", "n1/gpu1", 0),  # the device
    gap(None, None, 0, source="pods", reason=GapReason.SOURCE_UNREADABLE),  # every node
    gap(None, "n1/gpu1", 0),  # the device, wherever it is
    gap("n1", None, -5, minutes=10),  # a longer range around the interval
])
def test_a_gap_of_its_source_place_and_time_excuses_holding_less(con, record) -> None:
    ledger(con, PARTIAL)
    load(con, record)
    assert violations(con) == set()


@pytest.mark.parametrize("record", [
    gap("n1", None, 0, source="nvml"),  # another source's gap
    gap("n2", None, 0),  # another node
    gap("n1", "n1/gpu0", 0),  # another device of the node
    gap("n1", None, 1),  # the next minute
    gap("n1", None, -1),  # the minute before (ends as the interval starts)
])
def test_a_gap_elsewhere_excuses_nothing(con, record) -> None:
    ledger(con, PARTIAL)
    load(con, record)
    assert violations(con) == {("n1/gpu1", 0)}


def test_inside_a_gap_more_than_capacity_is_still_a_violation(con) -> None:
    ledger(con, [*PARTIAL, ("n1", "n1/gpu1", 0, 50.0, "__idle__", "pods")])
    load(con, gap("n1", None, 0))
    assert violations(con) == {("n1/gpu1", 0)}


def test_two_sources_on_one_device_are_a_violation_gap_or_not(con) -> None:
    ledger(con, [*PARTIAL, ("n1", "n1/gpu1", 0, 10.0, "zen", "nvml")])
    load(con, gap("n1", None, 0), gap("n1", None, 0, source="nvml"))
    assert violations(con) == {("n1/gpu1", 0)}


def test_gaps_load_from_spool_files_once_per_id_and_replace_their_day(con, tmp_path: Path
                                                                      ) -> None:
    first = [gap("n1", None, m) for m in range(3)]
    spool.write_batch(tmp_path, gap_table(first), kind="gaps", source="pods", node="p",
                      batch="a")
    # The same records again (a rerun), and one of the next day, which is not this day's.
    spool.write_batch(tmp_path, gap_table([*first, gap("n1", None, 24 * 60)]), kind="gaps",
                      source="pods", node="p", batch="b")
    files = spool.day_files(tmp_path, "gaps", DAY)
    assert len(files) == 2
    assert gaps.replace_day(con, DAY, spool.read_batches(files, GAP_SCHEMA)) == 3
    assert gaps.replace_day(con, DAY, spool.read_batches(files, GAP_SCHEMA)) == 3
    assert gaps.replace_day(con, DAY, None) == 0


def test_consecutive_windows_are_one_range(con) -> None:
    load(con, *[gap("n1", None, m) for m in (0, 1, 2, 5)],
         gap(None, None, 1, reason=GapReason.SOURCE_UNREADABLE, detail="HTTP 500"),
         gap("n1", None, 3, source="nvml", reason=GapReason.DEVICE_LOST, detail="lost"))
    ranges = gaps.day_ranges(con, DAY)
    assert [(r.source, r.node, (r.start - T).seconds // 60, (r.end - T).seconds // 60,
             r.records) for r in ranges] == [
        ("pods", "n1", 0, 3, 3),
        ("pods", None, 1, 2, 1),
        ("nvml", "n1", 3, 4, 1),
        ("pods", "n1", 5, 6, 1),
    ]
    assert ranges[0].describe() == (
        "pods, node n1, 2026-11-03 10:00:00-10:03:00 UTC: object with unreadable fields "
        "(quarantined): Pod ns/p: status.startTime: 'x' is not an RFC 3339 time (3 records)")
    assert ranges[1].describe().startswith("pods, every node of cluster c, ")


def test_a_gap_must_have_an_aware_nonempty_window() -> None:
    with pytest.raises(ValueError, match="naive"):
        Gap("pods", "c", None, None, datetime(2026, 1, 1), T, GapReason.NOT_SAMPLED, "x")  # noqa: DTZ001
    with pytest.raises(ValueError, match="before it starts"):
        Gap("pods", "c", None, None, T, T, GapReason.NOT_SAMPLED, "x")


def test_two_sources_for_one_device_interval_are_a_violation_naming_how_many(con) -> None:
    # Each source alone conserves the device's 60 s; together they would bill it twice. A gap
    # of one source excuses nothing here: the device-interval holds more than capacity.
    ledger(con, [("n1", "n1/gpu0", 0, 60.0, "acme", "pods"),
                 ("n1", "n1/gpu0", 0, 60.0, "acme", "dra"),
                 ("n1", "n1/gpu0", 1, 60.0, "acme", "pods"),
                 ("n1", "n1/gpu1", 0, 30.0, "acme", "pods"),
                 ("n1", "n1/gpu1", 0, 30.0, "zen", "dra")])
    load(con, gap("n1", "n1/gpu1", 0, source="pods"))
    found = {(device, int((start - T).total_seconds()) // 60): (allocated, sources)
             for _c, _n, device, start, _d, _cap, allocated, sources
             in warehouse.conservation_violations(con, DAY)}
    assert found == {("n1/gpu0", 0): (120.0, 2), ("n1/gpu1", 0): (60.0, 2)}
