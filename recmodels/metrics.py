"""Offline evaluation metrics for top-k recommendation, vectorised over a batch of users.

Conventions: item ids are 1..n_items and 0 is padding. ``top_items`` is an int array
[n_users, K] ranked best first, possibly padded with trailing 0s; a 0 is never a hit and is
ignored by every metric. ``targets`` is a CSR matrix [n_users, n_items + 1] whose nonzero
entries are the user's held-out (relevant) items; values are treated as binary.

Ranking metrics (per user, ``n_rel`` = number of distinct relevant items, rank counted from 1):

- recall@k    = hits in top k / n_rel
- precision@k = hits in top k / k   (k, not the number of non-padding recommendations)
- hr@k        = 1 if any hit in top k else 0
- mrr@k       = 1 / rank of the first hit within top k, else 0
- ndcg@k      = DCG / IDCG with binary gains, DCG = sum over hits of 1 / log2(rank + 1),
                IDCG = sum_{r=1..min(n_rel, k)} 1 / log2(r + 1)

If k > K, the cutoff uses all K columns (missing positions are non-hits) while precision
still divides by k and IDCG still runs to min(n_rel, k). Users without targets get NaN so
the caller can exclude them from means.

Beyond-accuracy metrics (one float for a whole top-k matrix, using its first k columns):
catalogue coverage, novelty, average recommendation popularity (ARP) and intra-list
diversity (ILD); novelty, ARP and ILD are means over users of per-user means, and their
``*_per_user`` forms return those per-user values (NaN where undefined) for intervals over users.
"""

from collections.abc import Sequence
from operator import index

import numpy as np
import scipy.sparse as sp

# Floats per gathered [users, k, d] block in intra_list_diversity (bounds memory, ~16 MB).
_ILD_CHUNK_FLOATS = 2**21


def _check_k(k: int) -> int:
    k = index(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return k


def _check_top_items(top_items: np.ndarray, n_cols: int) -> np.ndarray:
    """Validate a ranked top-k matrix whose ids must lie in [0, n_cols)."""
    top_items = np.asarray(top_items)
    if top_items.ndim != 2 or top_items.shape[1] < 1:
        raise ValueError(f"top_items must have shape [n_users, K>=1], got {top_items.shape}")
    if not np.issubdtype(top_items.dtype, np.integer):
        raise ValueError(f"top_items must hold integer item ids, got dtype {top_items.dtype}")
    if top_items.size and top_items.min() < 0:
        raise ValueError("top_items contains negative item ids")
    if top_items.size and top_items.max() >= n_cols:
        raise ValueError(f"top_items contains item id {top_items.max()} >= n_items + 1 = {n_cols}")
    ranked = np.sort(top_items, axis=1)
    if np.any((ranked[:, 1:] == ranked[:, :-1]) & (ranked[:, 1:] > 0)):
        raise ValueError("top_items repeats an item within a user's list")
    return top_items.astype(np.int64, copy=False)


def _hits_and_n_rel(top_items: np.ndarray, targets: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    if not sp.issparse(targets) or targets.format != "csr":
        raise ValueError(f"targets must be a scipy.sparse CSR matrix, got {type(targets)}")
    n_users, n_cols = targets.shape
    top_items = _check_top_items(top_items, n_cols)
    if top_items.shape[0] != n_users:
        raise ValueError(f"top_items has {top_items.shape[0]} users but targets has {n_users} rows")
    # Canonical form (sorted, no duplicates, no explicit zeros) so rows are sorted id sets.
    targets = targets.copy()
    targets.sum_duplicates()
    targets.eliminate_zeros()
    if np.any(targets.indices == 0):
        raise ValueError("targets has entries in column 0, which is reserved for padding")
    # Rows of a canonical CSR flatten to strictly increasing keys row * n_cols + item, so one
    # searchsorted answers every (user, item) membership query; the sentinel keeps positions
    # in range.
    n_rel = np.diff(targets.indptr)
    rows = np.repeat(np.arange(n_users, dtype=np.int64), n_rel)
    keys = np.append(rows * n_cols + targets.indices, n_users * n_cols)
    queries = np.arange(n_users, dtype=np.int64)[:, None] * n_cols + top_items
    hits = (keys[np.searchsorted(keys, queries)] == queries) & (top_items > 0)
    return hits, n_rel


def hits_matrix(top_items: np.ndarray, targets: sp.csr_matrix) -> np.ndarray:
    """bool [n_users, K]: whether the item at each rank is relevant (basis of ranking metrics)."""
    return _hits_and_n_rel(top_items, targets)[0]


def ranking_metrics(top_items: np.ndarray, targets: sp.csr_matrix, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-user recall/ndcg/hr/mrr/precision at every k in ks (keys like 'ndcg@10').

    Returns per-user float arrays so batches can be concatenated and averaged by the caller;
    users with no targets are NaN so they drop out of nan-aware means.
    """
    ks = [_check_k(k) for k in ks]
    if not ks:
        raise ValueError("ks must contain at least one cutoff")
    hits, n_rel = _hits_and_n_rel(top_items, targets)
    n_cols = hits.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, max(ks) + 2))
    ideal_dcg = np.concatenate(([0.0], np.cumsum(discounts)))
    no_targets = n_rel == 0
    safe_n_rel = np.maximum(n_rel, 1)
    metrics = {}
    for k in ks:
        top_hits = hits[:, : min(k, n_cols)]
        n_hits = top_hits.sum(axis=1)
        any_hit = n_hits > 0
        first_rank = np.argmax(top_hits, axis=1) + 1
        dcg = top_hits @ discounts[: top_hits.shape[1]]
        per_user = {
            f"recall@{k}": n_hits / safe_n_rel,
            f"ndcg@{k}": dcg / ideal_dcg[np.minimum(safe_n_rel, k)],
            f"hr@{k}": any_hit.astype(np.float64),
            f"mrr@{k}": np.where(any_hit, 1.0 / first_rank, 0.0),
            f"precision@{k}": n_hits / k,
        }
        for name, values in per_user.items():
            metrics[name] = np.where(no_targets, np.nan, values)
    return metrics


def _check_popularity(item_popularity: np.ndarray) -> np.ndarray:
    item_popularity = np.asarray(item_popularity, dtype=np.float64)
    if item_popularity.ndim != 1 or item_popularity.size < 2:
        raise ValueError(f"item_popularity must be 1-D of length n_items + 1, got {item_popularity.shape}")
    if not np.all(np.isfinite(item_popularity)) or item_popularity.min() < 0:
        raise ValueError("item_popularity must be finite and non-negative")
    return item_popularity


def _user_means(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per user, the mean of values over their recommended items (NaN for a user with none)."""
    counts = mask.sum(axis=1)
    sums = np.where(mask, values, 0.0).sum(axis=1)
    return np.divide(sums, counts, out=np.full(len(counts), np.nan), where=counts > 0)


def mean_over_users(per_user: np.ndarray) -> float:
    """Mean over the users whose value is defined (NaN if none is)."""
    defined = per_user[~np.isnan(per_user)]
    return float(defined.mean()) if defined.size else float("nan")


def catalogue_coverage(top_items: np.ndarray, n_items: int, k: int) -> float:
    """Share of the catalogue (n_items real items) that appears in anyone's top k."""
    n_items = index(n_items)
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    top = _check_top_items(top_items, n_items + 1)[:, : _check_k(k)]
    return np.unique(top[top > 0]).size / n_items


def novelty(top_items: np.ndarray, item_popularity: np.ndarray, n_train_users: int, k: int) -> float:
    """Mean over users of ``novelty_per_user``."""
    return mean_over_users(novelty_per_user(top_items, item_popularity, n_train_users, k))


def novelty_per_user(top_items: np.ndarray, item_popularity: np.ndarray, n_train_users: int, k: int) -> np.ndarray:
    """Per user, mean self-information -log2(p_i) of recommended items: higher = less obvious picks.

    p_i = item_popularity[i] / n_train_users, where item_popularity[i] counts the training
    users who interacted with item i (length n_items + 1, index = item id). Items never seen
    in training use p = 1 / n_train_users, the rarest observable popularity, to keep the
    score finite.
    """
    item_popularity = _check_popularity(item_popularity)
    n_train_users = index(n_train_users)
    if n_train_users < 1:
        raise ValueError(f"n_train_users must be >= 1, got {n_train_users}")
    if item_popularity.max() > n_train_users:
        raise ValueError("item_popularity has counts larger than n_train_users")
    top = _check_top_items(top_items, item_popularity.size)[:, : _check_k(k)]
    self_information = -np.log2(np.maximum(item_popularity, 1.0) / n_train_users)
    return _user_means(self_information[top], top > 0)


def average_popularity(top_items: np.ndarray, item_popularity: np.ndarray, k: int) -> float:
    """ARP: mean over users of ``average_popularity_per_user``."""
    return mean_over_users(average_popularity_per_user(top_items, item_popularity, k))


def average_popularity_per_user(top_items: np.ndarray, item_popularity: np.ndarray, k: int) -> np.ndarray:
    """Per user, mean training popularity (interaction count) of recommended items (popularity bias)."""
    item_popularity = _check_popularity(item_popularity)
    top = _check_top_items(top_items, item_popularity.size)[:, : _check_k(k)]
    return _user_means(item_popularity[top], top > 0)


def _unit_rows(item_features: sp.csr_matrix | np.ndarray) -> sp.csr_matrix | np.ndarray:
    """L2-normalise feature rows (float64); all-zero rows stay zero."""
    if sp.issparse(item_features):
        features = sp.csr_matrix(item_features, dtype=np.float64)
        norms = np.sqrt(np.asarray(features.multiply(features).sum(axis=1)).ravel())
    else:
        features = np.asarray(item_features, dtype=np.float64)
        if features.ndim != 2:
            raise ValueError(f"item_features must be 2-D [n_items + 1, d], got {features.shape}")
        norms = np.linalg.norm(features, axis=1)
    if features.shape[1] < 1:
        raise ValueError("item_features must have at least one feature column")
    if not np.all(np.isfinite(norms)):
        raise ValueError("item_features must be finite")
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    if sp.issparse(features):
        return sp.csr_matrix(features.multiply(scale[:, None]))
    return features * scale[:, None]


def intra_list_diversity(top_items: np.ndarray, item_features: sp.csr_matrix | np.ndarray, k: int) -> float:
    """ILD: mean over users of ``intra_list_diversity_per_user``."""
    return mean_over_users(intra_list_diversity_per_user(top_items, item_features, k))


def intra_list_diversity_per_user(
    top_items: np.ndarray, item_features: sp.csr_matrix | np.ndarray, k: int
) -> np.ndarray:
    """Per user, the mean pairwise (1 - cosine similarity) of their top k.

    item_features has one row per item id (n_items + 1 rows): a sparse multi-hot (e.g. genres)
    or dense embeddings. Items with an all-zero feature vector have similarity 0 to every
    other item. Users with fewer than 2 recommended items get NaN.
    With unit rows, ||sum_i v_i||^2 = sum_i ||v_i||^2 + 2 * sum_{i<j} v_i.v_j gives the pair
    sum without a k x k loop; users are processed in chunks to bound memory.
    """
    features = _unit_rows(item_features)
    top = _check_top_items(top_items, features.shape[0])[:, : _check_k(k)]
    n_users, width = top.shape
    n_dims = features.shape[1]
    chunk = max(1, _ILD_CHUNK_FLOATS // (width * n_dims))
    per_user = np.empty(n_users)
    for start in range(0, n_users, chunk):
        ids = top[start : start + chunk]
        gathered = features[ids.ravel()]
        if sp.issparse(gathered):
            gathered = gathered.toarray()
        vectors = gathered.reshape(*ids.shape, n_dims) * (ids > 0)[:, :, None]
        pair_sim = (np.square(vectors.sum(axis=1)).sum(axis=1) - np.square(vectors).sum(axis=(1, 2))) / 2
        n_recommended = (ids > 0).sum(axis=1)
        n_pairs = n_recommended * (n_recommended - 1) / 2
        per_user[start : start + chunk] = np.where(n_recommended >= 2, 1.0 - pair_sim / np.maximum(n_pairs, 1), np.nan)
    return per_user
