"""The eSASRec paper's leave-one-out settings per dataset, as data: ``paper_settings.toml`` read into typed rows.

A row holds what the authors' configuration files and trainer state (sizes, negatives, optimiser, the epoch cap,
the stopping rule, the key padding mask) and whether to train as their RecTools code does (what the files leave to
RecTools' defaults); ``PaperSetting.apply`` puts it on a preset of the SASRec family, so the benchmark and the model
assets train the paper's configuration without a branch per dataset. Each part is a measured change of the
reproduction (docs/sequential.md).
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from recmodels.config import Configurable
from recmodels.models.sasrec import rectools_training

TABLE = Path(__file__).with_name("paper_settings.toml")


@dataclass(frozen=True)
class PaperSetting(Configurable):
    """One dataset's settings for one variant (``sasrec_ss`` or ``esasrec``; a ``_gnno`` variant uses its base's)."""

    dataset: str
    variant: str
    source: str
    dim: int
    blocks: int
    heads: int
    max_len: int
    dropout: float
    ff_mult: int
    n_negatives: int
    lr: float
    batch_size: int
    max_epochs: int
    patience: int
    stop_on: str
    rectools_training: bool
    xavier_as_rectools: bool
    key_padding_mask: bool
    published_recall_at_10: float
    published_ndcg_at_10: float

    def __post_init__(self) -> None:
        """A value of another type (``dim = 256.0``, ``patience = "50"``) is refused: the table is typed."""
        for name, kind in typing.get_type_hints(PaperSetting).items():
            value = getattr(self, name)
            allowed = (int, float) if kind is float else kind
            if not isinstance(value, allowed) or (kind is not bool and isinstance(value, bool)):
                raise ValueError(f"{name} must be {kind.__name__}, got {value!r}")
        if self.xavier_as_rectools and not self.rectools_training:
            raise ValueError("xavier_as_rectools draws RecTools' Xavier-normal start: it needs rectools_training")

    def apply(self, config: Any) -> Any:
        """``config`` (a ``SASRecConfig``) with this row's sizes, negatives, optimiser and stopping rule, trained as
        RecTools trains (``rectools_training``) and started over RecTools' parameter shapes where the row says so."""
        backbone = dataclasses.replace(
            config.backbone,
            dim=self.dim,
            blocks=self.blocks,
            heads=self.heads,
            max_len=self.max_len,
            dropout=self.dropout,
            ff_mult=self.ff_mult,
            # the presets that drop out attention weights and item rows use the stack's rate (esasrec)
            attention_dropout=self.dropout if config.backbone.attention_dropout else 0.0,
            item_dropout=self.dropout if config.backbone.item_dropout else 0.0,
        )
        trainer = dataclasses.replace(
            config.trainer, lr=self.lr, batch_size=self.batch_size, epochs=self.max_epochs, patience=self.patience
        )
        loss = dataclasses.replace(config.loss, n_negatives=self.n_negatives)
        config = dataclasses.replace(config, backbone=backbone, trainer=trainer, loss=loss, valid_metric=self.stop_on)
        if not self.rectools_training:
            return config
        config = rectools_training(config, self.key_padding_mask)
        backbone = dataclasses.replace(config.backbone, xavier_as_rectools=self.xavier_as_rectools)
        return dataclasses.replace(config, backbone=backbone)


@dataclass(frozen=True)
class PaperSettings:
    """The whole table: rows and the data file each dataset name reads."""

    rows: tuple[PaperSetting, ...]
    files: dict[str, str]

    def row(self, dataset: str, variant: str) -> PaperSetting:
        base = variant.removesuffix("_gnno")
        for row in self.rows:
            if row.dataset == dataset and row.variant == base:
                return row
        known = sorted({(row.dataset, row.variant) for row in self.rows})
        raise KeyError(f"no paper setting for dataset {dataset!r}, variant {base!r}; the table has {known}")

    def dataset_of(self, file: str) -> str | None:
        """The first dataset name that reads ``file`` (its config-file row), or None."""
        return next((name for name, path in self.files.items() if path == file), None)


@cache
def paper_settings(path: Path = TABLE) -> PaperSettings:
    """The table at ``path``; a row with an unknown or missing field fails naming the row."""
    table = tomllib.loads(path.read_text())
    rows = []
    for number, values in enumerate(table.get("setting", []), start=1):
        try:
            rows.append(PaperSetting.from_dict(values))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: setting {number} ({values.get('dataset')}, {values.get('variant')}): {error}")
    keys = [(row.dataset, row.variant) for row in rows]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: a dataset and variant appear twice: {sorted(k for k in keys if keys.count(k) > 1)}")
    return PaperSettings(tuple(rows), dict(table.get("files", {})))
