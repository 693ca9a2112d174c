"""Next-item losses over the shared item embedding table, swappable by config type.

Every loss reads the hidden states of the positions that have a target
(``hidden [N, d]``, ``targets [N]``) and may take extra per-position negatives
from a hard-negative sampler (``SampledNegatives``: items, log-probabilities,
validity). Invalid and accidental-hit negatives never contribute.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from recmodels.config import PartConfig
from recmodels.graph.sampler import SampledNegatives


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
        """Mean loss over the N positions."""


def _uniform_items(shape: tuple[int, ...], n_items: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randint(1, n_items + 1, shape, generator=generator).to(device)


class BinaryCrossEntropy(NextItemLoss):
    """Original SASRec: the positive against one negative per position.

    The negative is the sampler's first valid draw when a sampler is given, else uniform.
    """

    def __call__(self, hidden, targets, embeddings, generator, extra=None):
        n_items = embeddings.shape[0] - 1
        negatives = _uniform_items(targets.shape, n_items, generator, hidden.device)
        if extra is not None:
            usable = extra.valid[:, 0]
            negatives = torch.where(usable, extra.items[:, 0], negatives)
        positive_logits = (hidden * F.embedding(targets, embeddings)).sum(-1)
        negative_logits = (hidden * F.embedding(negatives, embeddings)).sum(-1)
        not_hit = negatives != targets
        positive_loss = F.softplus(-positive_logits)
        negative_loss = F.softplus(negative_logits) * not_hit
        return (positive_loss + negative_loss).mean()


class SampledSoftmax(NextItemLoss):
    """Softmax over the positive and sampled negatives (eSASRec, gSASRec lineage).

    ``n_negatives`` uniform negatives are shared by every position of a batch, so
    their logits are one matrix product; per-position negatives from a sampler are
    appended. With ``logq_correction`` each negative logit is reduced by the log of
    its sampling probability (``log 1/n`` for the uniform ones), which turns the
    loss into an estimate of the full softmax; leave it off to keep the emphasis
    hard negatives are drawn for (eSASRec trains uncorrected with uniform negatives).
    """

    def __init__(self, n_negatives: int, logq_correction: bool) -> None:
        self.n_negatives = n_negatives
        self.logq_correction = logq_correction

    def __call__(self, hidden, targets, embeddings, generator, extra=None):
        n_items = embeddings.shape[0] - 1
        shared = _uniform_items((self.n_negatives,), n_items, generator, hidden.device)
        positive_logits = (hidden * F.embedding(targets, embeddings)).sum(-1, keepdim=True)
        shared_logits = hidden @ F.embedding(shared, embeddings).T
        shared_logits = shared_logits.masked_fill(shared[None, :] == targets[:, None], float("-inf"))
        parts = [positive_logits, shared_logits]
        if self.logq_correction:
            parts[1] = shared_logits + math.log(n_items)
        if extra is not None:
            extra_logits = torch.einsum("nd,nkd->nk", hidden, F.embedding(extra.items, embeddings))
            blocked = ~extra.valid | (extra.items == targets[:, None])
            if self.logq_correction:
                extra_logits = extra_logits - extra.log_q
            parts.append(extra_logits.masked_fill(blocked, float("-inf")))
        logits = torch.cat(parts, dim=1)
        return F.cross_entropy(logits, torch.zeros_like(targets))


class FullSoftmax(NextItemLoss):
    """Cross-entropy over the whole catalogue: exact, affordable for small catalogues."""

    def __call__(self, hidden, targets, embeddings, generator, extra=None):
        logits = hidden @ embeddings.T
        logits[:, 0] = float("-inf")
        return F.cross_entropy(logits, targets)


@dataclass(frozen=True)
class BCELossConfig(PartConfig):
    kind = "bce"

    def build(self) -> NextItemLoss:
        return BinaryCrossEntropy()


@dataclass(frozen=True)
class SampledSoftmaxConfig(PartConfig):
    kind = "sampled_softmax"
    n_negatives: int = 256
    logq_correction: bool = False

    def build(self) -> NextItemLoss:
        if self.n_negatives < 1:
            raise ValueError(f"n_negatives must be >= 1, got {self.n_negatives}")
        return SampledSoftmax(self.n_negatives, self.logq_correction)


@dataclass(frozen=True)
class FullSoftmaxConfig(PartConfig):
    kind = "full_softmax"

    def build(self) -> NextItemLoss:
        return FullSoftmax()
