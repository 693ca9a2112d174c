"""DiffRec, L-DiffRec, T-DiffRec and LT-DiffRec (Wang et al., SIGIR 2023) as one composed model.

Parts, each chosen by its config type:

- ``history``: how a history becomes ``x0`` over the catalogue: binary multi-hot
  (DiffRec), or weights rising linearly from ``w_min`` to ``w_max`` in
  chronological order (T-DiffRec);
- ``space``: where the diffusion runs: on ``x0`` itself (DiffRec), or on the
  latent of an autoencoder with one encoder per item cluster (L-DiffRec);
- ``diffusion`` (``recmodels.nn.diffusion``) and ``denoiser`` (``recmodels.nn.denoiser``).

``x0`` is built per batch from the sparse history (training rows are a CSR
matrix; nothing dense is ever users x items). ``score`` reads the same padded
histories every model reads, so all four variants are evaluated, exported and
served like the others.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Self

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from recmodels.cluster import ClusteringConfig, ItemClusters
from recmodels.config import PartConfig
from recmodels.data.splits import SplitData
from recmodels.evaluation import stage_metric
from recmodels.models.base import ModelConfig, TorchRecommender
from recmodels.nn.aligned import AlignedLinear
from recmodels.nn.denoiser import DenoiserConfig, MLPDenoiser
from recmodels.nn.diffusion import DiffusionConfig, GaussianDiffusion, ImportanceStepSampler
from recmodels.train import Trainer, TrainerConfig, resolve_device

# ---------------------------------------------------------------- history -> x0


@dataclass(frozen=True)
class BinaryHistory(PartConfig):
    """x0[i] = 1 for every item in the history (DiffRec)."""

    kind = "binary_history"

    def position_weights(self, items: torch.Tensor) -> torch.Tensor:
        return (items > 0).float()


@dataclass(frozen=True)
class TimeWeightedHistory(PartConfig):
    """T-DiffRec: the j-th of a user's n interactions (chronological) weighs
    ``w_min + (w_max - w_min) j / (n - 1)``; a single interaction weighs ``w_min``."""

    kind = "time_weighted_history"
    w_min: float = 0.1
    w_max: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.w_min <= self.w_max:
            raise ValueError(f"need 0 < w_min <= w_max, got {self.w_min}, {self.w_max}")

    def position_weights(self, items: torch.Tensor) -> torch.Tensor:
        present = items > 0
        length = present.sum(dim=1, keepdim=True)
        rank = torch.arange(items.shape[1], device=items.device)[None, :] - (items.shape[1] - length)
        share = rank.float() / (length - 1).clamp(min=1).float()
        return torch.where(
            present, self.w_min + (self.w_max - self.w_min) * share, torch.zeros((), device=items.device)
        )


def history_vectors(items: torch.Tensor, n_items: int, history: BinaryHistory | TimeWeightedHistory) -> torch.Tensor:
    """``[batch, n_items]`` x0 from left-padded histories (column j is item j + 1).

    A repeated item keeps its largest (latest) weight.
    """
    weights = history.position_weights(items)
    vectors = torch.zeros(items.shape[0], n_items + 1, device=items.device)
    vectors.scatter_reduce_(1, items, weights, reduce="amax")
    return vectors[:, 1:]


# ---------------------------------------------------------------- where the diffusion runs


class DiffusionSpace(nn.Module, ABC):
    """Maps x0 to the space the diffusion runs in, and that space back to item scores."""

    width: int

    def corrupt(self, x0: torch.Tensor) -> torch.Tensor:
        """The encoder's training input (L-DiffRec drops items out); identity otherwise."""
        return x0

    @abstractmethod
    def encode(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(z, kl)``: the diffusion's clean input and a KL term (None without one)."""

    @abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor: ...

    def learning_rate(self, denoiser_lr: float) -> float:
        return denoiser_lr

    @abstractmethod
    def training_loss(
        self,
        diffusion_loss: torch.Tensor,
        x0: torch.Tensor,
        corrupted: torch.Tensor,
        predicted_z: torch.Tensor,
        kl: torch.Tensor | None,
        epoch: int,
        step: int,
    ) -> torch.Tensor: ...


class ItemSpace(DiffusionSpace):
    """DiffRec: the diffusion runs on the interaction vector itself."""

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.width = n_items

    def encode(self, x0):
        return x0, None

    def decode(self, z):
        return z

    def training_loss(self, diffusion_loss, x0, corrupted, predicted_z, kl, epoch, step):
        return diffusion_loss


@dataclass(frozen=True)
class ItemSpaceConfig(PartConfig):
    kind = "item_space"

    def build(self, n_items: int, cluster_of_item: torch.Tensor | None) -> DiffusionSpace:
        return ItemSpace(n_items)


@dataclass(frozen=True)
class ClusteredLatentConfig(PartConfig):
    """L-DiffRec: a VAE whose encoder is one linear map per item cluster.

    The clusters come from upstream (the pipeline's ``item_clusters``, built with
    ``ClusteringConfig``), so their number is set there, never here. Cluster c gets a latent slice of ``int(|c| / n * latent_dim)`` (at least 1; the
    last cluster takes the remainder). Loss: ``lambda * diffusion + multinomial
    likelihood + anneal * KL`` with ``lambda = max((1 - epoch / lambda_epochs) * lambda_start,
    lambda_floor)`` and ``anneal = min(kl_cap, step / kl_steps)``. The autoencoder
    trains at ``autoencoder_lr``, the denoiser at the trainer's ``lr``. The authors'
    code scores the likelihood against the input the encoder saw, dropped-out items
    and all (``likelihood_on_dropped_input``); False scores it against the clean x0.
    """

    kind = "clustered_latent"
    latent_dim: int = 300
    input_dropout: float = 0.1
    lambda_start: float = 0.03
    lambda_floor: float = 0.005
    lambda_epochs: int = 500
    kl_cap: float = 0.3
    kl_steps: int = 200
    autoencoder_lr: float = 1e-3
    likelihood_on_dropped_input: bool = True

    def build(self, n_items: int, cluster_of_item: torch.Tensor | None) -> DiffusionSpace:
        if cluster_of_item is None:
            raise ValueError("L-DiffRec needs item clusters")
        return ClusteredAutoencoder(cluster_of_item, self)


class ClusteredAutoencoder(DiffusionSpace):
    """Per-cluster encoders (tanh on mean and log-variance) into one latent; one linear decoder to all items.

    Input dropout is ``corrupt``'s, applied by the training step, so the loss can see what the encoder saw.
    """

    def __init__(self, cluster_of_item: torch.Tensor, config: ClusteredLatentConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("cluster_of_item", cluster_of_item.long())
        sizes = torch.bincount(cluster_of_item, minlength=int(cluster_of_item.max()) + 1).tolist()
        if min(sizes) == 0:
            raise ValueError(f"every cluster needs at least one item; sizes {sizes}")
        n_items = len(cluster_of_item)
        slices = [max(int(size / n_items * config.latent_dim), 1) for size in sizes[:-1]]
        slices.append(config.latent_dim - sum(slices))
        if slices[-1] < 1:
            raise ValueError(f"latent_dim {config.latent_dim} is too small for {len(sizes)} clusters")
        self.width = config.latent_dim
        self.slices = slices
        self.members = [torch.nonzero(cluster_of_item == cluster).flatten() for cluster in range(len(sizes))]
        self.encoders = nn.ModuleList(AlignedLinear(size, 2 * latent) for size, latent in zip(sizes, slices))
        self.decoder = AlignedLinear(config.latent_dim, n_items)
        self.dropout = nn.Dropout(config.input_dropout)
        for layer in [*self.encoders, self.decoder]:
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)

    def corrupt(self, x0):
        return self.dropout(x0)

    def encode(self, x0):
        x = x0
        means, log_variances = [], []
        for members, encoder, latent in zip(self.members, self.encoders, self.slices):
            hidden = torch.tanh(encoder(x.index_select(1, members.to(x.device))))
            means.append(hidden[:, :latent])
            log_variances.append(hidden[:, latent:])
        mean, log_variance = torch.cat(means, dim=1), torch.cat(log_variances, dim=1)
        if not self.training:
            return mean, None
        z = mean + torch.exp(0.5 * log_variance) * torch.randn_like(mean)
        kl = -0.5 * (1 + log_variance - mean.pow(2) - log_variance.exp()).sum(dim=1).mean()
        return z, kl

    def decode(self, z):
        return self.decoder(z)

    def learning_rate(self, denoiser_lr):
        return self.config.autoencoder_lr

    def training_loss(self, diffusion_loss, x0, corrupted, predicted_z, kl, epoch, step):
        config = self.config
        diffusion_weight = max((1 - epoch / config.lambda_epochs) * config.lambda_start, config.lambda_floor)
        kl_weight = min(config.kl_cap, step / config.kl_steps)
        target = corrupted if config.likelihood_on_dropped_input else x0
        likelihood = -(F.log_softmax(self.decode(predicted_z), dim=1) * target).sum(dim=1).mean()
        return diffusion_weight * diffusion_loss + likelihood + kl_weight * kl


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class DiffRecConfig(ModelConfig):
    """Defaults: the paper's ML-1M (clean) hyper-parameters for DiffRec."""

    diffusion: DiffusionConfig = DiffusionConfig()
    denoiser: DenoiserConfig = DenoiserConfig()
    space: ItemSpaceConfig | ClusteredLatentConfig = ItemSpaceConfig()
    history: BinaryHistory | TimeWeightedHistory = BinaryHistory()
    # The authors' loop: validation every 5 epochs, stop after 3 validations without improvement.
    trainer: TrainerConfig = TrainerConfig(epochs=1000, patience=15, lr=1e-3, batch_size=400, validate_every=5)
    valid_metric: str = "recall@20"


def diffrec() -> DiffRecConfig:
    return DiffRecConfig()


def l_diffrec() -> DiffRecConfig:
    """L-DiffRec, the authors' ML-1M setting: a 300-d latent, denoiser [300], noise_max 0.02,
    beta_0 not fixed, denoiser lr 5e-4 (autoencoder 1e-3); their 2 clusters are
    ``ClusteringConfig``'s default."""
    return DiffRecConfig(
        diffusion=DiffusionConfig(noise_max=0.02, beta_fixed=False),
        denoiser=DenoiserConfig(hidden=(300,)),
        space=ClusteredLatentConfig(),
        trainer=dataclasses.replace(DiffRecConfig().trainer, lr=5e-4),
    )


def t_diffrec(config: DiffRecConfig | None = None) -> DiffRecConfig:
    """Any variant with T-DiffRec's time-aware weights (0.1 -> 1.0): T-DiffRec, or LT-DiffRec from l_diffrec()."""
    return dataclasses.replace(config or diffrec(), history=TimeWeightedHistory())


class DiffRecModule(nn.Module):
    """The trainable parts together, so one state dict (and one checkpoint) holds them all."""

    def __init__(self, n_items: int, config: DiffRecConfig, cluster_of_item: torch.Tensor | None) -> None:
        super().__init__()
        self.space = config.space.build(n_items, cluster_of_item)
        self.denoiser = MLPDenoiser(self.space.width, config.denoiser)
        self.diffusion = GaussianDiffusion(config.diffusion)
        self.step_sampler = ImportanceStepSampler(
            config.diffusion.steps, config.diffusion.history_per_step, config.diffusion.uniform_share
        )


class DiffRecScorer(nn.Module):
    """History -> x0 -> (latent) -> the reverse diffusion -> item scores, padding column first."""

    def __init__(self, module: DiffRecModule, n_items: int, config: DiffRecConfig) -> None:
        super().__init__()
        self.module = module
        self.n_items = n_items
        self.history = config.history
        self.seed = config.seed

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        module = self.module
        z, _ = module.space.encode(history_vectors(history, self.n_items, self.history))
        noise = self._history_noise(history, z.shape[1]) if module.diffusion.config.inference_start > 0 else None
        return F.pad(module.space.decode(module.diffusion.denoise(module.denoiser, z, noise)), (1, 0))

    @property
    def exportable(self) -> bool:
        """History-seeded noise (T' > 0) is drawn in Python, which a traced graph cannot replay."""
        return self.module.diffusion.config.inference_start == 0

    def _history_noise(self, history: torch.Tensor, width: int) -> torch.Tensor:
        """Inference noise (T' > 0) seeded by the model seed and each row's history, so a
        user's scores never depend on who else shares the batch."""
        rows = []
        for row in history.cpu().numpy():
            key = hash((self.seed, tuple(sorted(row[row > 0].tolist())))) % (2**63)
            rows.append(torch.randn(width, generator=torch.Generator().manual_seed(key)))
        return torch.stack(rows).to(history.device)


@dataclass(frozen=True)
class _Batch:
    index: int
    x0: torch.Tensor


@dataclass
class _DiffusionTask:
    module: DiffRecModule
    model: "DiffRec"
    split: SplitData
    train_vectors: sp.csr_matrix
    users: np.ndarray
    batch_size: int
    device: torch.device

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.users) / self.batch_size)

    def parameter_groups(self, lr: float) -> list[dict]:
        """L-DiffRec's autoencoder has its own learning rate; everything else trains at ``lr``."""
        space = self.module.space
        groups = [{"params": list(self.module.denoiser.parameters()), "lr": lr}]
        if any(True for _ in space.parameters()):
            groups.append({"params": list(space.parameters()), "lr": space.learning_rate(lr)})
        return groups

    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[_Batch]:
        order = self.users[torch.randperm(len(self.users), generator=generator).numpy()]
        for index, start in enumerate(range(0, len(order), self.batch_size)):
            rows = self.train_vectors[order[start : start + self.batch_size]]
            yield _Batch(index, torch.from_numpy(rows.toarray()).to(self.device))

    def loss(self, batch: _Batch, epoch: int, generator: torch.Generator) -> torch.Tensor:
        module = self.module
        corrupted = module.space.corrupt(batch.x0)
        z, kl = module.space.encode(corrupted)
        t, scale = module.step_sampler.sample(len(z), generator)
        noise = torch.randn(z.shape, generator=generator).to(z.device)
        t = t.to(z.device)
        predicted = module.denoiser(module.diffusion.q_sample(z, t, noise), t)
        weighted = module.diffusion.loss_weight[t] * F.mse_loss(predicted, z, reduction="none").mean(dim=1)
        module.step_sampler.record(t, weighted)
        diffusion_loss = (weighted / scale.to(z.device)).mean()
        step = epoch * self.batches_per_epoch + batch.index
        return module.space.training_loss(diffusion_loss, batch.x0, corrupted, predicted, kl, epoch, step)

    def validation_score(self) -> float:
        return stage_metric(self.model, self.split.valid, self.model.config.valid_metric)

    def epoch_figures(self, epoch: int) -> dict[str, float]:
        return {}


class DiffRec(TorchRecommender):
    """Diffusion recommender: denoise the user's interaction vector, rank what it fills in."""

    family = "diffrec"
    config_class = DiffRecConfig
    config: DiffRecConfig

    module: DiffRecModule

    def fit(
        self,
        split: SplitData,
        *,
        clusters: ItemClusters | None = None,
        checkpoint_dir: Path | None = None,
        max_epochs: int | None = None,
    ) -> Self:
        """Train on ``split.train``, early-stopping on ``split.valid``.

        L-DiffRec uses ``clusters`` (the pipeline's ``item_clusters``) when given, else
        builds them with ``ClusteringConfig`` seeded by the model's seed; either way
        ``upstream["clusters"]`` records their parameters.
        """
        config = self.config
        torch.manual_seed(config.seed)
        device = resolve_device(config.trainer.device)
        self.n_items = split.n_items
        cluster_of_item = None
        self.upstream = {}
        if isinstance(config.space, ClusteredLatentConfig):
            if clusters is None:
                clusters = ClusteringConfig(seed=config.seed).build(split.train.csr())
            if len(clusters.labels) != split.n_items + 1:
                raise ValueError(f"clusters cover {len(clusters.labels) - 1} items, the split has {split.n_items}")
            cluster_of_item = torch.from_numpy(clusters.labels[1:])
            self.upstream = {"clusters": {"parameters": clusters.parameters()}}
        self.module = DiffRecModule(split.n_items, config, cluster_of_item).to(device)
        task = _DiffusionTask(
            module=self.module,
            model=self,
            split=split,
            train_vectors=self._training_vectors(split),
            users=split.train.users_with_data(),
            batch_size=config.trainer.batch_size,
            device=device,
        )
        self.history = Trainer(config.trainer, config.seed, checkpoint_dir).fit(task, max_epochs)
        return self

    def _training_vectors(self, split: SplitData, chunk: int = 1024) -> sp.csr_matrix:
        """Every training user's x0 as sparse rows, built by the same code ``score`` uses."""
        sequences = split.train.sequences()
        parts = []
        for start in range(0, split.train.n_users, chunk):
            users = np.arange(start, min(start + chunk, split.train.n_users))
            items, _ = sequences.padded(users)
            parts.append(
                sp.csr_matrix(history_vectors(torch.from_numpy(items), split.n_items, self.config.history).numpy())
            )
        return sp.vstack(parts).tocsr()

    def scorer(self) -> nn.Module:
        self._require_fitted()
        return DiffRecScorer(self.module, self.n_items, self.config).eval()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        cluster_of_item = state.get("space.cluster_of_item")
        self.module = DiffRecModule(self._require_fitted(), self.config, cluster_of_item)
        self.module.load_state_dict(state)
        self.module.eval()
