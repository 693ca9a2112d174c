"""DiffRec's denoiser: an MLP that predicts ``x0`` from ``x_t`` and a step embedding."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recmodels.nn.aligned import AlignedLinear


def step_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer steps, ``[cos(t f_i), sin(t f_i)]`` with geometric frequencies."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * frequencies[None, :]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


@dataclass(frozen=True)
class DenoiserConfig:
    """``hidden`` are the decoder-side widths (the paper's ``dims``); the encoder mirrors them.

    ``[200, 600]`` over n items gives ``n+emb -> 600 -> 200 -> 600 -> n``.
    """

    hidden: tuple[int, ...] = (200, 600)
    step_embedding_dim: int = 10
    input_dropout: float = 0.5
    normalise_input: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(width) for width in self.hidden))  # JSON gives a list


class MLPDenoiser(nn.Module):
    """tanh MLP over ``[dropout(x_t), Linear(step embedding)]``; the output layer is linear.

    The first layer is two matrices (one over ``x_t``, one over the step embedding)
    rather than one over their concatenation: the same function without copying
    a ``[batch, n_items]`` tensor per call.
    """

    def __init__(self, width: int, config: DenoiserConfig) -> None:
        super().__init__()
        if not config.hidden:
            raise ValueError("the denoiser needs at least one hidden width")
        self.config = config
        widths = [width, *reversed(config.hidden), *config.hidden[1:], width]
        self.step_projection = nn.Linear(config.step_embedding_dim, config.step_embedding_dim)
        self.input_layer = AlignedLinear(width, widths[1])
        self.step_layer = nn.Linear(config.step_embedding_dim, widths[1], bias=False)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[1:-2], widths[2:-1]))
        self.layers.append(AlignedLinear(widths[-2], widths[-1]))
        self._init_like_authors(width + config.step_embedding_dim)

    def _init_like_authors(self, first_fan_in: int) -> None:
        """Normal weights with std sqrt(2 / (fan_in + fan_out)), biases N(0, 0.001)."""
        for layer in [self.step_projection, *self.layers]:
            fan_out, fan_in = layer.weight.shape
            nn.init.normal_(layer.weight, std=math.sqrt(2.0 / (fan_in + fan_out)))
            nn.init.normal_(layer.bias, std=0.001)
        first_std = math.sqrt(2.0 / (first_fan_in + self.input_layer.out_features))
        nn.init.normal_(self.input_layer.weight, std=first_std)
        nn.init.normal_(self.step_layer.weight, std=first_std)
        nn.init.normal_(self.input_layer.bias, std=0.001)

    def _drop_input(self, x: torch.Tensor) -> torch.Tensor:
        """Inverted dropout with a mask from one uniform draw: on a CPU, half the time of
        ``nn.Dropout``'s Bernoulli draw, which was a sixth of a DiffRec epoch on ML-1M."""
        rate = self.config.input_dropout
        if not self.training or rate == 0:
            return x
        return x * (torch.rand_like(x) >= rate) * (1.0 / (1.0 - rate))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        step = self.step_projection(step_embedding(t, self.config.step_embedding_dim))
        if self.config.normalise_input:
            x_t = F.normalize(x_t, dim=-1)
        h = torch.tanh(self.input_layer(self._drop_input(x_t)) + self.step_layer(step))
        for index, layer in enumerate(self.layers):
            h = layer(h)
            if index < len(self.layers) - 1:
                h = torch.tanh(h)
        return h
