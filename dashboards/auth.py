"""Dashboard identities: the local users file, password hashes and roles.

A role is `finance`, `operator` or `tenant:<name>`. In OIDC mode the identity provider
authenticates and this file only maps the user's e-mail to a role; in local mode the file also
holds each user's scrypt hash (salted, memory-hard; hashlib only, no extra dependency)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from models.errors import UserError
from models.files import atomic_write, read_yaml

# 2**15 x 8 x 128 bytes = 32 MiB per hash and ~0.1 s here: OWASP's scrypt floor is
# N=2**17 with r=8 (128 MiB); we take N=2**15 so that a login stays fast on a 2-core host and
# record the parameters in every hash, so they can be raised without invalidating old ones.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_MAXMEM = 256 * 2**20
ROLES = ("finance", "operator")
TENANT_PREFIX = "tenant:"


class UsersFileError(UserError):
    pass


@dataclass(frozen=True)
class Role:
    kind: str
    """`tenant`, `finance` or `operator`."""
    tenant: str | None = None

    def __str__(self) -> str:
        return f"{TENANT_PREFIX}{self.tenant}" if self.kind == "tenant" else self.kind


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    password_hash: str | None
    """None for a user who signs in through the identity provider only."""


def parse_role(text: str) -> Role:
    if text in ROLES:
        return Role(text)
    if text.startswith(TENANT_PREFIX) and text[len(TENANT_PREFIX):].strip():
        return Role("tenant", text[len(TENANT_PREFIX):])
    raise ValueError(f"role must be finance, operator or tenant:<name>, got {text!r}")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=_MAXMEM)
    return (f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$"
            f"{base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}")


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                                r=int(r), p=int(p), maxmem=_MAXMEM, dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


# Checked against when the user does not exist, so a wrong name costs as long as a wrong
# password and the login form does not reveal which names exist.
_DUMMY_HASH = hash_password(secrets.token_hex(8))


_PARSED: dict[Path, tuple[tuple[int, int, int], dict[str, User]]] = {}
_PARSED_LOCK = threading.Lock()


def load_users(path: Path) -> dict[str, User]:
    """Users by name; a missing file is no users. Problems name the file and the user.

    Every run of every session reads the users (the session check, sign-in, downloads), and
    parsing a file of 200 users took 0.1-0.2 s a run on the 2-core machine (the tenant
    render benchmark): the parsed users are kept per version of the file (inode, size,
    modification time), and `save_users` replaces the file, so a change is read at the
    next run."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return {}
    version = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _PARSED_LOCK:
        cached = _PARSED.get(path)
    if cached is not None and cached[0] == version:
        return dict(cached[1])
    users = _parse_users(path)
    with _PARSED_LOCK:
        _PARSED[path] = (version, users)
    return dict(users)


def _parse_users(path: Path) -> dict[str, User]:
    try:
        doc = read_yaml(path) or {}
    except UserError as error:
        raise UsersFileError(error.problems) from None
    raw = doc.get("users", {}) if isinstance(doc, Mapping) else None
    if not isinstance(raw, Mapping):
        raise UsersFileError(f"{path}: expected a `users:` mapping of name -> role and password")
    users: dict[str, User] = {}
    problems = []
    for name, entry in raw.items():
        if not isinstance(entry, Mapping):
            problems.append(f"{path}: users.{name}: must be a mapping with `role`")
            continue
        try:
            role = parse_role(str(entry.get("role", "")))
        except ValueError as error:
            problems.append(f"{path}: users.{name}.role: {error}")
            continue
        password = entry.get("password")
        if password is not None and not str(password).startswith("scrypt$"):
            problems.append(f"{path}: users.{name}.password: not an scrypt hash; set it with "
                            "`chargeback users add`")
            continue
        users[str(name)] = User(str(name), role, None if password is None else str(password))
    if problems:
        raise UsersFileError("\n".join(problems))
    return users


def save_users(path: Path, users: Mapping[str, User]) -> None:
    """Written under a temporary name, readable by the owner only, then moved into place."""
    doc: dict[str, Any] = {"users": {
        name: {"role": str(user.role),
               **({"password": user.password_hash} if user.password_hash else {})}
        for name, user in sorted(users.items())
    }}
    atomic_write(path, yaml.safe_dump(doc, sort_keys=False), mode=0o600)


def authenticate(users: Mapping[str, User], name: str, password: str) -> User | None:
    user = users.get(name)
    if user is None or user.password_hash is None:
        verify_password(password, _DUMMY_HASH)
        return None
    return user if verify_password(password, user.password_hash) else None


def user_for_email(users: Mapping[str, User], email: str) -> User | None:
    """The users-file entry named by an identity provider's e-mail (case-insensitive)."""
    wanted = email.strip().lower()
    return next((u for u in users.values() if u.name.lower() == wanted), None)
