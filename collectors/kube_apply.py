"""Apply scheduler quotas through the Kubernetes API with server-side apply, and record changes.

PATCH with `Content-Type: application/apply-patch+yaml`, `fieldManager=gpu-chargeback`,
`force=false` unless asked, and `dryRun=All` unless the caller really applies: the API server
then runs admission (Kueue's webhook included) and answers with the object as it would be,
without storing it. Each quota field becomes a ChangeRecord, written to the warehouse table
`scheduler_quota_changes` by `record_changes`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from models.errors import UserError
from models.planning.quotas import (
    KUEUE_GROUP,
    KUEUE_VERSION,
    MANAGER,
    QUOTA_NAME,
    QuotaChange,
    Recommendation,
    cluster_queue_manifests,
    device_resource,
    dns_name,
    kueue_admission_problems,
    plan_cluster_queues,
    plan_resource_quotas,
    resource_quota_manifests,
    whole_gpus,
)

APPLY_PATCH = "application/apply-patch+yaml"
CHANGES_TABLE = "scheduler_quota_changes"


class ApplyError(UserError):
    """The API server refused an apply; the message says which object and what to do."""

    records: list[ChangeRecord]
    """What was done (or attempted) before the refusal, for the warehouse."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.records = []


class ApplyConflict(ApplyError):
    """409: another field manager owns a field we set."""


@dataclass(frozen=True)
class ChangeRecord:
    changed_at: datetime
    kind: str
    namespace: str | None
    name: str
    field: str
    before: int | None
    after: int
    in_use: int
    recommended: int
    rule: str
    dry_run: bool
    outcome: str
    """`dry-run` (accepted, not stored), `applied`, `unchanged`, or `conflict`/`error: ...`."""


def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """In-cluster credentials, else the kubeconfig: the same rules as the pod collector."""
    from collectors.pods import api_client_from_environment

    return api_client_from_environment(kubeconfig, context)


def apply_quotas(
    api: client.ApiClient,
    recommendations: Sequence[Recommendation],
    *,
    max_step: int,
    dry_run: bool = True,
    force: bool = False,
    kueue: bool = True,
    now: datetime | None = None,
) -> list[ChangeRecord]:
    """Read what is in force and in use, plan the step, apply it, and return one record per
    quota field (unchanged fields included, so the table shows what was checked).

    Raises ApplyConflict on a 409 (nothing after it is applied) and ApplyError on other refusals;
    records made before the failure are in the exception's `records`."""
    now = now or datetime.now(UTC)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    tenants = {r.namespace: r.tenant for r in recommendations}

    hard: dict[tuple[str, str], int] = {}
    used: dict[tuple[str, str], int] = {}
    for namespace in sorted(tenants):
        try:
            quota = core.read_namespaced_resource_quota(QUOTA_NAME, namespace)
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise _refusal(exc, "ResourceQuota", f"{namespace}/{QUOTA_NAME}", "read") from exc
        for resource, value in ((quota.spec and quota.spec.hard) or {}).items():
            hard[(namespace, resource)] = whole_gpus(value)
        for resource, value in ((quota.status and quota.status.used) or {}).items():
            used[(namespace, resource)] = whole_gpus(value)
    changes = plan_resource_quotas(recommendations, current_hard=hard, in_use=used,
                                   max_step=max_step)
    manifests = resource_quota_manifests(changes, tenants)

    if kueue:
        queues = sorted({dns_name(r.tenant) for r in recommendations})
        nominal: dict[tuple[str, str, str], int] = {}
        cq_used: dict[tuple[str, str, str], int] = {}
        other_groups: dict[str, list[dict[str, Any]]] = {}
        gpu_resources = {device_resource(r.mig_profile) for r in recommendations}
        for queue in queues:
            try:
                fetched = custom.get_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION,
                                                           "clusterqueues", queue)
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise _refusal(exc, "ClusterQueue", queue, "read") from exc
            live: dict[str, Any] = fetched if isinstance(fetched, dict) else {}
            for group in (live.get("spec") or {}).get("resourceGroups") or []:
                if not any(_is_gpu(r) for r in group.get("coveredResources") or []):
                    other_groups.setdefault(queue, []).append(group)
                    continue
                for flavor in group.get("flavors") or []:
                    for res in flavor.get("resources") or []:
                        nominal[(queue, flavor["name"], res["name"])] = whole_gpus(
                            res["nominalQuota"])
            for flavor in (live.get("status") or {}).get("flavorsUsage") or []:
                for res in flavor.get("resources") or []:
                    if res["name"] in gpu_resources or _is_gpu(res["name"]):
                        cq_used[(queue, flavor["name"], res["name"])] = whole_gpus(
                            res.get("total", 0))
        cq_changes = plan_cluster_queues(recommendations, current_nominal=nominal,
                                         in_use=cq_used, max_step=max_step)
        namespaces: dict[str, list[str]] = {}
        for r in recommendations:
            namespaces.setdefault(dns_name(r.tenant), []).append(r.namespace)
        cq_manifests = cluster_queue_manifests(cq_changes, namespaces, other_groups=other_groups)
        for manifest in cq_manifests:
            problems = kueue_admission_problems(manifest)
            if problems:
                raise ApplyError(
                    f"ClusterQueue {manifest['metadata']['name']}: Kueue would reject it: "
                    + "; ".join(problems)
                )
        changes += cq_changes
        manifests += cq_manifests

    records: list[ChangeRecord] = []
    for manifest in manifests:
        kind, meta = manifest["kind"], manifest["metadata"]
        mine = [
            c for c in changes
            if c.kind == kind and c.name == meta["name"] and c.namespace == meta.get("namespace")
        ]
        where = f"{meta.get('namespace')}/{meta['name']}" if meta.get("namespace") else meta["name"]
        if not any(c.changes for c in mine):
            records += [_record(c, now, dry_run, "unchanged") for c in mine]
            continue
        # The client serializes a dict body as JSON for apply-patch+yaml: JSON is YAML 1.2.
        body = manifest
        options: dict[str, Any] = {
            "field_manager": MANAGER,
            "force": force,
            "_content_type": APPLY_PATCH,
        }
        if dry_run:
            options["dry_run"] = "All"
        try:
            if kind == "ResourceQuota":
                core.patch_namespaced_resource_quota(meta["name"], meta["namespace"], body,
                                                     **options)
            else:
                custom.patch_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, "clusterqueues",
                                                   meta["name"], body, **options)
        except ApiException as exc:
            records += [_record(c, now, dry_run, _outcome(exc)) for c in mine if c.changes]
            error = _refusal(exc, kind, where, "apply")
            error.records = records
            raise error from exc
        outcome = "dry-run" if dry_run else "applied"
        records += [_record(c, now, dry_run, outcome if c.changes else "unchanged") for c in mine]
    return records


def _is_gpu(resource: str) -> bool:
    return resource == "nvidia.com/gpu" or resource.startswith("nvidia.com/mig-")


def _record(change: QuotaChange, now: datetime, dry_run: bool, outcome: str) -> ChangeRecord:
    return ChangeRecord(now, change.kind, change.namespace, change.name, change.field,
                        change.current, change.target, change.in_use, change.recommended,
                        change.rule, dry_run, outcome)


def _outcome(exc: ApiException) -> str:
    return "conflict" if exc.status == 409 else f"error: HTTP {exc.status}"


def _refusal(exc: ApiException, kind: str, where: str, verb: str) -> ApplyError:
    message = _status_message(exc)
    if exc.status == 409:
        return ApplyConflict(
            f"{kind} {where}: conflict: another field manager owns a field gpu-chargeback sets "
            f"({message}). Nothing after it was applied. Check who manages it (kubectl get "
            f"--show-managed-fields); to take the fields over, rerun with --force-conflicts."
        )
    if exc.status in (401, 403):
        return ApplyError(
            f"{kind} {where}: {verb} forbidden ({message}): the credentials need get and patch "
            f"on resourcequotas (and clusterqueues.kueue.x-k8s.io)."
        )
    if exc.status == 404 and kind == "ClusterQueue":
        return ApplyError(
            f"{kind} {where}: {verb}: not found ({message}); is Kueue installed with "
            f"{KUEUE_GROUP}/{KUEUE_VERSION}? Use --no-kueue if the cluster does not use Kueue."
        )
    return ApplyError(f"{kind} {where}: {verb} refused with HTTP {exc.status}: {message}")


def _status_message(exc: ApiException) -> str:
    try:
        status = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return str(exc.reason)
    return str(status.get("message") or exc.reason)


def record_changes(con: duckdb.DuckDBPyConnection, changes: Sequence[ChangeRecord]) -> int:
    """Append change records to `scheduler_quota_changes` (created if absent); returns rows."""
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {CHANGES_TABLE} (
            changed_at TIMESTAMPTZ NOT NULL, kind VARCHAR NOT NULL, namespace VARCHAR,
            name VARCHAR NOT NULL, field VARCHAR NOT NULL, before_gpus BIGINT,
            after_gpus BIGINT NOT NULL, in_use_gpus BIGINT NOT NULL,
            recommended_gpus BIGINT NOT NULL, rule VARCHAR NOT NULL, dry_run BOOLEAN NOT NULL,
            outcome VARCHAR NOT NULL)"""
    )
    rows = [tuple(asdict(c).values()) for c in changes]
    if rows:
        con.executemany(f"INSERT INTO {CHANGES_TABLE} VALUES ({', '.join('?' * 12)})", rows)
    return len(rows)
