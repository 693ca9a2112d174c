"""The contract every model must pass: score shape, save/load, config round trip, determinism.

Every registered family must appear in ``CASES`` (a test fails otherwise), each
variant with a configuration small enough for a quick real fit.
"""

import dataclasses
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

import recmodels.models  # noqa: F401  (registers every family)
from recmodels.data.interactions import Interactions
from recmodels.data.splits import SplitData, leave_one_out_split
from recmodels.evaluation import evaluate
from recmodels.export import check_parity, export_onnx
from recmodels.features.modalities import ItemModalities
from recmodels.models.base import CONFIG_FILE, HistoryBatch, ModelConfig, Recommender, model_family
from recmodels.models.baselines import MostPopular
from recmodels.models.diffrec import ClusteredLatentConfig, diffrec, l_diffrec, t_diffrec
from recmodels.models.efficientrec import (
    AttentionPoolingConfig,
    ClusterHeadConfig,
    ClusterScoringConfig,
    EfficientRecConfig,
    ItemEncoderConfig,
    SigmoidMembershipConfig,
    TransitionGraphConfig,
)
from recmodels.models.multimodal import GatedFusionConfig, GradientContributionConfig, demure, fused, modalities_only
from recmodels.models.sasrec import GNNOConfig, esasrec, rectools_training, sasrec, sasrec_ss, with_gnno
from recmodels.nn.losses import FullSoftmaxConfig
from recmodels.train import TrainerConfig

SMALL_BACKBONE = {"dim": 16, "max_len": 20, "ff_mult": 2}
SHORT_TRAINING = TrainerConfig(epochs=2, batch_size=64)
QUICK_GNNO = GNNOConfig(n_negatives=4, start_epoch=0, pace=0.5)
SHORT_DIFFUSION_TRAINING = TrainerConfig(epochs=2, batch_size=64, validate_every=1)
SMALL_LATENT = ClusteredLatentConfig(latent_dim=8)
SMALL_EFFICIENTREC = EfficientRecConfig(
    items=ItemEncoderConfig(dim=16, hidden=32),
    clusters=ClusterHeadConfig(clusters=8),
    max_len=20,
    crops_per_user=2,
    trainer=SHORT_TRAINING,
)


def _short(config):
    return dataclasses.replace(config, trainer=SHORT_TRAINING)


def _small_diffrec(config):
    """A preset shrunk for a quick fit: 5 diffusion steps, a tiny denoiser, two epochs.

    Other fields of the preset (schedule bounds, beta_fixed, history weights) are kept.
    """
    small = dataclasses.replace(
        config,
        diffusion=dataclasses.replace(config.diffusion, steps=5),
        denoiser=dataclasses.replace(config.denoiser, hidden=(16, 32)),
        trainer=SHORT_DIFFUSION_TRAINING,
    )
    if isinstance(config.space, ClusteredLatentConfig):
        small = dataclasses.replace(small, space=SMALL_LATENT)
    return small


CASES = {
    "most_popular": ("most_popular", None),
    "item_knn": ("item_knn", None),
    "ease": ("ease", None),
    "sasrec": ("sasrec", _short(sasrec(**SMALL_BACKBONE))),
    "sasrec_ss": ("sasrec", _short(sasrec_ss(**SMALL_BACKBONE))),
    "sasrec_full_softmax": ("sasrec", _short(dataclasses.replace(sasrec(**SMALL_BACKBONE), loss=FullSoftmaxConfig()))),
    "esasrec": ("sasrec", _short(esasrec(**SMALL_BACKBONE))),
    "esasrec_gnno": ("sasrec", _short(with_gnno(esasrec(**SMALL_BACKBONE), QUICK_GNNO))),
    # the Amazon paper rows' SASRec+SS: RecTools' training and SASRec layer, attending to empty slots
    "sasrec_ss_rectools": ("sasrec", _short(rectools_training(sasrec_ss(**SMALL_BACKBONE), key_padding_mask=False))),
    "sasrec_gnno": ("sasrec", _short(with_gnno(sasrec(**SMALL_BACKBONE), QUICK_GNNO))),
    "diffrec": ("diffrec", _small_diffrec(diffrec())),
    "l_diffrec": ("diffrec", _small_diffrec(l_diffrec())),
    "t_diffrec": ("diffrec", _small_diffrec(t_diffrec())),
    "efficientrec": ("efficientrec", SMALL_EFFICIENTREC),
    "efficientrec_clusters": (
        "efficientrec",
        dataclasses.replace(
            SMALL_EFFICIENTREC,
            items=ItemEncoderConfig(dim=16, hidden=32, graph=TransitionGraphConfig()),
            pooling=AttentionPoolingConfig(recency_decay=0.9),
            clusters=ClusterHeadConfig(clusters=8, membership=SigmoidMembershipConfig()),
            scoring=ClusterScoringConfig(top_clusters=2),
        ),
    ),
    "multimodal_fused": ("multimodal", _short(fused(**SMALL_BACKBONE))),
    "multimodal_demure": ("multimodal", _short(demure(**SMALL_BACKBONE))),
    "multimodal_demure_gated_gradient": (
        "multimodal",
        _short(
            dataclasses.replace(
                demure(**SMALL_BACKBONE),
                fusion=GatedFusionConfig(),
                denoising=dataclasses.replace(
                    demure().denoising, contribution=GradientContributionConfig(), start_epoch=0
                ),
            )
        ),
    ),
    "multimodal_modalities_only": ("multimodal", _short(modalities_only(**SMALL_BACKBONE))),
}
CASE_IDS = sorted(CASES)
# Families whose fit takes an upstream asset beside the split: the case's keyword arguments, from the split.
MODALITY_FAMILIES = {"multimodal"}


def test_every_family_has_a_contract_case():
    families = {name for name in Recommender._families if not name.startswith("test_")}
    assert families <= {family for family, _ in CASES.values()}


@pytest.fixture(scope="module")
def small_split(ml100k_small_raw) -> SplitData:
    return leave_one_out_split(Interactions.from_frame(ml100k_small_raw))


@pytest.fixture(scope="module")
def small_batch(small_split) -> HistoryBatch:
    batch = next(small_split.test.batches(batch_size=64, max_len=200))
    return HistoryBatch.from_numpy(batch.history_items, batch.history_timestamps)


def _model(case: str) -> Recommender:
    family, config = CASES[case]
    cls = model_family(family)
    return cls(config) if config is not None else cls()


@pytest.fixture(scope="module")
def fit(small_split, ml100k_items, encoder):
    """``fit(case)``: a fresh fit of the case on the small split, with real item modalities where it reads them."""
    modalities = ItemModalities.from_items(ml100k_items, small_split.train.item_ids, encoder)

    def run(case: str) -> Recommender:
        family, _ = CASES[case]
        options = {"modalities": modalities} if family in MODALITY_FAMILIES else {}
        return _model(case).fit(small_split, **options)

    return run


@pytest.fixture(scope="module")
def fitted(fit):
    """Each case fitted once; tests that need a fresh fit make their own."""
    cache: dict[str, Recommender] = {}

    def get(case: str) -> Recommender:
        if case not in cache:
            cache[case] = fit(case)
        return cache[case]

    return get


@pytest.mark.parametrize("case", CASE_IDS)
def test_score_shape_and_dtype(case, fitted, small_split, small_batch):
    model = fitted(case)
    assert model.is_fitted
    assert model.n_items == small_split.n_items
    scores = model.score(small_batch)
    assert isinstance(scores, torch.Tensor)
    assert scores.shape == (64, small_split.n_items + 1)
    assert scores.dtype == torch.float32
    assert torch.isfinite(scores).all()
    # scores are informative: not constant over the catalogue
    assert (scores[:, 1:].max(dim=1).values > scores[:, 1:].min(dim=1).values).all()


@pytest.mark.parametrize("case", CASE_IDS)
def test_save_load_round_trip_gives_identical_scores(case, fitted, small_split, small_batch, tmp_path):
    model = fitted(case)
    model.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / CONFIG_FILE).read_text())
    assert meta["family"] == model.family
    assert meta["n_items"] == small_split.n_items

    loaded = Recommender.load(tmp_path / "model")
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    assert loaded.n_items == model.n_items
    assert torch.equal(loaded.score(small_batch), model.score(small_batch))


@pytest.mark.parametrize("case", CASE_IDS)
def test_config_round_trips_through_dict_and_json(case):
    model = _model(case)
    config = dataclasses.replace(model.config, seed=17)
    assert isinstance(config, ModelConfig)
    restored = type(config).from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert restored.seed == 17
    assert type(restored) is type(config)
    with pytest.raises(ValueError, match="no fields"):
        type(config).from_dict({**config.to_dict(), "not_a_field": 1})


@pytest.mark.parametrize("case", CASE_IDS)
def test_refit_is_deterministic(case, fitted, fit, small_batch):
    first = fitted(case).score(small_batch)
    second = fit(case).score(small_batch)
    assert torch.equal(first, second)


@pytest.mark.parametrize("case", CASE_IDS)
def test_unfitted_model_refuses_to_score_or_save(case, small_batch, tmp_path):
    model = _model(case)
    assert not model.is_fitted
    with pytest.raises(RuntimeError, match="not fitted"):
        model.score(small_batch)
    with pytest.raises(RuntimeError, match="not fitted"):
        model.save(tmp_path)


@pytest.mark.parametrize("family", sorted({family for family, _ in CASES.values()}))
def test_wrong_config_type_is_rejected(family):
    @dataclasses.dataclass(frozen=True)
    class NotAModelConfig:
        seed: int = 0

    with pytest.raises(TypeError, match="needs a"):
        model_family(family)(NotAModelConfig())


def test_load_unknown_family_raises(small_split, tmp_path):
    MostPopular().fit(small_split).save(tmp_path)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    meta["family"] = "no_such_family"
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unknown model family 'no_such_family'"):
        Recommender.load(tmp_path)


@pytest.mark.parametrize("case", CASE_IDS)
def test_score_is_the_scorer_module(case, fitted, small_batch):
    """``score`` runs ``scorer()``, the module export traces: no family evaluates another function."""
    model = fitted(case)
    with torch.inference_mode():
        direct = model.scorer()(small_batch.items).float()
    assert torch.equal(model.score(small_batch), direct)


@pytest.fixture(scope="module")
def whole_test_histories(small_split):
    """Every test user's whole history, left-padded: many are longer than the small models' ``max_len``."""
    users = small_split.test.users
    items, _ = small_split.test.history.sequences().padded(users)
    assert (np.count_nonzero(items, axis=1) > SMALL_BACKBONE["max_len"]).sum() > 50
    return users, items


@pytest.mark.parametrize("case", CASE_IDS)
def test_onnx_export_returns_the_evaluated_lists(case, fitted, small_split, whole_test_histories, tmp_path):
    """Exported = evaluated: on whole histories the ONNX graph returns the lists ``evaluate`` ranks
    (near-equal scores may swap between runtimes), never an item of the history."""
    model = fitted(case)
    k = 10
    export_onnx(model, tmp_path / "model.onnx", k=k)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    users, histories = whole_test_histories
    report = check_parity(model, session, histories, [(len(users), histories.shape[1]), (5, 3)])
    assert report.passed, report

    served, served_scores = session.run(None, {"history": histories})
    offline = evaluate(model, small_split.test, (k,))
    np.testing.assert_array_equal(offline.users, users)
    differs = served != offline.top_items
    assert differs.sum() <= report.cases[0].swapped_near_ties, f"{int(differs.sum())} list slots differ"
    for row, history in zip(served, histories):
        assert not set(row.tolist()) & set(history[history > 0].tolist()), "a history item was served"
