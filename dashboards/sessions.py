"""Server-side session records and the sign-in rate limit, shared by the app script and the
server's middleware (dashboards/server.py) in one process.

A record is what makes a browser tab signed in. Streamlit's session state only holds the
record's random token; the record itself holds the user, a version of the user's entry in the
users file and the browser it was opened from. It is checked on every run: a session id
replayed from another browser, a changed role or password, or a removed user ends it. Files a
session is handed for download are granted to its record, so the media route serves them to
that browser only, and to nobody once the record has ended.

Plain Python with no Streamlit import, so the middleware and a download running outside any
script run can use it too."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from dashboards.auth import User

MAX_IDLE_S = 12 * 3600
"""A record not seen for this long is dropped: a tab left open overnight signs in again."""


def browser_tag(cookie: str | None) -> str | None:
    """What a record keeps of the browser's binding cookie: its hash, never the cookie, so
    nothing the script can show or log can be replayed as the cookie."""
    return hashlib.sha256(cookie.encode()).hexdigest() if cookie else None


def entry_version(user: User) -> str:
    """Changes whenever the user's entry changes: a new role, or a new password (a new
    password always has a new salt, even when the password itself is reused)."""
    text = f"{user.name}\n{user.role}\n{user.password_hash or ''}"
    return hashlib.sha256(text.encode()).hexdigest()


class Ended(Enum):
    """Why a session record no longer signs its tab in; the value is shown to the user."""

    UNKNOWN = "Your session has ended. Sign in again."
    OTHER_BROWSER = "This session belongs to another browser. Sign in again."
    REMOVED = "Your account has been removed."
    CHANGED = "Your account was changed (role or password). Sign in again."


@dataclass
class Record:
    user: str
    version: str
    browser: str
    seen: float
    downloads: set[str] = field(default_factory=set)
    """SHA-256 of each file handed to this session for download."""


@dataclass(frozen=True)
class Check:
    user: User | None
    ended: Ended | None = None
    record_user: str | None = None
    """The user the ended record belonged to, for the log."""


class SessionStore:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._records: dict[str, Record] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def open(self, user: User, browser: str) -> str:
        """A new record for `user` signed in from `browser`; returns its token."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            for stale in [t for t, r in self._records.items() if now - r.seen > MAX_IDLE_S]:
                del self._records[stale]
            self._records[token] = Record(user.name, entry_version(user), browser, now)
        return token

    def check(self, token: object, users: Mapping[str, User], browser: str | None) -> Check:
        """The signed-in user if the record is whole; otherwise the record is ended."""
        if not isinstance(token, str):
            return Check(None, Ended.UNKNOWN)
        with self._lock:
            record = self._records.pop(token, None)
            if record is None or self._clock() - record.seen > MAX_IDLE_S:
                return Check(None, Ended.UNKNOWN)
            user = users.get(record.user)
            ended = (Ended.OTHER_BROWSER if browser != record.browser
                     else Ended.REMOVED if user is None
                     else Ended.CHANGED if entry_version(user) != record.version
                     else None)
            if ended is not None:
                return Check(None, ended, record.user)
            record.seen = self._clock()
            self._records[token] = record
            return Check(user)

    def close(self, token: object) -> None:
        if isinstance(token, str):
            with self._lock:
                self._records.pop(token, None)

    def grant(self, token: object, users: Mapping[str, User], digest: str) -> None:
        """Let this record's browser fetch the file with SHA-256 `digest`; raises
        PermissionError when the record has ended or its user's entry has changed, so a
        download started after a role change or sign-out produces nothing."""
        with self._lock:
            record = self._records.get(token) if isinstance(token, str) else None
            user = users.get(record.user) if record is not None else None
            if record is None or user is None or entry_version(user) != record.version:
                raise PermissionError("this session has ended; sign in again")
            record.downloads.add(digest)

    def may_download(self, browser: str | None, digest: str) -> bool:
        """Whether a live record of this browser was granted the file."""
        if browser is None:
            return False
        with self._lock:
            return any(r.browser == browser and digest in r.downloads
                       for r in self._records.values())


class SignInLimiter:
    """Failed sign-ins are counted per user name and per client address over a sliding
    window; a name or an address past its limit is locked for `lockout_s`. Names are counted
    whether or not they exist, so the limit behaves the same for unknown users and does not
    reveal who exists; while locked, passwords are not even checked."""

    def __init__(self, *, per_user: int = 5, per_client: int = 20, window_s: float = 900,
                 lockout_s: float = 900, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_user = per_user
        self.per_client = per_client
        self.window_s = window_s
        self.lockout_s = lockout_s
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._locked_until: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def wait_s(self, name: str, client: str) -> float:
        """Seconds until `name` may try again from `client`; 0 when it may now."""
        now = self._clock()
        with self._lock:
            until = max(self._locked_until.get(("user", name), 0.0),
                        self._locked_until.get(("client", client), 0.0))
        return max(until - now, 0.0)

    def failed(self, name: str, client: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) > 10_000:  # bounded however many names are tried
                self._forget_expired(now)
            for key, limit in ((("user", name), self.per_user),
                               (("client", client), self.per_client)):
                times = self._failures.setdefault(key, deque())
                times.append(now)
                while times and now - times[0] > self.window_s:
                    times.popleft()
                if len(times) >= limit:
                    self._locked_until[key] = now + self.lockout_s
                    del self._failures[key]

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(("user", name), None)

    def _forget_expired(self, now: float) -> None:
        for key in [k for k, t in self._failures.items() if now - t[-1] > self.window_s]:
            del self._failures[key]
        for key in [k for k, until in self._locked_until.items() if until <= now]:
            del self._locked_until[key]


STORE = SessionStore()
LIMITER = SignInLimiter()
