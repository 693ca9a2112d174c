"""Data-parallel training across processes started by ``torchrun`` (gloo on CPU, NCCL on CUDA).

Every rank builds the same global batch (the batch order comes from a generator seeded alike on every rank),
trains on its contiguous share of the batch's rows, and the gradients are summed across ranks with each
rank's loss weighted by its share of the batch's loss terms, so an update is the one a single process
makes on the whole batch: ``trainer.batch_size`` is the global batch whatever the number of ranks.

Gradients are all-reduced in one flat bucket per step (what DistributedDataParallel does in buckets) rather
than through the ``DistributedDataParallel`` wrapper: the training tasks call their module's own methods
(``catalogue()``, ``modality_vectors()``, ``item_vectors()``...), which the wrapper does not forward, so the
families train through the one loop unchanged.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


@dataclass
class World:
    """This process's place among the ranks of one training run; ``size`` 1 is a single process."""

    rank: int = 0
    size: int = 1
    communication_seconds: float = field(default=0.0, compare=False)
    gradient_syncs: int = field(default=0, compare=False)  # optimiser steps taken together

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 validates, checkpoints and writes the model."""
        return self.rank == 0

    def shard(self, batch: Any) -> tuple[Any, int]:
        """This rank's contiguous share of ``batch`` (a dataclass whose tensor and array fields share a first
        dimension, the batch's rows; other fields are kept), and that share's number of rows."""
        rows = _rows(batch)
        if not self.distributed:
            return batch, rows
        bounds = np.linspace(0, rows, self.size + 1).round().astype(int)
        start, stop = int(bounds[self.rank]), int(bounds[self.rank + 1])
        sliced = {
            item.name: value[start:stop]
            for item in dataclasses.fields(batch)
            if _is_rows(value := getattr(batch, item.name), rows)
        }
        return dataclasses.replace(batch, **sliced), stop - start

    def total(self, value: float) -> float:
        """``value`` summed over the ranks."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=_device())
        self._timed(lambda: dist.all_reduce(tensor))
        return float(tensor.item())

    def sum_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Every parameter's gradient summed over the ranks, in one all-reduce. A parameter no rank computed a
        gradient for keeps ``None`` (Adam then skips it, as a single process would)."""
        if not self.distributed:
            return
        parameters = [parameter for parameter in parameters if parameter.requires_grad]
        device = parameters[0].device
        present = torch.tensor([parameter.grad is not None for parameter in parameters], dtype=torch.float32)
        gradients = [
            parameter.grad if parameter.grad is not None else torch.zeros_like(parameter) for parameter in parameters
        ]
        flat = torch.cat([_flatten_dense_tensors(gradients), present.to(device=device, dtype=gradients[0].dtype)])
        self._timed(lambda: dist.all_reduce(flat))
        self.gradient_syncs += 1
        summed = _unflatten_dense_tensors(flat[: -len(parameters)], gradients)
        for parameter, gradient, any_rank in zip(parameters, summed, flat[-len(parameters) :].tolist()):
            parameter.grad = gradient.view_as(parameter) if any_rank > 0 else None

    def follow_main_buffers(self, module: torch.nn.Module) -> None:
        """Every buffer (state that is not a parameter, e.g. DiffRec's importance-sampling loss history) set to
        rank 0's, so all ranks hold the model rank 0 validates and writes. DistributedDataParallel does this
        before each forward; here once an epoch: the only buffer training changes is that history, which
        only steers which diffusion steps a rank draws."""
        if not self.distributed:
            return
        for buffer in module.buffers():
            self._timed(lambda buffer=buffer: dist.broadcast(buffer, src=0))

    def broadcast(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (a validation score only rank 0 computed)."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=_device())
        self._timed(lambda: dist.broadcast(tensor, src=0))
        return float(tensor.item())

    def gathered(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (a small picklable object), in rank order, on every rank."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.size
        self._timed(lambda: dist.all_gather_object(values, value))
        return values

    def barrier(self) -> None:
        if self.distributed:
            self._timed(dist.barrier)

    def _timed(self, operation) -> None:
        started = time.perf_counter()
        operation()
        self.communication_seconds += time.perf_counter() - started


_joined: World | None = None


def current_world() -> World:
    """The world of this process: joined from torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``) on first use and the same object after (its communication counters
    cover the whole process), else a fresh single process."""
    global _joined
    if _joined is not None:
        return _joined
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={size} but this torch build has no torch.distributed")
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    _joined = World(dist.get_rank(), dist.get_world_size())
    return _joined


def _device() -> torch.device:
    """Where collectives' tensors live: the rank's GPU under NCCL, else the CPU."""
    return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")


def _is_rows(value: Any, rows: int) -> bool:
    return isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim > 0 and value.shape[0] == rows


def _rows(batch: Any) -> int:
    """The batch's number of rows: the first dimension of its first tensor or array field."""
    for item in dataclasses.fields(batch):
        value = getattr(batch, item.name)
        if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim > 0:
            return int(value.shape[0])
    raise TypeError(f"{type(batch).__name__} has no tensor or array field to shard by rows")
