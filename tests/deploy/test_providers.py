"""Provider selection of recserve sessions: quiet and on CPU where no CUDA device is visible, and
RECSERVE_PROVIDERS forcing the providers asked for. Sessions open in a fresh process so its stderr
(where onnxruntime's native logger writes) can be read."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from recserve.model import CPU_PROVIDER, CUDA_DRIVER_LIBRARY, GPU_PROVIDER, PROVIDERS_ENV, session_providers

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture(scope="module")
def identity_model(tmp_path_factory) -> Path:
    """The smallest ONNX graph a session opens: float input copied to its output."""
    tensor = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [tensor("x", TensorProto.FLOAT, [1])],
        [tensor("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path_factory.mktemp("onnx") / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def open_in_fresh_process(model: Path, **env: str) -> tuple[list[str], str]:
    """``open_session(model, prefer_gpu=True)`` in a new interpreter with no CUDA device visible:
    the providers the session runs on and everything the process wrote to stderr."""
    code = (
        "import json, sys; from pathlib import Path; from recserve.model import open_session; "
        "print(json.dumps(open_session(Path(sys.argv[1]), prefer_gpu=True).get_providers()))"
    )
    inherited = {name: value for name, value in os.environ.items() if name != PROVIDERS_ENV}
    environment = {**inherited, "CUDA_VISIBLE_DEVICES": "", **env}
    done = subprocess.run(
        [sys.executable, "-c", code, str(model)],
        cwd=DEPLOY,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout), done.stderr


def test_without_a_cuda_device_a_session_is_quiet_and_runs_on_cpu(identity_model):
    providers, stderr = open_in_fresh_process(identity_model)
    assert providers == [CPU_PROVIDER]
    assert stderr == ""


def nvidia_driver_loads() -> bool:
    try:
        ctypes.CDLL(CUDA_DRIVER_LIBRARY)
    except OSError:
        return False
    return True


@pytest.mark.skipif(
    GPU_PROVIDER not in ort.get_available_providers() or nvidia_driver_loads(),
    reason="needs onnxruntime-gpu on a machine without the NVIDIA driver",
)
def test_forcing_cuda_on_a_cpu_machine_asks_for_it_and_falls_back_to_cpu(identity_model):
    """What the automatic choice avoids: asked for CUDA here, onnxruntime writes its load failure to stderr."""
    providers, stderr = open_in_fresh_process(identity_model, **{PROVIDERS_ENV: f"{GPU_PROVIDER},{CPU_PROVIDER}"})
    assert providers == [CPU_PROVIDER]
    assert "Failed to create CUDAExecutionProvider" in stderr


def test_forced_cpu_wins_over_prefer_gpu(monkeypatch):
    monkeypatch.setenv(PROVIDERS_ENV, f" {CPU_PROVIDER} ")
    assert session_providers(prefer_gpu=True) == [CPU_PROVIDER]


def test_a_forced_provider_this_onnxruntime_lacks_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(PROVIDERS_ENV, f"NoSuchExecutionProvider,{CPU_PROVIDER}")
    with pytest.raises(ValueError, match="NoSuchExecutionProvider"):
        session_providers(prefer_gpu=True)
