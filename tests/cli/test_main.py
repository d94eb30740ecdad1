"""The command line's one error boundary: what a user sees for each kind of failure."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cli.main import COMMANDS, main
from models.errors import InternalError, TransientError, UserError

FAILURES: dict[str, BaseException] = {}


@click.command()
def fails() -> None:
    """A command that raises whatever the test put in FAILURES."""
    raise FAILURES["next"]


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    monkeypatch.setitem(COMMANDS, "fails", ("tests.cli.test_main:fails", "Fails."))
    monkeypatch.setenv("CHARGEBACK_HOME", str(tmp_path / "home"))

    def run(error: BaseException):  # type: ignore[no-untyped-def]
        FAILURES["next"] = error
        return CliRunner().invoke(main, ["fails"])

    return run


def test_a_user_error_is_its_lines_and_exit_2(failing, tmp_path: Path) -> None:
    result = failing(UserError(["a.yaml: line 2: duplicate key 'x'", "b.yaml: tenants: empty"]))
    assert result.exit_code == 2
    assert result.stderr == "a.yaml: line 2: duplicate key 'x'\nb.yaml: tenants: empty\n"
    assert not (tmp_path / "home").exists()  # nothing logged: the message is the whole story


def test_a_transient_error_says_it_may_pass(failing) -> None:
    result = failing(TransientError("warehouse.duckdb is in use by another process (PID 7)"))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "warehouse.duckdb is in use by another process (PID 7)",
        "(temporary: the same command may succeed when run again later)"]


def test_a_bug_is_one_line_and_a_log(failing, tmp_path: Path) -> None:
    result = failing(KeyError("tenant"))
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    logs = list((tmp_path / "home" / "logs").glob("chargeback-*.log"))
    assert len(logs) == 1
    assert line == f"internal error: KeyError: 'tenant'; full traceback in {logs[0]}"
    log = logs[0].read_text()
    assert "Traceback (most recent call last)" in log
    assert 'raise FAILURES["next"]' in log
    assert "Traceback" not in result.output


def test_an_internal_error_is_its_message_and_a_log(failing, tmp_path: Path) -> None:
    result = failing(InternalError("reconciliation failed: billed GPU-hours differ"))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "reconciliation failed: billed GPU-hours differ"
    assert lines[1].startswith("this is a bug or damaged data, not your input; details in ")
    assert Path(lines[1].rsplit(" ", 1)[1]).is_file()


def test_the_log_goes_to_the_temp_folder_when_home_cannot_be_written(
        failing, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "home").write_text("a file where the home folder should be")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    result = failing(RuntimeError("boom"))
    assert result.exit_code == 1
    logs = list((tmp_path / "tmp" / "chargeback-logs").glob("*.log"))
    assert len(logs) == 1
    assert str(logs[0]) in result.stderr


def test_usage_errors_stay_click_s(failing) -> None:
    result = CliRunner().invoke(main, ["bill", "--period"])
    assert result.exit_code == 2
    assert "Option '--period' requires an argument" in result.output
    result = CliRunner().invoke(main, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command 'no-such-command'" in result.output
