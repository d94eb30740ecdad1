"""The cluster side of scheduler quotas: read what is in force and in use, and apply a plan
(models.planning.quotas plans, writes and records; nothing here decides a figure).

Applying is a server-side apply: PATCH with `Content-Type: application/apply-patch+yaml`,
`fieldManager=gpu-chargeback`, `force=false` unless asked, and `dryRun=All` unless the caller
really applies: the API server then runs admission (Kueue's webhook included) and answers with
the object as it would be, without storing it."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from models.planning.budgets import HOLD_MANAGER, MISSING, NO_HOLD, HoldChange, QueueRef
from models.planning.kueue import KUEUE_GROUP, KUEUE_VERSION, PLURALS
from models.planning.quotas import (
    COHORT_NAME,
    MANAGER,
    QUOTA_NAME,
    ApplyConflict,
    ApplyRefused,
    ChangeRecord,
    ClusterState,
    QuotaKey,
    QuotaKind,
    QuotaPlan,
    Recommendation,
    device_resource,
    dns_name,
    whole_gpus,
)

APPLY_PATCH = "application/apply-patch+yaml"


def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """In-cluster credentials, else the kubeconfig: the same rules as the pod collector."""
    from collectors.pods import api_client_from_environment

    return api_client_from_environment(kubeconfig, context)


def why_no_cluster(kubeconfig: str) -> str | None:
    """Why no cluster can be reached, or None when a kubeconfig or in-cluster config exists."""
    if kubeconfig:
        return None if Path(kubeconfig).is_file() else f"kubeconfig {kubeconfig} does not exist"
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    return "no kubeconfig configured (CHARGEBACK_KUBECONFIG) and not running in a cluster"


def read_cluster_state(api: client.ApiClient, recommendations: Sequence[Recommendation], *,
                       kueue: bool = True, cohort: str = COHORT_NAME) -> ClusterState:
    """The quotas in force and in use for the recommendations' namespaces (our ResourceQuota
    in each) and, with `kueue`, their tenants' ClusterQueues, the cohort's pool (in use: what
    the queues borrow) and the ResourceFlavors that exist. An object that does not exist yet
    has no figures."""
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    in_force: dict[QuotaKey, int] = {}
    in_use: dict[QuotaKey, int] = {}
    other_groups: dict[str, list[dict[str, Any]]] = {}
    for namespace in sorted({r.namespace for r in recommendations}):
        try:
            quota = core.read_namespaced_resource_quota(QUOTA_NAME, namespace)
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise _refusal(exc, "ResourceQuota", f"{namespace}/{QUOTA_NAME}", "read") from exc
        for resource, value in ((quota.spec and quota.spec.hard) or {}).items():
            in_force[QuotaKey.resource_quota(namespace, resource)] = whole_gpus(value)
        for resource, value in ((quota.status and quota.status.used) or {}).items():
            in_use[QuotaKey.resource_quota(namespace, resource)] = whole_gpus(value)
    if not kueue:
        return ClusterState(in_force, in_use)
    gpu_resources = {device_resource(r.mig_profile) for r in recommendations}
    cohort = dns_name(cohort)
    try:
        listed = custom.list_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION,
                                                   PLURALS["ResourceFlavor"])
    except ApiException as exc:
        raise _refusal(exc, "ResourceFlavor", "(all)", "list") from exc
    items = listed.get("items") if isinstance(listed, dict) else None
    flavors = frozenset(item["metadata"]["name"] for item in items or [])
    live_cohort: dict[str, Any] = {}
    try:
        fetched_cohort = custom.get_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION,
                                                          PLURALS["Cohort"], cohort)
        if isinstance(fetched_cohort, dict):
            live_cohort = fetched_cohort
    except ApiException as exc:
        if exc.status != 404:
            raise _refusal(exc, "Cohort", cohort, "read") from exc
    for group in (live_cohort.get("spec") or {}).get("resourceGroups") or []:
        for flavor in group.get("flavors") or []:
            for res in flavor.get("resources") or []:
                if _is_gpu(res["name"]):
                    in_force[QuotaKey.cohort(cohort, flavor["name"], res["name"])] = (
                        whole_gpus(res["nominalQuota"]))
    for queue in sorted({dns_name(r.tenant) for r in recommendations}):
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
                    in_force[QuotaKey.cluster_queue(queue, flavor["name"], res["name"])] = (
                        whole_gpus(res["nominalQuota"]))
        in_cohort = (live.get("spec") or {}).get("cohortName") == cohort
        for flavor in (live.get("status") or {}).get("flavorsUsage") or []:
            for res in flavor.get("resources") or []:
                if res["name"] in gpu_resources or _is_gpu(res["name"]):
                    in_use[QuotaKey.cluster_queue(queue, flavor["name"], res["name"])] = (
                        whole_gpus(res.get("total", 0)))
                    if in_cohort and res.get("borrowed"):
                        # What the queues borrow now is what the pool must keep.
                        key = QuotaKey.cohort(cohort, flavor["name"], res["name"])
                        in_use[key] = in_use.get(key, 0) + whole_gpus(res["borrowed"])
    return ClusterState(in_force, in_use, other_groups, flavors)


def apply_plan(api: client.ApiClient, plan: QuotaPlan, *, dry_run: bool = True,
               force: bool = False, now: datetime | None = None) -> list[ChangeRecord]:
    """Server-side apply every object of `plan` that changes a figure; one record per figure
    (unchanged ones included, so the warehouse shows what was checked).

    Raises ApplyConflict on a 409 and ApplyRefused on other refusals; nothing after the refused
    object is applied, and the records made before it travel with the exception."""
    now = now or datetime.now(UTC)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    records: list[ChangeRecord] = []
    for obj in plan.objects:
        # Objects without figures (flavors, local queues) are applied every run: server-side
        # apply of an unchanged object changes nothing, and a dry run checks them all.
        if obj.changes and not any(c.changes for c in obj.changes) and not obj.restated:
            records += [ChangeRecord.of(c, now, dry_run, "unchanged") for c in obj.changes]
            continue
        # The client serializes a dict body as JSON for apply-patch+yaml: JSON is YAML 1.2.
        options: dict[str, Any] = {"field_manager": MANAGER, "force": force,
                                   "_content_type": APPLY_PATCH}
        if dry_run:
            options["dry_run"] = "All"
        try:
            if obj.kind is QuotaKind.RESOURCE_QUOTA:
                assert obj.namespace is not None
                core.patch_namespaced_resource_quota(obj.name, obj.namespace, obj.manifest,
                                                     **options)
            elif obj.namespace is not None:
                custom.patch_namespaced_custom_object(
                    KUEUE_GROUP, KUEUE_VERSION, obj.namespace, PLURALS[obj.kind.value],
                    obj.name, obj.manifest, **options)
            else:
                custom.patch_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION,
                                                   PLURALS[obj.kind.value], obj.name,
                                                   obj.manifest, **options)
        except ApiException as exc:
            outcome = "conflict" if exc.status == 409 else f"error: HTTP {exc.status}"
            records += [ChangeRecord.of(c, now, dry_run, outcome)
                        for c in obj.changes if c.changes]
            raise _refusal(exc, obj.kind.value, obj.where, "apply", records) from exc
        outcome = "dry-run" if dry_run else "applied"
        records += [ChangeRecord.of(c, now, dry_run, outcome if c.changes else "unchanged")
                    for c in obj.changes]
    return records


def read_stop_policies(api: client.ApiClient, queues: Sequence[QueueRef]) -> dict[QueueRef, str]:
    """Each queue's `spec.stopPolicy` (Kueue's default None when unset), MISSING when the queue
    does not exist."""
    custom = client.CustomObjectsApi(api)
    out: dict[QueueRef, str] = {}
    for queue in sorted(set(queues)):
        try:
            if queue.namespace is None:
                fetched = custom.get_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION,
                                                           "clusterqueues", queue.name)
            else:
                fetched = custom.get_namespaced_custom_object(
                    KUEUE_GROUP, KUEUE_VERSION, queue.namespace, "localqueues", queue.name)
        except ApiException as exc:
            if exc.status == 404:
                out[queue] = MISSING
                continue
            raise _refusal(exc, queue.kind.value, _where(queue), "read") from exc
        live: dict[str, Any] = fetched if isinstance(fetched, dict) else {}
        out[queue] = str((live.get("spec") or {}).get("stopPolicy") or NO_HOLD)
    return out


def apply_holds(api: client.ApiClient, changes: Sequence[HoldChange], *, now: datetime
                ) -> tuple[list[tuple[HoldChange, str]], list[str]]:
    """Server-side apply each change's manifest (`spec.stopPolicy` only, field manager
    HOLD_MANAGER, never forced; `dryRun=All` for a tenant in dry-run): each change with its
    outcome, and a message for each one refused. A refused change does not stop the others:
    each queue is its own tenant's."""
    custom = client.CustomObjectsApi(api)
    done: list[tuple[HoldChange, str]] = []
    problems: list[str] = []
    for change in changes:
        options: dict[str, Any] = {"field_manager": HOLD_MANAGER, "force": False,
                                   "_content_type": APPLY_PATCH}
        if change.dry_run:
            options["dry_run"] = "All"
        queue = change.queue
        try:
            if queue.namespace is None:
                custom.patch_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, "clusterqueues",
                                                   queue.name, change.manifest, **options)
            else:
                custom.patch_namespaced_custom_object(KUEUE_GROUP, KUEUE_VERSION,
                                                      queue.namespace, "localqueues",
                                                      queue.name, change.manifest, **options)
        except ApiException as exc:
            done.append((change, "conflict" if exc.status == 409 else f"error: HTTP {exc.status}"))
            if exc.status == 409:
                problems.append(
                    f"{queue.label}: {change.action} for {change.tenant}'s budget refused: "
                    f"another field manager owns spec.stopPolicy ({_status_message(exc)}). "
                    f"Someone else holds or releases this queue; settle who does (kubectl get "
                    f"--show-managed-fields) and the next run retries.")
            else:
                problems.append(str(_refusal(exc, queue.kind.value, _where(queue), "apply")))
            continue
        done.append((change, "dry-run" if change.dry_run else "applied"))
    return done, problems


def _where(queue: QueueRef) -> str:
    return f"{queue.namespace}/{queue.name}" if queue.namespace else queue.name


def _is_gpu(resource: str) -> bool:
    return resource == "nvidia.com/gpu" or resource.startswith("nvidia.com/mig-")


def _refusal(exc: ApiException, kind: str, where: str, verb: str,
             records: Sequence[ChangeRecord] = ()) -> ApplyRefused:
    message = _status_message(exc)
    if exc.status == 409:
        return ApplyConflict(
            f"{kind} {where}: conflict: another field manager owns a field gpu-chargeback sets "
            f"({message}). Nothing after it was applied. Check who manages it (kubectl get "
            f"--show-managed-fields); to take the fields over, rerun with --force-conflicts.",
            records)
    if exc.status in (401, 403):
        return ApplyRefused(
            f"{kind} {where}: {verb} forbidden ({message}): the credentials need get and patch "
            f"on resourcequotas and, with Kueue, get, list and patch on clusterqueues, cohorts, "
            f"resourceflavors and localqueues.kueue.x-k8s.io.", records)
    if exc.status == 404 and kind != "ResourceQuota":
        return ApplyRefused(
            f"{kind} {where}: {verb}: not found ({message}); is Kueue installed with "
            f"{KUEUE_GROUP}/{KUEUE_VERSION}? Use --no-kueue if the cluster does not use Kueue.",
            records)
    return ApplyRefused(f"{kind} {where}: {verb} refused with HTTP {exc.status}: {message}",
                        records)


def _status_message(exc: ApiException) -> str:
    try:
        status = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return str(exc.reason)
    return str(status.get("message") or exc.reason)
