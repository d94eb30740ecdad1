"""A loopback HTTP server that speaks enough of the Kubernetes API for the pod collector's tests.

It serves the collections the collector reads (core/v1 pods, nodes, namespaces; resource.k8s.io/v1
resourceslices and resourceclaims) the way a kube-apiserver does:
- GET list with `resourceVersion` in the list metadata, `limit`/`continue` chunking over a
  consistent snapshot;
- `?watch=true` as a chunked stream of newline-delimited JSON events ADDED/MODIFIED/DELETED,
  BOOKMARK when `allowWatchBookmarks=true`, and an ERROR event carrying a Status with code 410
  when the requested resourceVersion is older than the compacted history;
- `/version/` with every field of VersionInfo (the client validates it strictly).

Tests change the cluster with `put`/`delete` (each bumps the resourceVersion and records an
event), `compact()` to expire history, and `drop_next_watch_after(collection, n)` to cut a watch
connection mid-stream. A watch ends (cleanly, like a server-side timeout) after `timeoutSeconds`
or once it has been idle for `idle_close_s`, so tests never wait long. Every request is logged
in `requests` for assertions.

`fail_next(collection, fault)` makes the next request of a collection answer the way broken
servers and proxies do (see FAULTS): an error status (404: its API group is not served), a
body that is not JSON or is cut short, an object of the wrong kind, a list without its fields,
an answer slower than the client's timeout, or a watch stream carrying garbage or an ERROR
event.
"""

from __future__ import annotations

import base64
import copy
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

COLLECTIONS = {"pods": "Pod", "nodes": "Node", "namespaces": "Namespace",
               "resourceclaims": "ResourceClaim", "resourceslices": "ResourceSlice"}
API_VERSIONS = {"resourceclaims": "resource.k8s.io/v1", "resourceslices": "resource.k8s.io/v1"}
"""Collections outside the core group, served at /apis/<group>/<version>/<collection>."""
FAULTS = ("status-500", "status-404", "not-json", "truncated", "wrong-kind", "no-items",
          "slow", "garbage-event", "error-event")
VERSION_INFO = {
    "major": "1",
    "minor": "31",
    "emulationMajor": "1",
    "emulationMinor": "31",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "30",
    "gitVersion": "v1.31.4",
    "gitCommit": "a78aa47129b8539636eb86a9d00e31b2720fe06b",
    "gitTreeState": "clean",
    "buildDate": "2024-12-10T11:36:45Z",
    "goVersion": "go1.22.9",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass
class Event:
    resource_version: int
    collection: str
    type: str
    object: dict[str, Any]


@dataclass
class Cluster:
    """Objects by collection and key (namespace/name), their history, and the version clock."""

    objects: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {name: {} for name in COLLECTIONS}
    )
    events: list[Event] = field(default_factory=list)
    resource_version: int = 1000
    compacted: int = 0
    snapshots: dict[int, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    lock: threading.Condition = field(default_factory=threading.Condition)


def _key(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


class KubeAPI:
    def __init__(self, *, idle_close_s: float = 0.2) -> None:
        self.cluster = Cluster()
        self.idle_close_s = idle_close_s
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._drop_after: dict[str, int] = {}
        self._faults: dict[str, list[str]] = {}
        self.slow_s = 3.0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- changing the cluster

    def put(self, obj: dict[str, Any]) -> int:
        """Create or update an object (ADDED or MODIFIED event); returns its resourceVersion."""
        collection = _collection_of(obj)
        with self.cluster.lock:
            store = self.cluster.objects[collection]
            obj = copy.deepcopy(obj)
            key = _key(obj)
            kind = "MODIFIED" if key in store else "ADDED"
            self.cluster.resource_version += 1
            obj["metadata"]["resourceVersion"] = str(self.cluster.resource_version)
            store[key] = obj
            self.cluster.events.append(
                Event(self.cluster.resource_version, collection, kind, copy.deepcopy(obj))
            )
            self.cluster.lock.notify_all()
            return self.cluster.resource_version

    def delete(self, obj: dict[str, Any]) -> int:
        collection = _collection_of(obj)
        with self.cluster.lock:
            gone = self.cluster.objects[collection].pop(_key(obj))
            self.cluster.resource_version += 1
            gone["metadata"]["resourceVersion"] = str(self.cluster.resource_version)
            self.cluster.events.append(
                Event(self.cluster.resource_version, collection, "DELETED", copy.deepcopy(gone))
            )
            self.cluster.lock.notify_all()
            return self.cluster.resource_version

    def compact(self) -> None:
        """Forget history up to now: watches from an older resourceVersion get 410 Gone."""
        with self.cluster.lock:
            self.cluster.compacted = self.cluster.resource_version
            self.cluster.events = []
            self.cluster.snapshots = {}

    def drop_next_watch_after(self, collection: str, events: int) -> None:
        """The next watch of `collection` sends `events` events, then the connection breaks."""
        self._drop_after[collection] = events

    def fail_next(self, collection: str, fault: str, times: int = 1) -> None:
        """The next `times` requests of `collection` (list or watch) answer with `fault`."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
        self._faults.setdefault(collection, []).extend([fault] * times)

    # -- serving

    @property
    def url(self) -> str:
        return url_of(self._server)

    def start(self) -> KubeAPI:
        api = self

        class Handler(_Handler):
            server_api = api

        self._server, self._thread = start_http(Handler)
        return self

    def stop(self) -> None:
        stop_http(self._server, self._thread)

    def requests_to(self, collection: str) -> list[dict[str, str]]:
        return [q for path, q in self.requests if path.rstrip("/").endswith(f"/{collection}")]


def _collection_of(obj: dict[str, Any]) -> str:
    for collection, kind in COLLECTIONS.items():
        if obj.get("kind") == kind:
            return collection
    raise ValueError(f"unsupported kind {obj.get('kind')!r}")


@contextmanager
def serve(*, idle_close_s: float = 0.2) -> Iterator[KubeAPI]:
    api = KubeAPI(idle_close_s=idle_close_s).start()
    try:
        yield api
    finally:
        api.stop()


def status(code: int, reason: str, message: str, details: dict[str, Any] | None = None,
           ) -> dict[str, Any]:
    """A Kubernetes `Status` failure object, as the API server sends with error codes."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "message": message, "reason": reason,
                            "code": code}
    if details:
        body["details"] = details
    return body


def start_http(handler: type[BaseHTTPRequestHandler]
               ) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """A threaded HTTP server on 127.0.0.1 and a free port, serving in a daemon thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def stop_http(server: ThreadingHTTPServer | None, thread: threading.Thread | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()
    if thread is not None:
        thread.join(timeout=5)


def url_of(server: ThreadingHTTPServer | None) -> str:
    assert server is not None
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_api: KubeAPI

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        api = self.server_api
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        api.requests.append((parts.path, query))
        if parts.path in ("/version", "/version/"):
            self._json(200, VERSION_INFO)
            return
        segments = parts.path.strip("/").split("/")
        collection = segments[-1]
        group = "/".join(segments[1:-1])
        if (collection not in COLLECTIONS or segments[0] != ("apis" if "/" in group else "api")
                or group != API_VERSIONS.get(collection, "v1")):
            self._json(404, status(404, "NotFound", f"the server could not find {parts.path}"))
            return
        pending = api._faults.get(collection)
        fault = pending.pop(0) if pending else None
        if fault == "slow":
            time.sleep(api.slow_s)
        elif fault is not None:
            self._fault(fault, collection)
            return
        if query.get("watch") in ("true", "1"):
            self._watch(collection, query)
        else:
            self._list(collection, query)

    def _fault(self, fault: str, collection: str) -> None:
        if fault == "status-500":
            self._json(500, status(500, "InternalError",
                                   "etcdserver: request timed out"))
            return
        if fault == "status-404":  # a server that does not serve the collection's API group
            self._json(404, status(404, "NotFound", "the server could not find the requested "
                                   "resource"))
            return
        if fault in ("garbage-event", "error-event"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if fault == "garbage-event":
                data = b"<<< upstream reset >>>\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            else:
                self._chunk({"type": "ERROR", "object": status(
                    500, "InternalError", "an error on the server has prevented the request")})
            self.wfile.write(b"0\r\n\r\n")
            return
        listed = {"kind": f"{COLLECTIONS[collection]}List",
                  "apiVersion": API_VERSIONS.get(collection, "v1"),
                  "metadata": {"resourceVersion": str(self.server_api.cluster.resource_version)},
                  "items": [{"metadata": {"name": "x"}}]}
        body: bytes
        content_type = "application/json"
        if fault == "not-json":
            body, content_type = b"<html><body>502 Bad Gateway</body></html>", "text/html"
        elif fault == "truncated":
            text = json.dumps(listed).encode()
            body = text[: len(text) // 2]
        elif fault == "wrong-kind":
            other = next(c for c in COLLECTIONS if c != collection)
            body = json.dumps({**listed, "kind": f"{COLLECTIONS[other]}List"}).encode()
        else:  # no-items
            body = json.dumps({"kind": listed["kind"], "apiVersion": listed["apiVersion"],
                               "metadata": {}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _list(self, collection: str, query: dict[str, str]) -> None:
        cluster = self.server_api.cluster
        with cluster.lock:
            token = query.get("continue")
            if token:
                state = json.loads(base64.b64decode(token))
                version, offset = int(state["rv"]), int(state["start"])
                if version not in cluster.snapshots:
                    self._json(410, status(410, "Expired",
                                            "The provided continue parameter is too old"))
                    return
            else:
                version, offset = cluster.resource_version, 0
                cluster.snapshots[version] = {
                    name: [copy.deepcopy(o) for _, o in sorted(store.items())]
                    for name, store in cluster.objects.items()
                }
            items = cluster.snapshots[version][collection]
        limit = int(query.get("limit") or 0) or len(items) or 1
        page = items[offset:offset + limit]
        metadata: dict[str, Any] = {"resourceVersion": str(version)}
        if offset + limit < len(items):
            metadata["continue"] = base64.b64encode(
                json.dumps({"rv": version, "start": offset + limit}).encode()
            ).decode()
            metadata["remainingItemCount"] = len(items) - offset - limit
        self._json(200, {
            "kind": f"{COLLECTIONS[collection]}List",
            "apiVersion": API_VERSIONS.get(collection, "v1"),
            "metadata": metadata,
            "items": page,
        })

    def _chunk(self, event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _watch(self, collection: str, query: dict[str, str]) -> None:
        api = self.server_api
        cluster = api.cluster
        since = int(query.get("resourceVersion") or 0)
        timeout = float(query.get("timeoutSeconds") or 60)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        drop_after = api._drop_after.pop(collection, None)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if since and since < cluster.compacted:
            self._chunk({"type": "ERROR", "object": status(
                410, "Expired", f"too old resource version: {since} ({cluster.compacted})")})
            self.wfile.write(b"0\r\n\r\n")
            return
        deadline = time.monotonic() + timeout
        sent = 0
        last_activity = time.monotonic()
        while True:
            with cluster.lock:
                pending = [e for e in cluster.events
                           if e.collection == collection and e.resource_version > since]
                if not pending:
                    wait = min(deadline, last_activity + api.idle_close_s) - time.monotonic()
                    if wait <= 0:
                        # Taken under the lock: nothing of this collection is newer.
                        bookmark_version = cluster.resource_version
                        break
                    cluster.lock.wait(wait)
                    continue
            for event in pending:
                if drop_after is not None and sent >= drop_after:
                    # Break the connection without the terminating chunk, as a dying
                    # apiserver or load balancer does.
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self._chunk({"type": event.type, "object": event.object})
                since = event.resource_version
                sent += 1
            last_activity = time.monotonic()
        if bookmarks:
            self._chunk({"type": "BOOKMARK", "object": {
                "kind": COLLECTIONS[collection], "apiVersion": "v1",
                "metadata": {"resourceVersion": str(bookmark_version)},
            }})
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
