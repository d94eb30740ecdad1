"""Hostile users against the real dashboard (`chargeback dashboard`) in Chromium: a replayed
session id, a role or password changed while signed in, download URLs fetched by others or
after sign-out, tampered widget values and query parameters, a client clearing the shared
cache, password guessing and the metrics endpoint. Each test that changes the server's state
(users file, marts, sign-in locks) gets a server of its own."""

import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from models.ledger import warehouse
from models.marts import tenant_mart_path
from tests.dashboards.browser import CHROMIUM, CHROMIUM_ARGS, dashboard_server, settle, sign_in
from tests.dashboards.conftest import PASSWORD

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
ACME_BILLED = "10,257.85 USD"
ZEN = ("zen", "25,000.00", "INV-2026-10-0003")
# What a traceback or a server path would put on the page or on the wire.
LEAKS = ("Traceback", "KeyError", "site-packages", 'File "', str(REPO), "/tmp/")

# Records the page's websockets and every binary frame it sends, so a test can replay or
# tamper with Streamlit's messages through the page's own connection.
RECORD_SOCKETS = """(() => {
  const Native = window.WebSocket;
  window.__sockets = []; window.__sent = [];
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      super(url, window.__replay ? [protocols[0], protocols[1] || "", window.__replay]
                                 : protocols);
      window.__sockets.push(this);
    }
    send(data) {
      const bytes = data instanceof ArrayBuffer ? new Uint8Array(data)
        : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      window.__sent.push(Array.from(bytes));
      super.send(data);
    }
  };
})();"""


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _copy(demo_home: Path, folder: Path) -> Path:
    folder.mkdir()
    shutil.copytree(demo_home / "marts", folder / "marts")
    shutil.copyfile(demo_home / "users.yaml", folder / "users.yaml")
    return folder


@pytest.fixture
def home(demo_home, tmp_path):
    """A copy of the demo home that a test may change, for a server of its own."""
    return _copy(demo_home, tmp_path / "home")


@pytest.fixture
def base(home):
    with dashboard_server(home) as url:
        yield url


@pytest.fixture(scope="module")
def shared_home(demo_home, tmp_path_factory):
    return _copy(demo_home, tmp_path_factory.mktemp("shared") / "home")


@pytest.fixture(scope="module")
def shared(shared_home):
    """One server for the tests that change nothing on it."""
    with dashboard_server(shared_home) as url:
        yield url


def new_page(browser, replay: str | None = None):
    context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                  accept_downloads=True)
    if replay:
        context.add_init_script(f"window.__replay = {replay!r};")
    context.add_init_script(RECORD_SOCKETS)
    page = context.new_page()
    page.frames_received = []
    page.on("websocket", lambda ws: ws.on(
        "framereceived", lambda payload: page.frames_received.append(
            payload if isinstance(payload, bytes) else payload.encode())))
    return page


def wire(page) -> bytes:
    return b"".join(page.frames_received)


def session_id(page) -> str:
    for frame in page.frames_received:
        message = ForwardMsg.FromString(frame)
        if message.WhichOneof("type") == "new_session":
            return message.new_session.initialize.session_id
    raise AssertionError("no new_session message received")


def send(page, message: BackMsg) -> None:
    page.evaluate("bytes => window.__sockets.at(-1).send(new Uint8Array(bytes))",
                  list(message.SerializeToString()))


def assert_nothing_of(page, secrets, since: int = 0) -> None:
    page.wait_for_timeout(500)
    text = page.inner_text("body")
    frames = b"".join(page.frames_received[since:])
    for secret in secrets:
        assert secret not in text, secret
        assert secret.encode() not in frames, secret


def server_log(home: Path) -> str:
    return "".join(p.read_text() for p in home.glob("streamlit-*.log"))


def test_a_replayed_session_id_in_another_browser_lands_on_the_sign_in_page(browser, shared):
    base = shared
    alice = new_page(browser)
    sign_in(alice, base, "alice", PASSWORD)
    alice.get_by_text(ACME_BILLED).first.wait_for()
    stolen = session_id(alice)

    thief = new_page(browser, replay=stolen)
    thief.goto(base)
    thief.get_by_role("textbox", name="User name").wait_for()
    assert_nothing_of(thief, ("acme", ACME_BILLED, "10,252.15", "INV-2026-10-0002"))
    assert session_id(thief) != stolen

    # Alice's own session is untouched: her next click still shows her bill.
    alice.get_by_role("link", name="Invoices").click()
    alice.get_by_text("10,252.15 USD").wait_for()

    # The control: the same replay carrying alice's own browser cookie (her browser
    # reconnecting) does resume her session, so it is the binding that stopped the thief.
    same_browser = new_page(browser, replay=stolen)
    same_browser.context.add_cookies(alice.context.cookies())
    same_browser.goto(base)
    same_browser.get_by_text(ACME_BILLED).first.wait_for()
    assert session_id(same_browser) == stolen
    for page in (alice, thief, same_browser):
        page.context.close()


def test_changing_password_or_role_signs_the_user_out_at_the_next_click(browser, base, home):
    def users_add(*args, password):
        subprocess.run([str(Path(sys.executable).with_name("chargeback")), "users", "add",
                        "alice", *args, "--password-stdin", "--users", str(home / "users.yaml")],
                       input=f"{password}\n", text=True, check=True, capture_output=True)

    page = new_page(browser)
    sign_in(page, base, "alice", PASSWORD)
    page.get_by_text(ACME_BILLED).first.wait_for()
    users_add("--role", "tenant:acme", password="a brand new passphrase")
    page.get_by_role("link", name="Invoices").click()
    page.get_by_text("Your account was changed (role or password). Sign in again.").wait_for()
    page.get_by_role("textbox", name="User name").wait_for()

    sign_in(page, base, "alice", "a brand new passphrase")
    page.get_by_text(ACME_BILLED).first.wait_for()
    since = len(page.frames_received)
    users_add("--role", "tenant:zen", password="a brand new passphrase")  # moved to zen
    page.get_by_role("link", name="Invoices").click()
    page.get_by_text("Your account was changed (role or password). Sign in again.").wait_for()
    page.get_by_role("textbox", name="User name").wait_for()
    assert_nothing_of(page, ZEN, since)
    page.context.close()


def test_download_urls_serve_only_the_signed_in_owner_and_are_never_cached(browser, shared):
    base = shared
    alice = new_page(browser)
    sign_in(alice, base, "alice", PASSWORD)
    alice.get_by_text(ACME_BILLED).first.wait_for()
    alice.get_by_role("link", name="Invoices").click()
    alice.get_by_text("10,252.15 USD").wait_for()
    with alice.expect_download() as info:
        alice.get_by_role("button", name="PDF").click()
    url = info.value.url
    assert re.fullmatch(rf"{base}/media/[0-9a-f]+\.pdf", url)
    assert Path(info.value.path()).read_bytes().startswith(b"%PDF")
    answer = alice.request.get(url)
    assert answer.status == 200
    assert answer.headers["cache-control"] == "no-store"

    # No session at all: a fresh browser, and a plain HTTP client.
    fresh = browser.new_context()
    assert fresh.request.get(url).status == 404
    fresh.close()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 404
    # Another tenant, signed in, who learned the URL.
    zed = new_page(browser)
    sign_in(zed, base, "zed", PASSWORD)
    zed.get_by_text("25,000.00 USD").first.wait_for()
    assert zed.request.get(url).status == 404
    zed.context.close()
    # Alice herself once signed out.
    alice.get_by_role("button", name="Sign out").click()
    alice.get_by_role("textbox", name="User name").wait_for()
    answer = alice.request.get(url)
    assert answer.status == 404
    assert b"%PDF" not in answer.body()
    alice.context.close()


def _tamper_type(widget):
    widget.ClearField("string_value")
    widget.int_value = 99


def _tamper_json(widget):
    widget.json_value = "{not json"


def _tamper_other_tenant(widget):
    widget.string_value = "INV-2026-10-0003 · 2026-10 · invoice · final"  # zen's invoice


@pytest.mark.parametrize(("tamper", "shown"), [
    (_tamper_type, "Something went wrong on this page, and it has been logged"),
    (_tamper_json, "The original error message is redacted"),  # fails before the script
    (_tamper_other_tenant, "Total of INV-2026-10-0002"),  # not an option: the default
])
def test_tampered_widget_values_never_show_a_traceback(browser, shared, shared_home, tamper,
                                                       shown):
    page = new_page(browser)
    sign_in(page, shared, "alice", PASSWORD)
    page.get_by_text(ACME_BILLED).first.wait_for()
    page.get_by_role("link", name="Invoices").click()
    page.get_by_text("10,252.15 USD").wait_for()
    settle(page)
    choice = "DN-2026-0001 · 2026-10 · Debit note · final"
    page.get_by_role("combobox", name="Download").click()
    page.get_by_role("option", name=choice).click()
    page.get_by_text("Total of DN-2026-0001").wait_for()
    sent = [BackMsg.FromString(bytes(b)) for b in page.evaluate("window.__sent")]
    rerun = next(m for m in reversed(sent) if m.WhichOneof("type") == "rerun_script")
    (widget,) = [w for w in rerun.rerun_script.widget_states.widgets
                 if w.string_value == choice]
    tamper(widget)
    since = len(page.frames_received)
    send(page, rerun)
    page.get_by_text(shown).wait_for()
    assert_nothing_of(page, (*LEAKS, *ZEN), since)
    reference = re.search(r"reference ([0-9a-f]{8})", page.inner_text("body"))
    if reference:
        assert f"page failed, reference {reference.group(1)}" in server_log(shared_home)
    page.context.close()


@pytest.mark.parametrize("query", ["?tenant=acme&tenant=zen", "?tenant=%00", "?tenant_id[]=zen",
                                   "?page=../../etc/passwd", "?%ZZ=%E2%28", "?tenant=" + "x" * 5000,
                                   "?embed_options=show_toolbar&tenant_name=zen"])
def test_tampered_query_parameters_show_no_traceback(browser, shared, query):
    page = new_page(browser)
    sign_in(page, shared, "alice", PASSWORD, query)
    page.get_by_text(ACME_BILLED).or_(page.get_by_role("heading", name="Access denied")
                                      ).first.wait_for()
    settle(page)
    assert_nothing_of(page, (*LEAKS, *ZEN))
    page.context.close()


def test_no_client_can_clear_the_shared_cache(browser, base, home):
    alice = new_page(browser)
    sign_in(alice, base, "alice", PASSWORD)
    alice.get_by_text(ACME_BILLED).first.wait_for()
    # Change acme's mart behind the cache's back: same modification time, so only a cleared
    # cache would read the new figure.
    mart = tenant_mart_path(home / "marts", "acme")
    before = mart.stat()
    changed = mart.with_suffix(".changed")
    shutil.copyfile(mart, changed)
    changed.chmod(0o600)
    con = warehouse.connect(changed)
    con.execute("UPDATE periods SET billed_total = billed_total + 1000")
    con.close()
    changed.chmod(0o400)
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(changed, mart)

    stranger = new_page(browser)  # never signs in
    stranger.goto(base)
    stranger.get_by_role("textbox", name="User name").wait_for()
    send(stranger, BackMsg(clear_cache=True))
    stranger.wait_for_timeout(1000)

    alice.get_by_role("link", name="Invoices").click()
    alice.get_by_text("10,252.15 USD").wait_for()
    alice.get_by_role("link", name="Costs and usage").click()
    alice.get_by_text("Billed for the month").wait_for()
    settle(alice)
    assert "11,257.85 USD" not in alice.inner_text("body")  # what a cleared cache shows
    assert ACME_BILLED in alice.inner_text("body")
    assert "dropped a clear_cache message" in server_log(home)
    for page in (alice, stranger):
        page.context.close()


def test_guessing_passwords_locks_the_name_with_the_same_message_for_unknown_users(browser,
                                                                                   base):
    page = new_page(browser)
    locked = "Too many failed sign-ins for this user name or from this address."
    for name in ("alice", "nobody"):
        for _ in range(5):
            sign_in(page, base, name, "wrong guess")
            page.get_by_text("Unknown user name or wrong password.").wait_for()
        sign_in(page, base, name, PASSWORD)
        page.get_by_text(locked).wait_for()
        assert ACME_BILLED not in page.inner_text("body")
    page.context.close()


def test_metrics_are_not_served(browser, shared):
    base = shared
    for path in ("/_stcore/metrics", "/_stcore/metrics?families=session_events"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + path, timeout=10)
        assert refused.value.code == 404
    page = new_page(browser)
    sign_in(page, base, "alice", PASSWORD)
    page.get_by_text(ACME_BILLED).first.wait_for()
    answer = page.request.get(f"{base}/_stcore/metrics")
    assert answer.status == 404
    assert b"acme" not in answer.body()
    page.context.close()
