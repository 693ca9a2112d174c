"""Cluster stage: item embeddings and the k-means item clusters L-DiffRec's encoders follow; EfficientRec's
soft item clusters and the retrieval index its cluster-restricted scoring reads.

Both assets take their settings from ``recmodels.cluster.ClusteringConfig``: the
embeddings its ``dim`` and ``seed``, the clusters its ``n_clusters`` and
``temperature``. The embeddings save what they were built with (width, seed,
source), so the clusters record the whole config they were made under, and a model
trained on them records that in turn.
"""

import dagster as dg
import numpy as np
import pandas as pd
import torch
from pydantic import Field
from sklearn.decomposition import PCA

from orchestration.config_bridge import launchpad_config
from orchestration.io import WithFiles
from orchestration.outputs import ItemEmbeddings, SoftClusters
from orchestration.plots import cluster_projection, inline_png, rendered
from orchestration.resources import DatasetResource
from recmodels.cluster import (
    ClusteringConfig,
    InvertedIndex,
    aligned_item_embeddings,
    kmeans_item_clusters,
    svd_item_embeddings,
)
from recmodels.cluster.clusters import SVD_SOURCE
from recmodels.data.splits import SplitData
from recmodels.evaluation import evaluate
from recmodels.models import Recommender
from recmodels.models.efficientrec import ClusterScoringConfig, EfficientRec

GROUP = "clusters"

ItemEmbeddingsConfig = launchpad_config(
    "item_embeddings",
    ClusteringConfig(),
    only=("dim", "seed"),
    extra={
        "provided_file": (
            str | None,
            Field(
                default=None,
                description="An item embedding .npy inside the dataset folder (rows = the source's integer item "
                "ids, e.g. item_emb.npy of the DiffRec data); None learns SVD embeddings from the training matrix.",
            ),
        )
    },
)
ItemClustersConfig = launchpad_config("item_clusters", ClusteringConfig(), only=("n_clusters", "temperature"))


@dg.asset(group_name=GROUP, kinds={"numpy"})
def item_embeddings(
    config: ItemEmbeddingsConfig, dataset: DatasetResource, split: SplitData
) -> dg.Output[ItemEmbeddings]:
    """One vector per item (row = internal item id, row 0 padding): SVD of the training matrix or a provided file."""
    if config.provided_file is None:
        vectors = svd_item_embeddings(split.train.csr(), config.dim, config.seed)
        source = SVD_SOURCE
    else:
        path = dataset.source / config.provided_file
        if not path.is_file():
            raise FileNotFoundError(f"provided item embeddings {path} not found")
        vectors = aligned_item_embeddings(split.train.item_ids, np.load(path))
        source = str(path)
    return dg.Output(
        ItemEmbeddings(vectors, config.seed, source),
        metadata={"source": source, "items": split.n_items, "dim": vectors.shape[1]},
    )


@dg.asset(group_name=GROUP, kinds={"scikitlearn"})
def item_clusters(config: ItemClustersConfig, item_embeddings: ItemEmbeddings) -> dg.Output[WithFiles]:
    """k-means over the item embeddings: hard labels, centroids and soft memberships."""
    vectors = item_embeddings.vectors
    settings = ClusteringConfig(
        dim=vectors.shape[1], n_clusters=config.n_clusters, temperature=config.temperature, seed=item_embeddings.seed
    )
    clusters = kmeans_item_clusters(vectors, settings, item_embeddings.source)
    projection = PCA(n_components=2, random_state=settings.seed).fit_transform(vectors[1:])
    chart = rendered(lambda path: cluster_projection(projection, clusters.labels[1:], path))
    sizes = clusters.sizes
    return dg.Output(
        WithFiles(clusters, {"projection.png": chart}),
        metadata={
            "n_clusters": clusters.n_clusters,
            "parameters": dg.MetadataValue.json(clusters.parameters()),
            "cluster_sizes": dg.MetadataValue.json({str(c): int(size) for c, size in enumerate(sizes)}),
            "largest_cluster_share": round(float(sizes.max() / sizes.sum()), 4),
            "mean_max_membership": round(float(clusters.memberships[1:].max(axis=1).mean()), 4),
            "projection": dg.MetadataValue.md(inline_png(chart, "items in 2-D (PCA), coloured by cluster")),
        },
    )


EFFICIENTREC = "efficientrec_model"
RESTRICTED_CLUSTERS = (1, 2, 5, 10)  # top clusters m at which the index's reach is reported


def _efficientrec(model: Recommender) -> EfficientRec:
    if not isinstance(model, EfficientRec):
        raise TypeError(f"{EFFICIENTREC} holds a {type(model).__name__}, not an EfficientRec")
    return model


@dg.asset(group_name=GROUP, ins={"model": dg.AssetIn(EFFICIENTREC, dagster_type=Recommender)}, kinds={"pytorch"})
def item_soft_clusters(model: Recommender) -> dg.Output[WithFiles]:
    """EfficientRec's item memberships over its clusters: sizes, how soft they are, the items in 2-D."""
    model = _efficientrec(model)
    clusters = SoftClusters(model.item_memberships)
    projection = PCA(n_components=2, random_state=model.config.seed).fit_transform(model.item_vectors[1:])
    strongest = clusters.memberships[1:].argmax(axis=1)
    chart = rendered(lambda path: cluster_projection(projection, strongest, path))
    sizes = clusters.sizes
    return dg.Output(
        WithFiles(clusters, {"projection.png": chart}),
        metadata={
            "n_clusters": len(sizes),
            "cluster_sizes": dg.MetadataValue.json({str(c): int(size) for c, size in enumerate(sizes)}),
            "largest_cluster_share": round(float(sizes.max() / sizes.sum()), 4),
            "empty_clusters": int((sizes == 0).sum()),
            "mean_membership_entropy": round(clusters.mean_entropy, 4),
            "projection": dg.MetadataValue.md(inline_png(chart, "items in 2-D (PCA of the item vectors), by cluster")),
        },
    )


@dg.asset(
    group_name=GROUP,
    ins={"model": dg.AssetIn(EFFICIENTREC, dagster_type=Recommender), "split": dg.AssetIn("split")},
    kinds={"numpy"},
)
def cluster_retrieval_index(model: Recommender, split: SplitData) -> dg.Output[InvertedIndex]:
    """The inverted lists cluster -> items, and what restricted scoring over them costs and keeps on the
    validation users at m = 1, 2, 5, 10 clusters (share of the catalogue scored, NDCG@10 against exhaustive)."""
    model = _efficientrec(model)
    index = model.inverted_index
    histories = split.valid.history.sequences().padded(split.valid.users, model.max_history_length)[0]
    exhaustive = evaluate(model, split.valid, (10,)).metrics["ndcg@10"]
    reach = []
    for clusters in RESTRICTED_CLUSTERS:
        restricted = model.with_scoring(ClusterScoringConfig(top_clusters=clusters))
        ndcg = evaluate(restricted, split.valid, (10,)).metrics["ndcg@10"]
        share = restricted.catalogue_share(torch.from_numpy(histories))
        reach.append({"clusters": clusters, "catalogue_share": round(share, 4), "valid_ndcg@10": round(ndcg, 5)})
    lengths = index.lengths
    return dg.Output(
        index,
        metadata={
            "n_clusters": len(lengths),
            "longest_list": int(lengths.max()),
            "mean_list_length": round(float(lengths.mean()), 1),
            "valid_ndcg@10_exhaustive": round(exhaustive, 5),
            "restricted_scoring": dg.MetadataValue.md(pd.DataFrame(reach).to_markdown(index=False)),
        },
    )
