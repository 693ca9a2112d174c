"""Every step in its own Kubernetes pod (``RECPIPE_EXECUTOR=kubernetes``; the cluster side is the Helm release of
``deploy/dagster/``): what each kind of step asks of the cluster.

The pods' image, secrets and service account come from the release's ``K8sRunLauncher``, which
dagster-k8s's executor inherits, so this module only sizes the steps: a light default for data, graph,
evaluation and export steps; training steps say so in their op tags (a GPU node for the torch families).
Each pod's torch takes as many threads as the pod requests cores (``RECPIPE_TORCH_THREADS``), not the
node's core count.
"""

from __future__ import annotations

from typing import Any

from dagster_k8s import k8s_job_executor

K8S_CONFIG_TAG = "dagster-k8s/config"  # the op tag dagster-k8s reads a step's pod settings from


def _pod(cpu: int, memory_gib: int, limits: dict[str, str] | None = None, **pod_spec: Any) -> dict[str, Any]:
    """A step pod requesting ``cpu`` cores and ``memory_gib`` GiB, memory capped at twice the request."""
    container = {
        "resources": {
            "requests": {"cpu": str(cpu), "memory": f"{memory_gib}Gi"},
            "limits": {"memory": f"{2 * memory_gib}Gi", **(limits or {})},
        },
        "env": [{"name": "RECPIPE_TORCH_THREADS", "value": str(cpu)}],
    }
    return {"container_config": container} | ({"pod_spec_config": pod_spec} if pod_spec else {})


LIGHT_STEP = _pod(cpu=1, memory_gib=2)
CPU_TRAINING_STEP = _pod(cpu=4, memory_gib=8)
GPU_TRAINING_STEP = _pod(
    cpu=4,
    memory_gib=8,
    limits={"nvidia.com/gpu": "1"},
    # the label NVIDIA's GPU feature discovery puts on GPU nodes, and the taint GPU node pools commonly carry
    node_selector={"nvidia.com/gpu.present": "true"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
)


def training_step_tags(trains_torch: bool) -> dict[str, Any]:
    """Op tags of a training step: a GPU pod for a torch family, a larger CPU pod for the closed forms.

    SHALLOW: the step's resources and environment replace the light default's instead of being merged into
    it (a deep merge would keep both RECPIPE_TORCH_THREADS entries)."""
    pod = GPU_TRAINING_STEP if trains_torch else CPU_TRAINING_STEP
    return {K8S_CONFIG_TAG: pod | {"merge_behavior": "SHALLOW"}}


# Steps of one run at once: the training pool (orchestration/dagster.yaml) still caps the trainings.
STEP_POD_EXECUTOR_CONFIG = {"step_k8s_config": LIGHT_STEP, "max_concurrent": 8}
step_pod_executor = k8s_job_executor.configured(STEP_POD_EXECUTOR_CONFIG, name="kubernetes")
