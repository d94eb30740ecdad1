"""`chargeback eval reservations --helios DIR`: backtest reservation recommendations on the
SenseTime Helios virtual clusters' real demand (May 2020, one file per VC = one tenant)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl

from models.billing.rate_cards import SlaClass
from models.errors import UserError
from models.planning.reservations import (
    DemandDistribution,
    TierPrices,
    cost_of,
    cost_optimal_reservation,
    overflow_pools,
    recommend_reservations,
)

HELIOS_COLUMNS = ("time", "total_gpu_num", "running_gpu_num", "pending_gpu_num")
HELIOS_SUFFIX = "_cluster_sequence_vc"
TIER = "helios-v100"
"""Helios' Earth cluster is V100 GPUs; one tier, one price pair."""
TRAIN_HOURS = 21 * 24
STRATEGIES = ("ours", "ours+P95", "mean", "peak", "quota", "hindsight")
STRATEGY_HELP = {
    "ours": "largest k with decayed P(demand >= k) >= reserved/on-demand price",
    "ours+P95": "ours, treated as latency-sensitive (at least the decayed P95 demand)",
    "mean": "mean hourly demand of the training weeks, rounded half up",
    "peak": "peak hourly demand of the training weeks, rounded up",
    "quota": "the VC's actual GPU quota in the trace (total_gpu_num)",
    "hindsight": "cheapest fixed reservation for the test hours, known only afterwards: a bound",
}


@dataclass(frozen=True)
class VirtualCluster:
    name: str
    quota_gpus: int
    hours: pl.DataFrame
    """hour (UTC), demand_gpus: mean of running + pending GPUs over the hour's samples."""


def load_virtual_cluster(path: Path) -> VirtualCluster:
    """Per-minute demand is running + pending GPUs (pending is demand the quota turned away).
    An hour's demand is the mean of its minutes: the GPU-hours it would use, which is what an
    hourly bill covers with a reservation and sends to on-demand above it."""
    try:
        header = pl.read_csv(path, n_rows=0).columns
    except (pl.exceptions.PolarsError, OSError) as error:
        raise UserError(f"{path}: not a readable CSV ({error})") from None
    missing = [c for c in HELIOS_COLUMNS if c not in header]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)}; a Helios VC file "
            f"(<vc>{HELIOS_SUFFIX}.csv) has {', '.join(HELIOS_COLUMNS)}"
        )
    try:
        minutes = pl.read_csv(path, columns=list(HELIOS_COLUMNS)).select(
            # The trace writes naive wall-clock times; only their order and spacing matter here.
            pl.col("time").str.to_datetime("%Y-%m-%d %H:%M:%S", time_zone="UTC"),
            pl.col("total_gpu_num").cast(pl.Int64),
            (pl.col("running_gpu_num") + pl.col("pending_gpu_num")).cast(pl.Float64).alias("d"),
        )
    except pl.exceptions.PolarsError as error:
        raise UserError(
            f"{path}: {' '.join(str(error).split())[:300]}; expected times like "
            "2020-05-01 00:00:00 and whole GPU counts"
        ) from None
    if minutes.height == 0 or minutes.null_count().sum_horizontal().item():
        raise UserError(f"{path}: no rows, or empty cells")
    hours = (
        minutes.group_by(pl.col("time").dt.truncate("1h").alias("hour"))
        .agg(pl.col("d").mean().alias("demand_gpus"))
        .sort("hour")
    )
    # The quota in force when the recommendation is made (it is constant in May 2020 anyway).
    split = hours["hour"][0] + timedelta(hours=TRAIN_HOURS)
    quota = minutes.filter(pl.col("time") < split)["total_gpu_num"]
    name = path.stem.removesuffix(HELIOS_SUFFIX)
    return VirtualCluster(
        name, int(quota[-1] if quota.len() else minutes["total_gpu_num"][0]), hours
    )


@dataclass(frozen=True)
class Outcome:
    reserved_gpus: int
    cost: Decimal
    unmet_gpu_hours: Decimal
    """Demand above the reservation: served on-demand, or pending where there is none."""
    unmet_hours: int
    """Hours in which demand exceeded the reservation."""


def evaluate(test_demand: np.ndarray, reserved: int, prices: TierPrices) -> Outcome:
    overflow = np.maximum(test_demand - reserved, 0.0)
    cost = cost_of(reserved * test_demand.size, float(overflow.sum()), prices)
    return Outcome(reserved, cost.total, cost.overflow_gpu_hours, int((overflow > 1e-9).sum()))


def _dense(vc: VirtualCluster, start: datetime, hours: int) -> np.ndarray:
    """Hourly demand from `start` for `hours` hours; an hour with no samples is zero demand."""
    offsets = ((vc.hours["hour"] - start).dt.total_hours()).to_numpy()
    dense = np.zeros(hours)
    keep = (offsets >= 0) & (offsets < hours)
    dense[offsets[keep]] = vc.hours["demand_gpus"].to_numpy()[keep]
    return dense


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    body = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    head = "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (c, w) in enumerate(zip(header, widths, strict=True))
    )
    return "\n".join([title, head, line, *body[:-1], line, body[-1]])


@dataclass(frozen=True)
class Backtest:
    helios_dir: Path
    prices: TierPrices
    half_life_hours: float
    vcs: list[VirtualCluster]
    start: datetime
    split: datetime
    test_hours: int
    results: dict[str, dict[str, Outcome]]
    """VC name -> strategy -> outcome over the test hours."""
    pool: pl.DataFrame
    """overflow_pools() of our recommendation over the training hours."""
    test_overflow: np.ndarray
    """Summed hourly demand above our reservation, test hours."""


def backtest(helios_dir: Path, prices: TierPrices, half_life_hours: float) -> Backtest:
    """Train on the first 3 weeks of hourly demand (running + pending GPUs) of every Helios VC
    file in `helios_dir`, test on the rest: each strategy's cost and unmet demand."""
    if not helios_dir.is_dir():
        raise UserError(f"{helios_dir} is not a folder")
    files = sorted(helios_dir.glob("*.csv"))
    if not files:
        raise UserError(
            f"{helios_dir} has no .csv files; point it at the Helios VC files "
            f"(e.g. ../shared/data/helios/earth_vcs)"
        )
    vcs = [load_virtual_cluster(path) for path in files]
    start = min(vc.hours["hour"][0] for vc in vcs)
    end = max(vc.hours["hour"][-1] for vc in vcs)
    total_hours = int((end - start).total_seconds() // 3600) + 1
    test_hours = total_hours - TRAIN_HOURS
    if test_hours <= 0:
        raise UserError(
            f"{helios_dir}: the files span {total_hours} h; the backtest trains on the first "
            f"{TRAIN_HOURS} h and needs later hours to test on"
        )
    split = start + timedelta(hours=TRAIN_HOURS)

    train = pl.concat(
        [
            vc.hours.filter(pl.col("hour") < split).select(
                pl.lit(vc.name).alias("tenant"),
                pl.lit(TIER).alias("hardware_tier"),
                pl.lit(None, pl.String).alias("mig_profile"),
                "hour",
                "demand_gpus",
            )
            for vc in vcs
        ]
    )

    def recommend(sla_class: SlaClass) -> pl.DataFrame:
        return recommend_reservations(
            train,
            {TIER: prices},
            current_reserved={(vc.name, TIER, None): vc.quota_gpus for vc in vcs},
            sla_classes={vc.name: sla_class.value for vc in vcs},
            as_of=split,
            half_life_hours=half_life_hours,
            lookback_hours=TRAIN_HOURS,
        )

    ours = recommend(SlaClass.STANDARD)
    by_name = dict(zip(ours["tenant"], ours["recommended_gpus"], strict=True))
    latency = recommend(SlaClass.LATENCY_SENSITIVE)
    by_name_p95 = dict(zip(latency["tenant"], latency["recommended_gpus"], strict=True))
    pool = overflow_pools(
        train, ours, as_of=split, half_life_hours=half_life_hours, lookback_hours=TRAIN_HOURS
    )

    results: dict[str, dict[str, Outcome]] = {}
    test_overflow = np.zeros(test_hours)
    for vc in vcs:
        train_demand = _dense(vc, start, TRAIN_HOURS)
        test_demand = _dense(vc, split, test_hours)
        mean = float(DemandDistribution.of(train_demand).units.mean())
        reserved = {
            # A VC with no demand at all in training has no recommendation row: reserve none.
            "ours": int(by_name.get(vc.name, 0)),
            "ours+P95": int(by_name_p95.get(vc.name, 0)),
            "mean": math.floor(mean + 0.5),
            "peak": math.ceil(float(train_demand.max()) - 1e-9),
            "quota": vc.quota_gpus,
            # Unweighted test demand: the rule's k minimises the expected cost over it exactly.
            "hindsight": cost_optimal_reservation(
                DemandDistribution.of(test_demand), prices.break_even
            ),
        }
        results[vc.name] = {s: evaluate(test_demand, k, prices) for s, k in reserved.items()}
        test_overflow += np.maximum(test_demand - reserved["ours"], 0.0)

    return Backtest(helios_dir, prices, half_life_hours, vcs, start, split, test_hours, results,
                    pool, test_overflow)


def render(bt: Backtest) -> str:
    """The backtest as the tables `chargeback eval reservations` prints."""
    prices, vcs, results, test_hours = bt.prices, bt.vcs, bt.results, bt.test_hours
    out = [
        f"Rate card (backtest): tier {TIER}, on-demand {prices.on_demand_per_gpu_hour} USD/GPU-h, "
        f"reserved {prices.reserved_per_gpu_hour} USD/GPU-h, break-even utilisation "
        f"{float(prices.break_even):.3f}",
        f"{len(vcs)} VC files in {bt.helios_dir}; train {bt.start:%Y-%m-%d %H:%M} + "
        f"{TRAIN_HOURS} h, test {bt.split:%Y-%m-%d %H:%M} + {test_hours} h; hourly demand = "
        f"mean of per-minute running + pending GPUs; half-life {bt.half_life_hours:g} h",
        *(f"  {strategy:<9} {STRATEGY_HELP[strategy]}" for strategy in STRATEGIES),
    ]

    def rows(cell: Callable[[Outcome], str]) -> list[list[str]]:
        table = [[vc.name, *(cell(results[vc.name][s]) for s in STRATEGIES)] for vc in vcs]
        totals = [
            Outcome(
                sum(r[s].reserved_gpus for r in results.values()),
                sum((r[s].cost for r in results.values()), Decimal(0)),
                sum((r[s].unmet_gpu_hours for r in results.values()), Decimal(0)),
                sum(r[s].unmet_hours for r in results.values()),
            )
            for s in STRATEGIES
        ]
        table.append(["TOTAL", *(cell(t) for t in totals)])
        return table

    header = ["vc", *STRATEGIES]
    out += ["", _table("Reserved GPUs", header, rows(lambda o: str(o.reserved_gpus)))]
    out += ["", _table(f"Test-period cost, USD ({test_hours} h: reserved + on-demand overflow)",
                       header, rows(lambda o: _money(o.cost)))]
    out += ["", _table("Unmet-demand GPU-hours above the reservation (hours with any), test "
                       "period", header,
                       rows(lambda o: f"{o.unmet_gpu_hours:,.1f} ({o.unmet_hours})"))]
    for row in bt.pool.iter_rows(named=True):
        pool_gpus = row["pool_gpus"]
        separate = row["sum_of_tenant_overflow_gpus"]
        out += ["", (
            f"Shared overflow pool above 'ours' ({row['hardware_tier']}): P95 of the summed "
            f"hourly overflow = {pool_gpus} GPUs, vs {separate} GPUs as the sum of each VC's P95 "
            f"overflow. Test hours with summed overflow above the pool: "
            f"{int((bt.test_overflow > pool_gpus + 1e-9).sum())} of {test_hours} "
            f"(above the sum of P95s: {int((bt.test_overflow > separate + 1e-9).sum())})."
        )]
    return "\n".join(out)
