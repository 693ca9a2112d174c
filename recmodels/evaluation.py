"""Full-catalogue ranking evaluation, the same for every model.

Scores come from ``Recommender.score`` on each user's whole history; masking,
top-k and metrics happen here once, batched over users. The masking rule is the
one the exported graph and the service apply (``mask_seen``): every item of the
history sent is masked, whatever part of it the model reads (``max_history_length``).
A stage may skip more items than its history holds (the DiffRec protocol's test
stage also skips the validation items); those come from ``EvalStage.exclude``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch

from recmodels import metrics
from recmodels.data.history import HistoryBatch
from recmodels.data.splits import EvalStage

if TYPE_CHECKING:
    from recmodels.models.base import Recommender


@dataclass(frozen=True)
class BeyondAccuracyInputs:
    """What beyond-accuracy metrics need from the training data."""

    item_popularity: np.ndarray
    n_train_users: int
    item_features: sp.csr_matrix | np.ndarray | None = None


@dataclass
class Evaluation:
    metrics: dict[str, float]
    users: np.ndarray
    top_items: np.ndarray
    seconds: float
    per_user: dict[str, np.ndarray] = field(repr=False, default_factory=dict)


def mask_seen(scores: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """``scores`` with the padding column and every item of ``history`` set to -inf.

    The one masking rule: evaluation, the exported ONNX graph (``export.TopKHead``) and
    so the service all run this function on the whole history they were given.
    """
    seen = torch.zeros_like(scores).scatter(1, history, torch.ones_like(history, dtype=scores.dtype))
    seen = seen.index_fill(1, torch.zeros(1, dtype=torch.long, device=seen.device), 1.0)  # padding column
    return scores.masked_fill(seen > 0, float("-inf"))


def top_k(scores: torch.Tensor, exclude: sp.csr_matrix, k: int) -> np.ndarray:
    """Best ``k`` item ids per row, skipping padding and excluded items.

    Ties go to the lower item id, so rankings are reproducible. Only the items
    scoring at least the k-th best value are sorted (``topk`` finds that value),
    so a batch costs one pass over the catalogue instead of a full sort.
    Rows with fewer than ``k`` rankable items are padded with 0.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores = scores.to(torch.float32).clone()
    if torch.isnan(scores).any():
        rows = torch.isnan(scores).any(dim=1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"scores contain NaN (batch rows {rows}): the model diverged or read bad input")
    scores[:, 0] = -torch.inf
    rows, cols = exclude.nonzero()
    scores[torch.from_numpy(rows), torch.from_numpy(cols.astype(np.int64))] = -torch.inf
    width = min(k, scores.shape[1])
    kth_best = torch.topk(scores, width, dim=1, sorted=False).values.min(dim=1, keepdim=True).values
    candidates = (scores >= kth_best) & ~torch.isneginf(scores)
    # nonzero() lists candidates row by row in ascending item order, so a stable
    # sort of each row's candidates by score hands ties to the lower id.
    row_ids, item_ids = candidates.nonzero(as_tuple=True)
    counts = candidates.sum(dim=1)
    slot = torch.arange(len(row_ids)) - (counts.cumsum(0) - counts)[row_ids]
    n_slots = max(int(counts.max()), width)
    candidate_items = torch.zeros((scores.shape[0], n_slots), dtype=torch.int64)
    candidate_scores = torch.full((scores.shape[0], n_slots), -torch.inf)
    candidate_items[row_ids, slot] = item_ids
    candidate_scores[row_ids, slot] = scores[row_ids, item_ids]
    values, order = torch.sort(candidate_scores, dim=1, descending=True, stable=True)
    items = candidate_items.gather(1, order[:, :width])
    items[torch.isneginf(values[:, :width])] = 0
    result = np.zeros((scores.shape[0], k), dtype=np.int64)
    result[:, :width] = items.numpy()
    return result


def evaluate(
    model: Recommender,
    stage: EvalStage,
    ks: tuple[int, ...] = (10, 20),
    *,
    beyond: BeyondAccuracyInputs | None = None,
    batch_size: int | None = None,
) -> Evaluation:
    """Rank the whole catalogue for every evaluated user of ``stage``.

    Accuracy metrics average over users with at least one target; beyond-accuracy
    metrics are computed at the largest cutoff of ``ks``. ``batch_size`` defaults to
    the model's ``evaluation_batch_size``.
    """
    if not ks:
        raise ValueError("ks must name at least one cutoff")
    max_k = max(ks)
    started = time.perf_counter()
    tops, per_user_parts, users = [], [], []
    with torch.inference_mode():
        for batch in stage.batches(batch_size or model.evaluation_batch_size):
            history = HistoryBatch.from_numpy(batch.history_items, batch.history_timestamps)
            top = top_k(mask_seen(model.score(history).float(), history.items), batch.exclude, max_k)
            tops.append(top)
            per_user_parts.append(metrics.ranking_metrics(top, batch.targets, ks))
            users.append(batch.users)
    if not tops:
        raise ValueError("the stage has no user with targets to evaluate")
    order = np.argsort(np.concatenate(users))
    top_items = np.concatenate(tops)[order]
    per_user = {name: np.concatenate([part[name] for part in per_user_parts])[order] for name in per_user_parts[0]}
    summary = {name: float(np.nanmean(values)) for name, values in per_user.items()}
    if beyond is not None:
        n_items = stage.targets.shape[1] - 1
        for k in ks:
            summary[f"coverage@{k}"] = metrics.catalogue_coverage(top_items, n_items, k)
        # means over users: their per-user values go to ``per_user`` too, for intervals over users
        per_user_beyond = {
            f"novelty@{max_k}": metrics.novelty_per_user(
                top_items, beyond.item_popularity, beyond.n_train_users, max_k
            ),
            f"arp@{max_k}": metrics.average_popularity_per_user(top_items, beyond.item_popularity, max_k),
        }
        if beyond.item_features is not None:
            per_user_beyond[f"ild@{max_k}"] = metrics.intra_list_diversity_per_user(
                top_items, beyond.item_features, max_k
            )
        per_user.update(per_user_beyond)
        summary.update({name: metrics.mean_over_users(values) for name, values in per_user_beyond.items()})
    return Evaluation(
        metrics=summary,
        users=np.concatenate(users)[order],
        top_items=top_items,
        seconds=time.perf_counter() - started,
        per_user=per_user,
    )


def stage_metric(model: Recommender, stage: EvalStage, metric: str) -> float:
    """One metric named like ``ndcg@10`` on a stage: what early stopping watches."""
    name, _, cutoff = metric.partition("@")
    if not cutoff.isdigit():
        raise ValueError(f"metric {metric!r} must look like 'ndcg@10'")
    return evaluate(model, stage, (int(cutoff),)).metrics[metric]
