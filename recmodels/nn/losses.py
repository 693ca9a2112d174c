"""Next-item losses over the shared item embedding table, swappable by config type.

Every loss reads padded hidden states and targets (``hidden [B, L, d]``,
``targets [B, L]``, 0 where a position has no target) and may take extra per-position negatives
from a hard-negative sampler (``SampledNegatives``: items, log-probabilities,
validity). Invalid and accidental-hit negatives never contribute.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from recmodels.config import PartConfig
from recmodels.graph.sampler import SampledNegatives
from recmodels.nn.aligned import aligned_linear


class NextItemLoss(ABC):
    @abstractmethod
    def __call__(
        self,
        hidden: torch.Tensor,
        targets: torch.Tensor,
        embeddings: torch.Tensor,
        generator: torch.Generator,
        extra: SampledNegatives | None = None,
    ) -> torch.Tensor:
        """Mean loss over the positions with a target.

        ``hidden [B, L, d]``, ``targets [B, L]`` (0 = no target), ``extra`` negatives ``[B, L, k]``.
        """


def _uniform_items(
    shape: tuple[int, ...], n_items: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    return torch.randint(1, n_items + 1, shape, generator=generator).to(device)


def _positive_logits(hidden: torch.Tensor, targets: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    return (hidden * F.embedding(targets, embeddings)).sum(-1)


class SampledLogits(torch.autograd.Function):
    """``logits[n, j] = queries[n] . embeddings[items[n, j]]`` through sparse kernels.

    The forward is a sampled dense-dense product (``torch.sparse.sampled_addmm`` on the
    pattern of ``items``); the backward multiplies the logits' gradient, as a sparse
    ``[n, catalogue]`` matrix, with the embeddings and, transposed, with the queries.
    Nothing of size ``[n, j, d]`` or ``[n, catalogue]`` is ever built. Repeated items in a
    row are separate entries and their gradients add up.
    """

    @staticmethod
    def forward(ctx, queries: torch.Tensor, embeddings: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(queries, embeddings, items)
        pattern = _rows_as_csr(items, queries.new_zeros(items.numel()), embeddings.shape[0])
        return torch.sparse.sampled_addmm(pattern, queries, embeddings.T, beta=0.0).values().view(items.shape)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        queries, embeddings, items = ctx.saved_tensors
        flat_items, flat_gradient = items.flatten(), gradient.flatten()
        by_row = _rows_as_csr(items, flat_gradient, embeddings.shape[0])
        order = flat_items.argsort()
        item_offsets = torch.cat(
            [flat_items.new_zeros(1), torch.bincount(flat_items, minlength=embeddings.shape[0]).cumsum(0)]
        )
        query_of_entry = torch.arange(items.shape[0], device=items.device).repeat_interleave(items.shape[1])[order]
        by_item = _csr(item_offsets, query_of_entry, flat_gradient[order], (embeddings.shape[0], items.shape[0]))
        return by_row @ embeddings, by_item @ queries, None


def _rows_as_csr(items: torch.Tensor, values: torch.Tensor, n_columns: int) -> torch.Tensor:
    """``[n, j]`` column indices (one row per query) as a sparse CSR ``[n, n_columns]`` matrix."""
    n, j = items.shape
    offsets = torch.arange(0, n * j + 1, j, device=items.device)
    return _csr(offsets, items.flatten(), values, (n, n_columns))


def _csr(offsets: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # torch calls its CSR tensors beta; the kernels used here are tested
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(offsets, columns, values, shape, check_invariants=False)


class BinaryCrossEntropy(NextItemLoss):
    """Original SASRec: the positive against one negative per position.

    The negative is the sampler's first valid draw when a sampler is given, else uniform.
    """

    def __call__(self, hidden, targets, embeddings, generator, extra=None):
        n_items = embeddings.shape[0] - 1
        negatives = _uniform_items(targets.shape, n_items, generator, hidden.device)
        if extra is not None:
            usable = extra.valid.any(dim=-1)
            first_valid = extra.valid.to(torch.int8).argmax(dim=-1, keepdim=True)  # argmax returns the first maximum
            negatives = torch.where(usable, extra.items.gather(-1, first_valid).squeeze(-1), negatives)
        positions = targets > 0
        positive_loss = F.softplus(-_positive_logits(hidden, targets, embeddings))
        negative_loss = F.softplus(_positive_logits(hidden, negatives, embeddings)) * (negatives != targets)
        return (positive_loss + negative_loss)[positions].mean()


class SampledSoftmax(NextItemLoss):
    """Softmax over the positive and sampled negatives (eSASRec, gSASRec lineage).

    Uniform negatives come in two layouts. Shared (``per_position=False``, gSASRec):
    each sequence draws ``n_negatives`` used by all its positions, so the logits are one
    batched matrix product. Per position (eSASRec's RecTools code): every position draws
    its own, which decorrelates the gradient of one sequence's positions at the cost of
    ``positions x n_negatives`` logits. Per-position negatives from a sampler are appended.
    With ``logq_correction`` each negative logit is reduced by the log of its sampling
    probability (``log 1/n`` for the uniform ones), which turns the loss into an estimate
    of the full softmax; leave it off to keep the emphasis hard negatives are drawn for
    (eSASRec trains uncorrected with uniform negatives). With ``mask_sequence_items`` a
    negative that is any target of the same sequence is masked at every position, not
    only where it is the target (a user's other items are not evidence against them).
    """

    # Up to this many catalogue items per negative, scoring the whole catalogue and picking
    # the sampled columns beats the sparse kernels of ``SampledLogits`` (ML-1M, 14,000
    # positions, 3,707 items, k = 256: 0.42 s against 0.65 s forward and backward, one
    # thread); beyond it they win (Beauty, 900 positions, 12,102 items: 25 ms against 140 ms).
    # Gathering ``[positions, k, d]`` embeddings is slower than both (memory-bound). Rows go
    # in chunks whose ``[rows, catalogue]`` logits stay in a core's L2 cache (about 2 MB at
    # 128 x 4,096): a whole eSASRec batch on ML-1M trains 9% faster than with chunks of
    # 1,024 rows. The loss is the same either way.
    DENSE_ITEMS_PER_NEGATIVE = 16
    DENSE_CHUNK_ROWS = 128

    def __init__(
        self, n_negatives: int, logq_correction: bool, mask_sequence_items: bool = False, per_position: bool = False
    ) -> None:
        self.n_negatives = n_negatives
        self.logq_correction = logq_correction
        self.mask_sequence_items = mask_sequence_items
        self.per_position = per_position

    def __call__(self, hidden, targets, embeddings, generator, extra=None):
        positions = targets > 0
        uniform = self._per_position_logits if self.per_position else self._shared_logits
        negative_logits = uniform(hidden, targets, embeddings, generator, positions)
        if self.logq_correction:
            negative_logits = negative_logits + math.log(embeddings.shape[0] - 1)
        parts = [_positive_logits(hidden, targets, embeddings)[positions].unsqueeze(-1), negative_logits]
        if extra is not None:
            items = extra.items[positions]
            extra_logits = self._item_logits(hidden[positions], embeddings, items)
            blocked = ~extra.valid[positions] | (items == targets[positions][:, None])
            if self.logq_correction:
                extra_logits = extra_logits - extra.log_q[positions]
            parts.append(extra_logits.masked_fill(blocked, float("-inf")))
        logits = torch.cat(parts, dim=-1)
        return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))

    def _shared_logits(self, hidden, targets, embeddings, generator, positions) -> torch.Tensor:
        """``[positions, n_negatives]`` logits of each sequence's own draws."""
        negatives = _uniform_items(
            (targets.shape[0], self.n_negatives), embeddings.shape[0] - 1, generator, hidden.device
        )
        logits = torch.bmm(hidden, F.embedding(negatives, embeddings).transpose(1, 2))
        if self.mask_sequence_items:  # any item of the sequence is a positive somewhere: never a negative
            blocked = (negatives[:, :, None] == targets[:, None, :]).any(-1)[:, None, :]
        else:  # only the position's own target
            blocked = negatives[:, None, :] == targets[:, :, None]
        return logits.masked_fill(blocked, float("-inf"))[positions]

    def _per_position_logits(self, hidden, targets, embeddings, generator, positions) -> torch.Tensor:
        """``[positions, n_negatives]`` logits of draws made for each position."""
        queries, own_targets = hidden[positions], targets[positions]
        n_catalogue = embeddings.shape[0]
        negatives = _uniform_items((queries.shape[0], self.n_negatives), n_catalogue - 1, generator, hidden.device)
        logits = self._item_logits(queries, embeddings, negatives)
        if self.mask_sequence_items:
            in_sequence = torch.zeros(targets.shape[0], n_catalogue, dtype=torch.bool, device=targets.device)
            in_sequence.scatter_(1, targets, True)  # column 0 (padding) is never drawn
            sequence_of_position = positions.nonzero()[:, 0]
            blocked = in_sequence[sequence_of_position[:, None], negatives]
        else:
            blocked = negatives == own_targets[:, None]
        return logits.masked_fill(blocked, float("-inf"))

    @classmethod
    def _item_logits(cls, queries: torch.Tensor, embeddings: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``[rows, k]`` logits of each query row against its own ``k`` items, by the faster route."""
        if embeddings.shape[0] <= cls.DENSE_ITEMS_PER_NEGATIVE * items.shape[1]:
            chunks = zip(queries.split(cls.DENSE_CHUNK_ROWS), items.split(cls.DENSE_CHUNK_ROWS))
            return torch.cat([aligned_linear(rows, embeddings).gather(1, drawn) for rows, drawn in chunks])
        return SampledLogits.apply(queries, embeddings, items)


class FullSoftmax(NextItemLoss):
    """Cross-entropy over the whole catalogue: exact, affordable for small catalogues."""

    def __call__(self, hidden, targets, embeddings, generator, extra=None):
        positions = targets > 0
        real_items = embeddings[1:]  # the padding slot is never a candidate
        return F.cross_entropy(aligned_linear(hidden[positions], real_items), targets[positions] - 1)


@dataclass(frozen=True)
class BCELossConfig(PartConfig):
    kind = "bce"

    def build(self) -> NextItemLoss:
        return BinaryCrossEntropy()


@dataclass(frozen=True)
class SampledSoftmaxConfig(PartConfig):
    """Masking the whole sequence's items (Klenitskiy & Vasilev's SASRec code) is the default:
    with dropout 0.1 it took SASRec+SS on ML-1M from test NDCG@10 0.150 to 0.165 over 3 seeds
    (published 0.168; docs/sequential.md)."""

    kind = "sampled_softmax"
    n_negatives: int = 256
    logq_correction: bool = False
    mask_sequence_items: bool = True
    per_position: bool = False

    def build(self) -> NextItemLoss:
        if self.n_negatives < 1:
            raise ValueError(f"n_negatives must be >= 1, got {self.n_negatives}")
        return SampledSoftmax(self.n_negatives, self.logq_correction, self.mask_sequence_items, self.per_position)


@dataclass(frozen=True)
class FullSoftmaxConfig(PartConfig):
    kind = "full_softmax"

    def build(self) -> NextItemLoss:
        return FullSoftmax()


def semi_hard_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Triplet loss with semi-hard negatives (Schroff et al., FaceNet; TensorFlow Addons' ``triplet_semihard_loss``).

    For every anchor-positive pair (same label, two rows) the negative is the closest one farther from the anchor
    than the positive; where none is, the farthest negative. Euclidean distances; the mean of
    ``max(d(a, p) - d(a, n) + margin, 0)`` over the pairs. Rows labelled ``-1`` take no part; with no pair the
    loss is zero (and keeps the graph, so it can be summed with other terms).
    """
    distances = torch.cdist(embeddings, embeddings).clamp_min(0)
    valid = labels >= 0
    same = (labels[:, None] == labels[None, :]) & valid[:, None] & valid[None, :]
    pairs = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    negative = ~same & valid[:, None] & valid[None, :]  # [a, n]
    if not pairs.any():
        return embeddings.sum() * 0.0
    anchor_positive = distances[:, :, None]  # [a, p, 1]
    anchor_negative = distances[:, None, :]  # [a, 1, n]
    farther = negative[:, None, :] & (anchor_negative > anchor_positive)  # [a, p, n]
    inf = torch.tensor(float("inf"), device=embeddings.device)
    closest_farther = torch.where(farther, anchor_negative, inf).min(dim=2).values
    farthest = torch.where(negative, distances, -inf).max(dim=1).values[:, None].expand_as(closest_farther)
    chosen = torch.where(farther.any(dim=2), closest_farther, farthest)
    has_negative = negative.any(dim=1)[:, None]
    counted = pairs & has_negative
    if not counted.any():
        return embeddings.sum() * 0.0
    return torch.relu(distances - chosen + margin)[counted].mean()
