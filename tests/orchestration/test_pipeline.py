"""The whole asset graph, in process, on a real slice of MovieLens-100K in a throwaway repo."""

import json
import subprocess
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from orchestration import definitions
from orchestration.assets.export import PARITY_CHECK
from orchestration.assets.models import MODEL_ASSETS, MODEL_SPECS, TRAINING_POOL
from orchestration.resources import DatasetResource
from recmodels.leaderboard import load_per_user
from recmodels.models import Recommender
from recmodels.registry import Manifest, versions

# Neural models train two small epochs here; their full runs live in benchmarks/.
QUICK_MODEL_CONFIG = {
    "sasrec": {"trainer": {"epochs": 2}, "backbone": {"dim": 16, "max_len": 20}},
    "diffrec": {"trainer": {"epochs": 2, "validate_every": 1}, "diffusion": {"steps": 5}, "denoiser": {"hidden": [32]}},
    "efficientrec": {"trainer": {"epochs": 2}, "items": {"dim": 16, "hidden": 32}, "crops_per_user": 2},
    "multimodal": {"trainer": {"epochs": 2}, "backbone": {"dim": 16, "max_len": 20}},
}
QUICK_TRAINING = dg.RunConfig(
    ops={
        spec.asset: {"config": QUICK_MODEL_CONFIG[spec.family]}
        for spec in MODEL_SPECS
        if spec.family in QUICK_MODEL_CONFIG
    }
    | {"item_neighbourhood_overlap": {"config": {"top_m": 20}}, "item_embeddings": {"config": {"dim": 16}}}
)
ALL_ASSETS = {
    "raw_interactions",
    "validated_interactions",
    "quarantined_rows",
    "interactions",
    "split",
    "item_features",
    "item_transition_graph",
    "item_neighbourhood_overlap",
    "item_embeddings",
    "item_clusters",
    "item_soft_clusters",
    "cluster_retrieval_index",
    *MODEL_ASSETS,
    "leaderboard",
    *(f"onnx/{name}" for name in MODEL_ASSETS),
    *(f"registry/{name}" for name in MODEL_ASSETS),
    "registry_champion",
}
LIVE_ASSETS = {"interaction_window", "drift_report", "challenger_model", "live_champion"}


def _materialisations(result) -> dict[str, dg.AssetMaterialization]:
    return {
        event.asset_key.to_user_string(): event.event_specific_data.materialization
        for event in result.get_asset_materialization_events()
    }


def _folder(result, root: Path, asset: str) -> Path:
    """The version folder the run recorded for ``asset``."""
    return root / _materialisations(result)[asset].metadata["path"].value


def test_definitions_load_every_asset_check_and_job():
    repository = definitions.defs.get_repository_def()
    keys = {key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()}
    assert keys == ALL_ASSETS | LIVE_ASSETS
    for job in ("full_pipeline", "ingest_window", "retrain"):
        assert definitions.defs.resolve_job_def(job).name == job
    assert {sensor.name for sensor in definitions.defs.sensors} == {"incoming_files_sensor", "drift_sensor"}
    assert [schedule.name for schedule in definitions.defs.schedules] == ["weekly_retraining"]
    check_names = {key.name for key in repository.asset_graph.asset_check_keys}
    assert {
        "quarantine_share_within_limit",
        "split_is_usable",
        "models_beat_most_popular",
        "challenger_beats_champion",
    } <= check_names


@pytest.fixture(scope="module")
def ml100k_slice(earliest_ml100k) -> Path:
    """The earliest 40% of ml-100k by time, as a RecBole folder, with three broken rows appended."""
    broken = ("196\t242\t7\t881250949", "\t302\t3\t891717742", "186\t302\t3\t-5")
    return earliest_ml100k("ml-100k-slice", 0.4, broken)


@pytest.fixture(scope="module")
def materialised(tmp_path_factory, ml100k_slice: Path, materialise_batch):
    root = tmp_path_factory.mktemp("project")
    dataset = DatasetResource(data_dir=str(ml100k_slice.parent), dataset=ml100k_slice.name, rating_min=1, rating_max=5)
    instance = dg.DagsterInstance.ephemeral()
    result = materialise_batch(
        root, dataset, dvc_remote=str(root.parent / "remote"), run_config=QUICK_TRAINING, instance=instance
    )
    return result, root, instance


@pytest.fixture(scope="module")
def rerun(materialised, ml100k_slice, materialise_batch):
    """``rerun(instance, **options)``: another run on the materialised project and its instance."""
    _, root, _ = materialised
    dataset = DatasetResource(data_dir=str(ml100k_slice.parent), dataset=ml100k_slice.name, rating_min=1, rating_max=5)
    return lambda **options: materialise_batch(root, dataset, dvc_remote=str(root.parent / "remote"), **options)


def test_every_asset_materialises_with_a_dvc_version(materialised):
    result, root, _ = materialised
    assert result.success
    materialisations = _materialisations(result)
    assert set(materialisations) == ALL_ASSETS
    for name, materialisation in materialisations.items():
        md5 = materialisation.metadata["dvc_md5"].value
        assert md5.endswith(".dir"), name
        assert materialisation.tags["dagster/data_version"] == md5, name
        assert materialisation.metadata["dvc_pushed"].value is True, name
        folder = root / materialisation.metadata["path"].value
        assert folder.is_relative_to(root / "artifacts" / Path(*materialisation.asset_key.path)), name
        assert (folder.parent / f"{folder.name}.dvc").exists(), name
    for spec in MODEL_SPECS:
        if spec.family in QUICK_MODEL_CONFIG:
            metadata = materialisations[spec.asset].metadata
            assert metadata["epochs"].value == 2, spec.asset
            assert metadata["training_curves"].value.startswith("![training curves](data:image/png;base64,")
            assert (_folder(result, root, spec.asset) / "training_curves.png").exists()
    clusters = materialisations["item_clusters"].metadata
    assert sum(clusters["cluster_sizes"].value.values()) == materialisations["item_embeddings"].metadata["items"].value
    assert clusters["projection"].value.startswith("![items in 2-D")
    soft = materialisations["item_soft_clusters"].metadata
    items = materialisations["item_embeddings"].metadata["items"].value
    assert sum(soft["cluster_sizes"].value.values()) == items and soft["projection"].value.startswith("![items in 2-D")
    features = materialisations["item_features"].metadata
    assert features["modalities"].value == "text, genres, year" and features["text_dim"].value == 384
    assert features["coverage_text"].value == 1.0 and features["projection"].value.startswith("![title embeddings")
    index = materialisations["cluster_retrieval_index"].metadata
    assert "catalogue_share" in index["restricted_scoring"].value and index["longest_list"].value > 0
    lt_config = materialisations["lt_diffrec_model"].metadata["config"].value
    assert lt_config["space"]["kind"] == "clustered_latent" and lt_config["history"]["kind"] == "time_weighted_history"


def test_quarantine_reconciles_and_names_the_broken_rows(materialised):
    result, root, _ = materialised
    metadata = _materialisations(result)["quarantined_rows"].metadata
    assert metadata["rows_in"].value == metadata["rows_kept"].value + metadata["rows_quarantined"].value
    assert metadata["rows_quarantined"].value == 3
    quarantined = pd.read_parquet(_folder(result, root, "quarantined_rows") / "rows.parquet")
    reasons = " ".join(quarantined["reasons"])
    assert "rating" in reasons and "user_id" in reasons and "timestamp" in reasons


def test_checks_pass_and_leaderboard_ranks_every_model(materialised):
    result, root, _ = materialised
    evaluations = {
        event.event_specific_data.check_name: event.event_specific_data.passed
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert evaluations["quarantine_share_within_limit"] is True
    assert evaluations["split_is_usable"] is True
    folder = _folder(result, root, "leaderboard")
    table = pd.read_csv(folder / "leaderboard.csv")
    assert set(table["model"]) == set(MODEL_ASSETS)
    assert table["ndcg@10"].between(0, 1).all() and (table["users"] > 0).all()
    assert (folder / "leaderboard.png").stat().st_size > 1000
    model = Recommender.load(_folder(result, root, "ease_model"))
    assert model.family == "ease"


def test_leaderboard_carries_intervals_tests_and_per_user_metrics(materialised):
    result, root, _ = materialised
    folder = _folder(result, root, "leaderboard")
    checks = {
        event.event_specific_data.check_name: event.event_specific_data
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    # the default protocol is per-user temporal: time order holds for every user
    assert checks["split_is_usable"].metadata["users_train_after_held_out"].value == 0
    assert "paired_tests" in checks["models_beat_most_popular"].metadata
    table = pd.read_csv(folder / "leaderboard.csv")
    assert (table["ndcg@10_ci_low"] <= table["ndcg@10"]).all() and (table["ndcg@10"] <= table["ndcg@10_ci_high"]).all()
    assert "coverage@10_ci_low" not in table.columns  # a catalogue-level metric has no interval over users
    document = json.loads((folder / "leaderboard.json").read_text())
    assert document["protocol"] == "user_temporal" and document["best"] == table.loc[0, "model"]
    assert [record["model"] for record in document["models"]] == list(table["model"])
    assert document["models"][0]["vs_best"]["p_value"] is None
    for record in document["models"][1:]:
        assert 0 < record["vs_best"]["p_value"] <= record["vs_best"]["p_value_holm"] <= 1
        assert record["vs_best"]["tied_with_best"] == (record["vs_best"]["p_value_holm"] >= 0.05)
    users, per_user = load_per_user(folder)
    assert set(per_user) == set(MODEL_ASSETS) and len(users) == table.loc[0, "users"] == document["users"]
    for name, row in table.set_index("model").iterrows():
        assert np.nanmean(per_user[name]["ndcg@10"]) == pytest.approx(row["ndcg@10"])
    summary = _materialisations(result)["leaderboard"].metadata
    assert "vs best (ndcg@10)" in summary["leaderboard"].value and summary["test_users"].value == len(users)


def test_blocking_quarantine_check_stops_downstream_assets(tmp_path, ml100k_slice: Path, materialise_batch):
    # Every rating is out of range, so the quarantined share is 100%.
    dataset = DatasetResource(
        data_dir=str(ml100k_slice.parent), dataset=ml100k_slice.name, rating_min=10, rating_max=20
    )
    result = materialise_batch(
        tmp_path / "project",
        dataset,
        selection=["raw_interactions", "validated_interactions", "quarantined_rows", "interactions"],
        raise_on_error=False,
    )
    assert not result.success
    materialised = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    assert "validated_interactions" in materialised
    assert "interactions" not in materialised


def test_every_model_is_exported_parity_checked_and_registered(materialised):
    result, root, _ = materialised
    registry = root / "artifacts" / "registry"
    parity = {
        event.event_specific_data.asset_key.to_user_string(): event.event_specific_data
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION" and event.event_specific_data.check_name == PARITY_CHECK
    }
    for name in MODEL_ASSETS:
        check = parity[f"onnx/{name}"]
        assert check.passed, (name, check.metadata)
        assert check.metadata["max_abs_score_diff"].value <= check.metadata["tolerance"].value
        [manifest] = versions(registry, name)
        folder = registry / name / manifest.version
        assert folder == _folder(result, root, f"registry/{name}")
        assert Manifest.read(folder) == manifest
        assert (folder / "model.onnx").stat().st_size > 0
        model = Recommender.load(_folder(result, root, name))
        assert manifest.family == model.family and len(manifest.item_ids) == model.n_items + 1
        assert manifest.inputs["history"]["dtype"] == "int64" and manifest.k == min(100, model.n_items)
        assert manifest.training_data_version == _materialisations(result)["split"].metadata["dvc_md5"].value
        assert "ndcg@10" in manifest.metrics and manifest.parity["passed"] is True
        assert manifest.max_history_length == model.max_history_length
    champion = json.loads((registry / "champion.json").read_text())
    leader = pd.read_csv(_folder(result, root, "leaderboard") / "leaderboard.csv").loc[0, "model"]
    assert champion["model"] == leader and (registry / leader / champion["version"] / "model.onnx").exists()


def test_a_run_leaves_git_clean(materialised):
    _, root, _ = materialised
    status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
    assert status.stdout == ""


def test_every_training_step_is_in_the_training_pool():
    pools = {
        key.to_user_string(): asset.op.pool
        for asset in definitions.all_assets
        if isinstance(asset, dg.AssetsDefinition)
        for key in asset.keys
    }
    trained = {*MODEL_ASSETS, "challenger_model"}
    assert {name for name, pool in pools.items() if pool == TRAINING_POOL} == trained


def test_a_failed_parity_check_blocks_only_that_models_registration(materialised, rerun):
    _, _, instance = materialised
    exported = ["most_popular_model", "ease_model"]
    selection = [f"onnx/{name}" for name in exported] + [f"registry/{name}" for name in exported]
    impossible = {"onnx__ease_model": {"config": {"tolerance": -1.0}}}  # no difference is below zero
    result = rerun(selection=selection, instance=instance, run_config={"ops": impossible}, raise_on_error=False)
    checks = {
        event.event_specific_data.asset_key.to_user_string(): event.event_specific_data.passed
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert checks == {"onnx/most_popular_model": True, "onnx/ease_model": False}
    materialised_now = set(_materialisations(result))
    assert "registry/most_popular_model" in materialised_now
    assert "onnx/ease_model" in materialised_now and "registry/ease_model" not in materialised_now
