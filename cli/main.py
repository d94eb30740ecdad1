"""`chargeback`: the command line. Subcommands load lazily so `--help` stays fast."""

from __future__ import annotations

import importlib
from typing import Any

import click

# name -> ("module:attribute" of a click command, one-line help). The help is written here so
# that `chargeback --help` lists every command without importing Dagster or Streamlit.
COMMANDS = {
    "bill": ("cli.bill:bill", "Price ledger rows into invoices directly (no Dagster)."),
    "collect": ("cli.collect:collect", "Run a collector into the spool (nvml, pods, ...)."),
    "run": ("cli.operate:run", "Materialize the pipeline for a range of days."),
    "close": ("cli.operate:close_command", "Close a billing month: finalize its invoices."),
    "invoices": ("cli.operate:invoices", "List, show and export invoices."),
    "demo": ("cli.operate:demo", "Simulate a month, run the pipeline, print invoices."),
    "eval": ("cli.main:evaluate", "Evaluate shifts, reservations and forecasts on real data."),
    "replay": ("evaluation.replay:replay", "Replay a real public cluster trace end to end."),
    "quotas": ("cli.quotas:quotas", "Write or apply scheduler quotas from recommendations."),
    "dashboard": ("cli.dashboard:dashboard", "Start the Streamlit dashboard."),
    "users": ("cli.dashboard:users", "Manage the dashboard's local users file."),
}


class LazyGroup(click.Group):
    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, attribute = self.lazy[cmd_name][0].split(":")
            command: click.Command = getattr(importlib.import_module(module), attribute)
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.lazy[name][1]) for name in sorted(self.lazy)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """GPU metering and chargeback: collect GPU-seconds per tenant, bill them exactly.

    Start with `chargeback demo` (simulated cluster -> Dagster -> invoices), then
    `chargeback dashboard`."""


@click.group(
    "eval",
    cls=LazyGroup,
    lazy={
        "shifts": ("evaluation.shifts:shifts", "Change-point detection on the TCPD benchmark."),
        "reservations": (
            "evaluation.reservations:reservations",
            "Backtest reservation recommendations on Helios demand.",
        ),
        "forecast": (
            "evaluation.forecast:forecast",
            "Backtest month-end usage forecasts on real traces against baselines.",
        ),
    },
)
def evaluate() -> None:
    """Evaluate the analytics on real public data (change points, reservations, forecasts)."""


if __name__ == "__main__":
    main()
