"""Who is signed in, for every page of every run.

Identity is derived afresh on each run: from the identity provider's signed cookie (`st.user`)
in OIDC mode, or from a session entry sealed with an HMAC under a per-process key in local
mode; the role always comes from the users file, never from the session, the URL or a widget.
Anything that names another tenant (a query parameter, a session value) ends the run on an
error page and is logged."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import Any, NoReturn

import streamlit as st

from dashboards.auth import User, UsersFileError, authenticate, load_users, user_for_email
from dashboards.config import users_path

log = logging.getLogger("dashboards.access")

AUTH_KEY = "chargeback_auth"
# Names a page might be tricked into reading a tenant from; none of our pages does, so any
# value here that is not the user's own tenant is an attempt to reach someone else's data.
TENANT_KEYS = ("tenant", "tenant_id", "tenant_name")
# Lives as long as the server process: restarting the dashboard signs every local user out.
_SESSION_KEY = secrets.token_bytes(32)


def oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except (FileNotFoundError, st.errors.StreamlitSecretNotFoundError):
        return False


def _seal(name: str) -> str:
    return hmac.new(_SESSION_KEY, name.encode(), hashlib.sha256).hexdigest()


def _users() -> dict[str, User]:
    try:
        return load_users(users_path())
    except UsersFileError as error:
        st.error(f"The users file cannot be read:\n\n{error}")
        st.stop()


def deny(message: str, *, user: str | None, attempted: Any = None) -> NoReturn:
    log.warning("access denied: user=%r attempted=%r: %s", user, attempted, message)
    st.title("Access denied")
    st.error(f"{message} This attempt has been logged.")
    st.stop()


def current_user() -> User | None:
    """The signed-in user with the role the users file gives them, or None."""
    users = _users()
    if oidc_configured():
        if not st.user.is_logged_in:
            return None
        email = str(st.user.get("email") or "")
        user = user_for_email(users, email)
        if user is None:
            deny(f"{email or 'This account'} is signed in but has no dashboard role; ask an "
                 "administrator to run `chargeback users add EMAIL --role ...`.",
                 user=email, attempted=None)
        return user
    sealed = st.session_state.get(AUTH_KEY)
    if sealed is None:
        return None
    name = sealed.get("user") if isinstance(sealed, dict) else None
    mac = sealed.get("mac") if isinstance(sealed, dict) else None
    if not isinstance(name, str) or not isinstance(mac, str) or not hmac.compare_digest(
            mac, _seal(name)):
        st.session_state.pop(AUTH_KEY, None)
        deny("The session was altered.", user=None,
             attempted=name if isinstance(name, str) else repr(sealed))
    # A user removed from the file loses access at their next click.
    return users.get(name)


def _check_tenant_references(user: User) -> None:
    if user.role.kind != "tenant":
        return
    for key in TENANT_KEYS:
        for source, value in (("query parameter", st.query_params.get(key)),
                              ("session value", st.session_state.get(key))):
            if value is not None and str(value) != user.role.tenant:
                deny(f"You can only see your own tenant's data ({source} `{key}` names "
                     "another tenant).", user=user.name, attempted=value)


def login_form() -> None:
    st.title("GPU chargeback")
    if oidc_configured():
        st.write("Sign in with your organization's identity provider.")
        if st.button("Sign in", type="primary"):
            st.login()
        st.stop()
    with st.form("login"):
        name = st.text_input("User name")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        user = authenticate(_users(), name, password)
        if user is None:
            log.warning("failed sign-in: user=%r", name)
            st.error("Unknown user name or wrong password.")
        else:
            st.session_state[AUTH_KEY] = {"user": user.name, "mac": _seal(user.name)}
            st.rerun()
    st.stop()


def signed_in() -> User:
    """The current user, or the sign-in form (and the run stops there)."""
    user = current_user()
    if user is None:
        login_form()
        raise AssertionError("login_form stops the run")
    _check_tenant_references(user)
    return user


def require(kind: str) -> User:
    """The current user, if their role is `kind`; otherwise an error page."""
    user = signed_in()
    if user.role.kind != kind:
        deny(f"This page is for the {kind} role.", user=user.name, attempted=kind)
    return user


def sign_out() -> None:
    if oidc_configured():
        st.logout()
    st.session_state.pop(AUTH_KEY, None)
    st.rerun()
