"""Export stage: every trained model to ONNX, parity-checked, then registered with a manifest."""

import json

import dagster as dg
import numpy as np
import onnxruntime as ort
import pandas as pd
import torch
from pydantic import Field

from orchestration import versioning
from orchestration.assets.models import MODEL_ASSETS
from orchestration.resources import ArtifactStore
from recmodels.data.splits import load_split
from recmodels.export import ExportSpec, check_parity, export_onnx, register_model
from recmodels.models import Recommender
from recmodels.registry import set_champion

GROUP = "export"
PARITY_HISTORY_LENGTH = 200
EXPORTS = "onnx_models"


def parity_check_name(model_asset: str) -> str:
    return f"{model_asset}_onnx_parity"


class OnnxExportConfig(dg.Config):
    k: int = Field(default=100, description="Items each exported model returns.")
    tolerance: float = Field(default=1e-4, description="Largest allowed |ONNX - PyTorch| score difference.")
    shapes: list[list[int]] = Field(
        default_factory=lambda: [[1, 10], [16, 50], [64, 200]],
        description="(batch, length) shapes the parity check runs, on real held-out histories.",
    )


def inference_session(path) -> ort.InferenceSession:
    """CUDA only where a CUDA device exists: onnxruntime-gpu lists CUDA even without a GPU, and asking
    for it there prints three library errors into every run's log before falling back to CPU."""
    gpu = ["CUDAExecutionProvider"] if torch.cuda.is_available() else []
    return ort.InferenceSession(str(path), providers=[*gpu, "CPUExecutionProvider"])


def export_checked(
    model: Recommender, target, histories: np.ndarray, shapes: list[tuple[int, int]], config: OnnxExportConfig
) -> dict:
    """Export ``model`` to ``target/model.onnx``, run the parity check, write and return ``export.json``."""
    spec = export_onnx(model, target / "model.onnx", k=min(config.k, model.n_items))
    session = inference_session(target / "model.onnx")
    report = check_parity(model, session, histories, shapes, config.tolerance)
    record = {
        "family": model.family,
        "providers": session.get_providers(),
        "spec": spec.__dict__,
        "parity": {
            "passed": report.passed,
            "tolerance": report.tolerance,
            "cases": [case.__dict__ for case in report.cases],
        },
        "max_abs_diff": max(case.max_abs_score_diff for case in report.cases),
        "swapped_near_ties": sum(case.swapped_near_ties for case in report.cases),
    }
    (target / "export.json").write_text(json.dumps(record, indent=2))
    return record


def parity_check_result(check_name: str, record: dict, shapes: list[tuple[int, int]]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=record["parity"]["passed"],
        metadata={
            "max_abs_score_diff": record["max_abs_diff"],
            "tolerance": record["parity"]["tolerance"],
            "swapped_near_ties": record["swapped_near_ties"],
            "shapes": dg.MetadataValue.json([list(shape) for shape in shapes]),
        },
    )


def register_export(
    root, exports, name: str, model: Recommender, item_ids: np.ndarray, data_version: str, metrics: dict[str, float]
):
    """Register ``exports/<name>/model.onnx`` with the manifest a service needs; returns its folder."""
    record = json.loads((exports / name / "export.json").read_text())
    return register_model(
        root,
        exports / name / "model.onnx",
        ExportSpec(**record["spec"]),
        model,
        name=name,
        item_ids=item_ids,
        training_data_version=data_version,
        metrics=metrics,
        parity=record["parity"],
    )


@dg.asset(
    group_name=GROUP,
    deps=list(MODEL_ASSETS),
    kinds={"onnx"},
    check_specs=[dg.AssetCheckSpec(parity_check_name(name), asset=EXPORTS, blocking=True) for name in MODEL_ASSETS],
)
def onnx_models(config: OnnxExportConfig, store: ArtifactStore) -> dg.MaterializeResult:
    """Each model through the serving contract (history in, top-k out), checked against PyTorch."""
    data = load_split(store.folder("split"))
    histories, _ = data.test.history.sequences().padded(data.test.users, PARITY_HISTORY_LENGTH)
    shapes = [(min(batch, len(histories)), length) for batch, length in config.shapes]  # small splits
    folder = store.fresh_folder(EXPORTS)
    checks, summary = [], {}
    for name in MODEL_ASSETS:
        record = export_checked(Recommender.load(store.folder(name)), folder / name, histories, shapes, config)
        summary[name] = {
            "passed": record["parity"]["passed"],
            "max_abs_diff": record["max_abs_diff"],
            "provider": record["providers"][0],
        }
        checks.append(parity_check_result(parity_check_name(name), record, shapes))
    version, dvc_metadata = store.version(folder)
    return dg.MaterializeResult(
        data_version=version,
        metadata={"exports": dg.MetadataValue.json(summary), **dvc_metadata},
        check_results=checks,
    )


@dg.asset(group_name=GROUP, deps=[onnx_models, "leaderboard"], kinds={"onnx", "dvc"})
def model_registry(store: ArtifactStore) -> dg.MaterializeResult:
    """``artifacts/registry/<model>/<version>/``: the ONNX file and a manifest a service can use alone."""
    data = load_split(store.folder("split"))
    exports = store.folder(EXPORTS)
    table = pd.read_csv(store.folder("leaderboard") / "leaderboard.csv").set_index("model")
    root = store.root / "artifacts" / "registry"
    registered = {}
    data_version = versioning.recorded_md5(store.folder("split"))
    for name in MODEL_ASSETS:
        model = Recommender.load(store.folder(name))
        metrics = {
            key: float(value) for key, value in table.loc[name].items() if isinstance(value, (int, float, np.number))
        }
        folder = register_export(root, exports, name, model, data.train.item_ids, data_version, metrics)
        registered[name] = folder.name
    champion = str(table.index[0])  # the leaderboard is sorted best first
    set_champion(root, champion, registered[champion], "first on the leaderboard")
    version, dvc_metadata = store.version(root)
    return dg.MaterializeResult(
        data_version=version,
        metadata={
            "versions": dg.MetadataValue.json(registered),
            "champion": champion,
            "root": str(root.relative_to(store.root)),
            **dvc_metadata,
        },
    )
