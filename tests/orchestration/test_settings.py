"""One source of truth per setting: upstream parameters reach the model and its records; typed launchpad parts.

The graph and cluster settings live once (``NeighbourhoodConfig``, ``ClusteringConfig``): set
on the upstream asset, they change what the model trains with, and the model's saved
``config.json`` and its registry manifest record the values actually used, with the upstream's
DVC md5. Swappable parts are typed in the launchpad: Dagster's own config validation refuses an
unknown kind or a wrongly typed field.
"""

import dataclasses
import json
from pathlib import Path

import dagster as dg
import pytest

from orchestration import definitions
from orchestration.assets.export import OnnxExportConfig, export_checked, parity_histories, registry_entry
from orchestration.assets.models import MODEL_SPECS, model_launchpad_config
from orchestration.config_bridge import NO_PART, dataclass_values
from orchestration.resources import DatasetResource
from recmodels.cluster import ClusteringConfig
from recmodels.data.splits import load_split
from recmodels.graph import NeighbourhoodConfig
from recmodels.models import Recommender
from recmodels.models.base import CONFIG_FILE
from recmodels.nn.losses import BCELossConfig
from recmodels.registry import Manifest, versions

SPECS = {spec.asset: spec for spec in MODEL_SPECS}
CLUSTERED = "l_diffrec_model"
GNNO_MODEL = "sasrec_ss_gnno_model"
N_CLUSTERS = 3  # the default is 2: a model that ignored the asset would train with 2
TOP_M, MAX_DISTANCE = 7, 2  # the defaults are 100 and 3
SELECTION = [
    "raw_interactions",
    "validated_interactions",
    "quarantined_rows",
    "interactions",
    "split",
    "item_embeddings",
    "item_clusters",
    "item_transition_graph",
    "item_neighbourhood_overlap",
    CLUSTERED,
    GNNO_MODEL,
]
RUN_CONFIG = dg.RunConfig(
    ops={
        "item_embeddings": {"config": {"dim": 16}},
        "item_clusters": {"config": {"n_clusters": N_CLUSTERS}},
        "item_transition_graph": {"config": {"max_distance": MAX_DISTANCE}},
        "item_neighbourhood_overlap": {"config": {"top_m": TOP_M}},
        CLUSTERED: {
            "config": {
                "trainer": {"epochs": 1, "validate_every": 1},
                "diffusion": {"steps": 5},
                "denoiser": {"hidden": [32]},
                "space": {"clustered_latent": {"latent_dim": 24}},  # a typed part, set in launchpad form
            }
        },
        GNNO_MODEL: {
            "config": {
                "trainer": {"epochs": 1},
                "backbone": {"dim": 16, "max_len": 20},
                "hard_negatives": {"gnno": {"n_negatives": 4, "start_epoch": 0}},
            }
        },
    }
)


def _launchpad_job() -> dg.JobDefinition:
    """The job a user launches model assets from: Dagster validates launchpad config against its schema."""
    return definitions.defs.resolve_job_def("full_pipeline")


def _run_config(asset_name: str, config: dict) -> dict:
    return {"ops": {asset_name: {"config": config}}}


def _validated(asset_name: str, config: dict) -> dg.Config:
    """``config`` as Dagster validates it (defaults filled in), then built into the asset's config class."""
    result = dg.validate_run_config(_launchpad_job(), _run_config(asset_name, config))
    return model_launchpad_config(SPECS[asset_name])(**result["ops"][asset_name]["config"])


@pytest.fixture(scope="module")
def ml100k_slice(earliest_ml100k) -> Path:
    """The earliest 25% of ml-100k by time, as a RecBole folder."""
    return earliest_ml100k("ml-100k-settings", 0.25)


@pytest.fixture(scope="module")
def materialised(tmp_path_factory, ml100k_slice: Path, materialise_batch):
    root = tmp_path_factory.mktemp("project")
    dataset = DatasetResource(data_dir=str(ml100k_slice.parent), dataset=ml100k_slice.name, rating_min=1, rating_max=5)
    result = materialise_batch(root, dataset, selection=SELECTION, run_config=RUN_CONFIG)
    materialisations = {
        event.asset_key.to_user_string(): event.event_specific_data.materialization
        for event in result.get_asset_materialization_events()
    }
    return root, materialisations


def _folder(root: Path, materialisations: dict, asset: str) -> Path:
    """The version folder this run recorded for ``asset``."""
    return root / materialisations[asset].metadata["path"].value


def _meta(root: Path, materialisations: dict, asset: str) -> dict:
    return json.loads((_folder(root, materialisations, asset) / CONFIG_FILE).read_text())


def _manifest(root: Path, materialisations: dict, asset: str, model: Recommender) -> Manifest:
    """The model through the pipeline's own export and registration steps."""
    data = load_split(_folder(root, materialisations, "split"))
    config = OnnxExportConfig(shapes=[[4, 20]])
    histories, shapes = parity_histories(data.test, config)
    export = export_checked(model, histories, shapes, config)
    assert export.parity_passed, export.record["parity"]
    split_md5 = materialisations["split"].metadata["dvc_md5"].value
    entry = registry_entry(export, model, asset, data.train.item_ids, split_md5, {})
    folder = root / "registry" / asset / entry.version_name
    folder.mkdir(parents=True)
    entry.save(folder)
    [manifest] = versions(root / "registry", asset)
    assert Manifest.read(folder) == manifest and manifest.training_data_version == split_md5
    return manifest


def test_cluster_count_set_on_item_clusters_is_what_l_diffrec_trains_with_and_records(materialised):
    root, materialisations = materialised
    model = Recommender.load(_folder(root, materialisations, CLUSTERED))
    space = model.module.space
    assert sorted(set(space.cluster_of_item.tolist())) == list(range(N_CLUSTERS))
    assert len(space.encoders) == N_CLUSTERS and sum(space.slices) == 24
    assert model.config.space.latent_dim == 24  # the launchpad part reached the model

    expected = {
        "asset": "item_clusters",
        "dvc_md5": materialisations["item_clusters"].metadata["dvc_md5"].value,
        "parameters": {
            **dataclasses.asdict(ClusteringConfig(dim=16, n_clusters=N_CLUSTERS)),
            "embeddings": "svd of the training matrix",
        },
    }
    assert _meta(root, materialisations, CLUSTERED)["upstream"] == {"clusters": expected}
    assert materialisations[CLUSTERED].metadata["upstream"].value == {"clusters": expected}
    assert materialisations["item_clusters"].metadata["parameters"].value == expected["parameters"]
    assert _manifest(root, materialisations, CLUSTERED, model).upstream == {"clusters": expected}


def test_top_m_set_on_the_overlap_is_what_gnno_trains_with_and_records(materialised):
    root, materialisations = materialised
    model = Recommender.load(_folder(root, materialisations, GNNO_MODEL))
    expected = {
        "asset": "item_neighbourhood_overlap",
        "dvc_md5": materialisations["item_neighbourhood_overlap"].metadata["dvc_md5"].value,
        "parameters": {"max_distance": MAX_DISTANCE, "top_m": TOP_M},
    }
    assert _meta(root, materialisations, GNNO_MODEL)["upstream"] == {"overlap": expected}
    assert _manifest(root, materialisations, GNNO_MODEL, model).upstream == {"overlap": expected}
    # The launchpad part: the fields set, the preset's values for the rest, and the curriculum started at epoch 0.
    preset = SPECS[GNNO_MODEL].preset.hard_negatives
    assert model.config.hard_negatives == dataclasses.replace(preset, n_negatives=4, start_epoch=0)
    history = json.loads((_folder(root, materialisations, GNNO_MODEL) / "training_history.json").read_text())
    assert history["extra"]["hardness"] == [pytest.approx(preset.pace)]


def test_every_preset_round_trips_through_its_launchpad_defaults():
    for spec in MODEL_SPECS:
        defaults = model_launchpad_config(spec)()
        assert type(spec.preset).from_dict(dataclass_values(type(spec.preset), defaults)) == spec.preset, spec.asset


def test_the_launchpad_accepts_a_valid_part_config_and_returns_it_typed():
    chosen = _validated(GNNO_MODEL, {"loss": {"bce": {}}, "hard_negatives": {"gnno": {"n_negatives": 8}}})
    config = type(SPECS[GNNO_MODEL].preset).from_dict(dataclass_values(type(SPECS[GNNO_MODEL].preset), chosen))
    assert config.loss == BCELossConfig()
    assert config.hard_negatives == dataclasses.replace(SPECS[GNNO_MODEL].preset.hard_negatives, n_negatives=8)
    assert config.backbone == SPECS[GNNO_MODEL].preset.backbone  # untouched sections keep the preset's values
    switched_off = _validated(GNNO_MODEL, {"hard_negatives": {NO_PART: {}}})
    assert dataclass_values(type(SPECS[GNNO_MODEL].preset), switched_off)["hard_negatives"] is None


@pytest.mark.parametrize(
    ("asset", "config", "complaint"),
    [
        (GNNO_MODEL, {"loss": {"softmax_of_dreams": {}}}, 'unexpected config entry "softmax_of_dreams"'),
        (GNNO_MODEL, {"loss": {"sasrec_block": {}}}, 'unexpected config entry "sasrec_block"'),  # another slot's part
        (GNNO_MODEL, {"loss": {"sampled_softmax": {"n_negatives": "many"}}}, "sampled_softmax:n_negatives"),
        (GNNO_MODEL, {"hard_negatives": {"gnno": {"top_m": 7}}}, 'unexpected config entry "top_m"'),  # not its setting
        (GNNO_MODEL, {"loss": {"bce": {}, "full_softmax": {}}}, "only specify a single field"),  # one kind
        (CLUSTERED, {"space": {"clustered_latent": {"n_clusters": 3}}}, 'unexpected config entry "n_clusters"'),
        (CLUSTERED, {"history": {"time_weighted_history": {"w_min": "low"}}}, 'w_min. Value "low"'),
    ],
)
def test_dagster_refuses_a_wrong_kind_or_field(asset, config, complaint):
    with pytest.raises(dg.DagsterInvalidConfigError, match=complaint):
        dg.validate_run_config(_launchpad_job(), _run_config(asset, config))


def test_upstream_asset_configs_take_their_fields_from_the_library_dataclasses():
    defaults = {
        "item_transition_graph": {"max_distance": NeighbourhoodConfig().max_distance},
        "item_neighbourhood_overlap": {"top_m": NeighbourhoodConfig().top_m},
        "item_embeddings": {"dim": ClusteringConfig().dim, "seed": ClusteringConfig().seed, "provided_file": None},
        "item_clusters": {"n_clusters": ClusteringConfig().n_clusters, "temperature": ClusteringConfig().temperature},
    }
    assets = {key.to_user_string(): asset for asset in definitions.batch_assets for key in asset.keys}
    for name, expected in defaults.items():
        fields = assets[name].op.config_schema.as_field().config_type.fields
        assert {key: field.default_value for key, field in fields.items()} == expected, name
        assert all(field.description for field in fields.values()), name
