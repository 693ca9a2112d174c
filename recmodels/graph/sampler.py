"""Negative samplers for next-item training: GNNO's neighbourhood hard negatives and uniform.

Hard negatives come from the target's graph neighbourhood (items with overlapping
neighbours), capped by a curriculum threshold because items overlapping too much
are likely false negatives. Every draw reports its sampling probability so the
loss can apply the logQ correction of sampled softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from recmodels.graph.overlap import NeighbourhoodOverlap


@dataclass(frozen=True)
class SampledNegatives:
    items: torch.Tensor  # int64 [..., n]
    log_q: torch.Tensor  # float32 [..., n]: log probability each negative was drawn with (logQ correction)
    valid: torch.Tensor  # bool [..., n]: False where no admissible negative was drawn; the loss ignores those

    def to(self, device: torch.device) -> "SampledNegatives":
        return SampledNegatives(self.items.to(device), self.log_q.to(device), self.valid.to(device))


@dataclass(frozen=True)
class HardNegativeConfig:
    n_negatives: int = 16  # per position
    uniform_share: float = 0.5  # share of slots drawn uniformly over the catalogue instead of the neighbourhood
    temperature: float = 1.0  # softmax temperature over overlap scores

    def __post_init__(self) -> None:
        if self.n_negatives < 1:
            raise ValueError(f"n_negatives must be >= 1, got {self.n_negatives}")
        if not 0.0 <= self.uniform_share <= 1.0:
            raise ValueError(f"uniform_share must lie in [0, 1], got {self.uniform_share}")
        if self.temperature <= 0.0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


class NegativeSampler(Protocol):
    """What a model needs from a sampler, so hard and uniform negatives are interchangeable."""

    def sample(
        self, targets: torch.Tensor, histories: torch.Tensor, threshold: float, generator: torch.Generator
    ) -> SampledNegatives: ...


class NeighbourhoodNegativeSampler:
    """Mixture of softmax-over-overlap draws from the target's neighbourhood and uniform draws.

    Works on CPU tensors (the overlap tables live on the CPU).
    """

    def __init__(self, overlap: NeighbourhoodOverlap, n_items: int, config: HardNegativeConfig = HardNegativeConfig()):
        if overlap.n_items != n_items:
            raise ValueError(f"overlap covers {overlap.n_items} items, sampler was given n_items={n_items}")
        self.candidates = torch.from_numpy(overlap.items)
        self.scores = torch.from_numpy(overlap.scores)
        self.n_items = n_items
        self.config = config

    def sample(
        self, targets: torch.Tensor, histories: torch.Tensor, threshold: float, generator: torch.Generator
    ) -> SampledNegatives:
        """Negatives ``[B, L, n]`` for targets ``[B, L]`` (0 = padding) given 0-padded histories ``[B, H]``.

        Neighbourhood candidates of ``t`` are its overlap items with ``0 < score <= threshold``;
        a neighbourhood slot of a target without any falls back to a uniform draw.
        """
        n_slots, share = self.config.n_negatives, self.config.uniform_share
        real = _real_positions(targets)
        flat_targets = targets.reshape(-1)[real]
        candidates, scores = self.candidates[flat_targets], self.scores[flat_targets]
        admissible = (scores > 0) & (scores <= threshold)
        has_neighbourhood = admissible.any(dim=1)
        # Rows without candidates keep a harmless distribution: their draws are replaced below.
        drawable = admissible | ~has_neighbourhood[:, None]
        probabilities = torch.softmax((scores / self.config.temperature).masked_fill(~drawable, -math.inf), dim=1)

        columns = torch.multinomial(probabilities, n_slots, replacement=True, generator=generator)
        neighbourhood_draws = candidates.gather(1, columns)
        uniform_draws = _uniform_items(flat_targets.shape[0], n_slots, self.n_items, generator)
        neighbourhood_slot = torch.rand(flat_targets.shape[0], n_slots, generator=generator) >= share
        use_neighbourhood = neighbourhood_slot & has_neighbourhood[:, None]
        drawn = torch.where(use_neighbourhood, neighbourhood_draws, uniform_draws)

        drawn_hood_probability = _probability_of(drawn, candidates, probabilities, admissible)
        mixture = (1.0 - share) * drawn_hood_probability + share / self.n_items
        uniform_log_q = -math.log(self.n_items)
        log_q = torch.where(has_neighbourhood[:, None], torch.log(mixture), uniform_log_q).to(torch.float32)
        return _finish(drawn, log_q, real, targets, histories, self.n_items)


class UniformNegativeSampler:
    """Uniform negatives over items 1..n_items: the baseline GNNO's hard negatives are compared with."""

    def __init__(self, n_items: int, n_negatives: int = 16):
        if n_items < 1 or n_negatives < 1:
            raise ValueError(f"n_items and n_negatives must be >= 1, got {n_items} and {n_negatives}")
        self.n_items = n_items
        self.n_negatives = n_negatives

    def sample(
        self, targets: torch.Tensor, histories: torch.Tensor, threshold: float, generator: torch.Generator
    ) -> SampledNegatives:
        """Negatives ``[B, L, n]``; ``threshold`` is ignored (there is no curriculum for uniform draws)."""
        real = _real_positions(targets)
        drawn = _uniform_items(len(real), self.n_negatives, self.n_items, generator)
        log_q = torch.full(drawn.shape, -math.log(self.n_items), dtype=torch.float32)
        return _finish(drawn, log_q, real, targets, histories, self.n_items)


def _real_positions(targets: torch.Tensor) -> torch.Tensor:
    """Flat indices of the positions with a target: the only ones worth drawing for
    (padding is most of a short-sequence batch)."""
    return torch.nonzero(targets.reshape(-1)).squeeze(1)


def _uniform_items(n_rows: int, n_slots: int, n_items: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(1, n_items + 1, (n_rows, n_slots), generator=generator)


def _probability_of(
    drawn: torch.Tensor, candidates: torch.Tensor, probabilities: torch.Tensor, admissible: torch.Tensor
) -> torch.Tensor:
    """Neighbourhood probability of each drawn item (0 outside the admissible set), by per-row binary search."""
    outside = torch.iinfo(torch.int64).max
    sorted_candidates, order = torch.where(admissible, candidates, outside).sort(dim=1)
    sorted_probabilities = probabilities.gather(1, order)
    positions = torch.searchsorted(sorted_candidates, drawn).clamp(max=candidates.shape[1] - 1)
    found = sorted_candidates.gather(1, positions) == drawn
    return torch.where(found, sorted_probabilities.gather(1, positions), 0.0)


def _finish(
    drawn: torch.Tensor,
    log_q: torch.Tensor,
    real: torch.Tensor,
    targets: torch.Tensor,
    histories: torch.Tensor,
    n_items: int,
) -> SampledNegatives:
    """Place the draws of the ``real`` positions in ``[B, L, n]`` and mark invalid the padding
    positions, a draw equal to the position's target, and a draw from the row's history."""
    batch, length = targets.shape
    stride = n_items + 1
    history_keys = (torch.arange(batch).unsqueeze(1) * stride + histories)[histories != 0]
    in_history = torch.isin((real // length).unsqueeze(1) * stride + drawn, history_keys)
    valid_draws = (drawn != targets.reshape(-1)[real].unsqueeze(1)) & ~in_history
    shape = (batch * length, drawn.shape[1])
    items = torch.zeros(shape, dtype=drawn.dtype).index_copy_(0, real, drawn)
    valid = torch.zeros(shape, dtype=torch.bool).index_copy_(0, real, valid_draws)
    log_q = torch.zeros(shape, dtype=log_q.dtype).index_copy_(0, real, log_q)
    return SampledNegatives(
        items=items.reshape(batch, length, -1),
        log_q=log_q.reshape(batch, length, -1),
        valid=valid.reshape(batch, length, -1),
    )
