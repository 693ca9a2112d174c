"""Graph stage: the weighted item transition graph and neighbourhood overlap (GNNO).

Both assets take their settings from ``recmodels.graph.NeighbourhoodConfig``: the
graph its ``max_distance``, the overlap its ``top_m``. The graph saves the
``max_distance`` it was built with, so the overlap records the whole config it was
made under, and a model trained on it records that in turn.
"""

import dagster as dg
import numpy as np

from orchestration.config_bridge import launchpad_config
from orchestration.outputs import TransitionGraph
from recmodels.data.splits import SplitData
from recmodels.graph import NeighbourhoodOverlap, transitions
from recmodels.graph.overlap import NeighbourhoodConfig, neighbourhood_overlap

GROUP = "graph"

TransitionGraphConfig = launchpad_config("item_transition_graph", NeighbourhoodConfig(), only=("max_distance",))
OverlapConfig = launchpad_config("item_neighbourhood_overlap", NeighbourhoodConfig(), only=("top_m",))


@dg.asset(group_name=GROUP, kinds={"scipy"})
def item_transition_graph(config: TransitionGraphConfig, split: SplitData) -> dg.Output[TransitionGraph]:
    """Weighted item transition graph (WITG) over the training sequences; sparse items x items."""
    graph = transitions.item_transition_graph(split.train.sequences(), split.n_items, config.max_distance)
    degrees = np.diff(graph.indptr)
    return dg.Output(
        TransitionGraph(graph, config.max_distance),
        metadata={
            "max_distance": config.max_distance,
            "items": split.n_items,
            "edges": int(graph.nnz),
            "items_with_neighbours": int(np.sum(degrees > 0)),
            "median_degree": float(np.median(degrees[degrees > 0])) if graph.nnz else 0.0,
        },
    )


@dg.asset(group_name=GROUP, kinds={"scipy"})
def item_neighbourhood_overlap(
    config: OverlapConfig, item_transition_graph: TransitionGraph
) -> dg.Output[NeighbourhoodOverlap]:
    """Jaccard overlap of graph neighbourhoods, top-M per item: where hard negatives come from."""
    settings = NeighbourhoodConfig(max_distance=item_transition_graph.max_distance, top_m=config.top_m)
    overlap = neighbourhood_overlap(item_transition_graph.matrix, settings)
    filled = overlap.items > 0
    return dg.Output(
        overlap,
        metadata={
            "parameters": dg.MetadataValue.json(overlap.parameters()),
            "mean_candidates_per_item": float(filled.sum(axis=1).mean()),
            "mean_overlap_of_first_candidate": float(overlap.scores[:, 0][filled[:, 0]].mean())
            if filled.any()
            else 0.0,
        },
    )
