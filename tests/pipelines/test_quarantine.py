"""Unreadable spool files through the real Dagster jobs: a truncated Parquet file and a file
that is not Parquet at all, among the good files of a day. The day loads without them; they are
moved to the spool's quarantine folder, listed in the warehouse and in the finance mart, and
the run's metadata and log name them."""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from collectors.spool import QUARANTINE, day_files
from models.marts import finance_mart_path
from tests.pipelines.conftest import DAYS, Pipeline, failure_text

DAY = DAYS[0]


def _sample_ids(files: list[Path]) -> set[str]:
    return {s for f in files for s in pq.read_table(f, columns=["sample_id"])["sample_id"]
            .to_pylist()}


def test_unreadable_files_are_quarantined_and_the_rest_of_the_day_loads(pipeline: Pipeline
                                                                        ) -> None:
    files = [Path(f) for f in day_files(pipeline.spool, "usage", DAY)]
    truncated = files[len(files) // 2]
    lost = _sample_ids([truncated])
    expected = _sample_ids(files) - lost
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])  # a copy cut short, e.g. by a full disk
    junk = truncated.parent.parent / "node=stray" / "notes.parquet"
    junk.parent.mkdir()
    junk_bytes = b"node,gpu_seconds\ngpu-1,3600\n"
    junk.write_bytes(junk_bytes)

    result = pipeline.ingest(DAY)

    assert result.success, failure_text(result)
    assert all(e.passed for e in result.get_asset_check_evaluations())
    # The rest of the day is in the ledger, every sample once, nothing of the bad files.
    ledger = {s.split(":")[0] for (s,) in pipeline.query(
        "SELECT sample_id FROM ledger WHERE day = ?", [DAY])}
    assert ledger == expected
    assert pipeline.query("SELECT count(*) FROM usage_hourly WHERE day = ?", [DAY])[0][0] > 0

    # Moved, not deleted: the same bytes at the same path under the spool's quarantine folder.
    for original, content in ((truncated, data[: len(data) // 2]), (junk, junk_bytes)):
        moved = pipeline.spool / QUARANTINE / original.relative_to(pipeline.spool)
        assert not original.exists()
        assert moved.read_bytes() == content
    assert [Path(f) for f in day_files(pipeline.spool, "usage", DAY)] == [
        f for f in files if f != truncated]

    rows = {r[2]: r for r in pipeline.query(
        "SELECT day, kind, file, quarantined_as, size_bytes, reason FROM spool_quarantine")}
    assert sorted(rows) == sorted([str(junk), str(truncated)])
    for original, size in ((truncated, len(data) // 2), (junk, len(junk_bytes))):
        day, kind, _, moved, size_bytes, reason = rows[str(original)]
        assert (day, kind, size_bytes) == (DAY, "usage", size)
        assert moved == str(pipeline.spool / QUARANTINE / original.relative_to(pipeline.spool))
        assert reason.startswith("not a readable Parquet file")

    (materialization,) = result.asset_materializations_for_node("gpu_usage_ledger")
    assert materialization.metadata["quarantined_files"].value == 2
    listed = str(materialization.metadata["quarantined"].value)
    assert str(truncated) in listed
    assert str(junk) in listed
    warnings = [r.user_message for r in pipeline.instance.all_logs(result.run_id)
                if r.level == logging.WARNING]
    assert any(w.startswith(f"quarantined {truncated} -> ") for w in warnings), warnings
    assert any(w.startswith(f"quarantined {junk} -> ") for w in warnings), warnings

    # A rerun of the day meets neither file again and lists nothing twice.
    rerun = pipeline.ingest(DAY)
    assert rerun.success, failure_text(rerun)
    assert pipeline.query("SELECT count(*) FROM spool_quarantine") == [(2,)]
    (again,) = rerun.asset_materializations_for_node("gpu_usage_ledger")
    assert again.metadata["quarantined_files"].value == 0

    # Finance sees them in its published mart.
    published = pipeline.defs.resolve_job_def("publish_marts_job").execute_in_process(
        instance=pipeline.instance)
    assert published.success, failure_text(published)
    mart = duckdb.connect(str(finance_mart_path(pipeline.home / "marts")), read_only=True)
    try:
        assert sorted(mart.execute("SELECT file FROM spool_quarantine").fetchall()) == sorted(
            [(str(junk),), (str(truncated),)])
    finally:
        mart.close()


def test_a_failure_no_file_explains_still_fails_the_run(pipeline: Pipeline,
                                                        monkeypatch) -> None:
    """Quarantine is for files at fault; when every file reads, the load error stands."""
    from models.ledger import warehouse

    def broken(*args: object, **kwargs: object) -> object:
        raise warehouse.UnreadableRows("the rows to load cannot be read: disk went away")

    monkeypatch.setattr(warehouse, "load_day", broken)
    result = pipeline.ingest(DAY)
    assert not result.success
    causes = []
    for event in result.all_events:
        error = event.step_failure_data.error if event.is_step_failure else None
        while error is not None:
            causes.append(error.message)
            error = error.cause
    assert any("UnreadableRows: the rows to load cannot be read: disk went away" in c
               for c in causes), causes
    assert not (pipeline.spool / QUARANTINE).exists()
    assert pipeline.query("SELECT count(*) FROM spool_quarantine") == [(0,)]
