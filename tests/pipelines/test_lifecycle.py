"""The invoice lifecycle through the real jobs: reruns are byte-identical, late data after close
becomes an adjustment linked to the untouched original."""

from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from collectors.spool import write_batch
from models.ledger.usage import LEDGER_SCHEMA, make_sample_id
from tests.pipelines.conftest import DAYS, INTERVAL_S, PERIOD, Pipeline, hours_of

LATE_HOURS = 10


def snapshot(pipeline: Pipeline) -> tuple[dict[str, bytes], list[tuple[Any, ...]]]:
    """Everything finance could see: the exported files and the stored documents and hashes.

    The FOCUS datasets carry the time they were made (metadata's CreationDate; a draft's
    InvoiceDetailCreated/LastUpdated, an open billing period's LastUpdated), so they are
    compared without those: rows and the rest of the metadata."""
    files = pipeline.export_bytes()
    focus: list[tuple[Any, ...]] = []
    for name in sorted(n for n in files if n.startswith("focus")):
        data = files.pop(name)
        if name.endswith(".metadata.json"):
            meta = json.loads(data)
            meta["Schema"].pop("CreationDate")
            focus.append((name, json.dumps(meta, sort_keys=True)))
        elif name.endswith((".parquet", ".csv")):
            rows = (pq.read_table(pipeline.exports / name).to_pylist()
                    if name.endswith(".parquet")
                    else list(csv.DictReader(io.StringIO(data.decode()))))
            focus.append((name, tuple(
                tuple((k, v) for k, v in row.items()
                      if not k.endswith(("Created", "LastUpdated"))) for row in rows)))
    rows = pipeline.query(
        "SELECT invoice_id, number, kind, status, total, adjusts, content_hash, inputs_hash, "
        "document FROM invoices ORDER BY invoice_id")
    lines = pipeline.query("SELECT * FROM invoice_lines ORDER BY invoice_id, line_no")
    netting = pipeline.query("SELECT * FROM invoice_hours ORDER BY ALL")
    return files, rows + lines + netting + focus


@pytest.mark.slow
def test_rerunning_every_partition_gives_byte_identical_invoices(pipeline: Pipeline) -> None:
    pipeline.run()
    drafts = snapshot(pipeline)
    assert any(name.endswith(".pdf") for name in drafts[0])

    pipeline.run()
    assert snapshot(pipeline) == drafts

    netting = pipeline.query("SELECT count(*), sum(gpu_hours) FROM invoice_hours")
    assert netting[0][0] > 0
    pipeline.run(close=True)
    finals = snapshot(pipeline)
    assert not any(name.startswith("DRAFT-") for name in finals[0])
    # The netting each draft was priced with moved to its final invoice (or, for the
    # showback tenant, its statement), untouched.
    assert pipeline.query("SELECT count(*), sum(gpu_hours) FROM invoice_hours WHERE invoice_id "
                          "IN (SELECT invoice_id FROM invoices WHERE status = 'final')"
                          ) == netting
    assert {f"INV-{PERIOD}-0001.{ext}" for ext in ("pdf", "csv", "json")} <= set(finals[0])

    # After close the same inputs produce nothing new: no adjustment, no changed byte.
    pipeline.run()
    pipeline.run(close=True)
    assert snapshot(pipeline) == finals
    assert pipeline.query("SELECT count(*) FROM invoices WHERE kind = 'adjustment'") == [(0,)]


def write_late_usage(spool: Path) -> None:
    """A node whose collector was down uploads its buffer: acme on one more whole H100 for
    LATE_HOURS hours of the second day, a device no other row mentions (so GPU-seconds stay
    conserved)."""
    rows = []
    for start in hours_of(DAYS[1], 8, LATE_HOURS):
        rows.append({
            "sample_id": make_sample_id("late", "GPU-late-0", start),
            "window_start": start, "duration_s": float(INTERVAL_S), "cluster": "sim",
            "node": "sim-h100-late", "gpu_uuid": "GPU-late-0",
            "gpu_product": "NVIDIA H100 80GB HBM3", "mig_profile": None,
            "gpu_equivalents": 1.0, "tenant": "acme", "namespace": "team-acme",
            "pod": "llama-70b-chat-late", "pod_uid": "late-pod-uid",
            "workload_kind": "inference", "model": "llama-3.1-70b", "model_params_b": 70.0,
            "allocated_gpu_seconds": float(INTERVAL_S), "used_gpu_seconds": INTERVAL_S / 2,
            "memory_used_bytes": 40 * 1024**3, "source": "nvml",
        })
    write_batch(spool, pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA), kind="usage",
                source="nvml", node="sim-h100-late", batch="late-upload")


def by_tenant(documents: list[dict[str, Any]], kind: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for doc in documents:
        if doc["kind"] == kind:
            found.setdefault(doc["tenant"], []).append(doc)
    return found


@pytest.mark.slow
def test_late_usage_after_close_becomes_an_adjustment(
        pipeline: Pipeline, second_pipeline: Pipeline) -> None:
    pipeline.run(close=True)
    originals = {t: d for t, (d,) in by_tenant(pipeline.documents(), "invoice").items()}
    acme = originals["acme"]
    acme_files = {name: data for name, data in pipeline.export_bytes().items()
                  if name.startswith(acme["number"])}
    assert len(acme_files) == 3

    write_late_usage(pipeline.spool)
    assert pipeline.ingest(DAYS[1]).success
    assert pipeline.bill().success

    documents = pipeline.documents()
    after = {t: d for t, (d,) in by_tenant(documents, "invoice").items()}
    assert after == originals
    files = pipeline.export_bytes()
    assert {name: files[name] for name in acme_files} == acme_files

    adjustments = by_tenant(documents, "adjustment")
    assert list(adjustments) == ["acme"]
    (note,) = adjustments["acme"]
    assert note["adjusts"] == acme["number"]
    assert note["status"] == "final"
    # A debit note, first of its own sequence in the year it is issued.
    assert re.fullmatch(r"DN-\d{4}-0001", note["number"]), note["number"]
    assert {f"{note['number']}.{ext}" for ext in ("pdf", "csv", "json")} <= set(files)
    # acme holds 2 reserved H100s and already runs 3 every hour, so every late GPU-hour
    # overflows: 10 GPU-hours x 1.25 (70B = large) = 12.5 units in graduated band 1 at 4.00
    # = 50.00, less the growth plan's 5% discount.
    lines = {(x["kind"], x["hardware_tier"]): x for x in note["lines"]}
    assert set(lines) == {("usage", "premium"), ("discount", None)}
    assert Decimal(lines["usage", "premium"]["quantity"]) == Decimal("12.5")
    assert Decimal(lines["usage", "premium"]["amount"]) == Decimal("50.00")
    assert Decimal(lines["discount", None]["amount"]) == Decimal("-2.50")
    assert Decimal(note["total"]) == Decimal("47.50")

    # Billing again issues nothing more: the adjustment already accounts for the change.
    before = snapshot(pipeline)
    assert pipeline.bill().success
    assert snapshot(pipeline) == before

    # What was billed in all (original + adjustment) is what a fresh run on the same data bills.
    write_late_usage(second_pipeline.spool)
    second_pipeline.run()
    fresh = {t: d for t, (d,) in by_tenant(second_pipeline.documents(), "invoice").items()}
    assert set(fresh) == set(originals)
    for tenant, doc in fresh.items():
        billed = Decimal(originals[tenant]["total"]) + sum(
            (Decimal(a["total"]) for a in adjustments.get(tenant, [])), Decimal(0))
        assert Decimal(doc["total"]) == billed, tenant
    assert Decimal(fresh["acme"]["total"]) - Decimal(acme["total"]) == Decimal("47.50")
