"""Gaussian diffusion over interaction vectors (DiffRec, SIGIR 2023), apart from any denoiser.

The forward process noises a user's interaction vector ``x0``; a denoiser learns
to predict ``x0`` from ``x_t`` and ``t``; inference starts from the (optionally
noised) history and walks the posterior mean back to step 0 without sampling
noise. Everything here is independent of what the denoiser is (an MLP over
items, or over an autoencoder's latent for L-DiffRec).

Faithful to the authors' code where the paper is silent: the "linear-var"
schedule fixes ``beta_0 = 1e-5`` when ``beta_fixed`` (DiffRec) and leaves it
alone otherwise (L-DiffRec); the SNR weight is 1 at ``t = 0``; inference always
runs all ``steps`` reverse steps, whatever step it starts from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

MAX_BETA = 0.999
FIXED_FIRST_BETA = 1e-5


@dataclass(frozen=True)
class DiffusionConfig:
    """The "linear-var" schedule: ``1 - alpha_bar_t = linspace(scale*noise_min, scale*noise_max, steps)``.

    ``inference_start`` is T' of the paper: the step the history is noised to
    before denoising (0 = the clean history). ``history_per_step`` losses per
    step feed the importance sampler, which mixes in ``uniform_share``.
    """

    steps: int = 40
    noise_scale: float = 0.005
    noise_min: float = 0.005
    noise_max: float = 0.01
    beta_fixed: bool = True
    inference_start: int = 0
    snr_reweight: bool = True
    history_per_step: int = 10
    uniform_share: float = 0.001

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0 < self.noise_scale * self.noise_min <= self.noise_scale * self.noise_max < 1:
            raise ValueError(
                "need 0 < noise_scale*noise_min <= noise_scale*noise_max < 1, got "
                f"{self.noise_scale}*{self.noise_min} and {self.noise_scale}*{self.noise_max}"
            )
        if not 0 <= self.inference_start <= self.steps:
            raise ValueError(f"inference_start must be in [0, {self.steps}], got {self.inference_start}")
        if self.history_per_step < 1:
            raise ValueError(f"history_per_step must be >= 1, got {self.history_per_step}")
        if not 0 <= self.uniform_share <= 1:
            raise ValueError(f"uniform_share must be in [0, 1], got {self.uniform_share}")


def linear_variance_betas(config: DiffusionConfig) -> np.ndarray:
    """Betas whose cumulative product gives the linear variance schedule, clipped at 0.999."""
    variance = np.linspace(
        config.noise_scale * config.noise_min, config.noise_scale * config.noise_max, config.steps, dtype=np.float64
    )
    alpha_bar = 1.0 - variance
    betas = np.empty(config.steps, dtype=np.float64)
    betas[0] = variance[0]
    betas[1:] = np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], MAX_BETA)
    if config.beta_fixed:
        betas[0] = FIXED_FIRST_BETA
    return betas


class GaussianDiffusion(nn.Module):
    """Schedule tensors (float64 for accuracy, used as float32), forward noising, posterior mean."""

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__()
        self.config = config
        betas = torch.from_numpy(linear_variance_betas(config))
        alphas = 1.0 - betas
        alpha_bar = torch.cumprod(alphas, dim=0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        snr = alpha_bar / (1.0 - alpha_bar)
        loss_weight = torch.cat([torch.ones(1, dtype=torch.float64), snr[:-1] - snr[1:]])
        buffers = {
            "betas": betas,
            "alpha_bar": alpha_bar,
            "sqrt_alpha_bar": alpha_bar.sqrt(),
            "sqrt_one_minus_alpha_bar": (1.0 - alpha_bar).sqrt(),
            "posterior_x0_coef": betas * alpha_bar_prev.sqrt() / (1.0 - alpha_bar),
            "posterior_xt_coef": (1.0 - alpha_bar_prev) * alphas.sqrt() / (1.0 - alpha_bar),
            "loss_weight": loss_weight if config.snr_reweight else torch.ones_like(loss_weight),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.float(), persistent=False)

    @property
    def steps(self) -> int:
        return self.config.steps

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise``, one ``t`` per row."""
        return torch.addcmul(self.sqrt_alpha_bar[t, None] * x0, self.sqrt_one_minus_alpha_bar[t, None], noise)

    def posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean of ``q(x_{t-1} | x_t, x0)``."""
        return torch.addcmul(self.posterior_x0_coef[t, None] * x0, self.posterior_xt_coef[t, None], x_t)

    def denoise(self, denoiser: nn.Module, x0: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Inference: noise ``x0`` to step T' (none when T' = 0), then follow the posterior
        mean through every step back to 0, with the denoiser's ``x0`` estimate at each."""
        start = self.config.inference_start
        x_t = x0
        if start > 0:
            if noise is None:
                raise ValueError("inference_start > 0 needs the noise to start from (pass a seeded tensor)")
            x_t = self.q_sample(x0, torch.full((x0.shape[0],), start - 1, dtype=torch.long, device=x0.device), noise)
        for step in range(self.steps - 1, -1, -1):
            t = torch.full((x0.shape[0],), step, dtype=torch.long, device=x0.device)
            x_t = self.posterior_mean(denoiser(x_t, t), x_t, t)
        return x_t


class ImportanceStepSampler(nn.Module):
    """Timesteps drawn in proportion to the root mean square of each step's recent losses.

    Uniform until every step has ``history_per_step`` losses recorded. The loss
    history lives in buffers, so a checkpoint resumes the sampler exactly.
    ``sample`` returns the steps and ``p(t) * steps``, the factor that keeps
    the importance-sampled loss unbiased.
    """

    def __init__(self, steps: int, history_per_step: int, uniform_share: float) -> None:
        super().__init__()
        self.uniform_share = uniform_share
        self.register_buffer("losses", torch.zeros(steps, history_per_step, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(steps, dtype=torch.long))
        self.register_buffer("next_slot", torch.zeros(steps, dtype=torch.long))

    @property
    def warmed_up(self) -> bool:
        return bool((self.counts == self.losses.shape[1]).all())

    def probabilities(self) -> torch.Tensor:
        steps = self.losses.shape[0]
        if not self.warmed_up:
            return torch.full((steps,), 1.0 / steps, dtype=torch.float64, device=self.losses.device)
        rms = self.losses.pow(2).mean(dim=1).sqrt()
        return rms / rms.sum() * (1.0 - self.uniform_share) + self.uniform_share / steps

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        steps = self.losses.shape[0]
        if not self.warmed_up:
            return torch.randint(0, steps, (batch,), generator=generator), torch.ones(batch)
        probabilities = self.probabilities().cpu()  # the generator lives on the CPU
        t = torch.multinomial(probabilities, batch, replacement=True, generator=generator)
        return t, (probabilities[t] * steps).float()

    @torch.no_grad()
    def record(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Keep each step's latest ``history_per_step`` losses (a ring buffer per step, in batch order)."""
        device = self.losses.device
        t, losses = t.to(device), losses.detach().to(device, torch.float64)
        capacity = self.losses.shape[1]
        order = torch.argsort(t, stable=True)
        t, losses = t[order], losses[order]
        per_step = torch.bincount(t, minlength=self.losses.shape[0])
        group_start = torch.cumsum(per_step, 0) - per_step
        rank = torch.arange(len(t), device=device) - group_start[t]
        latest = rank >= per_step[t] - capacity
        slot = (self.next_slot[t] + rank) % capacity
        self.losses[t[latest], slot[latest]] = losses[latest]
        self.next_slot.copy_((self.next_slot + per_step) % capacity)
        self.counts.copy_(torch.clamp(self.counts + per_step, max=capacity))
