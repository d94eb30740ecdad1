"""`chargeback eval forecast`: the trace arithmetic, the backtest on a slice of real Helios
data (checked against a seasonal-naive forecast recomputed here from the raw CSV), bad input."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from cli.main import main
from evaluation.forecast import hourly_from_intervals

VCS = ("vc8Sj", "vcJLV")


def run(*args: str):
    return CliRunner().invoke(main, ["eval", "forecast", *args])


def test_hourly_gpu_hours_from_intervals_match_a_direct_count():
    rng = np.random.default_rng(2)
    start = rng.uniform(0, 20 * 3600, 200)
    end = start + rng.uniform(0, 6 * 3600, 200)
    gpus = rng.integers(1, 8, 200).astype(float)
    hours = 27
    got = hourly_from_intervals(start, end, gpus, hours)
    expected = np.zeros(hours)
    for s, e, g in zip(start, end, gpus, strict=True):
        for h in range(hours):
            expected[h] += g * max(0.0, min(e, (h + 1) * 3600) - max(s, h * 3600)) / 3600
    assert np.allclose(got, expected)


def rows(output: str) -> dict[tuple[str, str, str], list[str]]:
    out = {}
    for line in output.splitlines():
        cells = line.split()
        if len(cells) == 8 and cells[0] == "helios":
            out[(cells[1], cells[2], cells[0])] = cells[3:]
    return out


@pytest.fixture
def helios_slice(shared_data: Path, tmp_path: Path) -> Path:
    """Two real Helios virtual clusters (May 2020, 31 days of minutes), linked in place."""
    for vc in VCS:
        name = f"{vc}_cluster_sequence_vc.csv"
        (tmp_path / name).symlink_to(shared_data / "helios" / "earth_vcs" / name)
    return tmp_path


@pytest.mark.slow
def test_backtest_on_real_helios_clusters(helios_slice: Path):
    result = run("--trace", "helios", "--helios", str(helios_slice))
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    for day in ("7", "14", "21", "all"):
        for method in ("ours", "seasonal-naive", "linear-trend"):
            cases, mape, smape, *cover = table[(day, method, "helios")]
            assert int(cases) == (6 if day == "all" else 2)
            assert float(mape) >= 0
            assert 0 <= float(smape) <= 200
            for value in cover:
                assert value == "n/a" or 0 <= float(value) <= 100
    # Seasonal-naive has no interval before two weeks of history.
    assert table[("7", "seasonal-naive", "helios")][3:] == ["n/a", "n/a"]

    # Seasonal-naive from day 14, recomputed from the raw minutes: May's total is the 14 known
    # days plus the last 7 days repeated over the remaining 17.
    errors = []
    for vc in VCS:
        minutes = pl.read_csv(helios_slice / f"{vc}_cluster_sequence_vc.csv")
        daily = minutes["running_gpu_num"].to_numpy().reshape(31, -1).sum(axis=1) / 60
        forecast = daily[:14].sum() + np.resize(daily[7:14], 17).sum()
        errors.append(abs(forecast - daily.sum()) / daily.sum())
    reported = float(table[("14", "seasonal-naive", "helios")][1])
    assert reported == pytest.approx(100 * float(np.mean(errors)), abs=0.051)


def test_a_helios_file_without_the_columns_is_named(tmp_path: Path):
    (tmp_path / "vcX_cluster_sequence_vc.csv").write_text("time,total_gpu_num\n"
                                                           "2020-05-01 00:00:00,8\n")
    result = run("--trace", "helios", "--helios", str(tmp_path))
    assert result.exit_code == 2
    assert "vcX_cluster_sequence_vc.csv" in result.output
    assert "running_gpu_num" in result.output


def test_missing_data_folder_is_a_usage_error(tmp_path: Path):
    result = run("--data", str(tmp_path / "absent"), "--trace", "alibaba-2025")
    assert result.exit_code == 2
    assert "absent" in result.output
    assert "--data" in result.output
