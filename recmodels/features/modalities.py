"""Every modality an item carries, aligned with internal item ids: title text, genres, release year.

A model that fuses modalities reads this one container; each modality says which items have it, so an
item without one gets the model's learned "missing" vector instead of a zero or a crash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recmodels.features.side import ItemSideFeatures
from recmodels.features.text import TitleEmbeddings, TitleEncoder, aligned_titles, embed_titles

FILE = "modalities.json"


@dataclass(frozen=True)
class ItemModalities:
    """``text``: title embeddings; ``side``: genres and years. Either is ``None`` where the dataset has none."""

    text: TitleEmbeddings | None
    side: ItemSideFeatures | None

    @classmethod
    def from_items(
        cls,
        items: pd.DataFrame | None,
        item_ids: np.ndarray,
        encoder: TitleEncoder,
        cache: Path | None = None,
    ) -> "ItemModalities":
        """From the canonical item table (``item_id``, ``title``, ``year``, ``genres``) of a catalogue whose
        internal item ``i`` is ``item_ids[i]``; ``items`` ``None`` (no metadata) gives no modality."""
        if items is None:
            return cls(None, None)
        titles = aligned_titles(items, item_ids)
        text = embed_titles(titles, encoder, cache) if any(title is not None for title in titles) else None
        return cls(text, ItemSideFeatures.from_metadata(items, item_ids))

    @property
    def names(self) -> tuple[str, ...]:
        """The modalities present, in a fixed order."""
        return tuple(name for name, present in self.presence().items() if present is not None)

    def presence(self) -> dict[str, np.ndarray | None]:
        """Per modality, ``[n_items + 1]`` bool: which items have it (row 0 padding never does)."""
        text = None if self.text is None else self.text.present
        genres = years = None
        if self.side is not None:
            genres = np.diff(self.side.genres.indptr) > 0
            years = ~np.isnan(self.side.years)
        return {"text": text, "genres": genres, "year": years}

    def coverage(self) -> dict[str, float]:
        """Share of catalogue items (padding excluded) that have each present modality."""
        return {name: float(mask[1:].mean()) for name, mask in self.presence().items() if mask is not None}

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        if self.text is not None:
            self.text.save(folder)
        if self.side is not None:
            self.side.save(folder)
        (folder / FILE).write_text(json.dumps({"text": self.text is not None, "side": self.side is not None}))

    @classmethod
    def load(cls, folder: Path) -> "ItemModalities":
        folder = Path(folder)
        saved = json.loads((folder / FILE).read_text())
        text = TitleEmbeddings.load(folder) if saved["text"] else None
        side = ItemSideFeatures.load(folder) if saved["side"] else None
        if saved["side"] and side is None:
            raise FileNotFoundError(f"{folder}: {FILE} lists genres and years but their file is missing")
        return cls(text, side)
