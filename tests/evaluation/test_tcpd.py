"""The benchmark's metrics against TCPDBench's own vectors and published per-series scores."""

import json
import math

import pytest
from click.testing import CliRunner

from cli.main import main
from evaluation import tcpd


@pytest.fixture(scope="module")
def tcpd_dir(shared_data):
    return shared_data / "tcpd"


@pytest.fixture(scope="module")
def fixtures(tcpd_dir):
    return json.loads((tcpd_dir / "benchmark_results" / "validation_fixtures.json").read_text())


@pytest.fixture(scope="module")
def annotations(tcpd_dir):
    return tcpd.load_annotations(tcpd_dir / "annotations.json")


def _doctests(fixtures, fn):
    cases = [
        c for c in fixtures["metric_doctests_from_analysis/scripts/metrics.py"] if c["fn"] == fn
    ]
    assert cases, f"no {fn} vectors in validation_fixtures.json"
    return cases


def test_true_positives_vectors(fixtures):
    for case in _doctests(fixtures, "true_positives"):
        got = tcpd.true_positives(set(case["T"]), set(case["X"]), case["margin"])
        assert got == set(case["expected"])


def test_f_measure_vectors(fixtures):
    for case in _doctests(fixtures, "f_measure"):
        assert tcpd.f_measure(case["annotations"], case["predictions"]).f1 == case["expected"]


def test_covering_vectors(fixtures):
    for case in _doctests(fixtures, "covering"):
        got = tcpd.covering(case["annotations"], case["predictions"], case["n_obs"])
        assert got == case["expected"]


def test_partition_vectors(fixtures):
    for case in _doctests(fixtures, "partition_from_cps"):
        got = tcpd.partition_from_cps(case["locations"], case["n_obs"])
        assert [list(range(a, b)) for a, b in got] == case["expected"]


def test_cover_single_vectors(fixtures):
    def intervals(sets):
        # The vectors are contiguous runs of integers; our partitions are half-open intervals.
        return [(min(s), max(s) + 1) for s in sets]

    for case in _doctests(fixtures, "cover_single"):
        got = tcpd.cover_single(intervals(case["Sprime"]), intervals(case["S"]))
        assert got == case["expected"]


def test_published_runs_rescored_exactly(fixtures, annotations):
    for case in fixtures["cases"]:
        assert tcpd.clean_cps(case["raw_cplocations"], case["n_obs"]) == case["clean_cplocations"]
        got = tcpd.score(annotations[case["dataset"]], case["raw_cplocations"], case["n_obs"])
        expected = case["expected"]
        assert got.f1 == expected["f1"]
        assert got.cover == expected["cover"]
        assert got.precision == expected["precision"]
        # TCPDBench computes recall as (1 / K) * sum, which gives 0.7000000000000001 for nile/zero;
        # the fixture file wrote 0.7. F1 (the published score) is identical either way.
        assert got.recall == pytest.approx(expected["recall"], rel=1e-15)


def test_hand_computed_example():
    # One annotator marks 10 in 20 points, we predict 12: within the margin, so P = R = 1.
    # Cover: truth [0,10) [10,20), predicted [0,12) [12,20); Jaccard 10/12 and 8/10.
    score = tcpd.score({"a": [10]}, [12], 20)
    assert score.f1 == 1.0
    assert score.cover == pytest.approx((10 * 10 / 12 + 10 * 8 / 10) / 20)
    # Predicting 17 instead misses (7 away): P = 1/2 (only index 0), R = 1/2 -> F1 = 1/2.
    assert tcpd.score({"a": [10]}, [17], 20).f1 == pytest.approx(0.5)


def test_clean_cps_drops_endpoints_and_duplicates():
    assert tcpd.clean_cps([0, 5, 5, 3, 9, 10, -1], 10) == [3, 5]


def test_benchmark_mean_follows_zero_no_coal():
    scores = {"a": 1.0, "b": None, "uk_coal_employ": 0.0}
    assert tcpd.benchmark_mean(scores) == 0.5


def test_zero_method_reproduces_every_published_score(tcpd_dir, annotations):
    published_f1 = json.loads(
        (tcpd_dir / "benchmark_results/per_dataset/default_f1_scores.json").read_text()
    )
    published_cover = json.loads(
        (tcpd_dir / "benchmark_results/per_dataset/default_cover_scores.json").read_text()
    )
    paths = sorted((tcpd_dir / "datasets").glob("*.json"))
    assert len(paths) == 32
    for path in paths:
        series = tcpd.load_series(path)
        score = tcpd.score(annotations[series.name], [], series.n_obs)
        assert score.f1 == published_f1[series.name]["zero"], series.name
        assert score.cover == published_cover[series.name]["zero"], series.name


def test_load_series_keeps_missing_values_and_dimensions(tcpd_dir):
    coal = tcpd.load_series(tcpd_dir / "datasets" / "uk_coal_employ.json")
    assert coal.n_obs == 105
    assert math.isnan(coal.values[8, 0])
    assert not math.isnan(coal.values[0, 0])
    run_log = tcpd.load_series(tcpd_dir / "datasets" / "run_log.json")
    assert run_log.n_dim == 2


def test_load_series_error_names_file_and_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "n_obs": 2, "n_dim": 1}))
    with pytest.raises(tcpd.TcpdError, match=r"bad\.json.*'series'"):
        tcpd.load_series(bad)


def test_eval_shifts_command_prints_every_series_and_means(tcpd_dir):
    result = CliRunner().invoke(main, ["eval", "shifts", "--tcpd", str(tcpd_dir)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for path in (tcpd_dir / "datasets").glob("*.json"):
        assert any(line.split()[0].rstrip("*") == path.stem for line in lines if line.strip())
    ours = next(line for line in lines if line.startswith("ours"))
    f1, cover = (float(x) for x in ours.split()[1:3])
    assert 0 <= f1 <= 1
    assert 0 <= cover <= 1
    # The published binseg mean on the same 31 series, recomputed from per_dataset files.
    binseg = next(line for line in lines if line.startswith("binseg "))
    assert binseg.split()[1:3] == ["0.714", "0.671"]
    assert "reproduces every published per-series score exactly" in result.output


def test_eval_means_come_from_the_metrics_module(tcpd_dir, annotations):
    from evaluation.shifts import evaluate_shifts
    from models.planning import shifts

    evaluation = evaluate_shifts(tcpd_dir)
    assert len(evaluation.series) == 32
    by_name = {}
    for path in sorted((tcpd_dir / "datasets").glob("*.json")):
        series = tcpd.load_series(path)
        by_name[series.name] = tcpd.score(
            annotations[series.name], shifts.change_points(series.values), series.n_obs
        )
    assert evaluation.mean_f1 == tcpd.benchmark_mean({k: v.f1 for k, v in by_name.items()})
    assert evaluation.mean_cover == tcpd.benchmark_mean({k: v.cover for k, v in by_name.items()})


def test_eval_shifts_bad_folder_is_a_clean_error(tmp_path):
    result = CliRunner().invoke(main, ["eval", "shifts", "--tcpd", str(tmp_path)])
    assert result.exit_code == 2
    assert "annotations.json" in result.output
    assert "Traceback" not in result.output
