"""The dashboard's web server: Streamlit's own server (st.App) for app.py, behind one middleware
that does what the script cannot, because it happens outside any script run.

- Every browser gets a random binding cookie (HttpOnly, so page scripts cannot read it). On
  the websocket its hash reaches the app as `st.user["chargeback_browser"]` (the header is
  always set here, never taken from the client), so a session record can be tied to the
  browser that signed in, and Streamlit itself refuses to resume a session for a connection
  whose user info differs: a session id replayed from another browser gets a new, signed-out
  session.
- Downloads (`/media/...`) are served only to a browser whose live session record was granted
  that file, never cached (`Cache-Control: no-store`); anything else there is "not found".
- `/_stcore/metrics` is not served: its counters are not for tenants.
- Websocket messages a viewer has no business sending (clear the shared cache, run on save,
  read git information) are dropped and logged.
- Streamlit tells every browser the absolute path of the app script (the frontend only hashes
  it); the server's paths are nobody's business, so the browser gets `app.py`.

`chargeback dashboard` runs `streamlit run dashboards/server.py` with the options below."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from streamlit import config, runtime
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.starlette import App

# What the pages import, loaded with the server instead of in the first sign-in after a start
# (1.5-2 s on the 2-core machine: DuckDB, pandas, Altair, the PDF renderer).
from dashboards import cards, ui  # noqa: F401
from dashboards.sessions import STORE, browser_tag

log = logging.getLogger("dashboards.access")

BROWSER_COOKIE = "chargeback_browser"
BROWSER_HEADER = "x-chargeback-browser"
CLIENT_HEADER = "x-chargeback-client"
TRUSTED_USER_HEADERS = {BROWSER_HEADER: "chargeback_browser", CLIENT_HEADER: "chargeback_client"}
"""`server.trustedUserHeaders`: headers this middleware sets, and their names in `st.user`."""
REFUSED_MESSAGES = frozenset({"clear_cache", "set_run_on_save", "load_git_info"})
HERE = str(Path(__file__).resolve().parent).encode()


def _cookie(scope: Scope, name: str) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    for key, value in scope["headers"]:
        if key == b"cookie":
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed Cookie header is the same as none
                return None
    morsel = jar.get(name)
    return morsel.value if morsel else None


async def _not_found(send: Send) -> None:
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": b"Not found"})


def _message_type(data: bytes) -> str | None:
    message = BackMsg()
    try:
        message.ParseFromString(data)
    except DecodeError:
        return None  # Streamlit closes the connection on a frame it cannot parse
    return message.WhichOneof("type")


class Guard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        cookie = _cookie(scope, BROWSER_COOKIE)
        client = scope.get("client")
        if scope["type"] == "websocket":
            headers = [(k, v) for k, v in scope["headers"]
                       if k.decode("latin-1").lower() not in TRUSTED_USER_HEADERS]
            tag = browser_tag(cookie)
            if tag:
                headers.append((BROWSER_HEADER.encode(), tag.encode()))
            if client:
                headers.append((CLIENT_HEADER.encode(), str(client[0]).encode()))
            scope = {**scope, "headers": headers}
            if path.endswith("/_stcore/stream"):
                receive = self._filtered(receive, client)
                send = self._without_paths(send)
            await self.app(scope, receive, send)
            return
        if path.rstrip("/").endswith("/_stcore/metrics"):
            await _not_found(send)
            return
        if path.startswith("/media/"):
            await self._media(scope, receive, send, path.removeprefix("/media/"), cookie)
            return
        if cookie is None:
            send = self._setting_cookie(send)
        await self.app(scope, receive, send)

    async def _media(self, scope: Scope, receive: Receive, send: Send, name: str,
                     cookie: str | None) -> None:
        stored = runtime.get_instance().media_file_mgr.read_file(name)
        digest = hashlib.sha256(stored.content).hexdigest() if stored else ""
        if not STORE.may_download(browser_tag(cookie), digest):
            log.warning("download refused: %s from %s (no live session of this browser was "
                        "given it)", name, scope.get("client"))
            await _not_found(send)
            return

        async def no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [
                    *[(k, v) for k, v in message["headers"] if k.lower() != b"cache-control"],
                    (b"cache-control", b"no-store")]}
            await send(message)

        await self.app(scope, receive, no_store)

    @staticmethod
    def _setting_cookie(send: Send) -> Send:
        attributes = "Path=/; HttpOnly; SameSite=Lax"
        if config.get_option("server.sslCertFile"):
            attributes += "; Secure"
        value = f"{BROWSER_COOKIE}={secrets.token_urlsafe(32)}; {attributes}".encode()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message,
                           "headers": [*message.get("headers", []), (b"set-cookie", value)]}
            await send(message)

        return sending

    @staticmethod
    def _without_paths(send: Send) -> Send:
        async def sending(message: Message) -> None:
            data = message.get("bytes") if message["type"] == "websocket.send" else None
            if data and HERE in data:  # a cheap test first: only new_session names the path
                forward = ForwardMsg.FromString(data)
                if forward.WhichOneof("type") == "new_session":
                    forward.new_session.main_script_path = "app.py"
                    message = {**message, "bytes": forward.SerializeToString()}
            await send(message)

        return sending

    @staticmethod
    def _filtered(receive: Receive, client: Any) -> Callable[[], Awaitable[Message]]:
        async def receiving() -> Message:
            while True:
                message = await receive()
                data = message.get("bytes") if message["type"] == "websocket.receive" else None
                kind = _message_type(data) if data else None
                if kind not in REFUSED_MESSAGES:
                    return message
                log.warning("dropped a %s message from %s: not available to viewers", kind,
                            client)

        return receiving


app = App(Path(__file__).with_name("app.py"), middleware=[Middleware(Guard)])
