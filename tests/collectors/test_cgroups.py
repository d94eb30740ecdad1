"""PID -> pod from /proc/<pid>/cgroup, for every cgroup driver, runtime and QoS class.

The lines are written here after the formats the kubelet and the runtimes document: the
kubelet's cgroupfs and systemd drivers (pkg/kubelet/cm/cgroup_manager_linux.go: systemd
escapes `-` in the pod UID as `_`), containerd's `cri-containerd-<id>.scope`, CRI-O's
`crio-<id>.scope`, Docker's `docker-<id>.scope`; cgroup v1 has one line per hierarchy,
cgroup v2 the single `0::<path>`."""

from pathlib import Path

import pytest

from collectors.cgroups import PodCgroup, ProcessGone, parse_cgroup, parse_cgroup_path, pod_of_pid

UID = "0c3e2f5a-1b2c-4d5e-8f90-123456789abc"
UID_ = UID.replace("-", "_")
CID = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899"


def v1(path: str) -> str:
    """A cgroup v1 file: the same path under every controller, as the kubelet creates it."""
    controllers = ["cpuset", "cpu,cpuacct", "blkio", "memory", "devices", "freezer",
                   "net_cls,net_prio", "perf_event", "hugetlb", "pids"]
    lines = [f"{12 - i}:{c}:{path}" for i, c in enumerate(controllers)]
    lines.append(f"1:name=systemd:{path}")
    return "\n".join(lines) + "\n"


def v2(path: str) -> str:
    return f"0::{path}\n"


CASES = [
    # (cgroup file text, qos, runtime)
    # cgroupfs driver (cgroup v1): containerd and Docker leave the bare id, CRI-O prefixes it.
    (v1(f"/kubepods/burstable/pod{UID}/{CID}"), "burstable", None),
    (v1(f"/kubepods/besteffort/pod{UID}/{CID}"), "besteffort", None),
    (v1(f"/kubepods/pod{UID}/{CID}"), "guaranteed", None),
    (v1(f"/kubepods/burstable/pod{UID}/crio-{CID}"), "burstable", "cri-o"),
    # systemd driver (cgroup v1): one slice per QoS class and per pod, a scope per container.
    (v1(f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"cri-containerd-{CID}.scope"), "burstable", "containerd"),
    (v1(f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
        f"docker-{CID}.scope"), "besteffort", "docker"),
    (v1(f"/kubepods.slice/kubepods-pod{UID_}.slice/crio-{CID}.scope"), "guaranteed", "cri-o"),
    # cgroup v2 (unified): systemd driver with each runtime, and cgroupfs.
    (v2(f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"cri-containerd-{CID}.scope"), "burstable", "containerd"),
    (v2(f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
        f"crio-{CID}.scope"), "besteffort", "cri-o"),
    (v2(f"/kubepods.slice/kubepods-pod{UID_}.slice/docker-{CID}.scope"), "guaranteed", "docker"),
    (v2(f"/kubepods/besteffort/pod{UID}/{CID}"), "besteffort", None),
    (v2(f"/kubepods/pod{UID}/{CID}"), "guaranteed", None),
    # Nested node (kind): kubelet's cgroup root under another slice.
    (v2(f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
        f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope"),
     "besteffort", "containerd"),
    # containerd's systemd driver seen from inside a cgroup namespace: `slice:runtime:id`.
    (v2(f"/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:"
        f"cri-containerd:{CID}"), "burstable", "containerd"),
    # The collector's own cgroup namespace makes the path relative to its own cgroup.
    (v2(f"/../../kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope"),
     "besteffort", "containerd"),
]


@pytest.mark.parametrize(("text", "qos", "runtime"), CASES)
def test_every_format_names_the_pod_container_and_qos(text: str, qos: str, runtime: str) -> None:
    assert parse_cgroup(text) == PodCgroup(UID, qos, CID, runtime)


def test_hybrid_v1_v2_file_with_systemd_line_first() -> None:
    # Hybrid hosts list `0::` (unified, here the systemd user slice) next to v1 hierarchies.
    text = (
        "0::/init.scope\n"
        f"4:memory:/kubepods/burstable/pod{UID}/{CID}\n"
    )
    found = parse_cgroup(text)
    assert found is not None
    assert (found.pod_uid, found.container_id) == (UID, CID)


@pytest.mark.parametrize(
    "text",
    [
        v2("/user.slice/user-1000.slice/session-3.scope"),
        v2("/system.slice/containerd.service"),
        v1(f"/docker/{CID}"),  # a plain Docker container outside Kubernetes
        v2("/kubepods.slice/kubepods-burstable.slice"),  # a QoS slice, no pod
        v2("/"),
        "",
        "garbage without colons\n",
    ],
)
def test_processes_outside_pods_have_none(text: str) -> None:
    assert parse_cgroup(text) is None


def test_static_pod_uid_is_a_config_hash() -> None:
    # Static (mirror) pods get the 32-hex hash of their manifest as UID.
    uid = "6d1e8a4e3a4c2b8a1f0e9d8c7b6a5f4e"
    found = parse_cgroup_path(f"/kubepods/burstable/pod{uid}/{CID}")
    assert found is not None
    assert found.pod_uid == uid


def test_pod_level_process_has_no_container() -> None:
    # A process in the pod's cgroup itself (the sandbox's parent), not in a container scope.
    found = parse_cgroup_path(f"/kubepods.slice/kubepods-pod{UID_}.slice")
    assert found == PodCgroup(UID, "guaranteed", None, None)


def test_crio_conmon_scope_is_not_a_container() -> None:
    found = parse_cgroup_path(
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"crio-conmon-{CID}.scope"
    )
    assert found is not None
    assert (found.pod_uid, found.container_id) == (UID, None)


def test_pod_of_pid_reads_proc(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "cgroup").write_text(
        v2(f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope")
    )
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_text(v2("/system.slice/sshd.service"))
    assert pod_of_pid(4242, tmp_path) == PodCgroup(UID, "guaranteed", CID, "containerd")
    assert pod_of_pid(7, tmp_path) is None
    with pytest.raises(ProcessGone, match="process 99 has exited"):
        pod_of_pid(99, tmp_path)


def test_own_process_on_this_host_parses_without_error() -> None:
    # The real kernel's file for this test process: whatever it says, parsing must not fail.
    text = Path("/proc/self/cgroup").read_text()
    found = parse_cgroup(text)
    assert found is None or len(found.pod_uid) in (32, 36)
