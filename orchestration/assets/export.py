"""Export stage: every trained model to ONNX, parity-checked, then registered with a manifest."""

import json

import dagster as dg
import numpy as np
import onnxruntime as ort
import pandas as pd
from pydantic import Field

from orchestration import versioning
from orchestration.assets.models import MODEL_ASSETS
from orchestration.resources import ArtifactStore
from recmodels.data.splits import load_split
from recmodels.export import ExportSpec, check_parity, export_onnx
from recmodels.models import Recommender
from recmodels.registry import register, set_champion

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
    """CUDA where a session really runs on it (onnxruntime-gpu lists CUDA even without a GPU), else CPU."""
    return ort.InferenceSession(str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])


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
        model = Recommender.load(store.folder(name))
        target = folder / name
        spec = export_onnx(model, target / "model.onnx", k=min(config.k, model.n_items))
        session = inference_session(target / "model.onnx")
        report = check_parity(model, session, histories, shapes, config.tolerance)
        record = {
            "family": model.family,
            "providers": session.get_providers(),
            "spec": spec.__dict__,
            "parity": {"passed": report.passed, "tolerance": report.tolerance, "cases": [case.__dict__ for case in report.cases]},
        }
        (target / "export.json").write_text(json.dumps(record, indent=2))
        worst = max(case.max_abs_score_diff for case in report.cases)
        summary[name] = {"passed": report.passed, "max_abs_diff": worst, "provider": session.get_providers()[0]}
        checks.append(
            dg.AssetCheckResult(
                check_name=parity_check_name(name),
                passed=report.passed,
                metadata={
                    "max_abs_score_diff": worst,
                    "tolerance": report.tolerance,
                    "swapped_near_ties": sum(case.swapped_near_ties for case in report.cases),
                    "shapes": dg.MetadataValue.json([list(shape) for shape in shapes]),
                },
            )
        )
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
    for name in MODEL_ASSETS:
        record = json.loads((exports / name / "export.json").read_text())
        model = Recommender.load(store.folder(name))
        metrics = {key: float(value) for key, value in table.loc[name].items() if isinstance(value, (int, float, np.number))}
        spec = ExportSpec(**record["spec"])
        folder = register(
            root,
            exports / name / "model.onnx",
            model=name,
            family=record["family"],
            config=model.config.to_dict(),
            training_data_version=versioning.recorded_md5(store.folder("split")),
            metrics=metrics,
            item_ids=[str(item) for item in data.train.item_ids],
            max_history_length=model.max_history_length,
            opset=spec.opset,
            k=spec.k,
            inputs=spec.inputs,
            outputs=spec.outputs,
            parity=record["parity"],
        )
        registered[name] = folder.name
    champion = str(table.index[0])  # the leaderboard is sorted best first
    set_champion(root, champion, registered[champion], "first on the leaderboard")
    version, dvc_metadata = store.version(root)
    return dg.MaterializeResult(
        data_version=version,
        metadata={"versions": dg.MetadataValue.json(registered), "champion": champion, "root": str(root.relative_to(store.root)), **dvc_metadata},
    )
