"""The root of every error the product raises on purpose, and what each kind asks for.

- `UserError`: the input or the configuration is wrong (a file, a row, a field, an argument).
  Retrying changes nothing; a person must fix it. The CLI prints the message and exits 2.
- `TransientError`: a source or a resource is unavailable now (the warehouse locked by another
  process, Prometheus down). The same command may succeed later. The CLI exits 2 too, and
  the message says to retry; Dagster retries or fails the run loudly.
- `InternalError`: the product caught its own result contradicting itself (a reconciliation
  that does not add up, a mart holding another tenant's rows). Neither the user nor a retry
  can fix it; the CLI prints the message, logs the traceback and exits 1.

Anything else that escapes is a bug: the CLI prints one line and where the full traceback was
logged, never a bare traceback."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar


class ChargebackError(Exception):
    """A failure the product anticipated; its message says what, where and what to do.

    `problems` holds every problem found (inputs validate themselves and report all problems
    at once); the message is one problem per line."""

    retry: ClassVar[bool] = False

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class UserError(ChargebackError):
    """Bad input or configuration: fix it, then run again."""


class TransientError(ChargebackError):
    """Unavailable now (a lock, a server): the same request may succeed later."""

    retry = True


class InternalError(ChargebackError):
    """A check of the product's own results failed: a bug or damaged data, never bad input."""
