"""Per-dataset settings the benchmarks share, so one figure's setting has one home.

EfficientRec on the chronological sequence files (leave-one-out): the transition graph (on ML-1M valid
NDCG@10 0.1134 against 0.1055 over the model's default co-interaction graph, docs/efficientrec.md);
Yelp's 30k users and 20k items take two crops per user and epoch (an epoch is then about 80 s on one
thread) and the sequence benchmarks' 50-item histories.
"""

from __future__ import annotations

TRANSITION_GRAPH = 'items.graph={"kind":"transition_graph"}'
EFFICIENTREC_OVERRIDES: dict[str, list[str]] = {
    "ml-1m-seq/ml-1m.txt": [TRANSITION_GRAPH],
    "amazon-yelp-seq/Yelp.txt": [TRANSITION_GRAPH, "crops_per_user=2", "max_len=50"],
}
