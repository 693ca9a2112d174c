"""Cluster stage: item embeddings and the k-means item clusters L-DiffRec's encoders follow."""

from pathlib import Path

import dagster as dg
import numpy as np
from pydantic import Field
from sklearn.decomposition import PCA

from orchestration.plots import cluster_projection, inline_png
from orchestration.resources import ArtifactStore, DatasetResource
from recmodels.cluster import ItemClusters, aligned_item_embeddings, kmeans_item_clusters, svd_item_embeddings
from recmodels.data.splits import load_split

GROUP = "clusters"
EMBEDDINGS_FILE = "item_embeddings.npy"


class ItemEmbeddingsConfig(dg.Config):
    provided_file: str | None = Field(
        default=None,
        description="An item embedding .npy inside the dataset folder (rows = the source's integer item ids, "
        "e.g. item_emb.npy of the DiffRec data); None learns SVD embeddings from the training matrix.",
    )
    dim: int = Field(default=64, description="SVD embedding size (ignored for a provided file).")
    seed: int = 0


@dg.asset(group_name=GROUP, deps=["split"], kinds={"numpy"})
def item_embeddings(
    config: ItemEmbeddingsConfig, dataset: DatasetResource, store: ArtifactStore
) -> dg.MaterializeResult:
    """One vector per item (row = internal item id, row 0 padding): SVD of the training matrix or a provided file."""
    data = load_split(store.folder("split"))
    if config.provided_file is None:
        embeddings = svd_item_embeddings(data.train.csr(), config.dim, config.seed)
        source = f"svd(dim={config.dim})"
    else:
        path = dataset.source / config.provided_file
        if not path.is_file():
            raise FileNotFoundError(f"provided item embeddings {path} not found")
        embeddings = aligned_item_embeddings(data.train.item_ids, np.load(path))
        source = str(path)
    folder = store.fresh_folder("item_embeddings")
    np.save(folder / EMBEDDINGS_FILE, embeddings)
    version, dvc_metadata = store.version(folder)
    return dg.MaterializeResult(
        data_version=version,
        metadata={"source": source, "items": data.n_items, "dim": embeddings.shape[1], **dvc_metadata},
    )


class ItemClustersConfig(dg.Config):
    n_clusters: int = Field(default=2, description="k of k-means (L-DiffRec's ML-1M setting: 2).")
    temperature: float = Field(default=1.0, description="Softness of the memberships (softmax of -distance^2 / T).")
    seed: int = 0


@dg.asset(group_name=GROUP, deps=[item_embeddings], kinds={"scikitlearn"})
def item_clusters(config: ItemClustersConfig, store: ArtifactStore) -> dg.MaterializeResult:
    """k-means over the item embeddings: hard labels, centroids and soft memberships."""
    embeddings = np.load(store.folder("item_embeddings") / EMBEDDINGS_FILE)
    clusters = kmeans_item_clusters(embeddings, config.n_clusters, config.seed, config.temperature)
    folder = store.fresh_folder("item_clusters")
    clusters.save(folder)
    projection = PCA(n_components=2, random_state=config.seed).fit_transform(embeddings[1:])
    chart = cluster_projection(projection, clusters.labels[1:], folder / "projection.png")
    version, dvc_metadata = store.version(folder)
    sizes = clusters.sizes
    return dg.MaterializeResult(
        data_version=version,
        metadata={
            "n_clusters": clusters.n_clusters,
            "cluster_sizes": dg.MetadataValue.json({str(c): int(size) for c, size in enumerate(sizes)}),
            "largest_cluster_share": round(float(sizes.max() / sizes.sum()), 4),
            "mean_max_membership": round(float(clusters.memberships[1:].max(axis=1).mean()), 4),
            "projection": dg.MetadataValue.md(inline_png(chart, "items in 2-D (PCA), coloured by cluster")),
            **dvc_metadata,
        },
    )


def load_clusters(store: ArtifactStore) -> ItemClusters:
    return ItemClusters.load(Path(store.folder("item_clusters")))
