"""Full-catalogue ranking: top-k tie-breaking and masking, evaluate() on a hand-built stage."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from recmodels.data.interactions import Interactions
from recmodels.data.splits import EvalStage, SplitData
from recmodels.evaluation import BeyondAccuracyInputs, evaluate, top_k
from recmodels.models.base import HistoryBatch, Recommender

# ---------------------------------------------------------------- top_k


def test_top_k_breaks_ties_by_lower_item_id():
    scores = torch.tensor([[9.0, 1.0, 3.0, 3.0, 1.0, 3.0], [0.0, 2.0, 2.0, 2.0, 2.0, 2.0]])
    top = top_k(scores, sp.csr_matrix((2, 6)), 4)
    np.testing.assert_array_equal(top, [[2, 3, 5, 1], [1, 2, 3, 4]])
    assert top.dtype == np.int64


def test_top_k_skips_excluded_items_and_padding():
    scores = torch.tensor([[100.0, 1.0, 3.0, 3.0, 1.0, 3.0], [100.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    exclude = sp.csr_matrix(np.array([[0, 0, 0, 1, 0, 0], [1, 1, 0, 0, 1, 0]], dtype=np.float32))
    top = top_k(scores, exclude, 4)
    np.testing.assert_array_equal(top, [[2, 5, 1, 4], [2, 3, 5, 0]])
    # excluded even when they would have the best score
    top = top_k(torch.tensor([[0.0, 1.0, 9.0, 2.0]]), sp.csr_matrix(np.array([[0, 0, 1, 0]])), 1)
    np.testing.assert_array_equal(top, [[3]])


def test_top_k_pads_with_zero_beyond_rankable_catalogue():
    scores = torch.tensor([[0.5, 0.1, 0.9, 0.3]])  # items 1..3
    exclude = sp.csr_matrix(np.array([[0, 0, 1, 0]], dtype=np.float32))
    np.testing.assert_array_equal(top_k(scores, exclude, 6), [[3, 1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(top_k(scores, sp.csr_matrix((1, 4)), 3), [[2, 3, 1]])
    # everything excluded: nothing to recommend
    everything = sp.csr_matrix(np.ones((1, 4), dtype=np.float32))
    np.testing.assert_array_equal(top_k(scores, everything, 2), [[0, 0]])


def test_top_k_does_not_modify_scores_and_rejects_bad_k():
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    top_k(scores, sp.csr_matrix(np.array([[0, 1, 0]])), 2)
    assert torch.equal(scores, torch.tensor([[1.0, 2.0, 3.0]]))
    with pytest.raises(ValueError, match="k must be >= 1"):
        top_k(scores, sp.csr_matrix((1, 3)), 0)


def test_top_k_equals_a_full_stable_sort_on_heavily_tied_scores():
    generator = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 4, (64, 300), generator=generator).float()  # many ties
    scores[5] = -torch.inf  # a row with nothing rankable
    exclude = sp.random(64, 300, density=0.3, format="csr", random_state=3)
    masked = scores.clone()
    masked[:, 0] = -torch.inf
    masked[torch.from_numpy(exclude.nonzero()[0]), torch.from_numpy(exclude.nonzero()[1].astype(np.int64))] = -torch.inf
    values, expected = torch.sort(masked, dim=1, descending=True, stable=True)
    expected[torch.isneginf(values)] = 0
    np.testing.assert_array_equal(top_k(scores, exclude, 20), expected[:, :20].numpy())


def test_top_k_rejects_nan_scores_naming_the_row():
    scores = torch.tensor([[0.0, 1.0, 2.0], [0.0, float("nan"), 1.0]])
    with pytest.raises(ValueError, match=r"NaN \(batch rows \[1\]\)"):
        top_k(scores, sp.csr_matrix((2, 3)), 1)


# ---------------------------------------------------------------- evaluate on a hand-built stage


@pytest.fixture
def fixed_model_class():
    """A test double scoring item j as 6 - j (item 1 best), recording the histories it saw."""

    class FixedScores(Recommender):
        family = "test_fixed_scores"

        def fit(self, split: SplitData) -> "FixedScores":
            self.n_items = split.n_items
            return self

        def score(self, batch: HistoryBatch) -> torch.Tensor:
            n_items = self._require_fitted()
            self.seen.append(batch.items.numpy().copy())
            base = torch.tensor([0.0] + [float(6 - j) for j in range(1, n_items + 1)])
            return base.expand(batch.items.shape[0], -1).clone()

        def scorer(self) -> torch.nn.Module:
            raise AssertionError("evaluation must go through score()")

        def state_dict(self) -> dict[str, torch.Tensor]:
            return {}

        def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
            pass

    yield FixedScores
    Recommender._families.pop("test_fixed_scores", None)


def fixed_model(cls, n_items: int = 5):
    model = cls()
    model.n_items = n_items
    model.seen = []
    return model


@pytest.fixture
def hand_stage() -> EvalStage:
    """Users u0..u3 (ids 0..3), items i1..i5 (ids 1..5); history items are excluded.

    u0: history [1],      targets {3, 5} -> ranking 2, 3, 4   hit at rank 2
    u1: history [4, 2],   targets {1}    -> ranking 1, 3, 5   hit at rank 1
    u2: history [5],      targets {3}    -> ranking 1, 2, 3   hit at rank 3
    u3: history [1],      no targets     -> not evaluated
    """
    rows = [
        ("u0", "i1", 1, "history"),
        ("u1", "i2", 20, "history"),
        ("u1", "i4", 10, "history"),
        ("u2", "i5", 3, "history"),
        ("u3", "i1", 4, "history"),
        ("u0", "i3", 50, "target"),
        ("u0", "i5", 51, "target"),
        ("u1", "i1", 50, "target"),
        ("u2", "i3", 50, "target"),
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "kind"])
    data = Interactions.from_frame(frame)
    kind = frame.set_index(["user_id", "item_id"])["kind"]
    labels = np.array(
        [kind[(data.user_ids[u], data.item_ids[i])] for u, i in zip(data.frame["user"], data.frame["item"])]
    )
    history = data.subset(labels == "history")
    return EvalStage(history=history, targets=data.subset(labels == "target").csr(), exclude=history.csr())


D2 = 1 / math.log2(3)  # discount at rank 2
D3 = 1 / math.log2(4)  # discount at rank 3


@pytest.mark.parametrize("batch_size", [1, 2, 1024])
def test_evaluate_hand_computed_metrics(fixed_model_class, hand_stage, batch_size):
    model = fixed_model(fixed_model_class)
    result = evaluate(model, hand_stage, ks=(2, 3), batch_size=batch_size)

    np.testing.assert_array_equal(result.users, [0, 1, 2])
    np.testing.assert_array_equal(result.top_items, [[2, 3, 4], [1, 3, 5], [1, 2, 3]])
    ndcg_u0 = D2 / (1 + D2)  # hit at rank 2 of 2 relevant items
    expected = {
        "recall@2": (0.5 + 1 + 0) / 3,
        "recall@3": (0.5 + 1 + 1) / 3,
        "ndcg@2": (ndcg_u0 + 1 + 0) / 3,
        "ndcg@3": (ndcg_u0 + 1 + D3) / 3,
        "hr@2": 2 / 3,
        "hr@3": 1.0,
        "precision@2": (0.5 + 0.5 + 0) / 3,
        "precision@3": 1 / 3,
        "mrr@2": (0.5 + 1 + 0) / 3,
        "mrr@3": (0.5 + 1 + 1 / 3) / 3,
    }
    assert set(expected) <= set(result.metrics)
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value), name
    np.testing.assert_allclose(result.per_user["ndcg@3"], [ndcg_u0, 1.0, D3])
    assert result.seconds >= 0

    # the model read each evaluated user's left-padded chronological history, in batches,
    # shortest histories first (users 0 and 2 before user 1)
    seen = np.concatenate([np.pad(h, ((0, 0), (2 - h.shape[1], 0))) for h in model.seen])
    np.testing.assert_array_equal(seen, [[0, 1], [0, 5], [4, 2]])
    assert len(model.seen) == math.ceil(3 / batch_size)


def test_evaluate_batches_by_the_models_evaluation_batch_size(fixed_model_class, hand_stage):
    class TwoUsersABatch(fixed_model_class):
        evaluation_batch_size = 2

    model = fixed_model(TwoUsersABatch)
    evaluate(model, hand_stage, ks=(2,))
    assert [len(history) for history in model.seen] == [2, 1]
    evaluate(model, hand_stage, ks=(2,), batch_size=3)  # an explicit size wins
    assert [len(history) for history in model.seen] == [2, 1, 3]


def test_evaluate_sends_and_masks_the_whole_history_whatever_the_model_reads(fixed_model_class, hand_stage):
    """The served rule: the model gets the whole history (it reads its own most recent
    ``max_history_length``) and every item of it is masked, also where the stage's own
    exclusions hold nothing."""

    class OneItemHistory(fixed_model_class):
        max_history_length = 1

    model = fixed_model(OneItemHistory)
    no_exclusions = EvalStage(
        history=hand_stage.history, targets=hand_stage.targets, exclude=sp.csr_matrix(hand_stage.exclude.shape)
    )
    result = evaluate(model, no_exclusions, ks=(3,))
    seen = np.concatenate([np.pad(h, ((0, 0), (2 - h.shape[1], 0))) for h in model.seen])
    np.testing.assert_array_equal(seen, [[0, 1], [0, 5], [4, 2]])
    np.testing.assert_array_equal(result.top_items, [[2, 3, 4], [1, 3, 5], [1, 2, 3]])


def test_evaluate_beyond_accuracy(fixed_model_class, hand_stage):
    popularity = np.array([0, 4, 3, 2, 1, 1], dtype=np.float64)
    beyond = BeyondAccuracyInputs(item_popularity=popularity, n_train_users=4)
    result = evaluate(fixed_model(fixed_model_class), hand_stage, ks=(2, 3), beyond=beyond)
    # top-3 lists [2,3,4], [1,3,5], [1,2,3] cover all five items; top-2 cover {1,2,3}
    assert result.metrics["coverage@3"] == pytest.approx(5 / 5)
    assert result.metrics["coverage@2"] == pytest.approx(3 / 5)
    arp = np.mean([np.mean([3, 2, 1]), np.mean([4, 2, 1]), np.mean([4, 3, 2])])
    assert result.metrics["arp@3"] == pytest.approx(arp)
    info = np.concatenate([[np.nan], -np.log2(popularity[1:] / 4)])  # self-information of items 1..5
    novelty = np.mean([info[[2, 3, 4]].mean(), info[[1, 3, 5]].mean(), info[[1, 2, 3]].mean()])
    assert result.metrics["novelty@3"] == pytest.approx(novelty)
    assert "ild@3" not in result.metrics  # no item features given
    # per-user values of the means over users are kept for intervals; coverage is not a mean over users
    np.testing.assert_allclose(result.per_user["arp@3"], [np.mean([3, 2, 1]), np.mean([4, 2, 1]), np.mean([4, 3, 2])])
    assert result.per_user["novelty@3"].mean() == pytest.approx(novelty)
    assert "coverage@3" not in result.per_user


def test_evaluate_stage_without_targets_raises(fixed_model_class, hand_stage):
    empty = EvalStage(
        history=hand_stage.history,
        targets=sp.csr_matrix(hand_stage.targets.shape, dtype=np.float32),
        exclude=hand_stage.exclude,
    )
    with pytest.raises(ValueError, match="no user with targets"):
        evaluate(fixed_model(fixed_model_class), empty)
    with pytest.raises(ValueError, match="at least one cutoff"):
        evaluate(fixed_model(fixed_model_class), hand_stage, ks=())


def test_test_double_is_removed_from_registry():
    assert not any(name.startswith("test_") for name in Recommender._families)
