"""The multi-modal model's parts on real MovieLens-100K items: contributions, noise labels, the denoised view,
the view contrastive loss, new items scored from features, and a short real fit against MostPopular."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from recmodels.data.interactions import Interactions
from recmodels.data.splits import SplitData, item_disjoint_split, leave_one_out_split
from recmodels.evaluation import evaluate
from recmodels.features.modalities import ItemModalities
from recmodels.models.baselines import MostPopular
from recmodels.models.multimodal import (
    DenoisingConfig,
    GradientContributionConfig,
    MultiModal,
    OcclusionContributionConfig,
    demure,
    fused,
    modalities_only,
    noise_labels,
    view_contrastive_loss,
)
from recmodels.models.sasrec import SASRec, esasrec
from recmodels.train import TrainerConfig

SMALL = {"dim": 16, "max_len": 20, "ff_mult": 2}


def _trained(config, epochs: int = 2):
    return dataclasses.replace(config, trainer=TrainerConfig(epochs=epochs, batch_size=64, adam_betas=(0.9, 0.98)))


@pytest.fixture(scope="module")
def small_split(ml100k_small_raw) -> SplitData:
    return leave_one_out_split(Interactions.from_frame(ml100k_small_raw))


@pytest.fixture(scope="module")
def modalities(small_split, ml100k_items, encoder) -> ItemModalities:
    return ItemModalities.from_items(ml100k_items, small_split.train.item_ids, encoder)


@pytest.fixture(scope="module")
def model(small_split, modalities) -> MultiModal:
    return MultiModal(_trained(fused(**SMALL))).fit(small_split, modalities=modalities)


@pytest.fixture(scope="module")
def batch(small_split) -> tuple[torch.Tensor, torch.Tensor]:
    """Eight training sequences as (inputs, next-item targets)."""
    sequences = small_split.train.sequences()
    items = torch.from_numpy(sequences.padded(np.arange(8), SMALL["max_len"] + 1)[0])
    inputs = items[:, :-1]
    return inputs, items[:, 1:].masked_fill(inputs == 0, 0)


def test_the_modalities_of_a_real_catalogue_are_all_fused(model):
    assert model.modality_names == ("id", "text", "genres", "year")


def test_gradient_contributions_match_finite_differences(model, batch):
    """Gradient x input = minus the loss's derivative along each modality's weight at 1 (weights scale the
    history's modality vectors), checked against central differences in float64."""
    net = model.module.double().eval()
    try:
        inputs, targets = batch
        gradient = GradientContributionConfig().measure(net, inputs, targets, positions=5)
        with torch.no_grad():
            vectors = net.modality_vectors()
            ones = torch.ones(len(inputs), net.n_modalities, dtype=torch.float64)
            step = 1e-5
            for modality in range(net.n_modalities):
                up, down = ones.clone(), ones.clone()
                up[:, modality] += step
                down[:, modality] -= step
                slope = (
                    net.user_losses(inputs, targets, vectors, up, 5)
                    - net.user_losses(inputs, targets, vectors, down, 5)
                ) / (2 * step)
                torch.testing.assert_close(gradient[:, modality], -slope, rtol=1e-5, atol=1e-8)
    finally:
        model.module.float()


def test_occlusion_contributions_are_the_loss_change_when_a_modality_is_masked(model, batch):
    net = model.module.eval()
    inputs, targets = batch
    occlusion = OcclusionContributionConfig().measure(net, inputs, targets, positions=5)
    with torch.no_grad():
        vectors = net.modality_vectors()
        text = net.modality_names.index("text")
        # by hand: the history's items without their text vector, the next-item loss over the last 5 positions
        without_text = vectors.clone()
        without_text[:, text] = 0.0
        hidden = net.backbone.contextualise(F.embedding(inputs, without_text.sum(dim=1)), inputs == 0)[:, -5:]
        logits = hidden @ vectors.sum(dim=1)[1:].T
        losses = []
        for row in range(len(inputs)):
            real = targets[row, -5:] > 0
            losses.append(F.cross_entropy(logits[row][real], targets[row, -5:][real] - 1))
        full = net.user_losses(inputs, targets, vectors, torch.ones(len(inputs), net.n_modalities), 5)
    torch.testing.assert_close(occlusion[:, text], torch.stack(losses) - full, rtol=1e-4, atol=1e-5)


def test_contributions_are_measured_by_the_method_asked_for(model, small_split):
    """The benchmark compares both methods on one trained model: each user's row is that method's measure of
    their own training sequence, whatever the config's default."""
    sequences = small_split.train.sequences()
    users = np.arange(4)
    items = torch.from_numpy(sequences.padded(users, SMALL["max_len"] + 1)[0])
    inputs, targets = items[:, :-1], items[:, 1:].masked_fill(items[:, :-1] == 0, 0)
    positions = (model.config.denoising or DenoisingConfig()).positions
    for method in (OcclusionContributionConfig(), GradientContributionConfig()):
        measured = model.contributions(small_split, sequences, method)
        expected = method.measure(model.module.eval(), inputs, targets, positions)
        torch.testing.assert_close(measured[users], expected, rtol=1e-4, atol=1e-6)
    occlusion = model.contributions(small_split, sequences, OcclusionContributionConfig())
    assert not torch.allclose(occlusion, model.contributions(small_split, sequences, GradientContributionConfig()))


def test_noise_labels_take_the_lowest_share_of_content_contributions_and_never_the_id():
    contributions = torch.tensor(
        [[5.0, 1.0, -1.0, 2.0], [5.0, 3.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [2.0, -2.0, 4.0, 2.0]]
    )
    content = torch.tensor([False, True, True, True])
    labels = noise_labels(contributions, content, quantile=0.25)
    # shares per user: contribution / sum of |contributions|; the 25% quantile of the 12 content shares is
    # about 0.10, so the negative ones (user 0 genres, user 3 text) are noise and nothing else
    assert labels.tolist() == [
        [False, False, True, False],
        [False, False, False, False],
        [False, False, False, False],
        [False, True, False, False],
    ]


def test_the_denoised_view_masks_a_modality_only_for_its_user(model, batch):
    net = model.module.eval()
    inputs, _ = batch
    with torch.no_grad():
        vectors = net.modality_vectors()
        weights = torch.ones(len(inputs), net.n_modalities)
        weights[0, net.modality_names.index("genres")] = 0.0
        denoised = net.hidden(inputs, vectors, weights)
        original = net.hidden(inputs, vectors)
        genres_off = vectors.clone()
        genres_off[:, net.modality_names.index("genres")] = 0.0
        by_hand = net.backbone.contextualise(F.embedding(inputs[:1], genres_off.sum(dim=1)), inputs[:1] == 0)
    torch.testing.assert_close(denoised[1:], original[1:])
    torch.testing.assert_close(denoised[:1], by_hand)
    assert not torch.allclose(denoised[0], original[0])


def test_the_view_contrastive_loss_on_a_hand_computed_case():
    first = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    second = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    # unit rows: (1, 0), (0, 1) against (1, 0), (1/sqrt2, 1/sqrt2); cosines / 0.5
    logits = torch.tensor([[1.0, 1 / math.sqrt(2)], [0.0, 1 / math.sqrt(2)]]) / 0.5
    row = -(torch.log_softmax(logits, dim=1).diagonal().mean())
    column = -(torch.log_softmax(logits, dim=0).diagonal().mean())
    torch.testing.assert_close(view_contrastive_loss(first, second, 0.5), 0.5 * (row + column))


def test_denoising_labels_noise_trains_and_records_its_shares(small_split, modalities):
    model = MultiModal(_trained(demure(**SMALL), epochs=3)).fit(small_split, modalities=modalities)
    assert model.noise is not None and model.noise.shape == (small_split.train.n_users, 4)
    assert not model.noise[:, 0].any()  # the id is never noise
    shares = [model.history.extra[f"noise_{name}"][-1] for name in ("text", "genres", "year")]
    assert 0 < sum(shares) / 3 < 0.5 and math.isfinite(model.history.loss[-1])
    assert math.isnan(model.history.extra["noise_text"][0]) and len(model.history.extra["noise_text"]) == 3


@pytest.fixture(scope="module")
def item_disjoint(ml100k_raw) -> SplitData:
    return item_disjoint_split(Interactions.from_frame(ml100k_raw), held_out_share=0.1, seed=0)


def test_an_item_never_trained_on_is_ranked_from_its_features(item_disjoint, ml100k_items, encoder):
    """On the item-disjoint split only features can find the held-out items: an id-only model finds none of
    them, the modalities-only model finds some, and every held-out item gets a finite score."""
    modalities = ItemModalities.from_items(ml100k_items, item_disjoint.train.item_ids, encoder)
    features = MultiModal(_trained(modalities_only(**SMALL), epochs=3)).fit(item_disjoint, modalities=modalities)
    id_only = SASRec(_trained(esasrec(**SMALL), epochs=3)).fit(item_disjoint)
    held_out = np.unique(item_disjoint.test_rows.frame["item"].to_numpy())
    history = torch.from_numpy(item_disjoint.test.history.sequences().padded(np.arange(16), SMALL["max_len"])[0])
    with torch.no_grad():
        scores = features.scorer()(history)
    assert torch.isfinite(scores[:, held_out]).all()
    found = evaluate(features, item_disjoint.test, (20,)).metrics["recall@20"]
    missed = evaluate(id_only, item_disjoint.test, (20,)).metrics["recall@20"]
    assert found > 0.01 and found > 5 * missed


def test_a_short_real_fit_beats_most_popular(ml100k_raw, ml100k_items, encoder):
    split = leave_one_out_split(Interactions.from_frame(ml100k_raw))
    modalities = ItemModalities.from_items(ml100k_items, split.train.item_ids, encoder)
    model = MultiModal(_trained(fused(dim=32, max_len=50), epochs=4)).fit(split, modalities=modalities)
    ours = evaluate(model, split.test, (10,)).metrics["ndcg@10"]
    popular = evaluate(MostPopular().fit(split), split.test, (10,)).metrics["ndcg@10"]
    assert ours > popular


def test_the_explanation_graph_exports_and_matches_in_onnx_runtime(model, small_split, tmp_path):
    explainer = model.explainer()
    history = torch.from_numpy(small_split.test.history.sequences().padded(np.arange(6), 30)[0])
    items = torch.tensor([[1, 2, 3]] * 6)
    with torch.no_grad():
        expected = explainer(history, items)
    path = tmp_path / "explain.onnx"
    torch.onnx.export(
        explainer,
        (history, items),
        path,
        input_names=["history", "items"],
        output_names=["contributions"],
        dynamic_shapes={"history": {0: "batch", 1: "length"}, "items": {0: "batch", 1: "k"}},
        verbose=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (served,) = session.run(None, {"history": history.numpy(), "items": items.numpy()})
    assert served.shape == (6, 3, 4)
    np.testing.assert_allclose(served, expected.numpy(), rtol=1e-4, atol=1e-5)
