"""Parameter checks shared by the commands: a bad argument is a usage error (exit 2) that
names the option."""

from __future__ import annotations

import math
from typing import Any

import click

from models.billing.rate_cards import month_bounds
from models.errors import UserError


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange lets `nan` through (every comparison with it is false)."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def period(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """A billing month, YYYY-MM."""
    try:
        month_bounds(value)
    except UserError as error:
        raise click.BadParameter(str(error)) from None
    return value
