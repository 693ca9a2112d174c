"""The model contract: history in, a score for every item out.

No model keeps a user table. ``score`` reads a batch of histories and returns
``[batch, n_items + 1]`` scores (column 0 is padding) by running the family's
``scorer()``, a torch module from padded history ids to scores: the same module
ONNX export traces, so served and evaluated scores come from one code path.
Masking seen items,
top-k and evaluation live outside the models (``recmodels.evaluation``), so
every family is ranked, compared and exported the same way.

A model is saved as ``config.json`` (family, typed config, catalogue size, and
``upstream``: the parameters of what ``fit`` consumed besides the split) and
``weights.pt`` (a flat dict of tensors, loaded with ``weights_only=True``):
never a pickled object.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from torch import nn

from recmodels.config import Configurable
from recmodels.data.history import HistoryBatch
from recmodels.data.splits import SplitData
from recmodels.train import TrainingHistory

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"


@dataclass(frozen=True)
class ModelConfig(Configurable):
    """Base of every model's typed configuration; round-trips through JSON."""

    seed: int = 0


class Recommender(ABC):
    """A model family: typed config in, ``fit`` on a split, ``score`` histories."""

    family: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    # Users scored per batch in evaluation: the fastest size differs by family.
    evaluation_batch_size: ClassVar[int] = 1024
    _families: ClassVar[dict[str, type["Recommender"]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "family" in cls.__dict__:
            Recommender._families[cls.family] = cls

    def __init__(self, config: ModelConfig | None = None) -> None:
        config = config if config is not None else self.config_class()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.n_items: int | None = None
        # What fit consumed besides the split (item clusters, neighbourhood overlap), by fit keyword:
        # {"parameters": what it was built with}; the pipeline adds the asset and its DVC md5.
        self.upstream: dict[str, dict[str, Any]] = {}

    @abstractmethod
    def fit(self, split: SplitData) -> Self:
        """Learn from ``split.train``; may use ``split.valid`` for early stopping."""

    @abstractmethod
    def scorer(self) -> nn.Module:
        """``forward(history int64 [B, L], 0 = padding) -> float32 [B, n_items + 1]``, in eval mode."""

    @torch.inference_mode()
    def score(self, batch: HistoryBatch) -> torch.Tensor:
        """Scores ``float32 [batch, n_items + 1]`` for every item given each history."""
        self._require_fitted()
        scorer = self.scorer()
        device = next(iter([*scorer.parameters(), *scorer.buffers()]), torch.empty(0)).device
        return scorer(batch.items.to(device)).float().cpu()

    @abstractmethod
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything ``score`` needs besides the config, as tensors."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...

    @property
    def max_history_length(self) -> int | None:
        """Most recent items ``score`` reads; None reads the whole history."""
        return None

    @property
    def is_fitted(self) -> bool:
        return self.n_items is not None

    def _require_fitted(self) -> int:
        if self.n_items is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() or load()")
        return self.n_items

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "family": self.family,
            "n_items": self._require_fitted(),
            "config": self.config.to_dict(),
            "upstream": self.upstream,
        }
        (path / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        torch.save(self.state_dict(), path / WEIGHTS_FILE)

    @staticmethod
    def load(path: Path) -> "Recommender":
        """Rebuild any family from a folder written by ``save``."""
        path = Path(path)
        meta = json.loads((path / CONFIG_FILE).read_text())
        family = meta["family"]
        if family not in Recommender._families:
            raise ValueError(f"{path}: unknown model family {family!r}; known: {sorted(Recommender._families)}")
        cls = Recommender._families[family]
        model = cls(cls.config_class.from_dict(meta["config"]))
        model.n_items = int(meta["n_items"])
        model.upstream = meta["upstream"]
        model.load_state_dict(torch.load(path / WEIGHTS_FILE, weights_only=True))
        return model


class TorchRecommender(Recommender):
    """A family whose whole state is one torch module, trained by the shared loop.

    ``history`` holds the training curves of the last ``fit``.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__(config)
        self.module: nn.Module | None = None
        self.history = TrainingHistory()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: tensor.cpu() for name, tensor in self.module.state_dict().items()}


def model_family(name: str) -> type[Recommender]:
    if name not in Recommender._families:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(Recommender._families)}")
    return Recommender._families[name]
