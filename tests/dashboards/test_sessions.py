"""Session records, download grants and the sign-in limit (dashboards/sessions.py), and the
server settings they rely on."""

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from dashboards import gate, server
from dashboards.auth import User, hash_password, parse_role
from dashboards.sessions import MAX_IDLE_S, Ended, SessionStore, SignInLimiter, browser_tag

ALICE = User("alice", parse_role("tenant:acme"), hash_password("a long enough password"))
BROWSER, OTHER = browser_tag("cookie-of-alice's-browser"), browser_tag("another cookie")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_record_signs_in_its_browser_only_and_ends_on_any_mismatch():
    store = SessionStore()
    users = {"alice": ALICE}
    token = store.open(ALICE, BROWSER)
    assert store.check(token, users, BROWSER).user == ALICE
    assert store.check(token, users, BROWSER).user == ALICE  # checking does not use it up
    assert store.check(token, users, OTHER).ended == Ended.OTHER_BROWSER
    assert store.check(token, users, BROWSER).ended == Ended.UNKNOWN
    for changed, reason in ((replace(ALICE, role=parse_role("tenant:zen")), Ended.CHANGED),
                            (replace(ALICE, password_hash=hash_password("x" * 12)),
                             Ended.CHANGED),
                            (None, Ended.REMOVED)):
        token = store.open(ALICE, BROWSER)
        check = store.check(token, {"alice": changed} if changed else {}, BROWSER)
        assert (check.user, check.ended, check.record_user) == (None, reason, "alice")
        assert store.check(token, users, BROWSER).ended == Ended.UNKNOWN
    for forged in (None, 42, {"user": "alice"}, "not-a-token"):
        assert store.check(forged, users, BROWSER).ended == Ended.UNKNOWN


def test_an_idle_record_expires():
    clock = Clock()
    store = SessionStore(clock)
    token = store.open(ALICE, BROWSER)
    clock.now += MAX_IDLE_S - 1
    assert store.check(token, {"alice": ALICE}, BROWSER).user == ALICE
    clock.now += MAX_IDLE_S + 1
    assert store.check(token, {"alice": ALICE}, BROWSER).ended == Ended.UNKNOWN


def test_downloads_are_granted_to_a_live_record_and_served_to_its_browser_only():
    store = SessionStore()
    users = {"alice": ALICE}
    token = store.open(ALICE, BROWSER)
    store.grant(token, users, "d1")
    assert store.may_download(BROWSER, "d1")
    assert not store.may_download(OTHER, "d1")
    assert not store.may_download(None, "d1")
    assert not store.may_download(BROWSER, "d2")
    # A role change since the page was drawn: the click produces nothing.
    with pytest.raises(PermissionError, match="ended"):
        store.grant(token, {"alice": replace(ALICE, role=parse_role("finance"))}, "d2")
    store.close(token)
    assert not store.may_download(BROWSER, "d1")
    with pytest.raises(PermissionError):
        store.grant(token, users, "d1")


def test_the_limiter_locks_names_and_clients_and_forgets_after_the_window():
    clock = Clock()
    limiter = SignInLimiter(per_user=3, per_client=5, window_s=60, lockout_s=300, clock=clock)
    for _ in range(2):
        limiter.failed("alice", "10.0.0.1")
    clock.now += 61  # outside the window: those two no longer count
    for _ in range(2):
        limiter.failed("alice", "10.0.0.1")
    assert limiter.wait_s("alice", "10.0.0.1") == 0
    limiter.failed("alice", "10.0.0.2")
    assert limiter.wait_s("alice", "10.0.0.9") == 300  # the name, from anywhere
    assert limiter.wait_s("bob", "10.0.0.1") == 0
    for name in ("x", "y", "z", "w"):
        limiter.failed(name, "10.0.0.1")
    assert limiter.wait_s("bob", "10.0.0.1") == 300  # the address, for any name
    assert limiter.wait_s("bob", "10.0.0.3") == 0
    clock.now += 301
    assert limiter.wait_s("alice", "10.0.0.1") == 0
    limiter.failed("carol", "10.0.0.4")
    limiter.succeeded("carol")
    limiter.failed("carol", "10.0.0.4")
    limiter.failed("carol", "10.0.0.4")
    assert limiter.wait_s("carol", "10.0.0.4") == 0  # a success resets the name's count


def test_the_limiter_stays_bounded_however_many_names_are_tried():
    clock = Clock()
    limiter = SignInLimiter(per_client=10**9, window_s=60, clock=clock)
    for i in range(10_001):
        limiter.failed(f"name-{i}", "10.0.0.1")
    clock.now += 61
    limiter.failed("one-more", "10.0.0.1")
    assert len(limiter._failures) == 2  # the new name and the client


def test_the_committed_server_settings_match_the_middleware():
    settings = tomllib.loads((Path(server.__file__).parent / ".streamlit" / "config.toml")
                             .read_text())
    assert settings["server"]["trustedUserHeaders"] == server.TRUSTED_USER_HEADERS
    assert set(server.TRUSTED_USER_HEADERS.values()) == {gate.BROWSER, gate.CLIENT}
    assert settings["client"]["showErrorDetails"] == "none"
    assert settings["client"]["toolbarMode"] == "viewer"
