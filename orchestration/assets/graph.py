"""Graph stage: the weighted item transition graph and neighbourhood overlap (GNNO)."""

import dagster as dg
import numpy as np
import scipy.sparse as sp
from pydantic import Field

from orchestration.resources import ArtifactStore
from recmodels.data.splits import load_split
from recmodels.graph import transitions
from recmodels.graph.overlap import NeighbourhoodOverlap, neighbourhood_overlap

GROUP = "graph"


class TransitionGraphConfig(dg.Config):
    max_distance: int = Field(default=3, description="Items up to this many steps apart are linked (weight 1/k).")


@dg.asset(group_name=GROUP, deps=["split"], kinds={"scipy"})
def item_transition_graph(config: TransitionGraphConfig, store: ArtifactStore) -> dg.MaterializeResult:
    """Weighted item transition graph (WITG) over the training sequences; sparse items x items."""
    data = load_split(store.folder("split"))
    graph = transitions.item_transition_graph(data.train.sequences(), data.n_items, config.max_distance)
    folder = store.fresh_folder("item_transition_graph")
    sp.save_npz(folder / "graph.npz", graph)
    degrees = np.diff(graph.indptr)
    version, dvc_metadata = store.version(folder)
    return dg.MaterializeResult(
        data_version=version,
        metadata={
            "items": data.n_items,
            "edges": int(graph.nnz),
            "items_with_neighbours": int(np.sum(degrees > 0)),
            "median_degree": float(np.median(degrees[degrees > 0])) if graph.nnz else 0.0,
            **dvc_metadata,
        },
    )


class OverlapConfig(dg.Config):
    top_m: int = Field(default=100, description="Overlapping items kept per item (candidate hard negatives).")


@dg.asset(group_name=GROUP, deps=[item_transition_graph], kinds={"scipy"})
def item_neighbourhood_overlap(config: OverlapConfig, store: ArtifactStore) -> dg.MaterializeResult:
    """Jaccard overlap of graph neighbourhoods, top-M per item: where hard negatives come from."""
    graph = sp.load_npz(store.folder("item_transition_graph") / "graph.npz").tocsr()
    overlap = neighbourhood_overlap(graph, config.top_m)
    folder = store.fresh_folder("item_neighbourhood_overlap")
    overlap.save(folder)
    filled = overlap.items > 0
    version, dvc_metadata = store.version(folder)
    return dg.MaterializeResult(
        data_version=version,
        metadata={
            "top_m": config.top_m,
            "mean_candidates_per_item": float(filled.sum(axis=1).mean()),
            "mean_overlap_of_first_candidate": float(overlap.scores[:, 0][filled[:, 0]].mean())
            if filled.any()
            else 0.0,
            **dvc_metadata,
        },
    )


def load_overlap(store: ArtifactStore) -> NeighbourhoodOverlap:
    return NeighbourhoodOverlap.load(store.folder("item_neighbourhood_overlap"))
