"""The values batch assets hand to the IO layer, each with its folder format (``save`` / ``load``).

Library objects (splits, models, overlaps, clusters) carry their own format; these are the
pipeline's containers around tables and files that have no library class.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recmodels.leaderboard import Leaderboard, load_per_user
from recmodels.registry import CHAMPION_FILE, EXPLAIN_FILE, MANIFEST_FILE, MODEL_FILE, Manifest


def _write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document, indent=2, sort_keys=True, default=int))


def _optional_parquet(path: Path) -> pd.DataFrame | None:
    return pd.read_parquet(path) if path.exists() else None


@dataclass(frozen=True)
class RawSnapshot:
    """A byte-for-byte copy of the source dataset (a folder or a file) the run starts from."""

    path: Path

    def save(self, folder: Path) -> None:
        target = folder / self.path.name
        (shutil.copytree if self.path.is_dir() else shutil.copy2)(self.path, target)

    @classmethod
    def load(cls, folder: Path) -> "RawSnapshot":
        (entry,) = [child for child in Path(folder).iterdir() if not child.name.startswith(".")]
        return cls(entry)


@dataclass(frozen=True)
class ValidatedRows:
    """Rows that passed validation, the valid item metadata, and what kind of dataset it is."""

    interactions: pd.DataFrame
    items: pd.DataFrame | None
    name: str
    has_timestamps: bool

    def save(self, folder: Path) -> None:
        self.interactions.to_parquet(folder / "interactions.parquet", index=False)
        if self.items is not None:
            self.items.to_parquet(folder / "items.parquet", index=False)
        _write_json(folder / "dataset.json", {"name": self.name, "has_timestamps": self.has_timestamps})

    @classmethod
    def load(cls, folder: Path) -> "ValidatedRows":
        meta = json.loads((folder / "dataset.json").read_text())
        return cls(
            pd.read_parquet(folder / "interactions.parquet"),
            _optional_parquet(folder / "items.parquet"),
            meta["name"],
            meta["has_timestamps"],
        )


@dataclass(frozen=True)
class QuarantinedRows:
    """Rejected rows with their reasons, and the counts that reconcile them with the input."""

    rows: pd.DataFrame
    items: pd.DataFrame | None
    summary: dict[str, Any]

    def save(self, folder: Path) -> None:
        self.rows.to_parquet(folder / "rows.parquet", index=False)
        if self.items is not None:
            self.items.to_parquet(folder / "items.parquet", index=False)
        _write_json(folder / "summary.json", self.summary)

    @classmethod
    def load(cls, folder: Path) -> "QuarantinedRows":
        return cls(
            pd.read_parquet(folder / "rows.parquet"),
            _optional_parquet(folder / "items.parquet"),
            json.loads((folder / "summary.json").read_text()),
        )

    @property
    def share(self) -> float:
        return self.summary["rows_quarantined"] / max(self.summary["rows_in"], 1)

    @property
    def reconciles(self) -> bool:
        """Rows in = rows kept + rows quarantined."""
        return self.summary["rows_in"] == self.summary["rows_kept"] + self.summary["rows_quarantined"]


@dataclass(frozen=True)
class TransitionGraph:
    """The weighted item transition graph and the window it was built with."""

    matrix: sp.csr_matrix
    max_distance: int

    def save(self, folder: Path) -> None:
        sp.save_npz(folder / "graph.npz", self.matrix)
        _write_json(folder / "graph.json", {"max_distance": self.max_distance})

    @classmethod
    def load(cls, folder: Path) -> "TransitionGraph":
        parameters = json.loads((folder / "graph.json").read_text())
        return cls(sp.load_npz(folder / "graph.npz").tocsr(), parameters["max_distance"])


@dataclass(frozen=True)
class ItemEmbeddings:
    """One vector per item (row = internal id, row 0 padding) and how it was made."""

    vectors: np.ndarray
    seed: int
    source: str

    def save(self, folder: Path) -> None:
        np.save(folder / "item_embeddings.npy", self.vectors)
        _write_json(
            folder / "item_embeddings.json",
            {"dim": int(self.vectors.shape[1]), "seed": self.seed, "source": self.source},
        )

    @classmethod
    def load(cls, folder: Path) -> "ItemEmbeddings":
        parameters = json.loads((folder / "item_embeddings.json").read_text())
        return cls(np.load(folder / "item_embeddings.npy"), parameters["seed"], parameters["source"])


@dataclass(frozen=True)
class SavedLeaderboard:
    """What the leaderboard asset writes: the ranking with its per-user values, under its protocol."""

    board: Leaderboard
    protocol: str

    def save(self, folder: Path) -> None:
        self.board.save(folder, protocol=self.protocol)


@dataclass(frozen=True)
class LeaderboardTables:
    """A stored leaderboard as its readers use it: the table, its settings, per-user values."""

    table: pd.DataFrame
    settings: dict[str, Any]
    users: np.ndarray
    per_user: dict[str, dict[str, np.ndarray]]

    @classmethod
    def load(cls, folder: Path) -> "LeaderboardTables":
        users, per_user = load_per_user(folder)
        document = json.loads((folder / "leaderboard.json").read_text())
        return cls(pd.read_csv(folder / "leaderboard.csv"), document["settings"], users, per_user)


@dataclass(frozen=True)
class ExportedModel:
    """An ONNX export and its record: contract, providers, the parity report against PyTorch."""

    onnx: bytes
    record: dict[str, Any]
    explain_onnx: bytes | None = None  # the explanation graph, for families that have one

    def save(self, folder: Path) -> None:
        (folder / MODEL_FILE).write_bytes(self.onnx)
        if self.explain_onnx is not None:
            (folder / EXPLAIN_FILE).write_bytes(self.explain_onnx)
        _write_json(folder / "export.json", self.record)

    @classmethod
    def load(cls, folder: Path) -> "ExportedModel":
        explain = folder / EXPLAIN_FILE
        record = json.loads((folder / "export.json").read_text())
        return cls((folder / MODEL_FILE).read_bytes(), record, explain.read_bytes() if explain.exists() else None)

    @property
    def parity_passed(self) -> bool:
        """The scoring graph's parity and, where there is one, the explanation graph's."""
        explanation = self.record.get("explain")
        return bool(self.record["parity"]["passed"]) and (explanation is None or explanation["parity"]["passed"])


@dataclass(frozen=True)
class RegisteredModel:
    """A registry entry, ``<registry>/<model>/<version>/``: the ONNX file and the manifest a service needs.

    Its folder is named by the ONNX file's hash (``version_name``), so a service can check the bytes.
    """

    onnx: bytes
    manifest: Manifest
    explain_onnx: bytes | None = None

    @property
    def version_name(self) -> str:
        return self.manifest.version

    def save(self, folder: Path) -> None:
        (folder / MODEL_FILE).write_bytes(self.onnx)
        if self.explain_onnx is not None:
            (folder / EXPLAIN_FILE).write_bytes(self.explain_onnx)
        (folder / MANIFEST_FILE).write_text(self.manifest.to_json())

    @classmethod
    def load(cls, folder: Path) -> "RegisteredModel":
        explain = folder / EXPLAIN_FILE
        return cls(
            (folder / MODEL_FILE).read_bytes(),
            Manifest.read(folder),
            explain.read_bytes() if explain.exists() else None,
        )


@dataclass(frozen=True)
class ChampionPointer:
    """Which registered model services load by default, and why."""

    model: str
    version: str
    reason: str

    def save(self, folder: Path) -> None:
        _write_json(folder / CHAMPION_FILE, {"model": self.model, "version": self.version, "reason": self.reason})

    @classmethod
    def load(cls, folder: Path) -> "ChampionPointer":
        return cls(**json.loads((folder / CHAMPION_FILE).read_text()))


@dataclass(frozen=True)
class SoftClusters:
    """Every item's memberships over a model's clusters (row = internal item id, row 0 padding)."""

    memberships: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        """Items per cluster, each item counted in its strongest cluster."""
        return np.bincount(self.memberships[1:].argmax(axis=1), minlength=self.memberships.shape[1])

    @property
    def mean_entropy(self) -> float:
        """Mean entropy (nats) of the items' memberships normalised to sum to one: 0 = hard clusters."""
        share = self.memberships[1:] / np.clip(self.memberships[1:].sum(axis=1, keepdims=True), 1e-12, None)
        return float(-(share * np.log(np.clip(share, 1e-12, None))).sum(axis=1).mean())

    def save(self, folder: Path) -> None:
        np.save(folder / "memberships.npy", self.memberships)

    @classmethod
    def load(cls, folder: Path) -> "SoftClusters":
        return cls(np.load(Path(folder) / "memberships.npy"))
