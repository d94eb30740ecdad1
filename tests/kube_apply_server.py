"""A loopback Kubernetes API server for server-side apply of ResourceQuotas and Kueue objects
(ClusterQueues, Cohorts, ResourceFlavors, LocalQueues).

It does what kube-apiserver does for the calls collectors/kube_apply.py makes: GET an object
(404 Status when absent), LIST ResourceFlavors, PATCH with `application/apply-patch+yaml` (415
for any other patch type, 422 without fieldManager), `dryRun=All` answers with the object as it
would be without storing it, and a field owned by another manager gives 409 Conflict unless
`force=true`; ownership is kept per field of `spec` (its top-level keys), as managedFields
keeps it, so two managers that set different fields of one object never conflict. Like a
cluster with Kueue 0.19 installed, a Kueue object is refused (422 Invalid)
when it breaks its CRD's schema (the release files in tests/fixtures/kueue, unknown fields
included, as with fieldValidation=Strict) or the rules of Kueue's admission webhook and CEL
validations (models.planning.kueue.admission_problems); what is checked is the object as the
apply leaves it (the stored one with the applied fields merged in), and dry runs are checked
the same way.
Every request is kept for the tests to inspect.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from models.planning.kueue import admission_problems
from tests.kube_api import start_http, status, stop_http, url_of
from tests.kueue_schema import kueue_errors

RQ_PREFIX = "/api/v1/namespaces/"
KUEUE_PREFIX = "/apis/kueue.x-k8s.io/v1beta2/"
CQ_PREFIX = f"{KUEUE_PREFIX}clusterqueues/"
COHORT_PREFIX = f"{KUEUE_PREFIX}cohorts/"
RF_PREFIX = f"{KUEUE_PREFIX}resourceflavors/"
LQ_PREFIX = f"{KUEUE_PREFIX}namespaces/"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any


@dataclass
class LoopbackApiServer:
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Stored objects by API path."""
    owners: dict[str, dict[str, str]] = field(default_factory=dict)
    """API path -> spec field -> the field manager owning it (a different one conflicts)."""
    requests: list[Request] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _version: int = 1

    @property
    def url(self) -> str:
        return url_of(self._server)

    def start(self) -> LoopbackApiServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner._handle(self, "GET")

            def do_PATCH(self) -> None:
                owner._handle(self, "PATCH")

        self._server, self._thread = start_http(Handler)
        return self

    def stop(self) -> None:
        stop_http(self._server, self._thread)

    def put_resource_quota(self, namespace: str, name: str, hard: dict[str, str],
                           used: dict[str, str], manager: str = "gpu-chargeback") -> str:
        path = f"{RQ_PREFIX}{namespace}/resourcequotas/{name}"
        self.objects[path] = {
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": self._meta(name, namespace),
            "spec": {"hard": dict(hard)},
            "status": {"hard": dict(hard), "used": dict(used)},
        }
        self.owners[path] = {"hard": manager}
        return path

    def put_resource_flavor(self, name: str, node_labels: dict[str, str] | None = None,
                            manager: str = "kueue-admin") -> str:
        path = f"{RF_PREFIX}{name}"
        self.objects[path] = {
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
            "metadata": self._meta(name, None), "spec": {"nodeLabels": dict(node_labels or {})},
        }
        self.owners[path] = {"nodeLabels": manager}
        return path

    def put_cluster_queue(self, name: str, spec: dict[str, Any],
                          usage: list[dict[str, Any]] | None = None,
                          manager: str = "gpu-chargeback") -> str:
        path = f"{CQ_PREFIX}{name}"
        self.objects[path] = {
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
            "metadata": self._meta(name, None), "spec": copy.deepcopy(spec),
            "status": {"flavorsUsage": usage or []},
        }
        self.owners[path] = dict.fromkeys(spec, manager)
        return path

    def put_local_queue(self, namespace: str, name: str, spec: dict[str, Any],
                        manager: str = "kubectl") -> str:
        path = f"{LQ_PREFIX}{namespace}/localqueues/{name}"
        self.objects[path] = {
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
            "metadata": self._meta(name, namespace), "spec": copy.deepcopy(spec), "status": {},
        }
        self.owners[path] = dict.fromkeys(spec, manager)
        return path

    def set_spec_field(self, path: str, key: str, value: Any, manager: str) -> None:
        """`spec.<key>` of a stored object set by `manager` (as by kubectl apply)."""
        self.objects[path]["spec"][key] = value
        self.owners[path][key] = manager

    def _meta(self, name: str, namespace: str | None) -> dict[str, Any]:
        self._version += 1
        meta: dict[str, Any] = {
            "name": name, "uid": f"uid-{name}", "resourceVersion": str(self._version),
            "creationTimestamp": "2026-11-01T00:00:00Z",
        }
        if namespace:
            meta["namespace"] = namespace
        return meta

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body = yaml.safe_load(raw) if raw else None
        content_type = handler.headers.get("Content-Type")
        self.requests.append(Request(method, parts.path, query, content_type, body))
        path = parts.path
        if method == "GET" and path == RF_PREFIX.rstrip("/"):
            return self._reply(handler, 200, {
                "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavorList",
                "metadata": {"resourceVersion": str(self._version)},
                "items": [o for p, o in sorted(self.objects.items()) if p.startswith(RF_PREFIX)]})
        kueue = path.startswith((CQ_PREFIX, COHORT_PREFIX, RF_PREFIX)) or (
            path.startswith(LQ_PREFIX) and "/localqueues/" in path)
        if not (kueue or (path.startswith(RQ_PREFIX) and "/resourcequotas/" in path)):
            return self._reply(handler, 404, status(404, "NotFound", f"no route {path}"))
        stored = self.objects.get(path)
        if method == "GET":
            if stored is None:
                return self._reply(handler, 404, status(404, "NotFound", f"{path} not found"))
            return self._reply(handler, 200, stored)
        if content_type != "application/apply-patch+yaml":
            return self._reply(handler, 415, status(415, "UnsupportedMediaType",
                                                    f"unsupported patch type {content_type}"))
        manager = query.get("fieldManager")
        if not manager:
            return self._reply(handler, 422, status(422, "Invalid",
                                                    "fieldManager is required for apply"))
        if query.get("dryRun") not in (None, "All"):
            return self._reply(handler, 400, status(400, "BadRequest", "invalid dryRun"))
        owned = self.owners.get(path, {})
        conflicts = sorted((key, owned[key]) for key in body.get("spec", {})
                           if owned.get(key) not in (None, manager))
        if stored is not None and conflicts and query.get("force") != "true":
            return self._reply(handler, 409, status(
                409, "Conflict",
                f"Apply failed with {len(conflicts)} conflict(s): " + ", ".join(
                    f'conflict with "{who}": .spec.{key}' for key, who in conflicts),
                details={"name": path.rsplit("/", 1)[-1], "kind": path.split("/")[-2]},
            ))
        result = copy.deepcopy(stored) if stored is not None else {
            "apiVersion": body["apiVersion"], "kind": body["kind"],
            "metadata": self._meta(body["metadata"]["name"], body["metadata"].get("namespace")),
            "status": {},
        }
        result["metadata"]["labels"] = dict(body["metadata"].get("labels") or {})
        result["spec"] = {**result.get("spec", {}), **body.get("spec", {})}
        if kueue:
            merged = {"apiVersion": body["apiVersion"], "kind": body["kind"],
                      "metadata": {k: v for k, v in result["metadata"].items()
                                   if k in ("name", "namespace", "labels")},
                      "spec": result["spec"]}
            problems = kueue_errors(merged) + admission_problems(merged)
            if problems:
                return self._reply(handler, 422, status(
                    422, "Invalid", f"{body.get('kind')} {path.rsplit('/', 1)[-1]!r} is "
                    f"invalid: {'; '.join(problems)}"))
        if result["kind"] == "ResourceQuota":
            result["status"] = {"hard": dict(result["spec"]["hard"]),
                                "used": dict((result.get("status") or {}).get("used") or {})}
        if query.get("dryRun") != "All":
            self.objects[path] = result
            self.owners.setdefault(path, {}).update(dict.fromkeys(body.get("spec", {}), manager))
        return self._reply(handler, 200 if stored is not None else 201, result)

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
