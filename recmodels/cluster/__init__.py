"""Item embeddings and item clusters (L-DiffRec's per-cluster encoders, cluster candidate retrieval)."""

from recmodels.cluster.clusters import ClusteringConfig, ItemClusters, kmeans_item_clusters
from recmodels.cluster.embeddings import aligned_item_embeddings, svd_item_embeddings
from recmodels.cluster.inverted import InvertedIndex

__all__ = [
    "ClusteringConfig",
    "InvertedIndex",
    "ItemClusters",
    "aligned_item_embeddings",
    "kmeans_item_clusters",
    "svd_item_embeddings",
]
