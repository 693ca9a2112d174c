"""Cluster stage: item embeddings and the k-means item clusters L-DiffRec's encoders follow.

Both assets take their settings from ``recmodels.cluster.ClusteringConfig``: the
embeddings its ``dim`` and ``seed``, the clusters its ``n_clusters`` and
``temperature``. The embeddings save what they were built with (width, seed,
source), so the clusters record the whole config they were made under, and a model
trained on them records that in turn.
"""

import json

import dagster as dg
import numpy as np
from pydantic import Field
from sklearn.decomposition import PCA

from orchestration.config_bridge import launchpad_config
from orchestration.plots import cluster_projection, inline_png
from orchestration.resources import ArtifactStore, DatasetResource
from recmodels.cluster import ClusteringConfig, aligned_item_embeddings, kmeans_item_clusters, svd_item_embeddings
from recmodels.cluster.clusters import SVD_SOURCE
from recmodels.data.splits import load_split

GROUP = "clusters"
EMBEDDINGS_FILE = "item_embeddings.npy"
EMBEDDINGS_PARAMETERS_FILE = "item_embeddings.json"

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


@dg.asset(group_name=GROUP, deps=["split"], kinds={"numpy"})
def item_embeddings(
    config: ItemEmbeddingsConfig, dataset: DatasetResource, store: ArtifactStore
) -> dg.MaterializeResult:
    """One vector per item (row = internal item id, row 0 padding): SVD of the training matrix or a provided file."""
    data = load_split(store.folder("split"))
    if config.provided_file is None:
        embeddings = svd_item_embeddings(data.train.csr(), config.dim, config.seed)
        source = SVD_SOURCE
    else:
        path = dataset.source / config.provided_file
        if not path.is_file():
            raise FileNotFoundError(f"provided item embeddings {path} not found")
        embeddings = aligned_item_embeddings(data.train.item_ids, np.load(path))
        source = str(path)
    folder = store.fresh_folder("item_embeddings")
    np.save(folder / EMBEDDINGS_FILE, embeddings)
    parameters = {"dim": int(embeddings.shape[1]), "seed": config.seed, "source": source}
    (folder / EMBEDDINGS_PARAMETERS_FILE).write_text(json.dumps(parameters, indent=2))
    version, dvc_metadata = store.version(folder)
    return dg.MaterializeResult(
        data_version=version,
        metadata={"source": source, "items": data.n_items, "dim": embeddings.shape[1], **dvc_metadata},
    )


@dg.asset(group_name=GROUP, deps=[item_embeddings], kinds={"scikitlearn"})
def item_clusters(config: ItemClustersConfig, store: ArtifactStore) -> dg.MaterializeResult:
    """k-means over the item embeddings: hard labels, centroids and soft memberships."""
    embeddings_folder = store.folder("item_embeddings")
    embeddings = np.load(embeddings_folder / EMBEDDINGS_FILE)
    built = json.loads((embeddings_folder / EMBEDDINGS_PARAMETERS_FILE).read_text())
    settings = ClusteringConfig(
        dim=built["dim"], n_clusters=config.n_clusters, temperature=config.temperature, seed=built["seed"]
    )
    clusters = kmeans_item_clusters(embeddings, settings, built["source"])
    folder = store.fresh_folder("item_clusters")
    clusters.save(folder)
    projection = PCA(n_components=2, random_state=settings.seed).fit_transform(embeddings[1:])
    chart = cluster_projection(projection, clusters.labels[1:], folder / "projection.png")
    version, dvc_metadata = store.version(folder)
    sizes = clusters.sizes
    return dg.MaterializeResult(
        data_version=version,
        metadata={
            "n_clusters": clusters.n_clusters,
            "parameters": dg.MetadataValue.json(clusters.parameters()),
            "cluster_sizes": dg.MetadataValue.json({str(c): int(size) for c, size in enumerate(sizes)}),
            "largest_cluster_share": round(float(sizes.max() / sizes.sum()), 4),
            "mean_max_membership": round(float(clusters.memberships[1:].max(axis=1).mean()), 4),
            "projection": dg.MetadataValue.md(inline_png(chart, "items in 2-D (PCA), coloured by cluster")),
            **dvc_metadata,
        },
    )
