"""The bad-input corpus's machinery: a case is a command line run against a workspace holding
good copies of the design example's files, one of them spoiled by the case.

Every case must end the same way (issue 11): exit code 2, a message naming the place (file and
line, key, row and field, or the argument), no traceback, and the workspace exactly as it was
(nothing written, nothing half-written, no temporary files left behind)."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from cli.main import main
from models.ledger.usage import LEDGER_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "design-example"
CARD = (EXAMPLE / "rate-card.yaml").read_text()
TENANTS = (EXAMPLE / "tenants.yaml").read_text()
ROWS: list[dict[str, Any]] = pq.read_table(EXAMPLE / "usage.parquet").to_pylist()

# The workspace a case starts from; `{w}` in arguments and expected text is its path.
BILL = ("bill", "--usage", "{w}/usage.parquet", "--rate-card", "{w}/card.yaml",
        "--tenants", "{w}/tenants.yaml", "--period", "2026-10", "--out", "{w}/out")

Content = str | bytes | Callable[[Path], None]
"""A file's text or bytes, or a function that makes the path (a folder, say)."""


@dataclass(frozen=True)
class Case:
    id: str
    args: Sequence[str]
    where: Sequence[str]
    """Text the output must hold: the place (file, key, row, field, argument) and the reason."""
    files: Mapping[str, Content] = field(default_factory=dict)
    stdin: str | None = None
    marks: Sequence[Any] = ()

    def param(self) -> Any:
        return pytest.param(self, id=self.id, marks=list(self.marks))


def edited(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def card(old: str, new: str) -> dict[str, Content]:
    return {"card.yaml": edited(CARD, old, new)}


def tenants(old: str, new: str) -> dict[str, Content]:
    return {"tenants.yaml": edited(TENANTS, old, new)}


def parquet(rows: list[dict[str, Any]], schema: pa.Schema = LEDGER_SCHEMA) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink)
    return sink.getvalue()


def usage_with(index: int = 3, **changes: Any) -> dict[str, Content]:
    """The design example's rows with row `index` changed."""
    rows = [dict(r) for r in ROWS]
    rows[index].update(changes)
    return {"usage.parquet": parquet(rows)}


def folder(path: Path) -> None:
    path.mkdir()
    (path / "inside.txt").write_text("a folder, not a file")


def make_workspace(root: Path, files: Mapping[str, Content]) -> Path:
    w = root / "w"
    w.mkdir()
    shutil.copy(EXAMPLE / "usage.parquet", w / "usage.parquet")
    (w / "card.yaml").write_text(CARD)
    (w / "tenants.yaml").write_text(TENANTS)
    for name, content in files.items():
        path = w / name
        if path.is_file():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return w


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file and folder under `root` with its bytes (None for a folder)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def fill(values: Sequence[str], w: Path) -> list[str]:
    return [v.replace("{w}", str(w)) for v in values]


def invoke(args: Sequence[str], stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin)


def assert_refused(code: int, output: str, where: Sequence[str], before: Mapping[str, Any],
                   after: Mapping[str, Any]) -> None:
    assert code == 2, output
    assert "Traceback" not in output, output
    assert "Stack Trace" not in output, output
    for text in where:
        assert text in output, (text, output)
    changed = sorted(set(before) ^ set(after)
                     | {k for k in set(before) & set(after) if before[k] != after[k]})
    assert not changed, f"written or changed: {changed}"


def run_case(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process, as `chargeback` runs it (the same click group and error boundary)."""
    w = make_workspace(tmp_path, case.files)
    for name in [n for n in os.environ if n.startswith("CHARGEBACK_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CHARGEBACK_HOME", str(w / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(w / "dagster"))

    def no_exec(*args: Any) -> None:
        raise AssertionError(f"a refused command went on to exec {args[:2]}")

    monkeypatch.setattr(os, "execve", no_exec)
    before = snapshot(tmp_path)
    environment = dict(os.environ)
    try:
        result = invoke(fill(case.args, w), case.stdin)
    finally:
        # A command may point the pipeline somewhere through the environment (replay does);
        # in-process, that must not outlive the case.
        os.environ.clear()
        os.environ.update(environment)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.exception)
    assert_refused(result.exit_code, result.output, fill(case.where, w), before,
                   snapshot(tmp_path))


_DEMO_HOME: list[Path] = []


def demo_home(path: Path) -> None:
    """A CHARGEBACK_HOME holding a real warehouse with October 2026's invoices (the dashboard
    tests' demo warehouse), built once per session and copied."""
    if not _DEMO_HOME:
        from tests.dashboards.demo_warehouse import build

        built = Path(tempfile.mkdtemp(prefix="corpus-home-"))
        build(built / "home")
        _DEMO_HOME.append(built / "home")
    shutil.copytree(_DEMO_HOME[0], path)
