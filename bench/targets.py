"""The targets of issue 18, each checked against the figure `make bench` measured.

The pipeline rows come from bench/pipeline.py's runs; the others are read off the printed
output of their bench module (bench/pricing.py, bench/spool.py, bench/demo.py), the line
named below, so each figure shown is the one printed above it in the same run."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    step: str
    limit: float
    unit: str
    figure: Callable[[Mapping[str, Any], Mapping[str, str]], float]
    """(pipeline runs by label, other benches' printed output by module name) -> the figure."""


def _run(runs: Mapping[str, Any], label: str) -> Any | None:
    return runs.get(label)


def _ratio(label: str, step: str) -> Callable[[Mapping[str, Any], Mapping[str, str]], float]:
    def figure(runs: Mapping[str, Any], _: Mapping[str, str]) -> float:
        run = _run(runs, label)
        if run is None:
            return math.nan
        return float(run.pipeline.get(step, math.nan) / run.raw.get(step, math.nan))
    return figure


def _exponent(runs: Mapping[str, Any], _: Mapping[str, str]) -> float:
    from bench.pipeline import slope

    scaled = [r for label, r in runs.items() if label != "month"]
    if len(scaled) < 2:
        return math.nan
    return slope([r.rows for r in scaled], [r.pipeline["conservation"] for r in scaled])


def _rss_gb(runs: Mapping[str, Any], _: Mapping[str, str]) -> float:
    run = _run(runs, "16x")
    return math.nan if run is None else float(run.pipeline_rss_mb) / 1024


def _printed(module: str, pattern: str, pick: Callable[[list[float]], float] = max
             ) -> Callable[[Mapping[str, Any], Mapping[str, str]], float]:
    def figure(_: Mapping[str, Any], outputs: Mapping[str, str]) -> float:
        found = [float(m) for m in re.findall(pattern, outputs.get(module, ""), re.MULTILINE)]
        return pick(found) if found else math.nan
    return figure


TARGETS = (
    Target("ingest, 30-day month (pipeline / raw read_parquet)", 1.25, "x",
           _ratio("month", "ingest")),
    Target("ingest, 16x cluster (pipeline / raw)", 1.25, "x", _ratio("16x", "ingest")),
    Target("aggregation, month (pipeline / raw GROUP BY)", 1.25, "x",
           _ratio("month", "aggregation")),
    Target("conservation check, scaling exponent over the scaled runs (1x..16x)", 1.05, "",
           _exponent),
    Target("month close (pipeline / raw GROUP BY of the billable hours)", 3.0, "x",
           _ratio("month", "close")),
    Target("peak RSS of the pipeline, 16x", 1.5, "GB", _rss_gb),
    Target("pricing 10,000 tenants' month (/ one Decimal pass)", 5.0, "x",
           _printed("pricing", r"pricing time / baseline\s+([\d.]+)x")),
    Target("`make demo` end to end", 60.0, "s", _printed("demo", r"demo wall \(s\)\s+([\d.]+)")),
    Target("spool writes (/ plain pyarrow writes, worst scale)", 1.3, "x",
           _printed("spool", r"([\d.]+)\s*$")),
)


def table(runs: Sequence[Any], outputs: Mapping[str, str]) -> list[str]:
    """Markdown: each target, the figure measured, and whether it is met."""
    by_label = {r.label: r for r in runs}
    out = ["| step | measured | target | met |", "|---|---:|---:|---|"]
    for target in TARGETS:
        value = target.figure(by_label, outputs)
        if math.isnan(value):
            shown, met = "not measured", "n/a"
        else:
            shown, met = f"{value:.2f}{target.unit}", "yes" if value <= target.limit else "NO"
        out.append(f"| {target.step} | {shown} | ≤ {target.limit:g}{target.unit} | {met} |")
    return out
