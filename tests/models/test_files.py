"""Names that become paths, atomic writes and strict configuration reading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from models.errors import TransientError, UserError
from models.files import atomic_open, atomic_write, read_text, read_yaml, safe_name, safe_path

HOSTILE_NAMES = [
    "../../escaped", "..", ".", "/etc/passwd", "team/a", "a\\b", "nul\x00byte", "CON", "con.txt",
    "lpt1", "trailing.", ".hidden", "-dash", " spaced ", "x" * 300, "é" * 200, "租户",
    "emoji-🚀", "a:b", "a*b?c", "line\nbreak", "a-0123456789abcdef",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_name_stays_inside_its_folder(tmp_path: Path, name: str) -> None:
    path = safe_path(tmp_path, name, ".json")
    assert path.parent == tmp_path
    assert path.name not in ("", ".", "..")
    assert not set(path.name) & {"/", "\\", "\x00"}
    assert len(path.name.encode()) <= 255
    atomic_write(path, b"{}")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_plain_names_stay_readable() -> None:
    assert safe_name("acme") == "acme"
    assert safe_name("INV-2026-09-0001") == "INV-2026-09-0001"
    assert safe_name("llama-3.1-70b") == "llama-3.1-70b"


def test_names_that_slug_alike_stay_apart() -> None:
    names = ["team/a", "team\\a", "team a", "team-a", "team:a", "Team/A"]
    assert len({safe_name(n) for n in names}) == len(names)


def test_a_name_cannot_be_chosen_to_land_on_another_names_file() -> None:
    victim = safe_name("team/a")  # "team-a-<16 hex>"
    assert safe_name(victim) != victim


def test_empty_names_are_refused() -> None:
    for name in ["", "   "]:
        with pytest.raises(UserError, match="must not be empty"):
            safe_name(name)


def test_atomic_write_leaves_the_old_file_on_error(tmp_path: Path) -> None:
    path = tmp_path / "invoice.json"
    atomic_write(path, "old")

    def fail_midway() -> None:
        with atomic_open(path) as handle:
            handle.write(b"half of the new")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        fail_midway()
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["invoice.json"]


def test_atomic_write_sets_the_mode(tmp_path: Path) -> None:
    path = atomic_write(tmp_path / "secret", b"x", mode=0o600)
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_errors_have_one_root_and_say_whether_to_retry() -> None:
    assert not UserError("x").retry
    assert TransientError("x").retry
    error = UserError(["a: bad", "b: worse"])
    assert str(error) == "a: bad\nb: worse"
    assert error.problems == ["a: bad", "b: worse"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a: 1\nb: 2\na: 3\n", "line 3, column 1: duplicate key 'a' (first at line 1)"),
        (b"plans:\n  growth: {fee: 1}\n  growth: {fee: 2}\n", "duplicate key 'growth'"),
        (b"a: &x [1, 2]\nb: *x\n", "line 2, column 4: aliases"),
        (b"a: [1, 2\n", "line 2"),
        (b"ok: 1\nbad: \xff\xfe\n", "line 2, column 6: not valid UTF-8 (byte 0xff)"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    ],
)
def test_bad_yaml_is_refused_with_its_place(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "card.yaml"
    path.write_bytes(content)
    with pytest.raises(UserError) as error:
        read_yaml(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_a_yaml_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for n in range(1, 10):
        prev = chr(ord("a") + n - 1)
        lines.append(f"{chr(ord('a') + n)}: &{chr(ord('a') + n)} [{', '.join([f'*{prev}'] * 9)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines))
    with pytest.raises(UserError, match="aliases"):
        read_yaml(path)


def test_files_that_are_not_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is a folder, expected a file"):
        read_text(tmp_path)
    with pytest.raises(UserError, match="file not found"):
        read_text(tmp_path / "missing.yaml")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * 2000)
    with pytest.raises(UserError, match="larger than 1,000 bytes"):
        read_text(big, max_bytes=1000)


def test_good_yaml_reads_as_before(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("tenants:\n  acme: {plan: growth, start: 2026-01-01}\n  zen: {plan: x}\n")
    doc = read_yaml(path)
    assert set(doc["tenants"]) == {"acme", "zen"}
