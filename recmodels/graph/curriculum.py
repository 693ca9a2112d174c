"""Curriculum over negative hardness: the overlap threshold the sampler may draw up to, per epoch.

Early epochs train on easy (uniform) negatives; once the model has learnt the
basics, the threshold grows linearly so harder, more overlapping items are let
in, capped where overlap starts to mean "probably a false negative".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


@dataclass(frozen=True)
class CurriculumSchedule:
    """Threshold 0 before ``start_epoch``, then ``min(max_hardness, pace * (epoch - start_epoch + 1))``.

    The defaults (start at epoch 19, pace 0.04, cap 0.5) are GNNO's settings for Amazon Beauty.
    Epochs are 0-based.
    """

    start_epoch: int = 19
    pace: float = 0.04
    max_hardness: float = 0.5

    def __post_init__(self) -> None:
        if self.start_epoch < 0:
            raise ValueError(f"start_epoch must be >= 0, got {self.start_epoch}")
        if self.pace < 0:
            raise ValueError(f"pace must be >= 0, got {self.pace}")
        if not 0.0 <= self.max_hardness <= 1.0:
            raise ValueError(f"max_hardness must lie in [0, 1], got {self.max_hardness}")

    def threshold(self, epoch: int) -> float:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        return float(self.values(epoch + 1)[epoch])

    def values(self, n_epochs: int) -> np.ndarray:
        """Thresholds of epochs ``0..n_epochs-1``."""
        if n_epochs < 0:
            raise ValueError(f"n_epochs must be >= 0, got {n_epochs}")
        epochs = np.arange(n_epochs)
        ramp = np.minimum(self.max_hardness, self.pace * (epochs - self.start_epoch + 1))
        return np.where(epochs < self.start_epoch, 0.0, ramp)


def plot_schedule(schedule: CurriculumSchedule, n_epochs: int, path: Path) -> Path:
    """PNG of the threshold per epoch, to check a schedule before spending a training run on it."""
    figure = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.step(np.arange(n_epochs), schedule.values(n_epochs), where="post")
    axes.set_xlabel("epoch")
    axes.set_ylabel("overlap threshold")
    axes.set_title(f"start {schedule.start_epoch}, pace {schedule.pace:g}, max {schedule.max_hardness:g}")
    axes.set_ylim(0, 1)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
