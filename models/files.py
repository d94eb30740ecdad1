"""Files the product reads and writes: one safe way for each.

- `safe_name` / `safe_path`: every name that becomes a path (a tenant, an invoice number, a
  model) goes through here, so no name can leave its folder or collide with another name.
- `atomic_open` / `atomic_write`: a file appears whole or not at all (temporary file in the
  same folder, fsync, rename, fsync of the folder).
- `read_text` / `read_yaml`: configuration files with bounded size, strict UTF-8, and YAML that
  refuses duplicate keys and aliases (a "billion laughs" bomb), every problem as a `UserError`
  naming the file, line and column."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import yaml
from yaml.events import AliasEvent

from models.errors import UserError

MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""Rate cards, tenants and users files are a few kilobytes; anything near this is a mistake."""

_CLEAN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_HASHED = re.compile(r".*-[0-9a-f]{16}")
_RESERVED = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.IGNORECASE)


def home() -> Path:
    """Where the product keeps its files: $CHARGEBACK_HOME, else `var/` in the checkout."""
    return Path(os.environ.get("CHARGEBACK_HOME") or Path(__file__).resolve().parents[1] / "var")


def safe_name(name: str) -> str:
    """A single path component for `name`: the name itself when it is plainly safe
    (`acme`, `INV-2026-09-0001`), else a readable slug plus 16 hex digits of the name's hash.

    Names that go unchanged never end in `-<16 hex>`, so a name can never be chosen to land on
    another name's hashed file."""
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{name!r}: a name that becomes a file name must not be empty")
    if (_CLEAN.fullmatch(name) and not _HASHED.fullmatch(name)
            and not _RESERVED.fullmatch(name) and not name.endswith(".")):
        return name
    ascii_text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_text).strip(".-")[:60] or "name"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{slug}-{digest}"


def safe_path(folder: Path, name: str, suffix: str = "") -> Path:
    """`folder/<safe_name(name)><suffix>`, which is always directly inside `folder`."""
    path = folder / f"{safe_name(name)}{suffix}"
    if path.parent != folder or path.name in ("", ".", ".."):
        raise UserError(f"{name!r}: cannot be used as a file name in {folder}")
    return path


def make_folder(folder: Path, what: str) -> Path:
    """`folder` and its parents, to write into; `what` names it in errors (e.g. `--out`)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{what} {folder}: it, or a folder above it, is a file") from None
    except OSError as error:
        raise UserError(f"{what} {folder}: cannot create the folder: "
                        f"{error.strerror or error}") from None
    return folder


@contextlib.contextmanager
def atomic_open(path: Path, mode: int = 0o644) -> Iterator[IO[bytes]]:
    """Write `path` through a binary handle; it appears (or is replaced) only once the block
    ends without error and the data is on disk. On error the old file is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name[:40]}-")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644) -> Path:
    with atomic_open(path, mode) as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    return path


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_text(path: Path, *, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The file's text, strict UTF-8; every way of failing is a `UserError` naming the file."""
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected a file") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    except OSError as error:
        raise UserError(f"{path}: cannot be read: {error.strerror or error}") from None
    if len(data) > max_bytes:
        raise UserError(f"{path}: larger than {max_bytes:,} bytes; is this the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise UserError(f"{path}: line {line}, column {column}: not valid UTF-8 "
                        f"(byte 0x{data[error.start]:02x})") from None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (exponential expansion) and duplicate mapping keys
    (the later value would silently win)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.MarkedYAMLError(
                problem="aliases (*name) are not allowed in configuration files",
                problem_mark=event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key; SafeLoader reports it below
            if first is not None:
                raise yaml.MarkedYAMLError(
                    problem=f"duplicate key {key!r} (first at line {first.line + 1}); the "
                            "later value would silently replace the first",
                    problem_mark=key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping)


def read_yaml(path: Path, *, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """The YAML document in `path`, parsed strictly (see `_StrictLoader`)."""
    return parse_yaml(read_text(path, max_bytes=max_bytes), str(path))


def parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        column = error.position - (text.rfind("\n", 0, error.position) + 1) + 1
        raise UserError(f"{where}: line {line}, column {column}: character "
                        f"U+{error.character:04X} is not allowed in YAML") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        place = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = error.problem or error.context or "not valid YAML"
        raise UserError(f"{where}: {place}{problem}") from None
    except yaml.YAMLError as error:
        raise UserError(f"{where}: not valid YAML: {error}") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to be a configuration file") from None
