"""Export stage, per model: ONNX export with a blocking parity check, then a registry entry; one champion.

Each model has its own ``onnx/<model>`` and ``registry/<model>`` assets, so a model whose
export disagrees with PyTorch is never registered while every other model still is. The
registry entries live at ``artifacts/registry/<model>/<version>/`` (the version is the ONNX
file's hash), the folder services read; ``registry_champion`` points ``champion.json`` at the
leaderboard's best.
"""

import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import onnxruntime as ort
import torch
from pydantic import Field

from orchestration.assets.models import MODEL_ASSETS
from orchestration.io import input_version
from orchestration.outputs import ChampionPointer, ExportedModel, LeaderboardTables, RegisteredModel
from orchestration.resources import ArtifactStore
from recmodels.data.splits import SplitData
from recmodels.export import (
    ExportSpec,
    check_parity,
    explainer_parity,
    explains,
    export_explainer,
    export_onnx,
    serving_fields,
)
from recmodels.models import Recommender
from recmodels.registry import EXPLAIN_FILE, build_manifest, set_champion

GROUP = "export"
PARITY_HISTORY_LENGTH = 200
PARITY_CHECK = "onnx_parity"
REGISTRY = "registry"


def onnx_key(model_asset: str) -> dg.AssetKey:
    return dg.AssetKey(["onnx", model_asset])


def registry_key(model_asset: str) -> dg.AssetKey:
    return dg.AssetKey([REGISTRY, model_asset])


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
    model: Recommender, histories: np.ndarray, shapes: list[tuple[int, int]], config: OnnxExportConfig
) -> ExportedModel:
    """Export ``model`` to ONNX and compare it with PyTorch on ``histories`` at ``shapes``; a family with an
    explanation graph exports and checks that too (on the longest shape's histories, explaining their top 10)."""
    explanation, explain_onnx = None, None
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        spec = export_onnx(model, path, k=min(config.k, model.n_items))
        session = inference_session(path)
        report = check_parity(model, session, histories, shapes, config.tolerance)
        onnx = path.read_bytes()
        if explains(model):
            explain_path = Path(scratch) / EXPLAIN_FILE
            explanation = export_explainer(model, explain_path)
            batch, length = max(shapes, key=lambda shape: shape[0] * shape[1])
            difference = explainer_parity(model, inference_session(explain_path), histories[:batch, -length:])
            explanation["parity"] = {"max_abs_diff": difference, "passed": difference <= config.tolerance}
            explain_onnx = explain_path.read_bytes()
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
        "explain": explanation,
    }
    return ExportedModel(onnx, record, explain_onnx)


def parity_histories(stage, config: OnnxExportConfig) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Real held-out histories and the parity shapes, cut to what a small stage holds."""
    histories, _ = stage.history.sequences().padded(stage.users, PARITY_HISTORY_LENGTH)
    return histories, [(min(batch, len(histories)), length) for batch, length in config.shapes]


def parity_check_result(export: ExportedModel, shapes: list[tuple[int, int]]) -> dg.AssetCheckResult:
    record = export.record
    return dg.AssetCheckResult(
        check_name=PARITY_CHECK,
        passed=export.parity_passed,
        metadata={
            "max_abs_score_diff": record["max_abs_diff"],
            "tolerance": record["parity"]["tolerance"],
            "swapped_near_ties": record["swapped_near_ties"],
            "shapes": dg.MetadataValue.json([list(shape) for shape in shapes]),
            "explanation_graph": dg.MetadataValue.json(record.get("explain") or {}),
        },
    )


def registry_entry(
    export: ExportedModel,
    model: Recommender,
    name: str,
    item_ids,
    data_version: str,
    metrics: dict[str, float],
    item_popularity=None,
) -> RegisteredModel:
    """The registry entry of an export: its ONNX bytes and the manifest a service needs (with
    ``item_popularity``, distinct training users per item, its cold-start list)."""
    fields = serving_fields(
        ExportSpec(**export.record["spec"]),
        model,
        name=name,
        item_ids=item_ids,
        training_data_version=data_version,
        metrics=metrics,
        parity=export.record["parity"],
        item_popularity=item_popularity,
        explain=export.record.get("explain"),
        explain_onnx=export.explain_onnx,
    )
    return RegisteredModel(export.onnx, build_manifest(export.onnx, **fields), export.explain_onnx)


def onnx_asset(model_asset: str) -> dg.AssetsDefinition:
    key = onnx_key(model_asset)

    @dg.asset(
        key=key,
        group_name=GROUP,
        ins={"model": dg.AssetIn(model_asset, dagster_type=Recommender), "split": dg.AssetIn("split")},
        kinds={"onnx"},
        description=f"{model_asset} through the serving contract (history in, top-k out), checked against PyTorch.",
        check_specs=[dg.AssetCheckSpec(PARITY_CHECK, asset=key, blocking=True)],
    )
    def export_model(config: OnnxExportConfig, model: Recommender, split: SplitData):
        histories, shapes = parity_histories(split.test, config)
        export = export_checked(model, histories, shapes, config)
        yield dg.Output(
            export,
            metadata={
                "parity_passed": export.parity_passed,
                "max_abs_score_diff": export.record["max_abs_diff"],
                "provider": export.record["providers"][0],
                "onnx_bytes": len(export.onnx),
            },
        )
        yield parity_check_result(export, shapes)  # after the materialisation it judges

    return export_model


def registry_asset(model_asset: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=registry_key(model_asset),
        group_name=GROUP,
        ins={
            "export": dg.AssetIn(onnx_key(model_asset), dagster_type=ExportedModel),
            "model": dg.AssetIn(model_asset, dagster_type=Recommender),
            "split": dg.AssetIn("split", dagster_type=SplitData),
            "leaderboard": dg.AssetIn("leaderboard", dagster_type=LeaderboardTables),
        },
        kinds={"onnx", "dvc"},
        description=f"{model_asset} in artifacts/registry/: the ONNX file and a manifest a service can use alone.",
    )
    def register(
        context: dg.AssetExecutionContext,
        export: ExportedModel,
        model: Recommender,
        split: SplitData,
        leaderboard: LeaderboardTables,
    ) -> dg.Output[RegisteredModel]:
        row = leaderboard.table.set_index("model").loc[model_asset]
        metrics = {key: float(value) for key, value in row.items() if isinstance(value, (int, float, np.number))}
        entry = registry_entry(
            export,
            model,
            model_asset,
            split.train.item_ids,
            input_version(context, "split"),
            metrics,
            item_popularity=split.train.item_user_counts(),
        )
        return dg.Output(entry, metadata={"version": entry.manifest.version, "family": model.family})

    return register


onnx_assets = [onnx_asset(name) for name in MODEL_ASSETS]
registry_assets = [registry_asset(name) for name in MODEL_ASSETS]


@dg.asset(
    group_name=GROUP,
    ins={
        "leaderboard": dg.AssetIn("leaderboard", dagster_type=LeaderboardTables),
        **{name: dg.AssetIn(registry_key(name), dagster_type=RegisteredModel) for name in MODEL_ASSETS},
    },
    kinds={"dvc"},
)
def registry_champion(store: ArtifactStore, **inputs) -> dg.Output[ChampionPointer]:
    """``artifacts/registry/champion.json``: the leaderboard's best, what services load by default."""
    leaderboard = inputs.pop("leaderboard")
    champion = str(leaderboard.table["model"].iloc[0])  # the leaderboard is sorted best first
    version = inputs[champion].manifest.version
    pointer = ChampionPointer(champion, version, "first on the leaderboard")
    set_champion(store.artifacts_root / REGISTRY, pointer.model, pointer.version, pointer.reason)
    return dg.Output(
        pointer,
        metadata={
            "champion": champion,
            "version": version,
            "versions": dg.MetadataValue.json({name: entry.manifest.version for name, entry in inputs.items()}),
        },
    )
