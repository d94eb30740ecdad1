"""`chargeback eval shifts|reservations`: the analytics measured on real public data."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click

from cli.options import FiniteFloatRange
from models.planning import shifts as detector
from models.planning.reservations import DEFAULT_HALF_LIFE_HOURS


@click.command("shifts")
@click.option("--tcpd", "tcpd_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="TCPD folder: datasets/, annotations.json, benchmark_results/.")
@click.option("--penalty-factor", type=FiniteFloatRange(min=0, min_open=True, max=1e6),
              default=detector.DEFAULT_PENALTY_FACTOR, show_default=True,
              help="Penalty per change point, times log(n).")
@click.option("--min-segment", type=click.IntRange(min=1), default=detector.DEFAULT_MIN_SEGMENT,
              show_default=True, help="Fewest points in a segment.")
@click.option("--model", type=click.Choice(["mixed", "linear", "mean"]),
              default=detector.DEFAULT_MODEL, show_default=True,
              help="mixed: each segment a level or a line (a slope costs half a change); "
                   "linear: lines only; mean: levels only.")
@click.option("--spike-threshold", type=FiniteFloatRange(min=0, max=1e6),
              default=detector.DEFAULT_SPIKE_THRESHOLD, show_default=True,
              help="Robust deviations from the 3-point median that make a point a spike; "
                   "0 disables.")
def shifts(tcpd_dir: Path, penalty_factor: float, min_segment: int, model: str,
           spike_threshold: float) -> None:
    """Score our change-point detector on every TCPD series with the benchmark's own metrics
    (F1 with a 5-point margin, cover), beside the published default runs."""
    from evaluation.shifts import evaluate_shifts, render

    params: dict[str, Any] = {
        "penalty_factor": penalty_factor,
        "min_segment": min_segment,
        "model": model,
        "spike_threshold": spike_threshold or None,
    }
    click.echo(render(evaluate_shifts(tcpd_dir, **params), params))


def _price(_ctx: click.Context, _param: click.Parameter, value: str) -> Decimal:
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not a decimal price such as 2.20") from None
    if not price.is_finite() or not 0 < price <= 1_000_000:
        raise click.BadParameter(f"must be a positive price per GPU-hour, got {value}")
    return price


@click.command("reservations")
@click.option("--helios", "helios_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder of Helios VC files (<vc>_cluster_sequence_vc.csv), e.g. "
                   "../shared/data/helios/earth_vcs.")
@click.option("--on-demand-price", default="2.20", callback=_price, show_default=True,
              help="On-demand price per GPU-hour (USD).")
@click.option("--reserved-price", default="1.40", callback=_price, show_default=True,
              help="Reserved price per GPU-hour (USD).")
@click.option("--half-life-hours", default=DEFAULT_HALF_LIFE_HOURS, show_default=True,
              type=FiniteFloatRange(min=0, min_open=True, max=1e6),
              help="Half-life of the decaying demand histogram.")
def reservations(helios_dir: Path, on_demand_price: Decimal, reserved_price: Decimal,
                 half_life_hours: float) -> None:
    """Backtest reservation recommendations on every Helios VC file in --helios.

    Train on the first 3 weeks of hourly demand (running + pending GPUs), test on the rest;
    compare the cost and unmet demand of our recommendation with reserving the mean, the peak
    and the VC's real quota."""
    from evaluation.reservations import backtest, render
    from models.planning.reservations import TierPrices

    if reserved_price >= on_demand_price:
        raise click.BadParameter(
            f"reserved price {reserved_price} is not below on-demand {on_demand_price}: "
            "reserving would never pay off", param_hint="--reserved-price")
    prices = TierPrices(on_demand_price, reserved_price)
    click.echo(render(backtest(helios_dir, prices, half_life_hours)))
