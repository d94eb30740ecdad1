"""A real dashboard server and Debian's headless Chromium, for the browser tests and the
benchmark."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def dashboard_server(home: Path, *, users: Path | None = None, marts: Path | None = None,
                     cwd: Path | None = None) -> Iterator[str]:
    """`chargeback dashboard` on a free port of 127.0.0.1, run in `cwd` (where Streamlit looks
    for .streamlit/secrets.toml); yields its base URL."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("chargeback")), "dashboard",
               "--port", str(port), "--users", str(users or home / "users.yaml"),
               "--marts", str(marts or home / "marts")]
    env = dict(os.environ, CHARGEBACK_HOME=str(home))
    log = (home / f"streamlit-{port}.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                               cwd=cwd or home)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dashboard did not start: see {log.name}")
            time.sleep(0.1)
        yield base
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def sign_in(page, base: str, user: str, password: str, path: str = "") -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/{path}")
    page.get_by_role("textbox", name="User name").wait_for()
    # An unknown page path opens a "page not found" dialog over the form.
    page.wait_for_timeout(500)
    if page.get_by_role("dialog").count():
        page.keyboard.press("Escape")
    page.get_by_role("textbox", name="User name").fill(user)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def settle(page) -> None:  # type: ignore[no-untyped-def]
    """Wait until the script run is over and the charts are drawn."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=60_000)
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(700)
