"""Multi-modal sequential recommender with weakly supervised denoising (Demure; Yao et al., arXiv 2305.01915).

An item is the fusion of its modalities: its id embedding (for items with training rows) and one
projected vector per content modality (title text, genres, release year), each with a learned
"missing" vector for items without it. The same fused vectors feed the transformer (the SASRec
family's blocks) and score the catalogue, so an item no training row holds is still scored from its
features.

Denoising: every ``refresh_every`` epochs each training user's modalities get a contribution to their
own next-item loss (occlusion: the loss change when the modality is masked in the history; or
gradient x input), and the content modalities whose contribution falls below a quantile are labelled
noise for that user. Training then reads a denoised view of each history (noise-labelled modalities
masked or down-weighted), with the next-item loss on it and InfoNCE pulling the original and the
denoised view of one user together against the other users of the batch. Serving reads the original
view: history in, top-k out, no per-user state. The same occlusion explains a recommendation
(``ModalityExplainer``).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recmodels.config import PartConfig
from recmodels.data.interactions import Sequences
from recmodels.data.splits import SplitData
from recmodels.evaluation import stage_metric
from recmodels.features.modalities import ItemModalities
from recmodels.models.base import ModelConfig, TorchRecommender
from recmodels.nn.aligned import aligned_linear
from recmodels.nn.layers import BackboneConfig, LiGRBlockConfig, SequenceBackbone
from recmodels.nn.losses import NextItemLoss, SampledSoftmaxConfig
from recmodels.train import Trainer, TrainerConfig, resolve_device

ID = "id"
CONTENT = ("text", "genres", "year")


@dataclass(frozen=True)
class ModalitiesConfig:
    """Which modalities an item's vector fuses; one the dataset lacks is left out (and recorded)."""

    item_ids: bool = True
    text: bool = True
    genres: bool = True
    year: bool = True
    year_buckets: int = 10


class Fusion(nn.Module, ABC):
    @abstractmethod
    def gates(self, stack: torch.Tensor) -> torch.Tensor:
        """``[N, M, d]`` modality vectors -> ``[N, M]`` weight of each modality in its item's vector."""


class SumFusion(Fusion):
    def gates(self, stack: torch.Tensor) -> torch.Tensor:
        return stack.new_ones(stack.shape[:-1])


class GatedFusion(Fusion):
    """A sigmoid gate per item and modality, read off the modality's own vector."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, 1)

    def gates(self, stack: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate(stack)).squeeze(-1)


@dataclass(frozen=True)
class SumFusionConfig(PartConfig):
    kind = "sum_fusion"

    def build(self, dim: int) -> Fusion:
        return SumFusion()


@dataclass(frozen=True)
class GatedFusionConfig(PartConfig):
    kind = "gated_fusion"

    def build(self, dim: int) -> Fusion:
        return GatedFusion(dim)


@dataclass(frozen=True)
class OcclusionContributionConfig(PartConfig):
    """A modality's contribution = the user's loss with it masked in the history minus the loss with it."""

    kind = "occlusion_contribution"

    def measure(self, net: "MultiModalNet", items: torch.Tensor, targets: torch.Tensor, positions: int) -> torch.Tensor:
        with torch.no_grad():
            vectors = net.modality_vectors()
            weights = items.new_ones((items.shape[0], net.n_modalities), dtype=vectors.dtype)
            full = net.user_losses(items, targets, vectors, weights, positions)
            masked = []
            for modality in range(net.n_modalities):
                occluded = weights.clone()
                occluded[:, modality] = 0.0
                masked.append(net.user_losses(items, targets, vectors, occluded, positions))
        return torch.stack(masked, dim=1) - full.unsqueeze(1)


@dataclass(frozen=True)
class GradientContributionConfig(PartConfig):
    """Gradient x input: minus the loss's derivative along each modality's share of the history's vectors,
    the first-order estimate of what occlusion measures, from one backward pass."""

    kind = "gradient_contribution"

    def measure(self, net: "MultiModalNet", items: torch.Tensor, targets: torch.Tensor, positions: int) -> torch.Tensor:
        with torch.no_grad():
            vectors = net.modality_vectors()
        weights = items.new_ones((items.shape[0], net.n_modalities), dtype=vectors.dtype).requires_grad_(True)
        losses = net.user_losses(items, targets, vectors, weights, positions)
        (gradient,) = torch.autograd.grad(losses.sum(), weights)
        return -gradient


@dataclass(frozen=True)
class DenoisingConfig(PartConfig):
    """Demure's weakly supervised denoising. ``noise_quantile``: the share of (user, content modality) pairs
    labelled noise, by their contribution normalised per user; ``noise_weight``: a noise modality's weight in
    the denoised view (0 masks it); ``positions``: the last positions of a training sequence whose loss the
    contributions are measured on; ``start_epoch``: the first epoch with labels (before it, the original view);
    ``original_weight``: the weight of a next-item loss on the original view beside the denoised one (serving
    reads the original view; 0 is the paper's loss)."""

    contribution: OcclusionContributionConfig | GradientContributionConfig = OcclusionContributionConfig()
    noise_quantile: float = 0.2
    noise_weight: float = 0.0
    contrastive_weight: float = 0.1
    temperature: float = 0.2
    refresh_every: int = 1
    start_epoch: int = 1
    positions: int = 10
    original_weight: float = 0.0

    kind = "demure_denoising"


def _esasrec_backbone() -> BackboneConfig:
    """The eSASRec preset's stack (recmodels.models.sasrec.esasrec), the id-only baseline it is compared to."""
    return BackboneConfig(
        block=LiGRBlockConfig(),
        xavier_init=True,
        scale_embeddings=False,
        attention_dropout=BackboneConfig.dropout,
        item_dropout=BackboneConfig.dropout,
    )


@dataclass(frozen=True)
class MultiModalConfig(ModelConfig):
    backbone: BackboneConfig = dataclasses.field(default_factory=_esasrec_backbone)
    loss: SampledSoftmaxConfig = SampledSoftmaxConfig(per_position=True)
    modalities: ModalitiesConfig = ModalitiesConfig()
    fusion: SumFusionConfig | GatedFusionConfig = SumFusionConfig()
    denoising: DenoisingConfig | None = DenoisingConfig()
    trainer: TrainerConfig = TrainerConfig(adam_betas=(0.9, 0.98))
    valid_metric: str = "ndcg@10"


def fused(**backbone: object) -> MultiModalConfig:
    """Id + modalities, fused by sum; no denoising."""
    return MultiModalConfig(backbone=dataclasses.replace(_esasrec_backbone(), **backbone), denoising=None)


def demure(**backbone: object) -> MultiModalConfig:
    """Id + modalities with contribution-labelled denoising and the original/denoised contrastive term."""
    return MultiModalConfig(backbone=dataclasses.replace(_esasrec_backbone(), **backbone))


def modalities_only(**backbone: object) -> MultiModalConfig:
    """No id embedding: every item, trained or new, is its features alone."""
    return MultiModalConfig(
        backbone=dataclasses.replace(_esasrec_backbone(), **backbone),
        modalities=ModalitiesConfig(item_ids=False),
        denoising=None,
    )


def tower_inputs(split: SplitData, modalities: ItemModalities, config: ModalitiesConfig) -> dict[str, torch.Tensor]:
    """The fixed per-item tensors the tower reads (row = internal item id, row 0 padding); they travel in the
    model's state, so a saved model needs no feature files to score."""
    n_rows = split.n_items + 1
    trained = np.zeros(n_rows, dtype=bool)
    trained[split.train.frame["item"].to_numpy()] = True
    inputs = {"trained": torch.from_numpy(trained)}
    if config.text and modalities.text is not None:
        inputs["text_vectors"] = torch.from_numpy(np.ascontiguousarray(modalities.text.vectors, dtype=np.float32))
        inputs["text_present"] = torch.from_numpy(modalities.text.present.copy())
    if modalities.side is not None:
        presence = modalities.presence()
        if config.genres and presence["genres"][1:].any():
            # items x genres (tens of columns), not users x items: dense is as small as its index
            inputs["genre_hot"] = torch.from_numpy(modalities.side.genres.toarray().astype(np.float32))
            inputs["genre_present"] = torch.from_numpy(presence["genres"])
        if config.year and presence["year"][1:].any():
            inputs["year_codes"] = torch.from_numpy(modalities.side.year_buckets(config.year_buckets))
    for name, tensor in inputs.items():
        if tensor.shape[0] != n_rows:
            raise ValueError(f"item modality {name!r} has {tensor.shape[0]} rows for a catalogue of {n_rows}")
    return inputs


class ItemTower(nn.Module):
    """Every item's modality vectors ``[n_items + 1, M, d]``; row 0 (padding) zero, the id vector of an item
    without training rows zero (its features speak for it)."""

    def __init__(self, inputs: dict[str, torch.Tensor], dim: int, config: ModalitiesConfig, xavier: bool) -> None:
        super().__init__()
        for name, tensor in inputs.items():
            self.register_buffer(name, tensor.clone())
        n_rows = inputs["trained"].shape[0]
        names: list[str] = []
        if config.item_ids:
            self.ids = nn.Embedding(n_rows, dim, padding_idx=0)
            names.append(ID)
        if "text_vectors" in inputs:
            self.text_projection = nn.Linear(inputs["text_vectors"].shape[1], dim)
            self.text_missing = nn.Parameter(torch.zeros(dim))
            names.append("text")
        if "genre_hot" in inputs:
            self.genre_projection = nn.Linear(inputs["genre_hot"].shape[1], dim)
            self.genre_missing = nn.Parameter(torch.zeros(dim))
            names.append("genres")
        if "year_codes" in inputs:
            self.years = nn.Embedding(int(inputs["year_codes"].max()) + 1, dim)  # code 0: unknown year
            names.append("year")
        if not names:
            raise ValueError("no modality to fuse: enable item ids or give the dataset item metadata")
        self.names = tuple(names)
        if xavier:  # as the backbone starts (eSASRec: every matrix Xavier-normal)
            for parameter in self.parameters():
                if parameter.dim() > 1:
                    nn.init.xavier_normal_(parameter)
        elif config.item_ids:
            nn.init.normal_(self.ids.weight, std=dim**-0.5)

    def forward(self) -> torch.Tensor:
        parts = []
        if ID in self.names:
            parts.append(self.ids.weight * self.trained.unsqueeze(1))
        if "text" in self.names:
            projected = self.text_projection(self.text_vectors)
            parts.append(torch.where(self.text_present.unsqueeze(1), projected, self.text_missing))
        if "genres" in self.names:
            projected = self.genre_projection(self.genre_hot)
            parts.append(torch.where(self.genre_present.unsqueeze(1), projected, self.genre_missing))
        if "year" in self.names:
            parts.append(self.years(self.year_codes))
        stack = torch.stack(parts, dim=1)
        return stack * (torch.arange(stack.shape[0], device=stack.device) > 0).view(-1, 1, 1)


TOWER_INPUTS = ("trained", "text_vectors", "text_present", "genre_hot", "genre_present", "year_codes")


class MultiModalNet(nn.Module):
    """Tower + fusion + the SASRec family's stack: the parts training, scoring and explaining share."""

    def __init__(self, inputs: dict[str, torch.Tensor], config: MultiModalConfig) -> None:
        super().__init__()
        self.config = config
        backbone = config.backbone
        self.backbone = SequenceBackbone(0, backbone)  # its own item table stays empty: items come from the tower
        self.tower = ItemTower(inputs, backbone.dim, config.modalities, backbone.xavier_init)
        self.fusion = config.fusion.build(backbone.dim)

    @property
    def modality_names(self) -> tuple[str, ...]:
        return self.tower.names

    @property
    def n_modalities(self) -> int:
        return len(self.tower.names)

    def modality_vectors(self) -> torch.Tensor:
        """``[n_items + 1, M, d]``, each modality's vector scaled by its gate; dropped out while training (one
        mask per batch, shared by the inputs and the scores, as eSASRec's item table)."""
        stack = self.tower()
        stack = stack * self.fusion.gates(stack).unsqueeze(-1)
        return F.dropout(stack, self.config.backbone.item_dropout, self.training)

    def hidden(self, items: torch.Tensor, vectors: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, L, d]`` hidden states of histories whose items' modalities are weighted per user (``weights
        [B, M]``; ``None``: the original view, every modality at 1)."""
        items = items[:, -self.config.backbone.max_len :]
        if weights is None:
            embedded = F.embedding(items, vectors.sum(dim=1), padding_idx=0)
        else:
            n_rows, n_modalities, dim = vectors.shape
            gathered = F.embedding(items, vectors.reshape(n_rows, n_modalities * dim), padding_idx=0)
            embedded = torch.einsum("blmd,bm->bld", gathered.view(*items.shape, n_modalities, dim), weights)
        return self.backbone.contextualise(embedded, items == 0)

    def user_losses(
        self, items: torch.Tensor, targets: torch.Tensor, vectors: torch.Tensor, weights: torch.Tensor, positions: int
    ) -> torch.Tensor:
        """``[B]`` mean full-softmax next-item loss over the last ``positions`` targets of each sequence."""
        hidden = self.hidden(items, vectors, weights)[:, -positions:]
        targets = targets[:, -positions:]
        logits = aligned_linear(hidden, vectors.sum(dim=1)[1:])
        real = targets > 0
        losses = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), (targets - 1).clamp(min=0).reshape(-1), reduction="none"
        ).view(targets.shape)
        return (losses * real).sum(dim=1) / real.sum(dim=1).clamp(min=1)


class MultiModalScorer(nn.Module):
    """The trained net with its items' modality vectors computed once: what evaluation, the ONNX export and
    the service run (``history [B, L]`` -> scores ``[B, n_items + 1]``)."""

    def __init__(self, net: MultiModalNet) -> None:
        super().__init__()
        self.net = net.eval()
        with torch.no_grad():
            self.register_buffer("vectors", net.modality_vectors())
        self.modality_names = net.modality_names

    def hidden(self, history: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        return self.net.hidden(history, self.vectors, weights)[:, -1]

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        return aligned_linear(self.hidden(history), self.vectors.sum(dim=1))


class ModalityExplainer(nn.Module):
    """Per recommended item, each modality's contribution to its score: the score minus the score with that
    modality masked in the history (occlusion, no gradients, so it exports to ONNX).

    ``history [B, L]``, ``items [B, K]`` -> ``[B, K, M]`` in the order of ``modality_names``."""

    def __init__(self, scorer: MultiModalScorer) -> None:
        super().__init__()
        self.scorer = scorer
        self.modality_names = scorer.modality_names

    def forward(self, history: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        vectors = self.scorer.vectors
        n_modalities = vectors.shape[1]
        ones = torch.ones(history.shape[0], n_modalities, dtype=vectors.dtype, device=history.device)
        kept = 1.0 - torch.eye(n_modalities, dtype=vectors.dtype, device=history.device)
        candidates = F.embedding(items, vectors.sum(dim=1))

        def scores(weights: torch.Tensor | None) -> torch.Tensor:
            return (candidates * self.scorer.hidden(history, weights).unsqueeze(1)).sum(dim=-1)

        masked = [scores(ones * kept[m]) for m in range(n_modalities)]
        return scores(None).unsqueeze(-1) - torch.stack(masked, dim=-1)


@dataclass(frozen=True)
class _Batch:
    users: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor


@dataclass
class _MultiModalTask:
    """Batches of randomly mixed users (eSASRec's order), next-item loss and, once labelled, denoising."""

    module: MultiModalNet
    model: "MultiModal"
    split: SplitData
    sequences: Sequences
    users: np.ndarray
    loss_fn: NextItemLoss
    device: torch.device
    batch_size: int
    noise: torch.Tensor | None = None

    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[_Batch]:
        denoising = self.model.config.denoising
        if denoising is not None and epoch >= denoising.start_epoch:
            if self.noise is None or (epoch - denoising.start_epoch) % denoising.refresh_every == 0:
                self.noise = self.model.label_noise(self.split, self.sequences)
        order = self.users[torch.randperm(len(self.users), generator=generator).numpy()]
        max_len = self.module.config.backbone.max_len
        for start in range(0, len(order), self.batch_size):
            users = order[start : start + self.batch_size]
            items = torch.from_numpy(self.sequences.padded(users, max_len + 1)[0])
            inputs, targets = items[:, :-1], items[:, 1:]
            targets = targets.masked_fill(inputs == 0, 0)
            yield _Batch(torch.from_numpy(users), inputs.to(self.device), targets.to(self.device))

    def loss(self, batch: _Batch, epoch: int, generator: torch.Generator) -> torch.Tensor:
        vectors = self.module.modality_vectors()
        table = vectors.sum(dim=1)
        if self.noise is None:
            hidden = self.module.hidden(batch.inputs, vectors)
            return self.loss_fn(hidden, batch.targets, table, generator)
        denoising = self.model.config.denoising
        noise = self.noise[batch.users].to(self.device)
        weights = torch.where(noise, denoising.noise_weight, 1.0).to(vectors.dtype)
        denoised = self.module.hidden(batch.inputs, vectors, weights)
        original = self.module.hidden(batch.inputs, vectors)
        next_item = self.loss_fn(denoised, batch.targets, table, generator)
        if denoising.original_weight > 0:
            next_item = next_item + denoising.original_weight * self.loss_fn(original, batch.targets, table, generator)
        return next_item + denoising.contrastive_weight * view_contrastive_loss(
            original[:, -1], denoised[:, -1], denoising.temperature
        )

    def loss_weight(self, batch: _Batch) -> int:
        """The next-item loss averages over the positions that have a target."""
        return int((batch.targets > 0).sum())

    def validation_score(self) -> float:
        return stage_metric(self.model, self.split.valid, self.model.config.valid_metric)

    def epoch_figures(self, epoch: int) -> dict[str, float]:
        """With denoising, the share of training users each content modality is labelled noise for (NaN before
        the first labels, so the curves line up with the epochs)."""
        if self.model.config.denoising is None:
            return {}
        names = self.module.modality_names
        if self.noise is None:
            return {f"noise_{name}": float("nan") for name in names if name in CONTENT}
        shares = self.noise[self.users].float().mean(dim=0)
        return {f"noise_{name}": float(shares[m]) for m, name in enumerate(names) if name in CONTENT}


def view_contrastive_loss(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row ``b`` of one view against every row of the other, its own row the positive."""
    first, second = F.normalize(first, dim=-1), F.normalize(second, dim=-1)
    logits = aligned_linear(first, second) / temperature
    labels = torch.arange(first.shape[0], device=first.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def noise_labels(contributions: torch.Tensor, content: torch.Tensor, quantile: float) -> torch.Tensor:
    """``[U, M]`` bool: the content modalities (``content [M]`` bool) whose contribution, divided by the sum of
    the user's absolute contributions, falls below ``quantile`` of all users' content values."""
    scale = contributions.abs().sum(dim=1, keepdim=True).clamp(min=1e-12)
    shares = contributions / scale
    threshold = torch.quantile(shares[:, content].flatten().double(), quantile).to(shares.dtype)
    return (shares < threshold) & content.unsqueeze(0)


class MultiModal(TorchRecommender):
    """History in, next-item scores out, items represented by their modalities (``fit(split, modalities=...)``)."""

    family = "multimodal"
    config_class = MultiModalConfig
    config: MultiModalConfig
    evaluation_batch_size = 128

    module: MultiModalNet

    @property
    def max_history_length(self) -> int:
        return self.config.backbone.max_len

    @property
    def modality_names(self) -> tuple[str, ...]:
        self._require_fitted()
        return self.module.modality_names

    def fit(
        self,
        split: SplitData,
        *,
        modalities: ItemModalities | None = None,
        checkpoint_dir: Path | None = None,
        max_epochs: int | None = None,
    ) -> Self:
        """Train on ``split.train`` with ``modalities`` (the pipeline's ``item_features``; default: the split's
        genres and years, no text), early-stopping on ``split.valid``."""
        if modalities is None:
            modalities = ItemModalities(None, split.item_features)
        torch.manual_seed(self.config.seed)
        device = resolve_device(self.config.trainer.device)
        self.n_items = split.n_items
        self.module = MultiModalNet(tower_inputs(split, modalities, self.config.modalities), self.config).to(device)
        self.upstream = {"modalities": {"fused": list(self.module.modality_names)}}
        if modalities.text is not None:
            self.upstream["modalities"]["text_fingerprint"] = modalities.text.fingerprint
        sequences = split.train.sequences()
        task = _MultiModalTask(
            module=self.module,
            model=self,
            split=split,
            sequences=sequences,
            users=np.flatnonzero(sequences.lengths >= 2),
            loss_fn=self.config.loss.build(),
            device=device,
            batch_size=self.config.trainer.batch_size,
        )
        trainer = Trainer(self.config.trainer, self.config.seed, checkpoint_dir)
        self.history = trainer.fit(task, max_epochs)
        self.noise = task.noise
        return self

    def contributions(
        self,
        split: SplitData,
        sequences: Sequences | None = None,
        method: OcclusionContributionConfig | GradientContributionConfig | None = None,
    ) -> torch.Tensor:
        """``[n_users, M]`` each training user's modality contributions to their own next-item loss (rows of
        users with fewer than two training items are zero), measured by ``method`` (default: the config's)."""
        self._require_fitted()
        denoising = self.config.denoising or DenoisingConfig()
        method = method or denoising.contribution
        sequences = sequences if sequences is not None else split.train.sequences()
        users = np.flatnonzero(sequences.lengths >= 2)
        device = next(self.module.parameters()).device
        result = torch.zeros(len(sequences.lengths), self.module.n_modalities)
        was_training = self.module.training
        self.module.eval()
        max_len = self.config.backbone.max_len
        try:
            for start in range(0, len(users), self.evaluation_batch_size):
                chunk = users[start : start + self.evaluation_batch_size]
                items = torch.from_numpy(sequences.padded(chunk, max_len + 1)[0]).to(device)
                inputs, targets = items[:, :-1], items[:, 1:].masked_fill(items[:, :-1] == 0, 0)
                measured = method.measure(self.module, inputs, targets, denoising.positions)
                result[torch.from_numpy(chunk)] = measured.cpu()
        finally:
            self.module.train(was_training)
        return result

    def label_noise(self, split: SplitData, sequences: Sequences | None = None) -> torch.Tensor:
        """``[n_users, M]`` bool: the noise labels of the current model, by ``config.denoising`` (users with
        fewer than two training items: none)."""
        denoising = self.config.denoising or DenoisingConfig()
        sequences = sequences if sequences is not None else split.train.sequences()
        measured = torch.from_numpy(sequences.lengths >= 2)
        content = torch.tensor([name in CONTENT for name in self.module.modality_names])
        labels = torch.zeros(len(measured), len(content), dtype=torch.bool)
        contributions = self.contributions(split, sequences)[measured]
        labels[measured] = noise_labels(contributions, content, denoising.noise_quantile)
        return labels

    def scorer(self) -> MultiModalScorer:
        self._require_fitted()
        return MultiModalScorer(self.module).eval()

    def explainer(self) -> ModalityExplainer:
        """Per-modality contributions to the scores of given items (``POST /explain``)."""
        return ModalityExplainer(self.scorer()).eval()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        inputs = {name: state[f"tower.{name}"] for name in TOWER_INPUTS if f"tower.{name}" in state}
        self.module = MultiModalNet(inputs, self.config)
        self.module.load_state_dict(state)
        self.module.eval()
