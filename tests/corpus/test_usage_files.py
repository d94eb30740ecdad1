"""Bad usage (ledger) files for `chargeback bill`: each refused with the file, row and field."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from models.ledger.usage import LEDGER_SCHEMA
from tests.corpus.corpus import BILL, ROWS, Case, folder, parquet, run_case, usage_with

U = "{w}/usage.parquet: "
R3 = U + "row 3: "


def csv_text(rows: list[dict[str, object]] = ROWS) -> str:
    sink = io.BytesIO()
    pacsv.write_csv(pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA), sink)
    return sink.getvalue().decode()


CSV_BILL = (*BILL[:2], "{w}/usage.csv", *BILL[3:])
CSV = "{w}/usage.csv: "


def moved(days: int) -> bytes:
    return parquet([{**r, "window_start": r["window_start"] + timedelta(days=days)}
                    for r in ROWS])


NAIVE = LEDGER_SCHEMA.set(LEDGER_SCHEMA.get_field_index("window_start"),
                          pa.field("window_start", pa.timestamp("us"), nullable=False))
TEXT_TIMES = LEDGER_SCHEMA.set(LEDGER_SCHEMA.get_field_index("window_start"),
                               pa.field("window_start", pa.string(), nullable=False))
NULLABLE = pa.schema([f.with_nullable(True) for f in LEDGER_SCHEMA])
GOOD_CSV = csv_text()


def csv_cell(column: str, value: str) -> str:
    """The design example as CSV with `column` of the first row replaced by `value`."""
    lines = GOOD_CSV.splitlines()
    cells = lines[1].split(",")
    cells[LEDGER_SCHEMA.names.index(column)] = value
    return "\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n"

CASES = [
    Case("usage-missing", [*BILL[:2], "{w}/nowhere.parquet", *BILL[3:]],
         ["{w}/nowhere.parquet: usage file not found"]),
    Case("usage-is-a-folder", BILL, [U + "is a folder, expected a usage file"],
         {"usage.parquet": folder}),
    Case("usage-wrong-suffix", [*BILL[:2], "{w}/tenants.yaml", *BILL[3:]],
         ["{w}/tenants.yaml: usage must be a .parquet or .csv file"]),
    Case("usage-empty-file", BILL, [U + "cannot read as ledger rows"], {"usage.parquet": b""}),
    Case("usage-truncated-parquet", BILL, [U + "cannot read as ledger rows"],
         {"usage.parquet": parquet(ROWS)[:2000]}),
    Case("usage-yaml-named-parquet", BILL, [U + "cannot read as ledger rows"],
         {"usage.parquet": b"tenants: {}\n"}),
    Case("usage-missing-columns", BILL, [U + "missing ledger columns: tenant, source"],
         {"usage.parquet": parquet([{k: v for k, v in r.items() if k not in ("tenant", "source")}
                                    for r in ROWS],
                                   pa.schema([f for f in LEDGER_SCHEMA
                                              if f.name not in ("tenant", "source")]))}),
    Case("duration-inf", BILL, [R3 + "duration_s: not a number: inf"],
         usage_with(duration_s=math.inf)),
    Case("duration-nan", BILL, [R3 + "duration_s: not a number: nan"],
         usage_with(duration_s=math.nan)),
    Case("duration-1e300", BILL, [R3 + "duration_s: must be at most 2.6784e+06, got 1e+300"],
         usage_with(duration_s=1e300, allocated_gpu_seconds=1e300)),
    Case("duration-negative", BILL, [R3 + "duration_s: negative: -3600.0"],
         usage_with(duration_s=-3600.0)),
    Case("allocated-inf", BILL, [R3 + "allocated_gpu_seconds: not a number: inf"],
         usage_with(allocated_gpu_seconds=math.inf)),
    Case("allocated-1e300", BILL, [R3 + "allocated_gpu_seconds: must be at most"],
         usage_with(allocated_gpu_seconds=1e300)),
    Case("allocated-above-capacity", BILL,
         [R3 + "allocated_gpu_seconds: 7200.0 exceeds duration_s x gpu_equivalents"],
         usage_with(allocated_gpu_seconds=7200.0)),
    Case("used-negative", BILL, [R3 + "used_gpu_seconds: negative: -1.0"],
         usage_with(used_gpu_seconds=-1.0)),
    Case("used-nan", BILL, [R3 + "used_gpu_seconds: not a number: nan"],
         usage_with(used_gpu_seconds=math.nan)),
    Case("equivalents-zero", BILL, [R3 + "gpu_equivalents: must be in (0, 1], got 0.0"],
         usage_with(gpu_equivalents=0.0, allocated_gpu_seconds=0.0, used_gpu_seconds=0.0)),
    Case("equivalents-two", BILL, [R3 + "gpu_equivalents: must be in (0, 1], got 2.0"],
         usage_with(gpu_equivalents=2.0)),
    Case("params-nan", BILL, [R3 + "model_params_b: not a number: nan"],
         usage_with(model_params_b=math.nan)),
    Case("params-minus-inf", BILL, [R3 + "model_params_b: not a number: -inf"],
         usage_with(model_params_b=-math.inf)),
    Case("params-1e300", BILL, [R3 + "model_params_b: must be at most 1e+06, got 1e+300"],
         usage_with(model_params_b=1e300)),
    Case("memory-negative", BILL, [R3 + "memory_used_bytes: negative: -5"],
         usage_with(memory_used_bytes=-5)),
    Case("window-in-the-future", BILL, [R3 + "window_start: in the future: 2099-01-01"],
         usage_with(window_start=datetime(2099, 1, 1, tzinfo=UTC))),
    Case("window-naive", BILL, [U + "row 0: window_start: naive timestamp"],
         {"usage.parquet": parquet([{**r, "window_start": r["window_start"].replace(tzinfo=None)}
                                    for r in ROWS], NAIVE)}),
    Case("window-as-text", BILL, [U + "row 0: window_start: not a timestamp: '2026-10-01"],
         {"usage.parquet": parquet([{**r, "window_start": r["window_start"].isoformat()}
                                    for r in ROWS], TEXT_TIMES)}),
    Case("tenant-empty-string", BILL, [R3 + "tenant: must be a tenant name, got ''"],
         usage_with(tenant="")),
    Case("tenant-null", BILL, [R3 + "tenant: must not be empty"],
         {"usage.parquet": parquet([{**r, "tenant": None if i == 3 else r["tenant"]}
                                    for i, r in enumerate(ROWS)], NULLABLE)}),
    Case("workload-kind-unknown", BILL, [R3 + "workload_kind: unknown 'crypto'"],
         usage_with(workload_kind="crypto")),
    Case("sample-id-reused", BILL, [R3 + "sample_id: duplicate of row 0 with different content"],
         usage_with(sample_id=ROWS[0]["sample_id"])),
    Case("gpu-product-unknown", BILL, ["GPU product 'NVIDIA B200'", "matches no tier"],
         usage_with(gpu_product="NVIDIA B200")),
    Case("usage-without-rows", BILL, [U + "no rows, so nothing to bill"],
         {"usage.parquet": parquet([])}),
    Case("rows-all-outside-the-period", BILL,
         [U + "none of its", "rows falls in --period 2026-10 (rows run from 2026-11-01"],
         {"usage.parquet": moved(31)}),
    Case("csv-text-in-a-number", CSV_BILL, [CSV + "cannot read as ledger rows", "one hour"],
         {"usage.csv": csv_cell("duration_s", "one hour")}),
    Case("csv-inf-duration", CSV_BILL, ["{w}/usage.csv: row 0: duration_s: not a number: inf"],
         {"usage.csv": csv_cell("duration_s", "inf")}),
    Case("csv-1e999-allocated", CSV_BILL,
         [CSV + "row 0: allocated_gpu_seconds: not a number: inf"],
         {"usage.csv": csv_cell("allocated_gpu_seconds", "1e999")}),
    Case("csv-memory-not-an-integer", CSV_BILL, [CSV + "cannot read as ledger rows", "1.5e300"],
         {"usage.csv": csv_cell("memory_used_bytes", "1.5e300")}),
    Case("csv-missing-header", CSV_BILL, [CSV + "missing ledger columns: sample_id, "],
         {"usage.csv": "\n".join(GOOD_CSV.splitlines()[1:])}),
    Case("csv-invalid-utf8", CSV_BILL,
         ["{w}/usage.csv: cannot read as ledger rows"],
         {"usage.csv": GOOD_CSV.encode().replace(b"acme", b"\xffcme", 1)}),
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_usage_is_refused(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                              ) -> None:
    run_case(case, tmp_path, monkeypatch)
