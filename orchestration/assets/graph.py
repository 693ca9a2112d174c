"""Graph stage: the weighted item transition graph and neighbourhood overlap (GNNO).

Both assets take their settings from ``recmodels.graph.NeighbourhoodConfig``: the
graph its ``max_distance``, the overlap its ``top_m``. The graph saves the
``max_distance`` it was built with, so the overlap records the whole config it was
made under, and a model trained on it records that in turn.
"""

import json

import dagster as dg
import numpy as np
import scipy.sparse as sp

from orchestration.config_bridge import launchpad_config
from orchestration.resources import ArtifactStore
from recmodels.data.splits import load_split
from recmodels.graph import transitions
from recmodels.graph.overlap import NeighbourhoodConfig, neighbourhood_overlap

GROUP = "graph"
GRAPH_FILE = "graph.npz"
GRAPH_PARAMETERS_FILE = "graph.json"

TransitionGraphConfig = launchpad_config("item_transition_graph", NeighbourhoodConfig(), only=("max_distance",))
OverlapConfig = launchpad_config("item_neighbourhood_overlap", NeighbourhoodConfig(), only=("top_m",))


@dg.asset(group_name=GROUP, deps=["split"], kinds={"scipy"})
def item_transition_graph(config: TransitionGraphConfig, store: ArtifactStore) -> dg.MaterializeResult:
    """Weighted item transition graph (WITG) over the training sequences; sparse items x items."""
    data = load_split(store.folder("split"))
    graph = transitions.item_transition_graph(data.train.sequences(), data.n_items, config.max_distance)
    folder = store.fresh_folder("item_transition_graph")
    sp.save_npz(folder / GRAPH_FILE, graph)
    (folder / GRAPH_PARAMETERS_FILE).write_text(json.dumps({"max_distance": config.max_distance}, indent=2))
    degrees = np.diff(graph.indptr)
    version, dvc_metadata = store.version(folder)
    return dg.MaterializeResult(
        data_version=version,
        metadata={
            "max_distance": config.max_distance,
            "items": data.n_items,
            "edges": int(graph.nnz),
            "items_with_neighbours": int(np.sum(degrees > 0)),
            "median_degree": float(np.median(degrees[degrees > 0])) if graph.nnz else 0.0,
            **dvc_metadata,
        },
    )


@dg.asset(group_name=GROUP, deps=[item_transition_graph], kinds={"scipy"})
def item_neighbourhood_overlap(config: OverlapConfig, store: ArtifactStore) -> dg.MaterializeResult:
    """Jaccard overlap of graph neighbourhoods, top-M per item: where hard negatives come from."""
    graph_folder = store.folder("item_transition_graph")
    graph = sp.load_npz(graph_folder / GRAPH_FILE).tocsr()
    graph_parameters = json.loads((graph_folder / GRAPH_PARAMETERS_FILE).read_text())
    settings = NeighbourhoodConfig(max_distance=graph_parameters["max_distance"], top_m=config.top_m)
    overlap = neighbourhood_overlap(graph, settings)
    folder = store.fresh_folder("item_neighbourhood_overlap")
    overlap.save(folder)
    filled = overlap.items > 0
    version, dvc_metadata = store.version(folder)
    return dg.MaterializeResult(
        data_version=version,
        metadata={
            "parameters": dg.MetadataValue.json(overlap.parameters()),
            "mean_candidates_per_item": float(filled.sum(axis=1).mean()),
            "mean_overlap_of_first_candidate": float(overlap.scores[:, 0][filled[:, 0]].mean())
            if filled.any()
            else 0.0,
            **dvc_metadata,
        },
    )
