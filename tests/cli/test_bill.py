"""`chargeback bill` end to end: files in, invoices out, bad input refused with exit code 2."""

import csv
import json
import math
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from cli.main import main
from models.ledger.usage import LEDGER_SCHEMA, ledger_table, make_sample_id

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "design-example"
CARDS = ROOT / "tests" / "fixtures" / "rate-cards"
D = Decimal


def bill(out: Path, *, usage: Path = EXAMPLE / "usage.parquet",
         rate_card: Path = EXAMPLE / "rate-card.yaml", tenants: Path = EXAMPLE / "tenants.yaml",
         period: str = "2026-10") -> Result:
    return CliRunner().invoke(main, [
        "bill", "--usage", str(usage), "--rate-card", str(rate_card), "--tenants", str(tenants),
        "--period", period, "--out", str(out)])


def assert_refused(result: Result, out: Path, *, before: dict[str, bytes] | None = None) -> str:
    """Exit code 2, a message and no traceback; `out` exactly as it was."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    now = ({p.name: p.read_bytes() for p in out.iterdir()} if out.exists() else None)
    assert now == before
    # Nor a half-written staging folder beside it.
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}-")]
    return result.output


def example_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(EXAMPLE / "usage.parquet").to_pylist()
    return rows


def write_parquet(path: Path, rows: list[dict[str, Any]], schema: pa.Schema = LEDGER_SCHEMA
                  ) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def test_worked_example_totals(tmp_path: Path) -> None:
    out = tmp_path / "invoices"
    result = bill(out)
    assert result.exit_code == 0, result.output
    assert "10,252.15" in result.output
    assert "25,000.00" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["acme.json", "invoices.csv", "zen.json"]

    docs = {name: json.loads((out / f"{name}.json").read_text()) for name in ("acme", "zen")}
    # Decimal strings, never floats, for the total and every amount.
    assert docs["acme"]["total"] == "10252.15"
    assert docs["zen"]["total"] == "25000.00"
    for doc in docs.values():
        assert (doc["period"], doc["currency"]) == ("2026-10", "USD")
        assert all(isinstance(line["amount"], str) for line in doc["lines"])
        assert sum(D(line["amount"]) for line in doc["lines"]) == D(doc["total"])
    assert [line["amount"] for line in docs["acme"]["lines"]] == [
        "2000.00", "1505.00", "2508.00", "180.00", "-309.65", "3868.80", "500.00"]
    assert [line["amount"] for line in docs["zen"]["lines"]] == [
        "2000.00", "1750.00", "-450.00", "21700.00"]

    with (out / "invoices.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    # One row per invoice line: 7 for acme, 4 for zen.
    assert [(r["tenant"], r["line_no"]) for r in rows] == (
        [("acme", str(i)) for i in range(1, 8)] + [("zen", str(i)) for i in range(1, 5)])
    for name, doc in docs.items():
        mine = [r for r in rows if r["tenant"] == name]
        assert [r["amount"] for r in mine] == [line["amount"] for line in doc["lines"]]
        assert sum(D(r["amount"]) for r in mine) == D(doc["total"])


def test_rerun_gives_identical_files(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert bill(first).exit_code == 0
    assert bill(second).exit_code == 0
    for path in first.iterdir():
        assert path.read_bytes() == (second / path.name).read_bytes(), path.name


def test_make_usage_regenerates_the_same_rows(tmp_path: Path) -> None:
    # The script writes beside itself: run a copy so the committed file is left alone.
    script = shutil.copy(EXAMPLE / "make_usage.py", tmp_path / "make_usage.py")
    subprocess.run([sys.executable, str(script)], check=True, cwd=ROOT, capture_output=True)
    regenerated = pq.read_table(tmp_path / "usage.parquet")
    committed = pq.read_table(EXAMPLE / "usage.parquet")
    assert regenerated.schema == committed.schema == LEDGER_SCHEMA
    assert regenerated.to_pylist() == committed.to_pylist()


def test_example_as_csv_gives_the_same_totals(tmp_path: Path) -> None:
    usage = tmp_path / "usage.csv"
    pacsv.write_csv(pq.read_table(EXAMPLE / "usage.parquet"), usage)
    out = tmp_path / "out"
    result = bill(out, usage=usage)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "acme.json").read_text())["total"] == "10252.15"
    assert json.loads((out / "zen.json").read_text())["total"] == "25000.00"


def test_usage_basis_bills_used_gpu_seconds(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text((EXAMPLE / "tenants.yaml").read_text().replace(
        "plan: growth\n    basis: allocation", "plan: growth\n    basis: usage"))
    result = bill(tmp_path / "out", tenants=tenants)
    assert result.exit_code == 0, result.output
    acme = json.loads((tmp_path / "out" / "acme.json").read_text())
    # The example's pods use 80% of what they hold. premium: 2.4 GPUs an hour, 2 reserved,
    # 0.4 x 744 = 297.6 overflow x 1.25 = 372 units x 4.00 = 1,488.00; standard: 960 x 1.10 =
    # 1,056 units x 1.90 = 2,006.40; economy 240 x 0.60 = 144.00. Usage 3,638.40; discount
    # -181.92; reservation 3,868.80; base fee 500.00.
    assert [line["amount"] for line in acme["lines"]] == [
        "1488.00", "2006.40", "144.00", "-181.92", "3868.80", "500.00"]
    assert acme["total"] == "7825.28"


@pytest.mark.parametrize(
    ("rate_card", "tenants", "expected"),
    [
        (CARDS / "bad-prices.yaml", EXAMPLE / "tenants.yaml", [
            "tiers.premium.bands[0].price", "tiers.premium.bands[1].price",
            "tiers.premium.bands[2].price", "tiers.premium.reserved_price",
            "tiers.economy.price", "plans.growth.discount_pct"]),
        (CARDS / "bad-bands.yaml", EXAMPLE / "tenants.yaml", [
            "tiers.overlapping.bands[1].up_to", "tiers.open_in_the_middle.bands[0].up_to",
            "tiers.no_mode.mode", "tiers.flat_with_bands.bands", "tiers.unknown_mode.mode"]),
        (CARDS / "bad-keys.yaml", EXAMPLE / "tenants.yaml", [
            "discount", "tiers.premium.reserve_price", "plans.growth.discount_percent"]),
        (CARDS / "overlapping-versions.yaml", EXAMPLE / "tenants.yaml", ["version 2026-10"]),
        (CARDS / "good.yaml", CARDS / "bad-tenants.yaml", [
            "tenants.acme.plan", "tenants.acme.reservations[0].tier", "tenants.zen.end",
            "tenants.__idle__", "tenants.nostart.colour"]),
    ],
)
def test_broken_configuration_lists_every_error_and_writes_nothing(
    tmp_path: Path, rate_card: Path, tenants: Path, expected: list[str]
) -> None:
    out = tmp_path / "out"
    output = assert_refused(bill(out, rate_card=rate_card, tenants=tenants), out)
    for key in expected:
        assert any(line.startswith((f"{rate_card}: {key}: ", f"{tenants}: {key}: "))
                   for line in output.splitlines()), (key, output)


def test_existing_output_is_untouched_on_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert bill(out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert_refused(bill(out, rate_card=CARDS / "bad-prices.yaml"), out, before=before)


NOW_ISH = datetime(2026, 10, 2, tzinfo=UTC)


def good_row(**changes: Any) -> dict[str, Any]:
    start = changes.pop("window_start", NOW_ISH)
    row = {
        "sample_id": make_sample_id("t", start.isoformat(), changes.get("gpu_uuid", "GPU-0")),
        "window_start": start, "duration_s": 3600.0, "cluster": "c", "node": "n",
        "gpu_uuid": "GPU-0", "gpu_product": "NVIDIA H100 80GB HBM3", "mig_profile": None,
        "gpu_equivalents": 1.0, "tenant": "acme", "namespace": "team-acme", "pod": "p",
        "pod_uid": "u", "workload_kind": "inference", "model": "m", "model_params_b": 70.0,
        "allocated_gpu_seconds": 3600.0, "used_gpu_seconds": 1800.0,
        "memory_used_bytes": 1, "source": "test",
    }
    row.update(changes)
    return row


def test_bad_ledger_rows_are_each_reported_with_row_field_and_reason(tmp_path: Path) -> None:
    rows = [
        good_row(),                                                        # 0: fine
        good_row(gpu_uuid="GPU-1", duration_s=-3600.0),                    # 1
        good_row(gpu_uuid="GPU-2", allocated_gpu_seconds=math.nan),        # 2
        good_row(gpu_uuid="GPU-3", allocated_gpu_seconds=7200.0),          # 3: 2 GPUs' worth
        good_row(gpu_uuid="GPU-4", window_start=datetime(2099, 1, 1, tzinfo=UTC)),  # 4
        good_row(gpu_uuid="GPU-5", workload_kind="crypto"),                # 5
        good_row(used_gpu_seconds=900.0),                                  # 6: same id as 0
    ]
    usage = write_parquet(tmp_path / "usage.parquet", rows)
    out = tmp_path / "out"
    output = assert_refused(bill(out, usage=usage), out)
    for expected in (
        "row 1: duration_s: negative",
        "row 2: allocated_gpu_seconds: not a number",
        "row 3: allocated_gpu_seconds: 7200.0 exceeds duration_s x gpu_equivalents",
        "row 4: window_start: in the future",
        "row 5: workload_kind: unknown 'crypto'",
        "row 6: sample_id: duplicate of row 0 with different content",
    ):
        assert f"{usage}: {expected}" in output, (expected, output)
    assert "row 0:" not in output


def test_naive_timestamps_are_refused(tmp_path: Path) -> None:
    naive = LEDGER_SCHEMA.set(LEDGER_SCHEMA.get_field_index("window_start"),
                              pa.field("window_start", pa.timestamp("us"), nullable=False))
    rows = [good_row(window_start=datetime(2026, 10, 2, h)) for h in range(2)]  # noqa: DTZ001
    usage = write_parquet(tmp_path / "usage.parquet", rows, naive)
    out = tmp_path / "out"
    output = assert_refused(bill(out, usage=usage), out)
    assert f"{usage}: row 0: window_start: naive timestamp" in output
    assert f"{usage}: row 1: window_start: naive timestamp" in output


def test_unknown_gpu_product_is_a_clear_error(tmp_path: Path) -> None:
    rows = [good_row(), good_row(gpu_uuid="GPU-9", gpu_product="NVIDIA B200")]
    usage = write_parquet(tmp_path / "usage.parquet", rows)
    out = tmp_path / "out"
    output = assert_refused(bill(out, usage=usage), out)
    assert "'NVIDIA B200'" in output
    assert "products" in output


def test_usage_of_a_tenant_missing_from_the_tenants_file(tmp_path: Path) -> None:
    usage = write_parquet(tmp_path / "usage.parquet", [good_row(tenant="stranger")])
    out = tmp_path / "out"
    output = assert_refused(bill(out, usage=usage), out)
    assert "stranger" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"period": "2026-13"}, "YYYY-MM"),
        ({"period": "2026-08"}, "no rate card is in effect on 2026-08-01"),
        ({"usage": Path("/nonexistent/usage.parquet")}, "usage file not found"),
        ({"usage": EXAMPLE / "tenants.yaml"}, ".parquet or .csv"),
        ({"rate_card": Path("/nonexistent/card.yaml")}, "file not found"),
    ],
)
def test_other_bad_input_exits_2(tmp_path: Path, args: dict[str, Any], message: str) -> None:
    out = tmp_path / "out"
    output = assert_refused(bill(out, **args), out)
    assert message in output


def test_missing_ledger_columns(tmp_path: Path) -> None:
    table = ledger_table([good_row()]).drop_columns(["tenant", "source"])
    usage = tmp_path / "usage.parquet"
    pq.write_table(table, usage)
    out = tmp_path / "out"
    output = assert_refused(bill(out, usage=usage), out)
    assert "missing ledger columns: tenant, source" in output


def test_rows_outside_the_period_are_not_billed(tmp_path: Path) -> None:
    # Acme's September hour must not reach October's invoice, nor fail it.
    september = good_row(window_start=NOW_ISH - timedelta(days=10), gpu_uuid="GPU-sept")
    rows = [*example_rows(), september]
    usage = write_parquet(tmp_path / "usage.parquet", rows)
    result = bill(tmp_path / "out", usage=usage)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "acme.json").read_text())["total"] == "10252.15"


def test_console_script_exits_2_on_a_broken_rate_card(tmp_path: Path) -> None:
    # The installed `chargeback` entry point, as an operator runs it.
    chargeback = Path(sys.executable).with_name("chargeback")
    out = tmp_path / "out"
    done = subprocess.run(
        [str(chargeback), "bill", "--usage", str(EXAMPLE / "usage.parquet"),
         "--rate-card", str(CARDS / "bad-prices.yaml"), "--tenants",
         str(EXAMPLE / "tenants.yaml"), "--period", "2026-10", "--out", str(out)],
        capture_output=True, text=True, check=False)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "6 problems in the configuration" in done.stderr
    assert not out.exists()


def test_usage_basis_without_utilization_is_refused_not_a_traceback(tmp_path: Path) -> None:
    rows = example_rows()
    for row in rows[:3]:
        row["used_gpu_seconds"] = None  # allowed in the ledger: no utilization source
    usage = write_parquet(tmp_path / "usage.parquet", rows)
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text((EXAMPLE / "tenants.yaml").read_text().replace(
        "basis: allocation", "basis: usage"))
    out = tmp_path / "out"
    output = assert_refused(bill(out, usage=usage, tenants=tenants), out)
    assert "metered on usage" in output
    assert "3 ledger rows" in output
