"""The Kubernetes deployment, checked offline (no cluster runs here): ``deploy/dagster/values.yaml`` for the
official Dagster Helm chart, ``deploy/Dockerfile.pipeline``, and the step pods of ``RECPIPE_EXECUTOR=kubernetes``.

The instance the chart renders from the values (its ``configmap-instance.yaml`` templates, for the blocks
recpipe sets) is validated by Dagster's own instance schema and dagster-k8s's run launcher schema, and the
run launcher is built from it; each step's pod is then made the way dagster-k8s's executor makes it (the
launcher's settings, the executor's default, the step's op tags) into a Kubernetes Job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.dagster_run import DagsterRun
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import UserDefinedDagsterK8sConfig, construct_dagster_k8s_job, get_user_defined_k8s_config

from orchestration import definitions
from orchestration import kubernetes as pods
from orchestration.instance import instance_config

ROOT = Path(__file__).resolve().parents[2]
VALUES = yaml.safe_load((ROOT / "deploy" / "dagster" / "values.yaml").read_text())
DOCKERFILE = (ROOT / "deploy" / "Dockerfile.pipeline").read_text()
RELEASE = "recpipe"
DVC_SECRET = "recpipe-dvc-s3"
[DEPLOYMENT] = VALUES["dagster-user-deployments"]["deployments"]


def _launcher_config(values: dict) -> dict:
    """The chart's run_launcher config for K8sRunLauncher: its fixed fields plus runLauncher.config.k8sRunLauncher."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    return {
        "instance_config_map": f"{RELEASE}-dagster-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        "dagster_home": values["global"]["dagsterHome"],
        "service_account_name": f"{RELEASE}-dagster",
        "job_namespace": RELEASE,
        "load_incluster_config": launcher["loadInclusterConfig"],
        "env_secrets": [secret["name"] for secret in launcher["envSecrets"]],
        "run_k8s_config": {"container_config": launcher["runK8sConfig"]["containerConfig"]},
    }


def _concurrency(values: dict) -> dict:
    """The chart's ``concurrency`` block, in the instance's keys."""
    block = values["concurrency"]
    return {
        "pools": {"granularity": block["pools"]["granularity"], "default_limit": block["pools"]["defaultLimit"]},
        "runs": {
            "max_concurrent_runs": block["runs"]["maxConcurrentRuns"],
            "tag_concurrency_limits": block["runs"]["tagConcurrencyLimits"],
        },
    }


def _rendered_instance(values: dict) -> dict:
    postgres = values["postgresql"]
    database = {
        "username": postgres["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},  # the chart sets it in every pod from the Secret
        "hostname": postgres["postgresqlHost"],
        "db_name": postgres["postgresqlDatabase"],
        "port": postgres["service"]["port"],
        "params": postgres["postgresqlParams"],
    }
    return {
        "storage": {"postgres": {"postgres_db": database}},
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": _launcher_config(values)},
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"},
        "run_monitoring": {
            "enabled": values["dagsterDaemon"]["runMonitoring"]["enabled"],
            "start_timeout_seconds": values["dagsterDaemon"]["runMonitoring"]["startTimeoutSeconds"],
            "poll_interval_seconds": values["dagsterDaemon"]["runMonitoring"]["pollIntervalSeconds"],
        },
        "concurrency": _concurrency(values),
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }


def test_the_rendered_instance_passes_dagsters_schema_and_the_run_launchers(tmp_path):
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(_rendered_instance(VALUES)))
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    launcher = process_config(K8sRunLauncher.config_type(), _launcher_config(VALUES))
    assert launcher.success, launcher.errors
    assert VALUES["runLauncher"]["type"] == "K8sRunLauncher"
    assert VALUES["postgresql"]["enabled"] is False and VALUES["generatePostgresqlPasswordSecret"] is False


def test_the_cluster_keeps_the_concurrency_limits_of_orchestration_dagster_yaml():
    assert _concurrency(VALUES) == instance_config("postgres")["concurrency"]
    assert VALUES["concurrency"]["enabled"] and VALUES["dagsterDaemon"]["runCoordinator"]["enabled"]


def test_the_user_code_deployment_serves_this_code_location_from_the_pipeline_image():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert DEPLOYMENT["dagsterApiGrpcArgs"] == ["--module-name", project["tool"]["dagster"]["module_name"]]
    assert f"EXPOSE {DEPLOYMENT['port']}" in DOCKERFILE
    command = json.loads(DOCKERFILE.split("CMD ", 1)[1].strip())
    assert command[:3] == ["dagster", "api", "grpc"] and command[3:5] == DEPLOYMENT["dagsterApiGrpcArgs"]
    environment = {variable["name"]: variable["value"] for variable in DEPLOYMENT["env"]}
    assert environment["RECPIPE_EXECUTOR"] == "kubernetes"
    assert environment["RECPIPE_DVC_REMOTE"].startswith("s3://")
    assert {"name": DVC_SECRET} in DEPLOYMENT["envSecrets"]
    assert DEPLOYMENT["includeConfigInLaunchedRuns"]["enabled"]
    # the image can reach an S3 remote: the kubernetes extra it installs brings dvc-s3
    assert '".[kubernetes]"' in DOCKERFILE
    assert any(item.startswith("dvc-s3==") for item in project["project"]["optional-dependencies"]["kubernetes"])


def test_the_step_pod_executor_config_passes_dagster_k8s_schema():
    result = process_config(k8s_job_executor.config_schema.config_type, pods.STEP_POD_EXECUTOR_CONFIG)
    assert result.success, result.errors
    assert definitions.EXECUTORS["kubernetes"] is pods.step_pod_executor


@pytest.mark.parametrize("name, expected", [("kubernetes", "kubernetes"), ("", "multiprocess")])
def test_recpipe_executor_picks_how_every_job_runs_its_steps(name, expected):
    script = (
        "from orchestration import definitions as d; "
        "print({d.defs.resolve_job_def(j).executor_def.name for j in ('full_pipeline', 'retrain', 'ingest_window')})"
    )
    environment = os.environ | {"RECPIPE_EXECUTOR": name}
    shown = subprocess.run([sys.executable, "-c", script], env=environment, cwd=ROOT, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == repr({expected})


def test_an_unknown_executor_fails_naming_the_known_ones(monkeypatch):
    monkeypatch.setenv("RECPIPE_EXECUTOR", "slurm")
    with pytest.raises(ValueError, match="RECPIPE_EXECUTOR='slurm'.*multiprocess, kubernetes"):
        definitions.chosen_executor()


@pytest.fixture(scope="module")
def launcher(tmp_path_factory) -> K8sRunLauncher:
    """The release's run launcher, built from the rendered config; a throwaway kubeconfig instead of the
    in-cluster one (it is parsed, never contacted)."""
    folder = tmp_path_factory.mktemp("kube")
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "offline", "user": {"token": "unused"}}],
        "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "offline"}}],
        "current-context": "offline",
    }
    (folder / "config").write_text(yaml.safe_dump(kubeconfig))
    config = process_config(K8sRunLauncher.config_type(), _launcher_config(VALUES)).value
    return K8sRunLauncher(**(config | {"load_incluster_config": False, "kubeconfig_file": str(folder / "config")}))


def _step_pod(launcher: K8sRunLauncher, step: str) -> dict:
    """The pod spec of ``step``'s Job, merged as K8sStepHandler does: launcher, executor default, op tags."""
    node = definitions.defs.resolve_job_def("full_pipeline").graph.node_dict[step]
    context = K8sContainerContext.create_for_run(DagsterRun(job_name="full_pipeline"), launcher, include_run_tags=False)
    context = context.merge(
        K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(pods.LIGHT_STEP))
    ).merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(node.tags)))
    job = construct_dagster_k8s_job(
        context.get_k8s_job_config("registry.example.com/recpipe-pipeline:0.1.0", launcher),
        args=["dagster", "api", "execute_step"],
        job_name=f"dagster-step-{step.replace('_', '-')}",
        user_defined_k8s_config=context.run_k8s_config,
        env_vars=[{"name": "DAGSTER_RUN_STEP_KEY", "value": step}],  # what the executor adds
    )
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)["spec"]["template"]["spec"]


def _container(pod: dict) -> tuple[dict, dict[str, list[str]]]:
    [container] = pod["containers"]
    values: dict[str, list[str]] = {}
    for variable in container.get("env", []):
        values.setdefault(variable["name"], []).append(variable.get("value"))
    return container, values


def test_a_torch_training_step_asks_for_a_gpu_node_and_takes_its_cores(launcher):
    pod = _step_pod(launcher, "esasrec_model")
    container, environment = _container(pod)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"]["cpu"] == "4"
    assert environment["RECPIPE_TORCH_THREADS"] == ["4"]  # the step's own value, not beside the default's
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"secretRef": {"name": DVC_SECRET}} in container["envFrom"]


def test_a_closed_form_training_step_gets_cores_but_no_gpu(launcher):
    pod = _step_pod(launcher, "ease_model")
    container, environment = _container(pod)
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["resources"]["requests"]["cpu"] == "4"
    assert environment["RECPIPE_TORCH_THREADS"] == ["4"]
    assert "nodeSelector" not in pod or not pod["nodeSelector"]


def test_every_other_step_is_a_light_pod(launcher):
    container, environment = _container(_step_pod(launcher, "split"))
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}
    assert environment["RECPIPE_TORCH_THREADS"] == ["1"]
    assert {"secretRef": {"name": DVC_SECRET}} in container["envFrom"]


def test_every_training_step_carries_pod_settings_dagster_k8s_accepts():
    from orchestration.assets.models import MODEL_ASSETS

    nodes = definitions.defs.resolve_job_def("full_pipeline").graph.node_dict
    for node in (nodes[name] for name in MODEL_ASSETS):
        settings = get_user_defined_k8s_config(node.tags)  # validates against dagster-k8s's schema, or raises
        assert settings.container_config["resources"]["requests"]["cpu"] == "4", node.name
