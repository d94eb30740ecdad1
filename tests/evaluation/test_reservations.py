import csv
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main

HEADER = ["time", "total_gpu_num", "running_gpu_num", "pending_gpu_num", "idle_gpu_num"]
STRATEGIES = ["ours", "ours+P95", "mean", "peak", "quota", "hindsight"]


def table(output: str, title_start: str) -> dict[str, list[str]]:
    """Rows of the printed table whose title starts with `title_start`, by first cell."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title_start))
    assert lines[start + 1].split() == ["vc", *STRATEGIES]
    rows = {}
    for line in lines[start + 3 :]:
        if not line.strip():
            break
        if line.startswith("-"):
            continue
        name, rest = line.split(maxsplit=1)
        # Cells are right-aligned and separated by two spaces; a cell may hold "1.0 (2)".
        rows[name] = [c.strip() for c in rest.strip().split("  ") if c.strip()]
    return rows


def write_vc(path: Path, quota: int, samples: list[tuple[int, int]], per_hour: int) -> None:
    """samples: (running, pending) at `per_hour` evenly spaced times per hour from May 1."""
    start = datetime(2020, 5, 1)  # noqa: DTZ001 -- the trace's naive wall-clock format
    step = timedelta(minutes=60 // per_hour)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i, (running, pending) in enumerate(samples):
            time = start + i * step
            writer.writerow([f"{time:%Y-%m-%d %H:%M:%S}", quota, running, pending, 0])


def run(*args: str):
    return CliRunner().invoke(main, ["eval", "reservations", *args])


def test_hand_made_dir(tmp_path: Path) -> None:
    # Two samples per hour. VC "a" (quota 4): training hours alternate 2 GPUs running and
    # 2 running + 2 pending (demand 4), so P(d >= 3) is about 1/2 < 1.40/2.20: ours = 2;
    # P95 = 4; mean 3; peak 4. Its 24 test hours hold 2 then 4 GPUs: hourly mean demand 3.
    a = [(2, 0), (2, 0), (2, 2), (2, 2)] * 252 + [(2, 0), (4, 0)] * 24
    # VC "b" (quota 2): 1 GPU pending through training, nothing in the test day.
    b = [(0, 1)] * 1008 + [(0, 0)] * 48
    write_vc(tmp_path / "vca_cluster_sequence_vc.csv", 4, a, per_hour=2)
    write_vc(tmp_path / "vcb_cluster_sequence_vc.csv", 2, b, per_hour=2)
    (tmp_path / "notes.txt").write_text("not a VC file")

    result = run("--helios", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "on-demand 2.20 USD/GPU-h, reserved 1.40 USD/GPU-h" in result.output
    assert "test 2020-05-22 00:00 + 24 h" in result.output

    reserved = table(result.output, "Reserved GPUs")
    assert reserved == {
        "vca": ["2", "4", "3", "4", "4", "3"],
        "vcb": ["1", "1", "1", "1", "2", "0"],
        "TOTAL": ["3", "5", "4", "5", "6", "3"],
    }
    # a, 24 test hours at 3 GPUs: ours 2 x 24 x 1.40 + 24 x 2.20 = 67.20 + 52.80; mean
    # 3 x 24 x 1.40 = 100.80; 4 GPUs 134.40. b: 1 GPU x 24 x 1.40 = 33.60, quota 67.20.
    cost = table(result.output, "Test-period cost")
    assert cost == {
        "vca": ["120.00", "134.40", "100.80", "134.40", "134.40", "100.80"],
        "vcb": ["33.60", "33.60", "33.60", "33.60", "67.20", "0.00"],
        "TOTAL": ["153.60", "168.00", "134.40", "168.00", "201.60", "100.80"],
    }
    unmet = table(result.output, "Unmet-demand GPU-hours")
    assert unmet["vca"] == ["24.0 (24)", "0.0 (0)", "0.0 (0)", "0.0 (0)", "0.0 (0)", "0.0 (0)"]
    assert unmet["TOTAL"] == unmet["vca"]


def test_real_helios(shared_data: Path) -> None:
    folder = shared_data / "helios" / "earth_vcs"
    files = sorted(folder.glob("*.csv"))
    result = run("--helios", str(folder))
    assert result.exit_code == 0, result.output
    names = [f.name.removesuffix("_cluster_sequence_vc.csv") for f in files]
    for title in ("Reserved GPUs", "Test-period cost", "Unmet-demand GPU-hours"):
        assert list(table(result.output, title)) == [*names, "TOTAL"]

    cost = table(result.output, "Test-period cost")
    for column in range(len(STRATEGIES)):
        per_vc = sum(Decimal(cost[n][column].replace(",", "")) for n in names)
        assert Decimal(cost["TOTAL"][column].replace(",", "")) == per_vc
    reserved = table(result.output, "Reserved GPUs")
    # Quotas as the trace's SOURCE.md lists them.
    quotas = {"vc6YE": 208, "vc3sl": 64, "vcMod": 64, "vc8Sj": 48, "vcSoL": 32, "vcira": 24}
    for name, quota in quotas.items():
        if name in reserved:
            assert int(reserved[name][STRATEGIES.index("quota")]) == quota
    for name in names:
        ours, p95, _, peak, _, _ = (int(x) for x in reserved[name])
        assert ours <= p95 <= peak
    # Nothing fixed beats the hindsight optimum on the hours it was chosen for.
    best = STRATEGIES.index("hindsight")
    for name in [*names, "TOTAL"]:
        costs = [Decimal(c.replace(",", "")) for c in cost[name]]
        assert costs[best] == min(costs)
    assert "Shared overflow pool above 'ours' (helios-v100)" in result.output


def test_no_files_is_a_usage_error(tmp_path: Path) -> None:
    result = run("--helios", str(tmp_path))
    assert result.exit_code == 2
    assert "has no .csv files" in result.output
    assert "Traceback" not in result.output

    result = run("--helios", str(tmp_path / "missing"))
    assert result.exit_code == 2
    assert "is not a folder" in result.output


def test_wrong_columns_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "vcx_cluster_sequence_vc.csv").write_text("time,running_gpu_num\n2020-05-01,1\n")
    result = run("--helios", str(tmp_path))
    assert result.exit_code == 2
    assert "vcx_cluster_sequence_vc.csv: missing column(s) total_gpu_num, pending_gpu_num" in (
        result.output
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--reserved-price", "abc"], "not a decimal price"),
        (["--reserved-price", "3.00"], "not below on-demand"),
    ],
)
def test_bad_prices(tmp_path: Path, args: list[str], message: str) -> None:
    write_vc(tmp_path / "vca_cluster_sequence_vc.csv", 1, [(1, 0)] * 600, per_hour=1)
    result = run("--helios", str(tmp_path), *args)
    assert result.exit_code == 2
    assert message in result.output
