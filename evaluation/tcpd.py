"""The Turing Change Point benchmark (TCPD/TCPDBench): its series, annotations and metrics.

The metrics reproduce TCPDBench's `analysis/scripts/metrics.py` and the cleaning step of
`summarize.py` to the last floating-point digit, so that a score computed here can be set beside
the published per-series scores (`benchmark_results/per_dataset/*.json`):

- every annotator's set and the prediction set get index 0 added (the start of the series is
  always a "change point", so a method that predicts nothing still scores above zero);
- F1 (margin 5, alpha 0.5): precision against the union of all annotators' points, recall the
  mean over annotators, a true point matched to the closest unused prediction within the margin;
- cover: the segmentation covering of each annotator's partition by the predicted partition
  (weighted best Jaccard overlap), averaged over annotators;
- predictions are cleaned first: deduplicated and restricted to ``1 <= x < n_obs - 1``.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.errors import UserError

DEFAULT_MARGIN = 5
DEFAULT_ALPHA = 0.5

Annotations = Mapping[str, Iterable[int]]
"""Annotator id -> 0-based change-point indices (as in TCPD's annotations.json)."""


class TcpdError(UserError):
    """A benchmark file is missing or malformed; the message names the file and the field."""


@dataclass(frozen=True)
class FScore:
    f1: float
    precision: float
    recall: float


@dataclass(frozen=True)
class TcpdSeries:
    name: str
    values: np.ndarray
    """Shape (n_obs, n_dim), float64; NaN where the dataset has a missing value (JSON null)."""

    @property
    def n_obs(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_dim(self) -> int:
        return int(self.values.shape[1])


def clean_cps(locations: Iterable[int], n_obs: int) -> list[int]:
    """Deduplicate and keep ``1 <= x < n_obs - 1``: 0 and n_obs - 1 carry no information."""
    return sorted({int(x) for x in locations if 1 <= x < n_obs - 1})


def true_positives(
    true_cps: set[int], predicted: set[int], margin: int = DEFAULT_MARGIN
) -> set[int]:
    """True points matched to the closest still-unused prediction within ``margin``.

    Matching is greedy in the iteration order of ``true_cps``. That order decides ties between
    two true points competing for one prediction, so callers that must match TCPDBench exactly
    pass Python sets built the way it builds them (see `f_measure`)."""
    unused = set(predicted)
    matched: set[int] = set()
    for tau in true_cps:
        candidates = sorted((abs(tau - x), x) for x in unused if abs(tau - x) <= margin)
        if candidates:
            matched.add(tau)
            unused.remove(candidates[0][1])
    return matched


def f_measure(
    annotations: Annotations,
    predictions: Iterable[int],
    margin: int = DEFAULT_MARGIN,
    alpha: float = DEFAULT_ALPHA,
) -> FScore:
    """TCPDBench's F-measure: precision against the union of annotators, recall averaged."""
    per_annotator: list[set[int]] = []
    for cps in annotations.values():
        points = set(cps)
        points.add(0)
        per_annotator.append(points)
    if not per_annotator:
        raise TcpdError("f_measure: no annotators given; TCPD has 5 per series")
    predicted = set(predictions)
    predicted.add(0)
    union: set[int] = set()
    for points in per_annotator:
        for tau in points:
            union.add(tau)

    precision = len(true_positives(union, predicted, margin)) / len(predicted)
    # (1 / K) * sum, not sum / K: the same float operations as the reference, same last digit.
    recall = (
        1
        / len(per_annotator)
        * sum(len(true_positives(p, predicted, margin)) / len(p) for p in per_annotator)
    )
    f1 = precision * recall / (alpha * recall + (1 - alpha) * precision)
    return FScore(f1=f1, precision=precision, recall=recall)


def partition_from_cps(locations: Iterable[int], n_obs: int) -> list[tuple[int, int]]:
    """Half-open segments ``[start, stop)`` covering ``[0, n_obs)``, cut at each location.

    A location of 0 or at/after n_obs cuts nothing (no empty segments)."""
    cuts = sorted({int(x) for x in locations if 0 < x < n_obs})
    bounds = [0, *cuts, n_obs]
    return list(itertools.pairwise(bounds))


def _jaccard(a: tuple[int, int], b: tuple[int, int]) -> float:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union


def cover_single(predicted: Sequence[tuple[int, int]], truth: Sequence[tuple[int, int]]) -> float:
    """Covering of the partition ``truth`` by ``predicted`` (Arbelaez et al. 2010, eq. 8)."""
    total = sum(b - a for a, b in predicted)
    if total != sum(b - a for a, b in truth):
        raise TcpdError(
            f"cover_single: partitions cover {total} and {sum(b - a for a, b in truth)} points"
        )
    c = 0.0
    for segment in truth:
        c += (segment[1] - segment[0]) * max(_jaccard(segment, p) for p in predicted)
    c /= total
    return c


def covering(annotations: Annotations, predictions: Iterable[int], n_obs: int) -> float:
    """Mean over annotators of the covering of their partition by the predicted one."""
    predicted = partition_from_cps(predictions, n_obs)
    covers = [
        cover_single(predicted, partition_from_cps(cps, n_obs)) for cps in annotations.values()
    ]
    if not covers:
        raise TcpdError("covering: no annotators given; TCPD has 5 per series")
    return sum(covers) / len(covers)


@dataclass(frozen=True)
class SeriesScore:
    f1: float
    precision: float
    recall: float
    cover: float


def score(annotations: Annotations, raw_predictions: Iterable[int], n_obs: int) -> SeriesScore:
    """Clean the predictions as TCPDBench does, then compute F1 (with P and R) and cover."""
    cps = clean_cps(raw_predictions, n_obs)
    f = f_measure(annotations, cps)
    return SeriesScore(
        f1=f.f1, precision=f.precision, recall=f.recall, cover=covering(annotations, cps, n_obs)
    )


def load_series(path: Path) -> TcpdSeries:
    """One TCPD dataset JSON (datasets/<name>.json) as an (n_obs, n_dim) array with NaN gaps."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TcpdError(f"{path}: cannot read a TCPD dataset: {exc}") from exc
    try:
        name, n_obs, n_dim, series = doc["name"], doc["n_obs"], doc["n_dim"], doc["series"]
    except KeyError as exc:
        raise TcpdError(f"{path}: field {exc} missing (see the benchmark's schema.json)") from exc
    except TypeError:
        raise TcpdError(f"{path}: expected a JSON object with name, n_obs, n_dim and "
                        "series") from None
    if len(series) != n_dim:
        raise TcpdError(f"{path}: n_dim is {n_dim} but 'series' has {len(series)} entries")
    try:
        values = np.full((n_obs, n_dim), np.nan)
        for j, column in enumerate(series):
            raw = column["raw"]
            if len(raw) != n_obs:
                raise TcpdError(
                    f"{path}: series[{j}].raw has {len(raw)} values, n_obs is {n_obs}")
            values[:, j] = [math.nan if v is None else float(v) for v in raw]
    except (KeyError, TypeError, ValueError) as exc:
        raise TcpdError(f"{path}: series: not numbers in series[].raw ({exc})") from None
    return TcpdSeries(name=str(name), values=values)


def load_annotations(path: Path) -> dict[str, dict[str, list[int]]]:
    """annotations.json: dataset -> annotator id -> change points, in the file's order."""
    try:
        doc = json.loads(path.read_text())
        return {
            str(ds): {str(uid): [int(x) for x in cps] for uid, cps in by_annotator.items()}
            for ds, by_annotator in doc.items()
        }
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise TcpdError(f"{path}: cannot read TCPD annotations (dataset -> annotator -> "
                        f"change-point indices): {exc}") from None


EXCLUDED_FROM_MEANS = frozenset({"uk_coal_employ"})
"""TCPDBench's published averages (MissingStrategy.zero_no_coal) drop this series: most of its
methods cannot run on its missing values."""


def benchmark_mean(per_series: Mapping[str, float | None]) -> float:
    """Mean over series the way TCPDBench averages: uk_coal_employ dropped, a failed run
    (None) counted as 0."""
    kept = [0.0 if v is None else v for k, v in per_series.items() if k not in EXCLUDED_FROM_MEANS]
    if not kept:
        raise TcpdError("benchmark_mean: no series left to average")
    return sum(kept) / len(kept)
