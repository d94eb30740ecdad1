"""`chargeback`: the command line. Subcommands load lazily so `--help` stays fast.

Every command runs inside one error boundary (`Chargeback.invoke`): a `ChargebackError` prints
its message (one line per problem) and exits 2, an `InternalError` exits 1; click's own usage
errors exit 2; anything else is a bug, reported in one line that names the log file holding
its traceback (exit 1). No user ever sees a bare traceback."""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from models.errors import ChargebackError, InternalError, TransientError
from models.files import home

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
    "replay": ("cli.replay:replay", "Replay a real public cluster trace end to end."),
    "metrics": ("cli.metrics:metrics", "Serve the budget metrics on /metrics for Prometheus."),
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


class Chargeback(LazyGroup):
    """The top-level group: the one place where errors become messages and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click prints these itself (usage errors exit 2)
        except InternalError as error:
            log = write_log(ctx)
            fail(ctx, 1, [*error.problems, "this is a bug or damaged data, not your input; "
                          f"details in {log}"])
        except ChargebackError as error:
            hint = (["(temporary: the same command may succeed when run again later)"]
                    if isinstance(error, TransientError) else [])
            fail(ctx, 2, error.problems + hint)
        except Exception as error:
            log = write_log(ctx)
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            fail(ctx, 1, [f"internal error: {type(error).__name__}"
                          + (f": {first[:200]}" if first else "")
                          + f"; full traceback in {log}"])


def fail(ctx: click.Context, code: int, lines: list[str]) -> NoReturn:
    for line in lines:
        click.echo(line, err=True)
    ctx.exit(code)


def write_log(ctx: click.Context) -> Path:
    """The current exception's traceback in a new file under $CHARGEBACK_HOME/logs (or the
    temporary folder when that cannot be written); returns the file."""
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    text = (f"{stamp} chargeback {' '.join(sys.argv[1:]) or ctx.info_name}\n"
            + traceback.format_exc())
    for folder in (home() / "logs", Path(tempfile.gettempdir()) / "chargeback-logs"):
        path = folder / f"chargeback-{stamp}-{os.getpid()}.log"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError:
            continue
        return path
    return Path("(no writable log folder)")


@click.group(cls=Chargeback, lazy=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """GPU metering and chargeback: collect GPU-seconds per tenant, bill them exactly.

    Start with `chargeback demo` (simulated cluster -> Dagster -> invoices), then
    `chargeback dashboard`."""


@click.group(
    "eval",
    cls=LazyGroup,
    lazy={
        "shifts": ("cli.evaluate:shifts", "Change-point detection on the TCPD benchmark."),
        "reservations": (
            "cli.evaluate:reservations",
            "Backtest reservation recommendations on Helios demand.",
        ),
        "forecast": (
            "cli.evaluate:forecast",
            "Backtest month-end usage forecasts on real traces against baselines.",
        ),
    },
)
def evaluate() -> None:
    """Evaluate the analytics on real public data (change points, reservations, forecasts)."""


if __name__ == "__main__":
    main()
