"""PID -> container -> Kubernetes pod, from the text of `/proc/<pid>/cgroup`.

The kubelet puts every container in a cgroup under `kubepods`; the path names the pod's QoS
class, the pod UID and the container id. Two cgroup drivers spell it differently:

  cgroupfs: /kubepods/burstable/pod<uid>/<container>            (guaranteed: /kubepods/pod<uid>/..)
  systemd:  /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/<scope>
            where <uid_> is the UID with `-` replaced by `_` (systemd reserves `-` in unit names)

and the container runtime names the leaf: containerd `cri-containerd-<id>.scope` (systemd) or
`<id>` (cgroupfs), CRI-O `crio-<id>.scope` / `crio-<id>`, Docker (dockershim, cri-dockerd)
`docker-<id>.scope` / `<id>`. cgroup v1 lists one line per hierarchy
(`<id>:<controllers>:<path>`), cgroup v2 a single `0::<path>` line. Inside a container with
its own cgroup namespace, or on nested nodes (kind), the path may start with `/../..` or sit
under another prefix, so the kubepods part is searched anywhere in the path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from models.errors import TransientError

# Kubernetes pod UIDs are RFC 4122 UUIDs; static (mirror) pods have a 32-hex config hash.
_POD = re.compile(
    r"pod(?P<uid>[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
    r"|[0-9a-f]{32})(?:\.slice)?(?=$|[/:])"
)
_QOS = re.compile(r"kubepods[-/](?P<qos>burstable|besteffort)\b")
# The leaf after the pod: `<runtime>-<id>.scope`, `<runtime>-<id>`, a bare id, or the
# `<slice>:<runtime>:<id>` form systemd-managed containerd writes inside a cgroup namespace.
_CONTAINER = re.compile(
    r"(?:^|[/:])(?:(?P<runtime>cri-containerd|crio|docker|containerd)[-:])?"
    r"(?P<id>[0-9a-f]{64})(?:\.scope)?$"
)
_RUNTIMES = {"cri-containerd": "containerd", "containerd": "containerd", "crio": "cri-o",
             "docker": "docker"}


@dataclass(frozen=True)
class PodCgroup:
    """Where a process runs, as its cgroup path says."""

    pod_uid: str
    """The pod's UID in its API spelling (with `-`)."""
    qos_class: str
    """`guaranteed`, `burstable` or `besteffort`."""
    container_id: str | None
    """64-hex container id; None for a process in the pod's cgroup but no container's."""
    runtime: str | None
    """`containerd`, `cri-o`, `docker`, or None where the path does not say (cgroupfs)."""


def parse_cgroup(text: str) -> PodCgroup | None:
    """The pod of a `/proc/<pid>/cgroup` text, or None for a process outside Kubernetes pods.

    Lines that are not `<id>:<controllers>:<path>` are ignored rather than fatal: the file is
    the kernel's, and a collector must not die on one odd node."""
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3 or "kubepods" not in parts[2]:
            continue
        found = parse_cgroup_path(parts[2])
        if found is not None:
            return found
    return None


def parse_cgroup_path(path: str) -> PodCgroup | None:
    """The pod of one cgroup path (the third field of a `/proc/<pid>/cgroup` line)."""
    start = path.find("kubepods")
    if start < 0:
        return None
    tail = path[start:].rstrip("/")
    pod = _POD.search(tail)
    if pod is None:
        return None
    qos = _QOS.search(tail[: pod.start()])
    container = _CONTAINER.search(tail[pod.end():])
    return PodCgroup(
        pod_uid=pod["uid"].replace("_", "-"),
        qos_class=qos["qos"] if qos else "guaranteed",
        container_id=container["id"] if container else None,
        runtime=_RUNTIMES.get(container["runtime"] or "") if container else None,
    )


class ProcessGone(TransientError):
    """The process exited before its cgroup file could be read."""


def pod_of_pid(pid: int, proc_root: Path = Path("/proc")) -> PodCgroup | None:
    """The pod of a running process; None when it runs outside any pod.

    Raises ProcessGone when `/proc/<pid>` no longer exists (the process exited, which is
    routine between listing a GPU's processes and reading them). The collector must see the
    host's PIDs (a DaemonSet with `hostPID: true`), else NVML's PIDs name other processes."""
    try:
        text = (proc_root / str(pid) / "cgroup").read_text()
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise ProcessGone(f"process {pid} has exited ({proc_root / str(pid)} is gone)") from exc
    return parse_cgroup(text)
