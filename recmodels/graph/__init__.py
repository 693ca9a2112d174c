"""Item-graph parts of GNNO (Fan et al., SIGIR 2023): transition graph, neighbourhood overlap,
hard-negative sampling and the hardness curriculum."""

from recmodels.graph.curriculum import CurriculumSchedule, plot_schedule
from recmodels.graph.overlap import NeighbourhoodConfig, NeighbourhoodOverlap, neighbourhood_overlap
from recmodels.graph.sampler import (
    HardNegativeConfig,
    NegativeSampler,
    NeighbourhoodNegativeSampler,
    SampledNegatives,
    UniformNegativeSampler,
)
from recmodels.graph.transitions import item_transition_graph

__all__ = [
    "CurriculumSchedule",
    "HardNegativeConfig",
    "NegativeSampler",
    "NeighbourhoodConfig",
    "NeighbourhoodNegativeSampler",
    "NeighbourhoodOverlap",
    "SampledNegatives",
    "UniformNegativeSampler",
    "item_transition_graph",
    "neighbourhood_overlap",
    "plot_schedule",
]
