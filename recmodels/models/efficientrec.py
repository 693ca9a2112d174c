"""EfficientRec (Quan et al., arXiv 2401.09693): user-ID-free profiles and soft-cluster candidate retrieval.

No user table: a user is the pooled vectors of the items in their history, so the parameter count
does not grow with users and a user never seen in training is served from their history alone.
Item vectors come from an id embedding through an MLP, then LightGCN-style hops over a normalised
item graph of the training split. A soft-cluster head gives profiles and items memberships over
``C`` clusters; at serving the profile's top clusters name the candidates (an inverted index
cluster -> items) and only those are scored exactly.

Composed of typed parts: the item graph, the pooling, the memberships, the scoring. Training
(``EfficientRecNet`` inside ``_ProfileTask``) is separate from the model, whose whole state is what
scoring reads: the propagated item vectors, the pooling's parameters, the centroids and the
inverted lists.

Not (yet) from the paper's notebook: rating weights (the scoring contract is history ids in, so a
profile weights items by recency, the same in training and serving), item side features (genres,
year: the split carries no item metadata) and the triplet loss on genre pseudo-labels; the loss
here is the project's: InfoNCE to the next item, a contrastive term between two views of one
history, and a term that makes the profile's memberships predict where its positives live.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterator, Self

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from recmodels.cluster.inverted import InvertedIndex, gather_lists
from recmodels.config import PartConfig
from recmodels.data.interactions import Interactions, Sequences
from recmodels.data.splits import SplitData
from recmodels.evaluation import stage_metric
from recmodels.features.side import ItemSideFeatures
from recmodels.graph.transitions import item_transition_graph
from recmodels.models.base import ModelConfig, TorchRecommender
from recmodels.nn.losses import semi_hard_triplet_loss
from recmodels.train import Trainer, TrainerConfig, resolve_device

# ---------------------------------------------------------------- parts


@dataclass(frozen=True)
class CoInteractionGraphConfig(PartConfig):
    """Items linked by the users who interacted with both, each keeping its ``neighbours`` strongest links."""

    kind = "co_interaction_graph"
    neighbours: int = 50

    def build(self, train: Interactions, sequences: Sequences) -> sp.csr_matrix:
        matrix = train.csr()
        counts = (matrix.T @ matrix).tocsr().astype(np.float64)
        counts.setdiag(0)
        return _normalised(_strongest(counts, self.neighbours))


@dataclass(frozen=True)
class TransitionGraphConfig(PartConfig):
    """The weighted item transition graph (the pipeline's ``item_transition_graph``), pruned the same way."""

    kind = "transition_graph"
    neighbours: int = 50
    max_distance: int = 3

    def build(self, train: Interactions, sequences: Sequences) -> sp.csr_matrix:
        graph = item_transition_graph(sequences, train.n_items, self.max_distance)
        return _normalised(_strongest(graph, self.neighbours))


def _strongest(graph: sp.csr_matrix, neighbours: int) -> sp.csr_matrix:
    """Each row's ``neighbours`` largest entries (ties to the lower column), symmetrised by the maximum."""
    graph = graph.tocsr()
    graph.eliminate_zeros()
    rows = np.repeat(np.arange(graph.shape[0]), np.diff(graph.indptr))
    order = np.lexsort((graph.indices, -graph.data, rows))  # by row, strongest first
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - graph.indptr[rows[order]]
    keep = rank < neighbours
    pruned = sp.csr_matrix((graph.data[keep], (rows[keep], graph.indices[keep])), shape=graph.shape)
    return pruned.maximum(pruned.T).tocsr()


def _normalised(graph: sp.csr_matrix) -> sp.csr_matrix:
    """``D^-1/2 A D^-1/2`` (LightGCN), isolated items left without edges."""
    degree = np.asarray(graph.sum(axis=1)).ravel()
    scale = np.divide(1.0, np.sqrt(degree), out=np.zeros_like(degree), where=degree > 0)
    return (sp.diags(scale) @ graph @ sp.diags(scale)).tocsr().astype(np.float32)


@dataclass(frozen=True)
class ItemEncoderConfig(PartConfig):
    """Id embedding plus, where the split has item metadata and ``side_features`` is on, a genre branch (a linear
    map of the multi-hot genres) and a year branch (an embedding of ``year_buckets`` quantile buckets, one for
    unknown); their sum through a residual MLP, then ``hops`` propagation steps over the item graph (the mean
    of the hops)."""

    kind = "item_encoder"
    dim: int = 64
    hidden: int = 128
    hops: int = 2
    # Which graph is better depends on the data (docs/efficientrec.md): on ML-1M leave-one-out the transition
    # graph (valid NDCG@10 0.1134 against 0.1055 after 8 epochs), on ML-100K's per-user temporal split, several
    # targets per user, the co-interaction graph by far (test 0.099 against 0.046, 6 short epochs); the
    # default is the one that never failed badly, the benchmarks set the transition graph for the sequences
    graph: CoInteractionGraphConfig | TransitionGraphConfig = CoInteractionGraphConfig()
    side_features: bool = True
    year_buckets: int = 10


@dataclass(frozen=True)
class WeightedMeanPoolingConfig(PartConfig):
    """The paper's profile: the mean of the history's item vectors, the latest weighted most with a decay < 1."""

    kind = "weighted_mean_pooling"
    # ML-1M leave-one-out, 8 epochs, test NDCG@10: 0.0670 at 0.9, 0.1016 at 0.7, 0.1033 at 0.5 (1.0, the
    # plain mean, had valid 0.0280 after 3 epochs against 0.0566 at 0.9)
    recency_decay: float = 0.5

    def build(self, dim: int) -> "Pooling":
        return WeightedMeanPooling(self.recency_decay)


@dataclass(frozen=True)
class AttentionPoolingConfig(PartConfig):
    """A learned query attends over the history's item vectors (positions weighted by recency as above)."""

    kind = "attention_pooling"
    recency_decay: float = 1.0

    def build(self, dim: int) -> "Pooling":
        return AttentionPooling(dim, self.recency_decay)


@dataclass(frozen=True)
class SoftmaxMembershipConfig(PartConfig):
    """Memberships over the clusters sum to one."""

    kind = "softmax_membership"
    temperature: float = 0.1

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits / self.temperature, dim=-1)


@dataclass(frozen=True)
class SigmoidMembershipConfig(PartConfig):
    """Independent memberships per cluster (the notebook's sigmoid head)."""

    kind = "sigmoid_membership"
    temperature: float = 0.1

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits / self.temperature)


@dataclass(frozen=True)
class ClusterHeadConfig(PartConfig):
    kind = "cluster_head"
    # ML-1M, 8 epochs: 128 clusters kept 96% of exhaustive NDCG@10 at m = 2 scoring 9.6% of the items, 32 kept
    # 95% at 9.0% (docs/efficientrec.md)
    clusters: int = 128
    membership: SoftmaxMembershipConfig | SigmoidMembershipConfig = SoftmaxMembershipConfig()


@dataclass
class _Step:
    """What a loss's cluster terms read from one training step."""

    net: "EfficientRecNet"
    batch: "_ProfileBatch"
    vectors: torch.Tensor  # [n_items + 1, d]
    profiles: torch.Tensor  # [B, d]
    membership: "SoftmaxMembershipConfig | SigmoidMembershipConfig"
    generator: torch.Generator
    genres: torch.Tensor | None

    def memberships(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.membership(vectors @ self.net.centroids.T)

    def balance(self) -> torch.Tensor:
        """Imbalance of the batch's profiles plus that of the whole catalogue: the candidates a cluster lists are
        what restricted scoring pays for."""
        return _imbalance(self.memberships(self.profiles)) + _imbalance(self.memberships(self.vectors[1:]))


@dataclass(frozen=True)
class ProfileContrastiveLossConfig(PartConfig):
    """The project's: InfoNCE from a history crop's profile to its next item (in-batch and sampled negatives,
    accidental hits masked), plus InfoNCE between the profiles of two item-dropout views, plus the cluster term:
    the profile's memberships should put weight where the positive item's memberships are; ``balance_weight``
    keeps the clusters from collapsing into a few (KL of the mean membership from uniform)."""

    kind = "profile_contrastive"
    needs_genres = False
    # ML-100K, per-user temporal split: test NDCG@10 0.1175 at 0.05 and 1,024 negatives against 0.1038 at 0.1
    # and 256 (docs/efficientrec.md)
    temperature: float = 0.05
    n_negatives: int = 1024
    view_weight: float = 0.1
    item_dropout: float = 0.2
    cluster_weight: float = 0.1
    balance_weight: float = 0.1

    def terms(self, step: _Step) -> torch.Tensor:
        history, own = step.batch.history, torch.arange(len(step.batch.positive), device=step.profiles.device)
        views = []
        for _ in range(2):
            keep = torch.rand(history.shape, generator=step.generator).to(history.device) >= self.item_dropout
            views.append(F.normalize(step.net.profiles(history * keep, step.vectors), dim=-1))
        view_loss = F.cross_entropy(views[0] @ views[1].T / self.temperature, own)
        profile_membership = step.memberships(step.profiles)
        item_membership = step.memberships(F.embedding(step.batch.positive, step.vectors))
        overlap = (profile_membership * item_membership).sum(-1) / item_membership.sum(-1).clamp_min(1e-9)
        cluster_loss = -torch.log(overlap.clamp_min(1e-9)).mean()
        return self.view_weight * view_loss + self.cluster_weight * cluster_loss + self.balance_weight * step.balance()


@dataclass(frozen=True)
class GenreTripletLossConfig(PartConfig):
    """The paper's: a semi-hard triplet loss on the profiles' cluster memberships, each history crop labelled by
    its dominant genre (the most frequent among its items, ties to the first in the vocabulary; crops whose
    items have no genre take no part). The next-item InfoNCE (``temperature``, ``n_negatives``) trains the
    scores, as the notebook's rating regression did. Needs item genres."""

    kind = "genre_triplet"
    needs_genres = True
    temperature: float = 0.05
    n_negatives: int = 1024
    margin: float = 0.5
    triplet_weight: float = 1.0
    balance_weight: float = 0.1

    def terms(self, step: _Step) -> torch.Tensor:
        history = step.batch.history
        counts = (F.embedding(history, step.genres) * (history > 0)[..., None]).sum(1)
        labels = torch.where(counts.sum(1) > 0, counts.argmax(1), -1)
        triplet = semi_hard_triplet_loss(step.memberships(step.profiles), labels, self.margin)
        return self.triplet_weight * triplet + self.balance_weight * step.balance()


@dataclass(frozen=True)
class ExhaustiveScoringConfig(PartConfig):
    """The profile against every item."""

    kind = "exhaustive_scoring"


@dataclass(frozen=True)
class ThresholdListsConfig(PartConfig):
    """An item is listed in every cluster where its membership is at least ``threshold`` and always in its
    strongest one, so with every cluster chosen the candidates are the whole catalogue. Lists are as long as
    the clusters are large: on Yelp one learned cluster listed 27% of the items and most profiles chose it."""

    kind = "threshold_lists"
    threshold: float = 0.2

    def build(self, memberships: np.ndarray, top_clusters: int) -> InvertedIndex:
        return InvertedIndex.thresholded(memberships, self.threshold)


@dataclass(frozen=True)
class ShortlistsConfig(PartConfig):
    """The notebook's: each cluster lists its items of highest membership, ``length`` of them, or where that is
    unset as many as keep the ``top_clusters`` lists a profile reads within ``catalogue_share`` of the catalogue
    (a budget that holds on any catalogue). An item may be in no list."""

    kind = "shortlists"
    # 8%: at m = 2, 148 items per list on ML-1M and 801 on Yelp, which kept 98.6-100.3% and 99.4-100.1% of
    # exhaustive NDCG@10 (3 seeds each, docs/efficientrec.md); threshold lists on Yelp scored 17-19%
    catalogue_share: float = 0.08
    length: int | None = None

    def items_per_list(self, n_items: int, top_clusters: int) -> int:
        if self.length is not None:
            return self.length
        return max(1, int(self.catalogue_share * n_items / top_clusters))

    def build(self, memberships: np.ndarray, top_clusters: int) -> InvertedIndex:
        return InvertedIndex.shortlisted(memberships, self.items_per_list(len(memberships) - 1, top_clusters))


@dataclass(frozen=True)
class ClusterScoringConfig(PartConfig):
    """The profile's ``top_clusters`` clusters -> their inverted lists -> exact scores for those items only."""

    kind = "cluster_scoring"
    # with the default lists, m = 2 kept the most on both ML-1M and Yelp (m = 3: 96.9% on one ML-1M seed)
    top_clusters: int = 2
    lists: ShortlistsConfig | ThresholdListsConfig = ShortlistsConfig()

    def index(self, memberships: np.ndarray) -> InvertedIndex:
        return self.lists.build(memberships, self.top_clusters)


@dataclass(frozen=True)
class EfficientRecConfig(ModelConfig):
    items: ItemEncoderConfig = ItemEncoderConfig()
    pooling: WeightedMeanPoolingConfig | AttentionPoolingConfig = WeightedMeanPoolingConfig()
    clusters: ClusterHeadConfig = ClusterHeadConfig()
    loss: ProfileContrastiveLossConfig | GenreTripletLossConfig = ProfileContrastiveLossConfig()
    scoring: ExhaustiveScoringConfig | ClusterScoringConfig = ExhaustiveScoringConfig()
    max_len: int = 200
    crops_per_user: int = 8  # training examples per user and epoch: random cuts of the sequence
    trainer: TrainerConfig = TrainerConfig(epochs=30, batch_size=256, lr=1e-3, patience=5)
    valid_metric: str = "ndcg@10"


# ---------------------------------------------------------------- modules


class Pooling(nn.Module):
    """``forward(vectors [B, L, d], mask [B, L]) -> profile [B, d]``; an all-padding history gives zeros."""


def _recency(mask: torch.Tensor, decay: float) -> torch.Tensor:
    """Position weights, 1 for the latest item, ``decay`` per step back, 0 on padding (histories are left-padded)."""
    steps_back = torch.arange(mask.shape[1] - 1, -1, -1, device=mask.device, dtype=torch.float32)
    return torch.pow(torch.tensor(decay, dtype=torch.float32), steps_back)[None, :] * mask


class WeightedMeanPooling(Pooling):
    def __init__(self, decay: float) -> None:
        super().__init__()
        self.decay = decay

    def forward(self, vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = _recency(mask, self.decay)
        return (vectors * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1e-9)


class AttentionPooling(Pooling):
    def __init__(self, dim: int, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.query = nn.Parameter(torch.zeros(dim))

    def forward(self, vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = (vectors @ self.query) / math.sqrt(vectors.shape[-1])
        weights = torch.exp(logits - logits.max(dim=1, keepdim=True).values) * _recency(mask, self.decay)
        return (vectors * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1e-9)


class EfficientRecNet(nn.Module):
    """What training optimises: the item encoder over a fixed graph, the pooling and the centroids."""

    def __init__(
        self, n_items: int, config: EfficientRecConfig, graph: sp.csr_matrix, features: ItemSideFeatures | None
    ) -> None:
        super().__init__()
        encoder = config.items
        self.hops = encoder.hops
        self.embedding = nn.Embedding(n_items + 1, encoder.dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=encoder.dim**-0.5)
        self.side = _SideBranches(features, encoder) if encoder.side_features and features is not None else None
        self.mlp = nn.Sequential(
            nn.Linear(encoder.dim, encoder.hidden), nn.GELU(), nn.Linear(encoder.hidden, encoder.dim)
        )
        self.pooling = config.pooling.build(encoder.dim)
        self.centroids = nn.Parameter(torch.randn(config.clusters.clusters, encoder.dim) * encoder.dim**-0.5)
        self.graph = graph.tocsr().astype(np.float32)
        coo = self.graph.tocoo()
        self._graph_on_device = torch.sparse_coo_tensor(
            np.vstack([coo.row, coo.col]), coo.data, graph.shape, dtype=torch.float32, check_invariants=True
        ).coalesce()

    def item_vectors(self) -> torch.Tensor:
        """``[n_items + 1, d]``; row 0 (padding) is zero."""
        inputs = self.embedding.weight if self.side is None else self.embedding.weight + self.side()
        base = inputs + self.mlp(inputs)
        hops, current = [base], base
        for _ in range(self.hops):
            current = self._propagate(current)
            hops.append(current)
        vectors = torch.stack(hops).mean(0)
        return torch.cat([torch.zeros_like(vectors[:1]), vectors[1:]])

    def profiles(self, history: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Gathers go through ``F.embedding``: on a CPU with 2 threads the backward of plain indexing
        (``index_put_`` with accumulation) summed in a varying order, so two refits differed in the last bit."""
        return self.pooling(F.embedding(history, vectors), (history > 0).float())

    def _propagate(self, vectors: torch.Tensor) -> torch.Tensor:
        """One hop ``A @ vectors``: SciPy's CSR product on the CPU (about five times torch's sparse COO product
        with its backward, on ML-1M's graph), torch's sparse product on an accelerator."""
        if vectors.device.type == "cpu":
            return _SymmetricProduct.apply(vectors, self.graph)
        return torch.sparse.mm(self._graph_on_device.to(vectors.device), vectors)


class _SideBranches(nn.Module):
    """``[n_items + 1, d]``: a linear map of each item's multi-hot genres plus an embedding of its year bucket."""

    def __init__(self, features: ItemSideFeatures, encoder: ItemEncoderConfig) -> None:
        super().__init__()
        self.register_buffer("genres", torch.from_numpy(features.genres.toarray().astype(np.float32)))
        self.register_buffer("years", torch.from_numpy(features.year_buckets(encoder.year_buckets)))
        self.genre = nn.Linear(self.genres.shape[1], encoder.dim, bias=False)
        self.year = nn.Embedding(encoder.year_buckets + 1, encoder.dim)
        nn.init.normal_(self.year.weight, std=encoder.dim**-0.5)

    def forward(self) -> torch.Tensor:
        return self.genre(self.genres) + self.year(self.years)


class _SymmetricProduct(torch.autograd.Function):
    """``graph @ x`` for a symmetric SciPy matrix; the gradient is ``graph.T @ grad = graph @ grad``."""

    @staticmethod
    def forward(ctx, vectors: torch.Tensor, graph: sp.csr_matrix) -> torch.Tensor:
        ctx.graph = graph
        return torch.from_numpy(np.asarray(graph @ vectors.detach().numpy(), dtype=np.float32))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return torch.from_numpy(np.asarray(ctx.graph @ grad.contiguous().numpy(), dtype=np.float32)), None


class ProfileScorer(nn.Module):
    """Serving and evaluation: ``forward(history int64 [B, L]) -> scores [B, n_items + 1]``."""

    def __init__(self, item_vectors: torch.Tensor, pooling: Pooling) -> None:
        super().__init__()
        self.register_buffer("item_vectors", item_vectors)
        self.pooling = pooling

    def profiles(self, history: torch.Tensor) -> torch.Tensor:
        return self.pooling(self.item_vectors[history], (history > 0).float())

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        return self.profiles(history) @ self.item_vectors.T


class ClusterRestrictedScorer(ProfileScorer):
    """Exact scores for the items listed under the profile's top clusters; every other item scores one floor
    value below all of them."""

    def __init__(
        self,
        item_vectors: torch.Tensor,
        pooling: Pooling,
        centroids: torch.Tensor,
        index: InvertedIndex,
        membership: SoftmaxMembershipConfig | SigmoidMembershipConfig,
        top_clusters: int,
    ) -> None:
        super().__init__(item_vectors, pooling)
        self.register_buffer("centroids", centroids)
        self.register_buffer("list_offsets", torch.from_numpy(index.offsets))
        self.register_buffer("list_items", torch.from_numpy(index.items))
        self.membership = membership
        self.top_clusters = min(top_clusters, centroids.shape[0])

    def candidates(self, profiles: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` item ids under each profile's top clusters, end to end, 0 after a row's last; an item listed
        in two chosen clusters appears twice."""
        chosen = torch.topk(self.membership(profiles @ self.centroids.T), self.top_clusters, dim=1).indices
        return gather_lists(self.list_offsets, self.list_items, chosen)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """Candidates keep their exact scores; every other item gets one floor value below all of them, so scores
        stay finite and a list shorter than ``k`` is filled by the lowest ids, never ranked above a candidate."""
        profiles = self.profiles(history)
        candidates = self.candidates(profiles)
        scores = torch.bmm(F.embedding(candidates, self.item_vectors), profiles[:, :, None])[..., 0]
        floor = scores.min(dim=1, keepdim=True).values - 1.0
        return floor.expand(-1, self.item_vectors.shape[0]).scatter(1, candidates, scores)


# ---------------------------------------------------------------- training


def _imbalance(memberships: torch.Tensor) -> torch.Tensor:
    """KL divergence of the mean membership from uniform: 0 when every cluster gets an equal share."""
    mean = memberships.mean(0) / memberships.mean(0).sum()
    return (mean * torch.log(mean.clamp_min(1e-9) * len(mean))).sum()


@dataclass
class _ProfileBatch:
    history: torch.Tensor  # [B, L] a crop of each user's sequence
    positive: torch.Tensor  # [B] the item after the crop


@dataclass
class _ProfileTask:
    module: EfficientRecNet
    model: "EfficientRec"
    split: SplitData
    sequences: Sequences
    users: np.ndarray
    config: EfficientRecConfig
    device: torch.device
    genres: torch.Tensor | None  # [n_items + 1, G] multi-hot, for losses that read genres

    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[_ProfileBatch]:
        """``crops_per_user`` crops per user per epoch: a random cut, the items before it (the latest ``max_len``)
        and the next item."""
        users = np.repeat(self.users, self.config.crops_per_user)
        order = users[torch.randperm(len(users), generator=generator).numpy()]
        size, max_len = self.config.trainer.batch_size, self.config.max_len
        for start in range(0, len(order), size):
            users = order[start : start + size]
            begins, lengths = self.sequences.indptr[users], self.sequences.lengths[users]
            cuts = 1 + (torch.rand(len(users), generator=generator).numpy() * (lengths - 1)).astype(np.int64)
            source = begins[:, None] + cuts[:, None] - max_len + np.arange(max_len)[None, :]
            filled = source >= begins[:, None]
            history = np.where(filled, self.sequences.items[np.where(filled, source, 0)], 0)
            positive = self.sequences.items[begins + cuts]
            yield _ProfileBatch(torch.from_numpy(history).to(self.device), torch.from_numpy(positive).to(self.device))

    def loss(self, batch: _ProfileBatch, epoch: int, generator: torch.Generator) -> torch.Tensor:
        """InfoNCE from each crop's profile to its next item (every loss has it: it trains the scores), plus the
        configured loss's cluster terms."""
        config, net = self.config.loss, self.module
        vectors = net.item_vectors()
        profiles = net.profiles(batch.history, vectors)
        n_items = vectors.shape[0] - 1
        sampled = torch.randint(1, n_items + 1, (config.n_negatives,), generator=generator).to(self.device)
        candidates = torch.cat([batch.positive, sampled])  # in-batch positives first, then sampled items
        logits = profiles @ F.embedding(candidates, vectors).T / config.temperature
        own = torch.arange(len(batch.positive), device=self.device)
        accidental = candidates[None, :] == batch.positive[:, None]
        accidental[own, own] = False
        next_item = F.cross_entropy(logits.masked_fill(accidental, float("-inf")), own)
        step = _Step(net, batch, vectors, profiles, self.config.clusters.membership, generator, self.genres)
        return next_item + config.terms(step)

    def validation_score(self) -> float:
        return stage_metric(self.model, self.split.valid, self.model.config.valid_metric)

    def epoch_figures(self, epoch: int) -> dict[str, float]:
        return {}


# ---------------------------------------------------------------- the model


class EfficientRec(TorchRecommender):
    """User-ID-free profiles over graph-propagated item vectors, scored exhaustively or within soft clusters."""

    family = "efficientrec"
    config_class = EfficientRecConfig
    config: EfficientRecConfig

    @property
    def evaluation_batch_size(self) -> int:  # type: ignore[override]
        """Restricted scoring gathers a vector per listed candidate of each row (a batch pads to its longest row), so
        it scores fewer rows at once."""
        return 64 if isinstance(self.config.scoring, ClusterScoringConfig) else 512

    @property
    def max_history_length(self) -> int:
        return self.config.max_len

    def fit(self, split: SplitData) -> Self:
        """Train on ``split.train``, early-stopping on ``split.valid``; then freeze what scoring reads."""
        torch.manual_seed(self.config.seed)
        config = self.config
        device = resolve_device(config.trainer.device)
        self.n_items = split.n_items
        sequences = split.train.sequences()
        graph = config.items.graph.build(split.train, sequences)
        self._net = EfficientRecNet(split.n_items, config, graph, split.item_features).to(device)
        if config.loss.needs_genres and split.item_features is None:
            raise ValueError(
                f"the {config.loss.kind} loss labels profiles by their dominant genre, and this split has no item "
                "metadata (SplitData.item_features); use the profile_contrastive loss or a dataset with genres"
            )
        genres = None  # dense multi-hot, only for a loss that reads it (the side branch holds its own copy)
        if config.loss.needs_genres:
            genres = torch.from_numpy(split.item_features.genres.toarray().astype(np.float32)).to(device)
        trained_users = np.flatnonzero(sequences.lengths >= 2)
        task = _ProfileTask(self._net, self, split, sequences, trained_users, config, device, genres)
        self.history = Trainer(config.trainer, config.seed, None).fit(task)
        self._freeze()
        return self

    def _freeze(self) -> None:
        """The trained net -> the state scoring reads (item vectors, pooling, centroids, inverted lists)."""
        net = self._net
        with torch.no_grad():
            vectors = net.item_vectors().detach().cpu()
        pooling = {f"pooling.{name}": value.detach().cpu() for name, value in net.pooling.state_dict().items()}
        self._state = {"item_vectors": vectors, "centroids": net.centroids.detach().cpu()} | pooling
        self._net = None
        scoring = self.config.scoring
        scoring = scoring if isinstance(scoring, ClusterScoringConfig) else ClusterScoringConfig()
        self._set_index(scoring.index(self.item_memberships))

    def scorer(self) -> nn.Module:
        self._require_fitted()
        if getattr(self, "_net", None) is not None:  # validation during training
            with torch.no_grad():
                return ProfileScorer(self._net.item_vectors().detach(), self._net.pooling).eval()
        pooling = self.config.pooling.build(self._state["item_vectors"].shape[1])
        prefix = "pooling."
        pooling.load_state_dict(
            {name.removeprefix(prefix): value for name, value in self._state.items() if name.startswith(prefix)}
        )
        scoring = self.config.scoring
        if isinstance(scoring, ClusterScoringConfig):
            return ClusterRestrictedScorer(
                self._state["item_vectors"],
                pooling,
                self._state["centroids"],
                self.inverted_index,
                self.config.clusters.membership,
                scoring.top_clusters,
            ).eval()
        return ProfileScorer(self._state["item_vectors"], pooling).eval()

    def with_scoring(self, scoring: ExhaustiveScoringConfig | ClusterScoringConfig) -> "EfficientRec":
        """The same trained model scored another way (its inverted lists rebuilt as ``scoring`` says)."""
        other = EfficientRec(dataclasses.replace(self.config, scoring=scoring))
        other.n_items, other.upstream, other.history = self.n_items, self.upstream, self.history
        other.load_state_dict(self.state_dict())
        if isinstance(scoring, ClusterScoringConfig):
            other._set_index(scoring.index(self.item_memberships))
        return other

    @property
    def item_vectors(self) -> np.ndarray:
        """``[n_items + 1, d]`` propagated item vectors, row 0 padding."""
        self._require_fitted()
        return self._state["item_vectors"].numpy()

    @property
    def item_memberships(self) -> np.ndarray:
        """``[n_items + 1, C]`` each item's memberships over the clusters (row 0: padding)."""
        self._require_fitted()
        with torch.no_grad():
            return self.config.clusters.membership(self._state["item_vectors"] @ self._state["centroids"].T).numpy()

    @property
    def inverted_index(self) -> InvertedIndex:
        """The lists cluster -> item ids that cluster-restricted scoring reads."""
        self._require_fitted()
        return InvertedIndex(self._state["list_offsets"].numpy(), self._state["list_items"].numpy())

    def _set_index(self, index: InvertedIndex) -> None:
        self._state["list_offsets"] = torch.from_numpy(index.offsets)
        self._state["list_items"] = torch.from_numpy(index.items)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: value.clone() for name, value in self._state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._net = None
        self._state = {name: value.clone() for name, value in state.items()}

    def catalogue_share(self, history: torch.Tensor) -> float:
        """Mean share of the catalogue the configured scoring scores exactly for these histories (1 exhaustive)."""
        scorer = self.scorer()
        if not isinstance(scorer, ClusterRestrictedScorer):
            return 1.0
        with torch.no_grad():
            candidates = scorer.candidates(scorer.profiles(history))
        listed = torch.zeros(candidates.shape[0], self._require_fitted() + 1, dtype=torch.bool)
        listed.scatter_(1, candidates, True)
        return float(listed[:, 1:].float().mean())
