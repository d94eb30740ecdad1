"""`chargeback dashboard` and `chargeback users`: start the app, manage its local users."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from dashboards.auth import (
    User,
    hash_password,
    load_users,
    parse_role,
    save_users,
)
from dashboards.config import marts_dir, users_path
from models.errors import UserError

SERVER = Path(__file__).resolve().parents[1] / "dashboards" / "server.py"
MIN_PASSWORD = 12


def _users_file(path: Path | None) -> Path:
    return path or users_path()


USERS_OPTION = click.option(
    "--users", "users_file", type=click.Path(path_type=Path), default=None,
    help="Users file (default $CHARGEBACK_HOME/users.yaml).")


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), default=8501, show_default=True)
@USERS_OPTION
@click.option("--marts", type=click.Path(path_type=Path), default=None,
              help="Published marts folder (default $CHARGEBACK_HOME/marts).")
def dashboard(port: int, users_file: Path | None, marts: Path | None) -> None:
    """Start the Streamlit dashboard on 127.0.0.1 (headless, no usage statistics).

    It reads only the published marts, never the warehouse. Sign-in is through the identity
    provider in .streamlit/secrets.toml [auth] when configured, else the local users file."""
    users_path = _users_file(users_file)
    marts_path = marts or marts_dir()
    if not load_users(users_path):
        click.echo(f"note: {users_path} has no users yet; add one with "
                   "`chargeback users add NAME --role finance` (unless OIDC is configured)",
                   err=True)
    if not marts_path.is_dir():
        click.echo(f"note: {marts_path} does not exist yet; run the pipeline to publish marts",
                   err=True)
    env = dict(os.environ, CHARGEBACK_USERS=str(users_path.resolve()),
               CHARGEBACK_MARTS=str(marts_path.resolve()))
    # dashboards/server.py serves app.py behind the session, download and metrics guards;
    # its .streamlit/config.toml holds the rest of the settings.
    command = [sys.executable, "-m", "streamlit", "run", str(SERVER),
               "--server.headless", "true", "--server.address", "127.0.0.1",
               "--server.port", str(port), "--browser.gatherUsageStats", "false",
               # Reloading modules would drop every session record and sign-in lock.
               "--server.fileWatcherType", "none",
               # No traceback or server path ever reaches a browser.
               "--client.showErrorDetails", "none",
               # Tenants and finance need no developer menu ("Deploy", rerun settings).
               "--client.toolbarMode", "viewer"]
    click.echo(f"dashboard on http://127.0.0.1:{port}/ (Ctrl-C stops it)", err=True)
    # Replace this process, so the PID the caller holds is the server's and signals reach it.
    os.execve(sys.executable, command, env)


@click.group()
def users() -> None:
    """Manage the dashboard's local users file (roles: finance, operator, tenant:NAME)."""


@users.command("add")
@click.argument("name")
@click.option("--role", required=True, help="finance, operator or tenant:NAME")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of standard input.")
@click.option("--no-password", is_flag=True,
              help="The user signs in through the identity provider only (NAME = e-mail).")
@USERS_OPTION
def add(name: str, role: str, password_stdin: bool, no_password: bool,
        users_file: Path | None) -> None:
    """Add NAME with ROLE (or change an existing user's role and password)."""
    try:
        parsed = parse_role(role)
    except ValueError as error:
        raise UserError(f"--role: {error}") from None
    if not name.strip():
        raise UserError("NAME must not be empty")
    if password_stdin and no_password:
        raise UserError("--password-stdin and --no-password exclude each other")
    path = _users_file(users_file)
    users_now = load_users(path)
    digest = None
    if not no_password:
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        if len(password) < MIN_PASSWORD:
            raise UserError(f"the password must have at least {MIN_PASSWORD} characters")
        digest = hash_password(password)
    existed = name in users_now
    users_now[name] = User(name, parsed, digest)
    save_users(path, users_now)
    click.echo(f"{'updated' if existed else 'added'} {name} ({parsed}) in {path}")


@users.command("list")
@USERS_OPTION
def list_users(users_file: Path | None) -> None:
    """List users and their roles (never their hashes)."""
    path = _users_file(users_file)
    found = load_users(path)
    if not found:
        click.echo(f"no users in {path}")
    for user in sorted(found.values(), key=lambda u: u.name):
        sign_in = "password" if user.password_hash else "identity provider"
        click.echo(f"{user.name}\t{user.role}\t{sign_in}")


@users.command("remove")
@click.argument("name")
@USERS_OPTION
def remove(name: str, users_file: Path | None) -> None:
    """Remove NAME; their open sessions end at their next click."""
    path = _users_file(users_file)
    found = load_users(path)
    if name not in found:
        raise UserError(f"{path}: no user {name!r}; `chargeback users list` shows who exists")
    del found[name]
    save_users(path, found)
    click.echo(f"removed {name} from {path}")
