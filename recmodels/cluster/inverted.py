"""Inverted lists cluster -> items for cluster-restricted scoring, stored unpadded (CSR: offsets + flat ids).

Padding every list to the longest made a query pay for ``m x longest`` candidate slots: on unbalanced clusters
(Yelp's largest list held 27% of the items, the mean 1.3%) most of the work was padding. Here a query pays for
the lengths of the lists it chose, and ``gather_lists`` lays them end to end with plain tensor ops, so the same
code runs in PyTorch and inside the exported ONNX graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FILE = "inverted_index.npz"


@dataclass(frozen=True)
class InvertedIndex:
    """List ``c`` is ``items[offsets[c]:offsets[c + 1]]`` (internal item ids, never 0)."""

    offsets: np.ndarray  # int64 [C + 1], offsets[0] = 0
    items: np.ndarray  # int64 [total listed]

    def __post_init__(self) -> None:
        offsets, items = self.offsets, self.items
        if offsets.ndim != 1 or len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != len(items):
            raise ValueError(f"offsets must run from 0 to the {len(items)} listed items, got {offsets[:3]}...")
        if (np.diff(offsets) < 0).any():
            raise ValueError("offsets must not decrease")
        if len(items) and items.min() < 1:
            raise ValueError("lists hold item ids >= 1 (0 is padding)")

    @classmethod
    def from_pairs(cls, clusters: np.ndarray, items: np.ndarray, n_clusters: int) -> "InvertedIndex":
        """From (cluster, item) pairs already ordered by cluster, each list in the order given."""
        sizes = np.bincount(clusters, minlength=n_clusters)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        return cls(offsets, items.astype(np.int64))

    @classmethod
    def thresholded(cls, memberships: np.ndarray, threshold: float) -> "InvertedIndex":
        """Items with membership >= ``threshold`` in a cluster, and every item in its strongest cluster; lists
        ascending. ``memberships``: ``[n_items + 1, C]``, row 0 padding."""
        listed = memberships >= threshold
        listed[np.arange(len(memberships)), memberships.argmax(axis=1)] = True
        listed[0] = False
        clusters, items = np.nonzero(listed.T)
        return cls.from_pairs(clusters, items, memberships.shape[1])

    @classmethod
    def shortlisted(cls, memberships: np.ndarray, length: int) -> "InvertedIndex":
        """Each cluster's ``length`` items of highest membership, strongest first (ties to the lower id): the
        notebook's shortlist, where an item may be in no list."""
        scores = memberships[1:].T  # [C, n_items]
        ids = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
        order = np.lexsort((ids, -scores), axis=-1)[:, :length]
        clusters = np.repeat(np.arange(scores.shape[0]), order.shape[1])
        return cls.from_pairs(clusters, order.ravel() + 1, scores.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def list(self, cluster: int) -> np.ndarray:
        return self.items[self.offsets[cluster] : self.offsets[cluster + 1]]

    def save(self, folder: Path) -> None:
        np.savez(Path(folder) / FILE, offsets=self.offsets, items=self.items)

    @classmethod
    def load(cls, folder: Path) -> "InvertedIndex":
        with np.load(Path(folder) / FILE) as arrays:
            return cls(arrays["offsets"], arrays["items"])


def gather_lists(offsets: torch.Tensor, items: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``[B, T]``: row b's chosen lists (``chosen [B, m]`` cluster ids) end to end, then 0 up to ``T``, the
    longest row's total (at least 1). A slot finds its list by counting the list ends at or before it (``m``
    compares per slot, no search op, so it exports to ONNX); ``items`` must be non-empty."""
    starts = offsets[chosen]
    lengths = offsets[chosen + 1] - starts
    ends = torch.cumsum(lengths, dim=1)
    totals = ends[:, -1:]
    positions = torch.arange(totals.max().clamp_min(1), device=chosen.device)[None, :]  # [1, T]
    slot = (positions[:, None, :] >= ends[:, :, None]).sum(1).clamp(max=chosen.shape[1] - 1)  # [B, T]
    within = positions - (ends - lengths).gather(1, slot)
    flat = (starts.gather(1, slot) + within).clamp(max=items.shape[0] - 1)
    return torch.where(positions < totals, items[flat], torch.zeros_like(flat))
