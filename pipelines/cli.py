"""`chargeback`: the command line. Subcommands load lazily so `--help` stays fast."""

from __future__ import annotations

import importlib
from typing import Any

import click

# name -> "module:attribute" of a click command; each lives beside what it drives.
COMMANDS = {
    "bill": "pipelines.bill:bill",
    "collect": "collectors.agent:collect",
    "run": "pipelines.operate:run",
    "close": "pipelines.operate:close",
    "invoices": "pipelines.operate:invoices",
    "demo": "pipelines.operate:demo",
    "eval": "pipelines.cli:evaluate",
    "replay": "pipelines.replay:replay",
    "quotas": "pipelines.quotas:quotas",
    "dashboard": "dashboards.cli:dashboard",
    "users": "dashboards.cli:users",
}


class LazyGroup(click.Group):
    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, attribute = self.lazy[cmd_name].split(":")
            command: click.Command = getattr(importlib.import_module(module), attribute)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """GPU metering and chargeback: collect GPU-seconds per tenant, bill them exactly.

    Start with `chargeback demo` (simulated cluster -> Dagster -> invoices), then
    `chargeback dashboard`."""


@click.group(
    "eval",
    cls=LazyGroup,
    lazy={
        "shifts": "pipelines.eval_shifts:shifts",
        "reservations": "pipelines.eval_reservations:reservations",
    },
)
def evaluate() -> None:
    """Evaluate the analytics on real public data (change points, reservations)."""
