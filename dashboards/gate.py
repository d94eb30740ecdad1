"""Who is signed in, for every page of every run.

A tab is signed in while its server-side session record (dashboards/sessions.py) is whole:
Streamlit's session state holds only the record's random token. The record is checked on
every run against the browser the request comes from (a session id replayed from another
browser ends it) and against the user's current entry in the users file (a new role, a new
password or a removed user ends it). The role always comes from the users file, never from
the session, the URL or a widget. Anything that names another tenant (a query parameter, a
session value) ends the run on an error page and is logged.

Identity: the identity provider (`st.login`) when `.streamlit/secrets.toml` has an `[auth]`
section, else the local users file's passwords, with a rate limit and a temporary lockout. A
secrets file that cannot be read, or an `[auth]` section that is incomplete, stops the app
with the reason: it never falls back to passwords."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, NoReturn

import altair as alt
import pandas as pd
import streamlit as st
from streamlit.auth_util import is_authlib_installed
from streamlit.errors import StreamlitSecretNotFoundError

from dashboards.auth import User, UsersFileError, authenticate, load_users, user_for_email
from dashboards.config import users_path
from dashboards.sessions import LIMITER, STORE, Ended

log = logging.getLogger("dashboards.access")

AUTH_KEY = "chargeback_auth"
NOTICE_KEY = "chargeback_notice"
BROWSER = "chargeback_browser"
CLIENT = "chargeback_client"
"""`st.user` keys that dashboards/server.py fills on every connection."""
# Names a page might be tricked into reading a tenant from; none of our pages does, so any
# value here that is not the user's own tenant is an attempt to reach someone else's data.
TENANT_KEYS = ("tenant", "tenant_id", "tenant_name")
OIDC_KEYS = ("redirect_uri", "cookie_secret", "client_id", "client_secret", "server_metadata_url")
"""What `st.login()` needs in [auth] for the one provider the sign-in button uses."""


def stop_with(title: str, message: str) -> NoReturn:
    st.title(title)
    st.error(message)
    st.stop()


def oidc_configured() -> bool:
    """Whether sign-in goes through the identity provider. Stops the app when the secrets
    file exists but cannot be read, or its [auth] section cannot work."""
    try:
        configured = "auth" in st.secrets
    except StreamlitSecretNotFoundError as error:
        present = [p for p in st.get_option("secrets.files") if Path(p).exists()]
        if not present:
            return False
        log.error("secrets file cannot be read: %s", error)
        stop_with("Sign-in is not configured correctly",
                  f"{', '.join(present)} cannot be read, so the identity provider settings "
                  "in its [auth] section are unknown. Fix the file and restart the dashboard; "
                  "it does not fall back to local passwords.")
    if not configured:
        return False
    auth = st.secrets["auth"]
    missing = [key for key in OIDC_KEYS if not str(auth.get(key, "")).strip()]
    relative = [key for key in ("redirect_uri", "server_metadata_url") if key not in missing
                and not str(auth[key]).startswith(("http://", "https://"))]
    problem = None
    if missing:
        problem = f"missing {', '.join(missing)}."
    elif relative:
        problem = f"{', '.join(relative)} must be absolute http(s) URLs."
    elif not str(auth["redirect_uri"]).endswith("/oauth2callback"):
        problem = "redirect_uri must end with /oauth2callback."
    elif not is_authlib_installed():
        problem = "Authlib is not installed (reinstall from requirements.lock)."
    if problem:
        log.error("identity provider settings are broken: %s", problem)
        stop_with("Sign-in is not configured correctly",
                  f"The identity provider settings ([auth] in .streamlit/secrets.toml) cannot "
                  f"work: {problem} The dashboard does not fall back to local passwords.")
    return True


def _users() -> dict[str, User]:
    try:
        return load_users(users_path())
    except UsersFileError as error:
        stop_with("GPU chargeback", f"The users file cannot be read:\n\n{error}")


def _browser() -> tuple[str, str]:
    """The browser's binding and the client's address, as dashboards/server.py set them."""
    browser, client = st.user.get(BROWSER), st.user.get(CLIENT)
    if not isinstance(browser, str) or not browser:
        stop_with("GPU chargeback",
                  "This browser has no session binding: start the dashboard with "
                  "`chargeback dashboard` (it serves dashboards/server.py with its settings), "
                  "and allow cookies for it.")
    return browser, str(client or "unknown")


def deny(message: str, *, user: str | None, attempted: Any = None) -> NoReturn:
    log.warning("access denied: user=%r attempted=%r: %s", user, attempted, message)
    stop_with("Access denied", f"{message} This attempt has been logged.")


def _end(token: object, ended: Ended, record_user: str | None, oidc: bool) -> None:
    STORE.close(token)
    st.session_state.pop(AUTH_KEY, None)
    log.warning("session ended: user=%r reason=%s", record_user, ended.name)
    st.session_state[NOTICE_KEY] = ended.value
    if oidc:
        st.logout()


def current_user() -> User | None:
    """The signed-in user with the role the users file gives them, or None."""
    users = _users()
    browser, _ = _browser()
    oidc = oidc_configured()
    token = st.session_state.get(AUTH_KEY)
    expected: User | None = None
    if oidc:
        if not st.user.is_logged_in:
            STORE.close(token)
            st.session_state.pop(AUTH_KEY, None)
            return None
        email = str(st.user.get("email") or "")
        expected = user_for_email(users, email)
        if expected is None:
            deny(f"{email or 'This account'} is signed in but has no dashboard role; ask an "
                 "administrator to run `chargeback users add EMAIL --role ...`.",
                 user=email, attempted=None)
        if token is None:
            st.session_state[AUTH_KEY] = STORE.open(expected, browser)
            return expected
    elif token is None:
        return None
    check = STORE.check(token, users, browser)
    if check.user is None or (expected is not None and check.user != expected):
        _end(token, check.ended or Ended.CHANGED, check.record_user, oidc)
        return None
    return check.user


def _check_tenant_references(user: User) -> None:
    if user.role.kind != "tenant":
        return
    for key in TENANT_KEYS:
        for source, value in (("query parameter", st.query_params.get(key)),
                              ("session value", st.session_state.get(key))):
            if value is not None and str(value) != user.role.tenant:
                deny(f"You can only see your own tenant's data ({source} `{key}` names "
                     "another tenant).", user=user.name, attempted=value)


PRELOAD_KEY = "chargeback-preload"


def _preload_frontend() -> None:
    """Hidden elements of each kind the first pages draw, so the browser fetches and compiles
    their code while the person types: the frontend loads each element's code (Vega-Lite,
    Arrow, the data grid, date picker: 2.5 MB of JavaScript; buttons, toggles, page links) on
    first use, and on a browser
    that has not cached it, doing that after 'Sign in' took most of the first render
    (docs/benchmarks.md). Holds no data."""
    st.html(f"<style>.st-key-{PRELOAD_KEY} {{display: none}}</style>")
    with st.container(key=PRELOAD_KEY):
        st.metric("preload", "0")
        st.altair_chart(alt.Chart(pd.DataFrame({"x": [0.0]})).mark_bar().encode(x="x:Q"))
        st.dataframe(pd.DataFrame({"x": [0.0]}), column_config={
            "x": st.column_config.NumberColumn(format="%.2f")})
        st.selectbox("preload", ["-"], key=f"{PRELOAD_KEY}-select")
        st.date_input("preload", value=None, key=f"{PRELOAD_KEY}-date")
        st.download_button("preload", lambda: b"", on_click="ignore",
                           key=f"{PRELOAD_KEY}-download")
        # The sidebar's sign-out button, the overview's links and its date-range switch:
        # small chunks, but each fetched after 'Sign in' held its part of the first screen
        # back by a round trip.
        st.button("preload", key=f"{PRELOAD_KEY}-button")
        st.toggle("preload", key=f"{PRELOAD_KEY}-toggle")
        st.page_link("https://example.invalid/", label="preload")


def login_form() -> User:
    """The sign-in form. A correct password signs the tab in and returns its user: the page
    is drawn in this same run, where the form was (a second script run, `st.rerun`, cost a
    round trip and the app shell's checks again before the first screen). Otherwise the run
    stops here."""
    form = st.empty()
    with form.container():
        st.title("GPU chargeback")
        notice = st.session_state.pop(NOTICE_KEY, None)
        if notice:
            st.info(notice)
        if oidc_configured():
            st.write("Sign in with your organization's identity provider.")
            if st.button("Sign in", type="primary"):
                st.login()
            _preload_frontend()
            st.stop()
        browser, client = _browser()
        with st.form("login"):
            name = st.text_input("User name")
            password = st.text_input("Password", type="password")
            submitted = st.form_submit_button("Sign in", type="primary")
        user = None
        if submitted:
            wait_s = LIMITER.wait_s(name, client)
            if wait_s:
                log.warning("sign-in refused, locked: user=%r client=%s", name, client)
                st.error("Too many failed sign-ins for this user name or from this address. "
                         f"Try again in {math.ceil(wait_s / 60)} minutes.")
                st.stop()
            user = authenticate(_users(), name, password)
            if user is None:
                LIMITER.failed(name, client)
                log.warning("failed sign-in: user=%r client=%s", name, client)
                st.error("Unknown user name or wrong password.")
            else:
                LIMITER.succeeded(name)
                st.session_state[AUTH_KEY] = STORE.open(user, browser)
        if user is None:
            _preload_frontend()
            st.stop()
    form.empty()
    return user


def signed_in() -> User:
    """The current user, or the sign-in form (and the run stops there)."""
    user = current_user()
    if user is None:
        user = login_form()
    _check_tenant_references(user)
    return user


def require(kind: str) -> User:
    """The current user, if their role is `kind`; otherwise an error page."""
    user = signed_in()
    if user.role.kind != kind:
        deny(f"This page is for the {kind} role.", user=user.name, attempted=kind)
    return user


def session_token() -> object:
    """The token of this tab's session record (dashboards/sessions.py), for downloads."""
    return st.session_state.get(AUTH_KEY)


def sign_out() -> None:
    STORE.close(st.session_state.pop(AUTH_KEY, None))
    if oidc_configured():
        st.logout()
    st.rerun()
