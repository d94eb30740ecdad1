"""`chargeback replay` end to end on real traces: the smaller ones run in CI."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def replay(name: str, out: Path, data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "replay", name, "--out", str(out),
         "--data", str(data)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )


@pytest.mark.slow
def test_helios_replay_bills_what_the_trace_says(tmp_path: Path, shared_data: Path) -> None:
    result = replay("helios", tmp_path / "out", shared_data)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = result.stdout[result.stdout.index("expected GPU-h"):]
    # Eight virtual clusters, each reconciled, and the total: the trace's 235,387.7 GPU-hours
    # of running GPUs (the independent query in collectors/traces.py counts them from the CSV).
    assert len([line for line in report.splitlines() if line.startswith("vc")]) == 8
    total = next(line for line in report.splitlines() if line.startswith("TOTAL"))
    assert float(total.split()[1]) == pytest.approx(235387.716667, abs=1e-6)
    assert "OK (tolerance 0.001%)" in report
    invoices = sorted((tmp_path / "out" / "exports" / "2026-05").glob("DRAFT-*.json"))
    assert len(invoices) == 8
    assert (tmp_path / "out" / "exports" / "2026-05" / "focus.parquet").exists()


@pytest.mark.slow
def test_azure_llm_replay_reconciles_tokens_exactly(tmp_path: Path, shared_data: Path) -> None:
    result = replay("azure-llm", tmp_path / "out", shared_data)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    # Token sums of the two CSVs (8,819 code and 19,366 conversation requests), as the
    # warehouse holds them: exact, and the same figures a plain query over the files gives.
    code = next(line for line in lines if line.startswith("code ") and "," in line)
    conversation = next(line for line in lines if line.startswith("conversation ") and ","
                        in line)
    assert code.split()[1:] == ["18,059,974", "18,059,974", "245,896", "245,896"]
    assert conversation.split()[1:] == ["22,361,870", "22,361,870", "4,088,665", "4,088,665"]
    assert "tokens exact, GPU-seconds conserved" in result.stdout
    assert "OK (tolerance 0.001%)" in result.stdout
    # Two 8-GPU servers for the busiest minute, held the 60 minutes of the trace.
    assert "endpoint capacity 57,600.000 GPU-s" in result.stdout


def test_replay_without_the_data_folder_says_where_to_find_it(tmp_path: Path) -> None:
    result = replay("helios", tmp_path / "out", tmp_path / "nowhere")
    assert result.returncode == 2
    assert "no such folder" in result.stderr
    assert "Traceback" not in result.stderr
