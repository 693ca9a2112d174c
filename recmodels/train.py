"""One training loop for every torch model: seeded, early-stopped, checkpointed, resumable.

A model hands the loop a ``TrainingTask``: its module, how to make an epoch's
batches, the loss of a batch and a validation score (higher is better). The
loop owns the optimiser, the random generator, early stopping on the
validation score, checkpoints after every epoch and resuming from them.

A checkpoint records what it was trained for (``Fingerprint``: sha256 of the resolved
config and of the training and validation data). A run resumes only a checkpoint of its
own config and data; any other is refused with both fingerprints, or, with
``TrainerConfig.restart_on_checkpoint_mismatch``, ignored and overwritten by a fresh run.
A resume may change only how long training runs and where (``RUN_CONTROL_FIELDS``), and with how many
ranks: under ``torchrun`` the same loop trains data-parallel (``recmodels.distributed``), rank 0 validating
and checkpointing, and a checkpoint of any number of ranks resumes with any other.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from recmodels.distributed import World, current_world

if TYPE_CHECKING:
    import scipy.sparse as sp

    from recmodels.data.interactions import Interactions
    from recmodels.data.splits import SplitData

CHECKPOINT_FILE = "checkpoint.pt"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerConfig:
    epochs: int = 200
    patience: int = 10
    min_epochs: int = 0
    lr: float = 1e-3
    weight_decay: float = 0.0
    # SASRec's and RecTools' transformers train with beta2 0.98: the second-moment
    # estimate of a rarely updated item embedding forgets its old gradients sooner.
    adam_betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 128
    validate_every: int = 1
    # Polyak averaging: 0 trains as the papers do; e.g. 0.99 validates and returns an
    # exponential moving average of the weights, which smooths the last updates' noise.
    ema_decay: float = 0.0
    device: str = "auto"
    progress: bool = False
    restart_on_checkpoint_mismatch: bool = field(
        default=False,
        metadata={
            "doc": "A checkpoint of another config or other data: False refuses it (an error naming both "
            "fingerprints), True trains afresh and overwrites it."
        },
    )


# How long a run trains, where, and how it reports: a checkpoint resumes under other values of
# these (a longer run, more patience, another device); any other trainer setting changes training.
RUN_CONTROL_FIELDS = frozenset(
    {"epochs", "patience", "min_epochs", "device", "progress", "restart_on_checkpoint_mismatch"}
)


@dataclass
class TrainingHistory:
    """Per-epoch figures; plotted as training curves in the model asset's metadata."""

    loss: list[float] = field(default_factory=list)
    valid_score: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    # seconds of each epoch spent in collectives (all-reduce, broadcast); empty for a single process
    communication_seconds: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = -1
    best_score: float = float("-inf")

    def as_dict(self) -> dict[str, Any]:
        return {
            "loss": self.loss,
            "valid_score": self.valid_score,
            "seconds": self.seconds,
            "communication_seconds": self.communication_seconds,
            "extra": self.extra,
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
        }


class TrainingTask(Protocol):
    """``module`` is optimised as one Adam group at ``lr``; a task may define
    ``parameter_groups(lr)`` to give parts their own learning rates.

    A task with a ``model`` (a ``Recommender``) and a ``split`` (a ``SplitData``), as the
    sequential and diffusion tasks have, puts the model's config and upstream parameters and
    the split's training and validation data into its checkpoints' ``Fingerprint``.
    """

    module: nn.Module

    def batches(self, epoch: int, generator: torch.Generator) -> Iterable[Any]:
        """The epoch's training batches, shuffled with ``generator``."""

    def loss(self, batch: Any, epoch: int, generator: torch.Generator) -> torch.Tensor: ...

    def validation_score(self) -> float:
        """Higher is better; computed with the module in eval mode."""

    def epoch_figures(self, epoch: int) -> dict[str, float]:
        """Extra per-epoch values worth plotting (e.g. a curriculum threshold)."""

    # Optional: ``loss_weight(batch) -> int``, the number of terms ``loss`` averages over (next-item positions,
    # say); ranks weight their shares of a batch by it, so a data-parallel update equals the single-process
    # one. Without it a batch's rows are its terms.


class CheckpointMismatchError(ValueError):
    """A checkpoint written for another config or other data than the run that found it."""


@dataclass(frozen=True)
class Fingerprint:
    """What a checkpoint was trained for: sha256 of the resolved config JSON and of the data.

    ``config_json`` is kept so a mismatch can name the settings that changed; ``data`` is None
    for a task that names no split.
    """

    config: str
    data: str | None
    config_json: str

    @classmethod
    def of(cls, task: TrainingTask, config: TrainerConfig, seed: int) -> "Fingerprint":
        model = getattr(task, "model", None)
        model_config = model.config.to_dict() if model is not None else None
        if model_config is not None:
            model_config.pop("trainer", None)  # the trainer's settings come from the loop's own config
        resolved = {
            "task": type(task).__qualname__,  # not its module path, which depends on how it was imported
            "seed": seed,
            "trainer": {
                name: value for name, value in dataclasses.asdict(config).items() if name not in RUN_CONTROL_FIELDS
            },
            "model": model_config,
            "upstream": getattr(model, "upstream", None),
            "module": {name: [list(value.shape), str(value.dtype)] for name, value in task.module.state_dict().items()},
        }
        config_json = json.dumps(resolved, sort_keys=True, separators=(",", ":"))
        split = getattr(task, "split", None)
        return cls(
            config=hashlib.sha256(config_json.encode()).hexdigest(),
            data=None if split is None else split_fingerprint(split),
            config_json=config_json,
        )

    def as_dict(self) -> dict[str, str | None]:
        return {"config": self.config, "data": self.data, "config_json": self.config_json}


def split_fingerprint(split: "SplitData") -> str:
    """sha256 of what training reads: the training interactions and the validation stage (not the test stage)."""
    digest = hashlib.sha256(f"protocol={split.protocol}".encode())
    parts = [
        *_interaction_parts("train", split.train),
        *_interaction_parts("valid.history", split.valid.history),
        *_matrix_parts("valid.targets", split.valid.targets),
        *_matrix_parts("valid.exclude", split.valid.exclude),
    ]
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def _interaction_parts(name: str, interactions: "Interactions") -> Iterator[bytes]:
    """Every id map and column, each behind its name, dtype and length (hashed values: ids are strings)."""
    for label, ids in (("user_ids", interactions.user_ids), ("item_ids", interactions.item_ids)):
        yield f"{name}.{label}:{len(ids)}".encode()
        yield pd.util.hash_array(np.asarray(ids, dtype=object)).tobytes()
    for column in interactions.frame.columns:
        values = interactions.frame[column]
        yield f"{name}.{column}:{values.dtype}:{len(values)}".encode()
        yield pd.util.hash_pandas_object(values, index=False).to_numpy().tobytes()


def _matrix_parts(name: str, matrix: "sp.csr_matrix") -> Iterator[bytes]:
    yield f"{name}:{matrix.shape}".encode()
    for part in (matrix.indptr, matrix.indices, matrix.data):
        yield f"{part.dtype}:{len(part)}".encode()
        yield np.ascontiguousarray(part).tobytes()


def _changed_settings(saved: str, current: str, shown: int = 6) -> str:
    """``trainer.lr 0.001 -> 0.01, ...``: the resolved settings that differ between two config JSONs."""

    def flat(value: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(value, dict):
            return {prefix: value}
        return {key: leaf for name, item in value.items() for key, leaf in flat(item, f"{prefix}{name}.").items()}

    before, after = flat(json.loads(saved)), flat(json.loads(current))
    changed = [
        f"{key.rstrip('.')} {before.get(key, '(absent)')} -> {after.get(key, '(absent)')}"
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    ]
    more = f", and {len(changed) - shown} more" if len(changed) > shown else ""
    return ", ".join(changed[:shown]) + more


def checkpoint_mismatch(path: Path, state: dict[str, Any], current: Fingerprint, epochs: int) -> str | None:
    """Why the checkpoint at ``path`` cannot continue this run (None when it can)."""
    saved = state.get("fingerprint")
    if saved is None:
        return f"checkpoint {path} records no fingerprint (it predates them), so its config and data are unknown"
    reasons = []
    if saved["config"] != current.config:
        changed = _changed_settings(saved["config_json"], current.config_json)
        reasons.append(f"config fingerprint {saved['config']} (checkpoint) != {current.config} (this run): {changed}")
    if saved["data"] != current.data:
        reasons.append(f"data fingerprint {saved['data']} (checkpoint) != {current.data} (this run)")
    if int(state["next_epoch"]) > epochs:
        reasons.append(f"it has trained {state['next_epoch']} epochs, more than this run's {epochs}")
    if not reasons:
        return None
    return f"checkpoint {path} does not match this run: " + "; ".join(reasons)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class WeightAverage:
    """Exponential moving average of a module's parameters (buffers stay the module's own).

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so a
    model that peaks after a few dozen steps is not averaged with its initial weights.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.parameters = list(module.parameters())
        self.average = [parameter.detach().clone() for parameter in self.parameters]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, parameter in zip(self.average, self.parameters):
            average.lerp_(parameter, 1.0 - decay)
        self.updates += 1

    def state(self) -> dict[str, Any]:
        return {"average": self.average, "updates": self.updates}

    def load(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for tensor, value in zip(self.average, state["average"]):
                tensor.copy_(value)
        self.updates = int(state["updates"])

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The averaged weights in the module for the duration, the trained ones back after."""
        with torch.no_grad():
            trained = [parameter.detach().clone() for parameter in self.parameters]
            for parameter, average in zip(self.parameters, self.average):
                parameter.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for parameter, value in zip(self.parameters, trained):
                    parameter.copy_(value)


class Trainer:
    """Adam, early stopping with patience, the best weights restored at the end."""

    def __init__(
        self,
        config: TrainerConfig,
        seed: int,
        checkpoint_dir: Path | None = None,
        on_epoch: Callable[[int, TrainingHistory], None] | None = None,
        world: World | None = None,
    ) -> None:
        self.config = config
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.on_epoch = on_epoch
        self.world = world if world is not None else current_world()

    def fit(self, task: TrainingTask, max_epochs: int | None = None) -> TrainingHistory:
        config = self.config
        epochs = config.epochs if max_epochs is None else min(config.epochs, max_epochs)
        module = task.module
        if config.validate_every < 1:
            raise ValueError(f"validate_every must be >= 1, got {config.validate_every}")
        groups = getattr(task, "parameter_groups", None)
        parameters = groups(config.lr) if groups is not None else module.parameters()
        # The fused kernel does Adam's element-wise update in one pass per tensor: on a CPU
        # the unfused update of DiffRec's 3.4 M parameters cost as much as the matrix products.
        optimiser = torch.optim.Adam(
            parameters, lr=config.lr, betas=config.adam_betas, weight_decay=config.weight_decay, fused=True
        )
        generator = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)  # dropout draws from the global generator
        history = TrainingHistory()
        best_state = copy.deepcopy(module.state_dict())
        average = WeightAverage(module, config.ema_decay) if config.ema_decay > 0 else None
        start = 0
        checkpoint = None if self.checkpoint_dir is None else self.checkpoint_dir / CHECKPOINT_FILE
        fingerprint = None if checkpoint is None else Fingerprint.of(task, config, self.seed)
        if checkpoint is not None and checkpoint.exists():
            state = torch.load(checkpoint, weights_only=True)
            mismatch = checkpoint_mismatch(checkpoint, state, fingerprint, epochs)
            if mismatch is None:
                start, history, best_state = self._resume(state, module, optimiser, generator, average)
            elif config.restart_on_checkpoint_mismatch:
                log.warning("%s; training from scratch (restart_on_checkpoint_mismatch): it is overwritten", mismatch)
            else:
                raise CheckpointMismatchError(
                    f"{mismatch}. Refusing to resume: use another checkpoint directory, delete "
                    f"{self.checkpoint_dir}, or set trainer.restart_on_checkpoint_mismatch=True to train from "
                    "scratch (its first epoch overwrites the checkpoint)"
                )

        world = self.world
        for epoch in range(start, epochs):
            patience_ran_out = history.best_epoch >= 0 and epoch - history.best_epoch > config.patience
            if patience_ran_out and epoch >= config.min_epochs:
                break
            started, communicated = time.perf_counter(), world.communication_seconds
            module.train()
            total, count = 0.0, 0
            batches = task.batches(epoch, generator)
            # a single process draws the loss's randomness from the batch generator, as it always has; ranks keep
            # the batch generator identical and draw from their own, seeded by epoch and rank (resumable anywhere)
            loss_generator = generator if not world.distributed else self._rank_generator(epoch)
            for batch in tqdm(batches, desc=f"epoch {epoch}", disable=not config.progress, leave=False):
                optimiser.zero_grad(set_to_none=True)
                total += self._step(task, batch, epoch, loss_generator)
                optimiser.step()
                if average is not None:
                    average.update()
                count += 1
            world.follow_main_buffers(module)
            seconds = time.perf_counter() - started
            score = float("nan")
            with average.swapped_in() if average is not None else nullcontext():
                if (epoch + 1) % config.validate_every == 0 or epoch == epochs - 1:
                    if world.is_main:
                        module.eval()
                        with torch.inference_mode():
                            score = task.validation_score()
                    score = world.broadcast(score)
                if score > history.best_score:
                    history.best_score, history.best_epoch = score, epoch
                    best_state = copy.deepcopy(module.state_dict())
            history.loss.append(total / max(count, 1))
            history.valid_score.append(score)
            history.seconds.append(seconds)
            for name, value in task.epoch_figures(epoch).items():
                history.extra.setdefault(name, []).append(value)
            if world.distributed or history.communication_seconds:  # a resumed run's epochs stay aligned
                history.communication_seconds.append(world.communication_seconds - communicated)
            if not world.is_main:
                continue
            log.info(
                "epoch %d: loss %.4f, valid %s (best %.4f at %d), %.1f s",
                epoch,
                history.loss[-1],
                "-" if math.isnan(score) else f"{score:.4f}",
                history.best_score,
                history.best_epoch,
                seconds,
            )
            if checkpoint is not None:
                self._save(
                    checkpoint, fingerprint, epoch + 1, module, optimiser, generator, history, best_state, average
                )
            if self.on_epoch is not None:
                self.on_epoch(epoch, history)
        module.load_state_dict(best_state)
        module.eval()
        world.barrier()  # no rank returns while rank 0 still writes the last checkpoint
        return history

    def _step(self, task: TrainingTask, batch: Any, epoch: int, generator: torch.Generator) -> float:
        """Gradients of one batch's loss (summed over the ranks, each weighted by its share of the loss terms);
        returns the batch's loss."""
        world = self.world
        if not world.distributed:
            loss = task.loss(batch, epoch, generator)
            loss.backward()
            return float(loss.detach())
        local, rows = world.shard(batch)
        weight = float(task.loss_weight(local)) if rows and hasattr(task, "loss_weight") else float(rows)
        share = weight / world.total(weight)
        value = 0.0
        if weight > 0:
            loss = task.loss(local, epoch, generator)
            (loss * share).backward()
            value = float(loss.detach()) * share
        world.sum_gradients(task.module.parameters())
        return world.total(value)

    def _rank_generator(self, epoch: int) -> torch.Generator:
        """The loss randomness of one rank in one epoch (negatives, diffusion steps), and its dropout."""
        seed = int.from_bytes(hashlib.sha256(f"{self.seed}/{epoch}/{self.world.rank}".encode()).digest()[:8], "big")
        torch.manual_seed(seed)
        return torch.Generator().manual_seed(seed)

    @staticmethod
    def _save(path, fingerprint, next_epoch, module, optimiser, generator, history, best_state, average) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "fingerprint": fingerprint.as_dict(),
            "next_epoch": next_epoch,
            "module": module.state_dict(),
            "optimiser": optimiser.state_dict(),
            "generator": generator.get_state(),
            "global_rng": torch.get_rng_state(),
            "history": history.as_dict(),
            "best_state": best_state,
            "average": None if average is None else average.state(),
        }
        torch.save(state, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)

    @staticmethod
    def _resume(state, module, optimiser, generator, average) -> tuple[int, TrainingHistory, dict]:
        """Continue from a checkpoint of this run's fingerprint (so ``ema_decay``, hence ``average``, agrees)."""
        module.load_state_dict(state["module"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["global_rng"])
        if average is not None:
            average.load(state["average"])
        history = TrainingHistory(**state["history"])
        return int(state["next_epoch"]), history, state["best_state"]
