"""Per-dataset settings the benchmarks share, so one figure's setting has one home.

EfficientRec on ML-1M's sequence file (leave-one-out): the transition graph (valid NDCG@10 0.1134 against
0.1055 over the model's default co-interaction graph, docs/efficientrec.md). On Yelp the co-interaction
graph is the better one (valid 0.0135 after 2 epochs against the transition graph's best 0.0125 in 28) and a
slower recency decay helps (0.8: 0.0143); its 30k users and 20k items take two crops per user and epoch and
the sequence benchmarks' 50-item histories.
"""

from __future__ import annotations

TRANSITION_GRAPH = 'items.graph={"kind":"transition_graph"}'
EFFICIENTREC_OVERRIDES: dict[str, list[str]] = {
    "ml-1m-seq/ml-1m.txt": [TRANSITION_GRAPH],
    "amazon-yelp-seq/Yelp.txt": ["pooling.recency_decay=0.8", "crops_per_user=2", "max_len=50"],
}
