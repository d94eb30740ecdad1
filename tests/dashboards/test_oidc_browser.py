"""Sign-in through a real OpenID Connect provider (oidc-provider-mock from PyPI: discovery,
JWKS, an authorization form, a token endpoint issuing signed ID tokens) on 127.0.0.1, in
Chromium: `st.login` works as installed from the lock, and a broken configuration stops the
app instead of falling back to local passwords."""

import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dashboards.auth import User, load_users, parse_role, save_users
from tests.dashboards.browser import CHROMIUM, CHROMIUM_ARGS, dashboard_server, free_port

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.slow
ALICE = "alice@example.com"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def provider(tmp_path):
    """The identity provider, knowing ALICE (her e-mail claim is her subject)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "provider.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "oidc_provider_mock", "--host",
                                    "127.0.0.1", "--port", str(port), "--user", ALICE],
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/.well-known/openid-configuration",
                                                timeout=1) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the OIDC provider did not start: see {log.name}")
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture
def home(demo_home, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(demo_home / "marts", home / "marts")
    users = load_users(demo_home / "users.yaml")
    users[ALICE] = User(ALICE, parse_role("tenant:acme"), None)
    save_users(home / "users.yaml", users)
    return home


def _secrets(folder: Path, text: str) -> Path:
    (folder / ".streamlit").mkdir(parents=True)
    (folder / ".streamlit" / "secrets.toml").write_text(text)
    return folder


def test_sign_in_with_the_identity_provider_lands_on_the_tenant_page(browser, provider, home,
                                                                     tmp_path):
    cwd = _secrets(tmp_path / "run", f"""[auth]
redirect_uri = "http://127.0.0.1:{{port}}/oauth2callback"
cookie_secret = "{secrets.token_hex(32)}"
client_id = "chargeback-dashboard"
client_secret = "{secrets.token_hex(16)}"
server_metadata_url = "{provider}/.well-known/openid-configuration"
""")
    with dashboard_server(home, cwd=cwd) as base:
        context = browser.new_context()
        page = context.new_page()
        page.goto(base)
        assert not page.get_by_role("textbox", name="Password").count()
        page.get_by_role("button", name="Sign in").click()
        # The provider's own authorization form, on its own origin.
        page.get_by_placeholder("sub").fill(ALICE)
        page.get_by_role("button", name="Authorize").click()
        page.get_by_text("10,257.85 USD").first.wait_for()  # acme's bill
        assert page.url.startswith(base)
        body = page.inner_text("body")
        assert f"Signed in as {ALICE} (tenant:acme)" in body
        assert "Costs and usage" in body
        for other in ("zen", "25,000.00", "INV-2026-10-0003"):
            assert other not in body
        context.close()


@pytest.mark.parametrize("secrets_text", [
    "[auth\nredirect_uri = 'http://127.0.0.1:1/oauth2callback'\n",  # not TOML
    "[auth]\nredirect_uri = 'http://127.0.0.1:{port}/oauth2callback'\ncookie_secret = 'x'\n"
    "client_id = 'x'\nserver_metadata_url = 'http://127.0.0.1:1/.well-known'\n",  # no secret
])
def test_a_broken_oidc_configuration_stops_the_app_instead_of_falling_back(browser, home,
                                                                           tmp_path,
                                                                           secrets_text):
    with dashboard_server(home, cwd=_secrets(tmp_path / "run", secrets_text)) as base:
        context = browser.new_context()
        page = context.new_page()
        page.goto(base)
        page.get_by_role("heading", name="Sign-in is not configured correctly").wait_for()
        assert "does not fall back to local passwords" in page.inner_text("body")
        assert not page.get_by_role("textbox", name="User name").count()
        assert not page.get_by_role("button", name="Sign in").count()
        context.close()
