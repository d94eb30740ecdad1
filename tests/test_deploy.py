"""deploy/: every manifest parses; the Helm values use only keys that Dagster's chart
declares; they run this code location with the K8sRunLauncher and a one-writer run queue;
the image builds this project from the lock file."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from collectors import spool

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
VALUES = DEPLOY / "dagster-values.yaml"
WAREHOUSE_TAG = ("chargeback/warehouse", "write")

# The keys Dagster's chart declares (helm/dagster/values.schema.json in dagster-io/dagster at
# commit bdb8547fab497826eeec292bc160b549a0a329ef, generated from the chart's pydantic
# models), for the parts of the values we set. A path maps to the keys allowed there; `[]`
# stands for the items of a list. Paths absent here and below a listed key hold Kubernetes
# objects (volumes, resources, env entries) or free-form config, which the chart passes
# through unchanged.
CHART_KEYS: dict[str, set[str]] = {
    "": {"dagsterWebserver", "dagster-user-deployments", "postgresql",
         "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret", "rabbitmq", "redis",
         "flower", "ingress", "imagePullSecrets", "computeLogManager", "scheduler",
         "runLauncher", "pythonLogs", "dagsterDaemon", "busybox", "migrate", "telemetry",
         "serviceAccount", "global", "retention", "additionalInstanceConfig"},
    "dagster-user-deployments": {"enabled", "enableSubchart", "imagePullSecrets",
                                 "deployments"},
    "dagster-user-deployments.deployments[]": {
        "name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns",
        "deploymentNamespace", "port", "env", "envConfigMaps", "envSecrets", "annotations",
        "nodeSelector", "affinity", "tolerations", "podSecurityContext", "securityContext",
        "resources", "livenessProbe", "readinessProbe", "startupProbe", "labels",
        "volumeMounts", "volumes", "schedulerName", "initContainers", "sidecarContainers"},
    "dagster-user-deployments.deployments[].image": {"repository", "tag", "pullPolicy"},
    "dagster-user-deployments.deployments[].includeConfigInLaunchedRuns": {"enabled"},
    "runLauncher": {"type", "config"},
    "runLauncher.config": {"celeryK8sRunLauncher", "k8sRunLauncher", "customRunLauncher"},
    "runLauncher.config.k8sRunLauncher": {
        "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
        "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
        "failPodOnRunFailure", "resources", "schedulerName", "securityContext",
        "runK8sConfig"},
    "runLauncher.config.k8sRunLauncher.runK8sConfig": {
        "containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig",
        "jobMetadata"},
    "dagsterDaemon": {
        "enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps",
        "envSecrets", "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations",
        "podSecurityContext", "securityContext", "resources", "livenessProbe",
        "readinessProbe", "startupProbe", "annotations", "runMonitoring", "runRetries",
        "sensors", "schedules", "schedulerName", "volumeMounts", "volumes",
        "initContainerResources"},
    # The schema leaves runMonitoring free-form, but the chart's instance template
    # (templates/configmap-instance.yaml) reads only these keys: any other one is dropped.
    "dagsterDaemon.runMonitoring": {"enabled", "startTimeoutSeconds", "cancelTimeoutSeconds",
                                    "maxResumeRunAttempts", "pollIntervalSeconds",
                                    "freeSlotsAfterRunEndSeconds"},
    "dagsterDaemon.runCoordinator": {"enabled", "type", "config"},
    "dagsterDaemon.runCoordinator.config": {"queuedRunCoordinator", "customRunCoordinator"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator": {
        "maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds",
        "dequeueNumWorkers", "dequeueUseThreads", "blockOpConcurrencyLimitedRuns"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[]": {
        "key", "value", "limit"},
    "postgresql": {"image", "enabled", "postgresqlHost", "postgresqlUsername",
                   "postgresqlPassword", "postgresqlDatabase", "postgresqlParams",
                   "postgresqlScheme", "service"},
    "postgresql.service": {"port"},
    "global": {"postgresqlSecretName", "dagsterHome", "serviceAccountName",
               "celeryConfigSecretName"},
}
PULL_POLICIES = {"Always", "IfNotPresent", "Never"}  # the chart's PullPolicy enum
RUN_LAUNCHERS = {"CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"}
RUN_COORDINATORS = {"QueuedRunCoordinator", "CustomRunCoordinator"}


def values() -> dict[str, Any]:
    loaded = yaml.safe_load(VALUES.read_text())
    assert isinstance(loaded, dict)
    return loaded


def unknown_keys(node: Any, path: str = "") -> list[str]:
    """Keys of `node` that the chart does not declare at their path."""
    problems = []
    if isinstance(node, list):
        for item in node:
            problems += unknown_keys(item, f"{path}[]")
    elif isinstance(node, dict) and path in CHART_KEYS:
        for key, child in node.items():
            if key not in CHART_KEYS[path]:
                problems.append(f"{path or '<top>'}: {key!r} is not a key of the chart")
            problems += unknown_keys(child, f"{path}.{key}" if path else key)
    return problems


def test_every_deploy_manifest_parses():
    files = sorted(DEPLOY.glob("*.yaml"))
    assert VALUES in files
    assert len(files) >= 2
    for path in files:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert documents, f"{path.name}: empty"
        assert all(isinstance(d, dict) for d in documents), path.name


def test_helm_values_use_only_keys_the_chart_declares():
    assert unknown_keys(values()) == []


def test_the_key_check_catches_a_misspelt_or_misplaced_key():
    broken = values()
    broken["runLauncher"]["config"]["k8sRunLauncher"]["envSecret"] = []
    broken["dagsterDaemon"]["runCoordinator"]["config"]["maxConcurrentRuns"] = 1
    assert unknown_keys(broken) == [
        "runLauncher.config.k8sRunLauncher: 'envSecret' is not a key of the chart",
        "dagsterDaemon.runCoordinator.config: 'maxConcurrentRuns' is not a key of the chart",
    ]


def test_user_deployment_serves_this_code_location():
    user = values()["dagster-user-deployments"]
    assert user["enabled"] is True
    [deployment] = user["deployments"]
    image = deployment["image"]
    assert image["repository"]
    assert str(image["tag"]) not in ("", "latest")
    assert image["pullPolicy"] in PULL_POLICIES
    assert isinstance(deployment["port"], int)
    args = deployment["dagsterApiGrpcArgs"]
    flag = next(i for i, a in enumerate(args) if a in ("-m", "--module-name"))
    module = importlib.import_module(args[flag + 1])
    assert isinstance(module.defs, dg.Definitions)
    # Runs inherit the deployment's env, secrets and volumes: the same spool and warehouse.
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}


def test_env_points_at_an_s3_spool_and_names_only_variables_the_code_reads():
    [deployment] = values()["dagster-user-deployments"]["deployments"]
    env = {e["name"]: e.get("value") for e in deployment["env"]}
    assert env["CHARGEBACK_SPOOL"].startswith("s3://")
    assert spool.is_remote(env["CHARGEBACK_SPOOL"])
    source = "\n".join(p.read_text() for package in ("pipelines", "collectors", "models")
                       for p in (ROOT / package).rglob("*.py"))
    for name in env:
        if name.startswith("CHARGEBACK_"):
            assert f'"{name}"' in source, f"{name} is read nowhere in the code"
    # Credentials only from a Secret, never as plain values.
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env)
    assert deployment["envSecrets"] == [{"name": "chargeback-s3"}]


def test_warehouse_marts_and_config_live_on_mounted_volumes():
    [deployment] = values()["dagster-user-deployments"]["deployments"]
    volumes = {v["name"]: v for v in deployment["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in deployment["volumeMounts"]}
    assert set(mounts.values()) <= set(volumes)
    env = {e["name"]: e.get("value") for e in deployment["env"]}
    for name in ("CHARGEBACK_WAREHOUSE", "CHARGEBACK_MARTS", "CHARGEBACK_EXPORTS",
                 "CHARGEBACK_RATE_CARD", "CHARGEBACK_TENANTS"):
        holder = [mounts[m] for m in mounts if Path(env[name]).is_relative_to(m)]
        assert holder, f"{name}={env[name]} is on no mounted volume"
    warehouse_volume = next(mounts[m] for m in mounts
                            if Path(env["CHARGEBACK_WAREHOUSE"]).is_relative_to(m))
    assert "persistentVolumeClaim" in volumes[warehouse_volume]


def test_runs_launch_as_kubernetes_jobs_through_a_queue_with_one_warehouse_writer():
    v = values()
    assert v["runLauncher"]["type"] == "K8sRunLauncher"
    assert v["runLauncher"]["type"] in RUN_LAUNCHERS
    assert "k8sRunLauncher" in v["runLauncher"]["config"]
    coordinator = v["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] is True
    assert coordinator["type"] == "QueuedRunCoordinator" in RUN_COORDINATORS
    queue = coordinator["config"]["queuedRunCoordinator"]
    assert isinstance(queue["maxConcurrentRuns"], int)
    assert queue["maxConcurrentRuns"] > 1
    limits = {(t["key"], t.get("value")): t["limit"] for t in queue["tagConcurrencyLimits"]}
    assert limits[WAREHOUSE_TAG] == 1


def test_run_monitoring_on_kubernetes_matches_the_local_instance():
    """A killed run must not hold the writer place there either (docs/pipeline.md)."""
    helm = values()["dagsterDaemon"]["runMonitoring"]
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())["run_monitoring"]
    assert helm["enabled"] is local["enabled"] is True
    for key in ("cancel_timeout_seconds", "max_resume_run_attempts", "poll_interval_seconds"):
        camel = re.sub(r"_(\w)", lambda m: m.group(1).upper(), key)
        assert helm[camel] == local[key], key
    # Run pods may first pull the image: a longer start timeout, within reason.
    assert local["start_timeout_seconds"] <= helm["startTimeoutSeconds"] <= 600


def test_every_job_partitioned_and_the_partitions_are_independent_runs():
    from pipelines.definitions import defs
    jobs = {j.name: j for j in defs.resolve_all_job_defs() if not j.name.startswith("__")}
    assert {"daily_usage_job", "monthly_billing_job", "daily_analytics_job"} <= set(jobs)
    for name in ("daily_usage_job", "monthly_billing_job", "daily_analytics_job"):
        assert jobs[name].partitions_def is not None, name


def test_every_job_that_opens_the_warehouse_carries_the_writer_tag():
    from pipelines.definitions import defs
    for job in defs.resolve_all_job_defs():
        if not job.name.startswith("__"):
            assert job.tags.get(WAREHOUSE_TAG[0]) == WAREHOUSE_TAG[1], job.name


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_installs_the_lock_and_this_project():
    steps = dockerfile_instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    runs = [arg for op, arg in steps if op == "RUN"]
    makefile_uv = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert makefile_uv
    assert f"uv=={makefile_uv.group(1)}" in runs[0]
    assert any(shlex.split(r)[:3] == ["uv", "pip", "sync"] and "requirements.lock" in r
               for r in runs)
    copied = {source for op, arg in steps if op == "COPY" for source in shlex.split(arg)[:-1]}
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = re.search(r'include = \[([^\]]*)\]', pyproject)
    assert packages
    for pattern in re.findall(r'"([a-z_]+)\*"', packages.group(1)):
        assert pattern in copied, f"{pattern}/ is not copied into the image"
    assert {"requirements.lock", "pyproject.toml", "README.md"} <= copied
    # The project itself, without re-resolving what the lock already pinned.
    assert any("uv pip install" in r and "--no-deps" in r and " . " in f" {r} " for r in runs)


def test_dagster_libraries_in_the_image_match_the_locked_dagster_release():
    locked = re.search(r"^dagster==1\.(\d+)\.(\d+)$", (ROOT / "requirements.lock").read_text(),
                       re.M)
    assert locked
    minor, patch = int(locked.group(1)), int(locked.group(2))
    runs = " ".join(arg for op, arg in dockerfile_instructions() if op == "RUN")
    pins = dict(re.findall(r"(dagster-[a-z0-9-]+)==(\S+)", runs))
    assert set(pins) == {"dagster-k8s", "dagster-postgres"}
    # Dagster's libraries are released with dagster: 1.M.P pairs with 0.(M+16).P.
    for name, version in pins.items():
        assert version == f"0.{minor + 16}.{patch}", name
