"""Item scale (issue 19): EfficientRec's cluster-restricted retrieval against FAISS IndexIVFFlat, same run.

Both sides get the SAME centroids (``faiss.Kmeans``, spherical, ``--clusters`` C = 1,024, 20 iterations,
seeded, fitted on the item vectors or read from ``--centroids``); FAISS's IndexIVFFlat is built with
METRIC_INNER_PRODUCT on an IndexFlatIP quantizer holding those centroids, so both sides pick a query's
clusters by the largest profile . centroid and FAISS lists every item once, under its strongest cluster.

The project's side is its own code: memberships ``SoftmaxMembershipConfig(temperature)`` of item . centroid,
``InvertedIndex.thresholded(memberships, threshold)`` (every cluster with membership >= threshold, always the
strongest; stored unpadded, offsets + flat ids) and ``ClusterRestrictedScorer`` (its top-m clusters by
membership, their lists laid end to end and scored exactly).
Two ways of reading its scores are timed:

* ``efficientrec_forward``: ``ClusterRestrictedScorer.forward`` as is (a dense ``[B, n + 1]`` score row with
  every non-candidate at one floor value, then ``torch.topk``), on synthetic histories (it pools them itself);
* ``efficientrec_candidates``: ``ClusterRestrictedScorer.profiles`` + ``.candidates`` as is, then (benchmark
  code, not the project's) the same exact scores for the candidate slots only, repeats and padding masked,
  top-k over the candidates, no dense row.

Both pay for the lengths of the lists a query chose (a batch pads its rows to its longest row's total);
``share_computed`` is the mean of that per query over n (an item listed in two chosen clusters counts twice),
``share_scored`` the distinct items among them over n (what ``EfficientRec.catalogue_share`` reports).
FAISS's ``share_scored`` is its own count of distances computed. A batch whose gather at the worst case (the
m longest lists) plus the forward's dense rows would pass ``--memory-budget-gb`` is run in sub-batches; the
rows say the sub-batch used and what a whole batch may need.

Synthetic catalogue (``--seed``): ``--true-clusters`` 1,024 centres uniform on the unit sphere in 64-d; item i
belongs to centre c with probability proportional to (c + 1) ** -0.8 (a Zipf-like, heavy-tailed size
distribution: on 1M items the largest holds about 6 %, the smallest a few hundred); item = centre +
N(0, 0.5 ** 2 / d) per coordinate (noise norm about 0.5), float32, row 0 the zero padding row. Queries are
histories as EfficientRec pools them: 1-3 centres picked by drawing random items (so in proportion to
size), 5-50 items (uniform) each drawn uniformly from one of those centres (uniform), the profile is
``WeightedMeanPooling(decay=1)`` = their mean. Ground truth: exact top-100 by inner product over all n items
(batched torch matmul + topk); no item is excluded.

Real vectors: ``--vectors items.npy`` (``[n + 1, d]``, row 0 padding, as ``EfficientRec.item_vectors``)
``--queries profiles.npy`` (``[Q, d]``) [``--centroids centroids.npy`` ``[C, d]``, e.g. the trained head's;
otherwise fitted as above]; profiles come without histories, so only ``efficientrec_candidates`` and FAISS run.

Timing: torch and FAISS on ``--threads`` 2 threads; batch 1 = median seconds per call over the first
``--latency-queries`` 500 queries (after one warm-up call), queries/s = 1 / median; batch 256 = every query
in batches of 256, queries/s = Q / total seconds. Recall@100 and shares come from the batch-256 pass.

``python benchmarks/retrieval_scale.py [--quick] [--items 1000000] [--queries-n 10000] [--m 1 2 4 8 16]
[--membership 0.1:0.2 0.02:0.2 0.1:1.0] [--vectors V.npy --queries Q.npy [--centroids C.npy]]``
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from common import finish, parser, progress

K = 100
HISTORY = 50


def synthetic(n_items: int, n_queries: int, dim: int, centres: int, seed: int) -> dict[str, np.ndarray]:
    """Item vectors ``[n + 1, d]`` (row 0 zero) and left-padded histories ``[Q, 50]``, as the docstring says."""
    rng = np.random.default_rng(seed)
    heads = rng.standard_normal((centres, dim))
    heads /= np.linalg.norm(heads, axis=1, keepdims=True)
    share = (np.arange(centres) + 1.0) ** -0.8
    owner = rng.choice(centres, size=n_items, p=share / share.sum())
    vectors = np.zeros((n_items + 1, dim), dtype=np.float32)
    vectors[1:] = heads[owner] + rng.standard_normal((n_items, dim)) * (0.5 / np.sqrt(dim))
    order = np.argsort(owner, kind="stable") + 1  # item ids grouped by centre
    sizes = np.bincount(owner, minlength=centres)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    histories = np.zeros((n_queries, HISTORY), dtype=np.int64)
    for row in range(n_queries):
        picked = owner[rng.integers(n_items, size=rng.integers(1, 4))]
        length = int(rng.integers(5, HISTORY + 1))
        centre = picked[rng.integers(len(picked), size=length)]
        histories[row, HISTORY - length :] = order[starts[centre] + rng.integers(sizes[centre])]
    return {"vectors": vectors, "histories": histories, "owner_sizes": sizes}


def exact_top(vectors, profiles, batch: int = 128):
    import torch

    items = vectors[1:]
    top = torch.empty(len(profiles), K, dtype=torch.int64)
    for start in range(0, len(profiles), batch):
        top[start : start + batch] = torch.topk(profiles[start : start + batch] @ items.T, K, dim=1).indices + 1
    return top.numpy()


def recall(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean |predicted ∩ truth| / K; ids <= 0 (FAISS's -1, masked slots) never match."""
    predicted = np.where(predicted > 0, predicted, -1 - np.arange(predicted.shape[1]))
    both = np.sort(np.concatenate([predicted, truth], axis=1), axis=1)
    return float((both[:, 1:] == both[:, :-1]).sum(1).mean() / K)


def latency(run: Callable[[int], Any], n: int) -> float:
    run(0)
    times = []
    for row in range(n):
        started = time.perf_counter()
        run(row)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def sub_batch(batch: int, bytes_per_row: int, budget: float) -> int:
    rows = batch
    while rows > 1 and rows * bytes_per_row > budget:
        rows //= 2
    return rows


def candidates_top(scorer, profiles):
    """Top-K over the project's candidates only: ids ``[B, K]`` (0 where fewer than K), distinct scored per row,
    candidate slots per row."""
    import torch

    candidates = scorer.candidates(profiles)
    ids, order = candidates.sort(dim=1)
    scores = torch.bmm(scorer.item_vectors[ids], profiles[:, :, None])[..., 0]
    repeat = torch.zeros_like(ids, dtype=torch.bool)
    repeat[:, 1:] = ids[:, 1:] == ids[:, :-1]
    dropped = repeat | (ids == 0)
    scores = scores.masked_fill(dropped, -torch.inf)
    best = torch.topk(scores, min(K, scores.shape[1]), dim=1)
    top = ids.gather(1, best.indices).masked_fill(torch.isinf(best.values), 0)
    return top, (~dropped).sum(1), (ids > 0).sum(1)


def forward_top(scorer, histories):
    import torch

    scores = scorer(histories)
    scores[:, 0] = -torch.inf  # the padding column, as evaluation masks it
    return torch.topk(scores, K, dim=1).indices


def run_project(
    data: dict[str, Any], centroids, temperature: float, threshold: float, args, forward: bool
) -> list[dict[str, Any]]:
    import torch

    from recmodels.cluster import InvertedIndex
    from recmodels.models.efficientrec import (
        ClusterRestrictedScorer,
        SoftmaxMembershipConfig,
        WeightedMeanPooling,
    )

    vectors, profiles, truth = data["vectors_t"], data["profiles_t"], data["truth"]
    n_items, dim = vectors.shape[0] - 1, vectors.shape[1]
    membership = SoftmaxMembershipConfig(temperature=temperature)
    started = time.perf_counter()
    memberships = np.empty((vectors.shape[0], centroids.shape[0]), dtype=np.float32)
    with torch.no_grad():  # row-wise softmax, so computing it in chunks is exact
        for start in range(0, len(memberships), 65536):
            memberships[start : start + 65536] = membership(vectors[start : start + 65536] @ centroids.T).numpy()
    inverted = InvertedIndex.thresholded(memberships, threshold)
    build = time.perf_counter() - started
    del memberships
    sizes = inverted.lengths
    index = {
        "temperature": temperature,
        "threshold": threshold,
        "build_seconds": round(build, 2),
        "index_bytes": int(inverted.offsets.nbytes + inverted.items.nbytes + centroids.numel() * 4),
        "item_vector_bytes": int(vectors.numel() * vectors.element_size()),
        "longest_list": int(sizes.max()),
        "mean_list": round(float(sizes.mean()), 1),
        "lists_per_item": round(float(sizes.sum() / n_items), 3),
    }
    progress(f"efficientrec T={temperature} threshold={threshold}: {index}")
    budget = args.memory_budget_gb * 2**30
    rows = []
    for m in args.m:
        scorer = ClusterRestrictedScorer(vectors, WeightedMeanPooling(1.0), centroids, inverted, membership, m)
        scorer = scorer.eval()
        slots = int(np.sort(sizes)[-scorer.top_clusters :].sum())  # the worst case: the m longest lists
        methods = [("efficientrec_candidates", slots * (dim * 4 + 8 * 4))]
        if forward:
            methods.append(("efficientrec_forward", slots * (dim * 8 + 8 * 3) + (n_items + 1) * 4 * 3))
        shares: dict[str, float] = {}  # from the candidates pass, the same queries and lists as forward's
        for method, per_row in methods:
            chunk = sub_batch(args.batch, per_row, budget)
            with torch.no_grad():
                if method == "efficientrec_forward":
                    histories = data["histories_t"]

                    def one(row: int) -> Any:
                        return forward_top(scorer, histories[row : row + 1])
                else:

                    def one(row: int) -> Any:
                        return candidates_top(scorer, profiles[row : row + 1])

                median = latency(one, args.latency_queries)
                top = np.zeros((len(profiles), K), dtype=np.int64)
                scored = np.zeros(len(profiles), dtype=np.int64)
                computed = np.zeros(len(profiles), dtype=np.int64)
                started = time.perf_counter()
                for start in range(0, len(profiles), chunk):
                    stop = start + chunk
                    if method == "efficientrec_forward":
                        top[start:stop] = forward_top(scorer, data["histories_t"][start:stop]).numpy()
                    else:
                        ids, count, slots_used = candidates_top(scorer, profiles[start:stop])
                        top[start:stop, : ids.shape[1]] = ids.numpy()
                        scored[start:stop], computed[start:stop] = count.numpy(), slots_used.numpy()
                seconds = time.perf_counter() - started
            if method == "efficientrec_candidates":
                shares = {
                    "share_scored": round(float(scored.mean() / n_items), 5),
                    "share_computed": round(float(computed.mean() / n_items), 5),
                }
            row = {
                "method": method,
                "m": m,
                **{key: index[key] for key in ("temperature", "threshold")},
                "recall@100": round(recall(top, truth), 4),
                **shares,
                "qps_batch1": round(1 / median, 1),
                "latency_ms_batch1": round(1000 * median, 3),
                f"qps_batch{args.batch}": round(len(profiles) / seconds, 1),
                "sub_batch": chunk,
                f"gb_per_batch{args.batch}": round(args.batch * per_row / 2**30, 2),
            }
            progress(str(row))
            rows.append(row)
    return [dict(row, index=index) for row in rows]


def run_faiss(data: dict[str, Any], centroids: np.ndarray, args) -> list[dict[str, Any]]:
    import faiss

    vectors, profiles, truth = data["vectors"], data["profiles"], data["truth"]
    n_items, dim = vectors.shape[0] - 1, vectors.shape[1]
    started = time.perf_counter()
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(centroids)
    index = faiss.IndexIVFFlat(quantizer, dim, len(centroids), faiss.METRIC_INNER_PRODUCT)
    assert index.is_trained
    index.add(np.ascontiguousarray(vectors[1:]))
    build = time.perf_counter() - started
    sizes = np.array([index.invlists.list_size(c) for c in range(index.nlist)])
    info = {
        "build_seconds": round(build, 2),
        "index_bytes": len(faiss.serialize_index(index)),  # vectors + ids + centroids
        "longest_list": int(sizes.max()),
        "mean_list": round(float(sizes.mean()), 1),
        "lists_per_item": 1.0,
    }
    progress(f"faiss IVFFlat: {info}")
    rows = []
    for m in args.m:
        index.nprobe = m
        median = latency(lambda row: index.search(profiles[row : row + 1], K), args.latency_queries)
        faiss.cvar.indexIVF_stats.reset()
        top = np.empty((len(profiles), K), dtype=np.int64)
        started = time.perf_counter()
        for start in range(0, len(profiles), args.batch):
            top[start : start + args.batch] = index.search(profiles[start : start + args.batch], K)[1]
        seconds = time.perf_counter() - started
        scored = faiss.cvar.indexIVF_stats.ndis / len(profiles)
        top = np.where(top >= 0, top + 1, 0)
        row = {
            "method": "faiss_ivfflat",
            "m": m,
            "recall@100": round(recall(top, truth), 4),
            "share_scored": round(scored / n_items, 5),
            "share_computed": round(scored / n_items, 5),
            "qps_batch1": round(1 / median, 1),
            "latency_ms_batch1": round(1000 * median, 3),
            f"qps_batch{args.batch}": round(len(profiles) / seconds, 1),
            "sub_batch": args.batch,
        }
        progress(str(row))
        rows.append(row)
    return [dict(row, index=info) for row in rows]


def main() -> None:
    args = parser("retrieval_scale", ["synthetic"], ["efficientrec", "faiss"])
    args.add_argument("--items", type=int, default=1_000_000)
    args.add_argument(
        "--queries-n", type=int, default=10_000, help="query profiles (synthetic, or the first rows of --queries)"
    )
    args.add_argument("--dim", type=int, default=64)
    args.add_argument("--true-clusters", type=int, default=1024, help="synthetic centres")
    args.add_argument("--clusters", type=int, default=1024, help="C = nlist, k-means centroids")
    args.add_argument("--m", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="top clusters = nprobe")
    args.add_argument(
        "--membership",
        nargs="+",
        default=["0.1:0.2", "0.02:0.2", "0.1:1.0"],
        help="temperature:threshold of the project's index (threshold 1.0 = the strongest cluster only)",
    )
    args.add_argument("--forward-for", type=int, default=1, help="time forward as is for the first N memberships")
    args.add_argument("--batch", type=int, default=256)
    args.add_argument("--latency-queries", type=int, default=500)
    args.add_argument("--memory-budget-gb", type=float, default=3.0, help="per-call tensor budget (sub-batches)")
    args.add_argument("--threads", type=int, default=2)
    args.add_argument("--vectors", type=Path, default=None, help="[n + 1, d] item vectors .npy, row 0 padding")
    args.add_argument("--queries", type=Path, default=None, help="[Q, d] query profiles .npy")
    args.add_argument("--centroids", type=Path, default=None, help="[C, d] centroids .npy (default: k-means)")
    args = args.parse_args()
    if args.quick:
        args.items, args.queries_n, args.latency_queries = 50_000, 500, 200

    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    started = time.time()
    load = os.getloadavg()
    progress(f"load average at start {load}")
    if args.vectors is not None:
        if args.queries is None:
            raise SystemExit("--vectors needs --queries")
        data: dict[str, Any] = {
            "vectors": np.ascontiguousarray(np.load(args.vectors), dtype=np.float32),
            "profiles": np.ascontiguousarray(np.load(args.queries)[: args.queries_n], dtype=np.float32),
        }
        source = {"vectors": str(args.vectors), "queries": f"the first {args.queries_n} rows of {args.queries}"}
    else:
        made = synthetic(args.items, args.queries_n, args.dim, args.true_clusters, args.seed)
        data = {"vectors": made["vectors"], "histories_t": torch.from_numpy(made["histories"])}
        from recmodels.models.efficientrec import ProfileScorer, WeightedMeanPooling

        with torch.no_grad():
            scorer = ProfileScorer(torch.from_numpy(made["vectors"]), WeightedMeanPooling(1.0))
            data["profiles"] = scorer.profiles(data["histories_t"]).numpy()
        sizes = made["owner_sizes"]
        source = {
            "synthetic": "centres on the unit sphere, P(centre c) ~ (c+1)^-0.8, item = centre + N(0, 0.25/d); "
            "queries: mean of 5-50 items from 1-3 centres",
            "items": args.items,
            "queries": args.queries_n,
            "dim": args.dim,
            "true_clusters": args.true_clusters,
            "true_cluster_size_max_median_min": [int(sizes.max()), int(np.median(sizes)), int(sizes.min())],
        }
    data["vectors_t"] = torch.from_numpy(data["vectors"])
    data["profiles_t"] = torch.from_numpy(data["profiles"])
    n_items, dim = data["vectors"].shape[0] - 1, data["vectors"].shape[1]
    progress(f"{n_items} items, {len(data['profiles'])} queries, d={dim}; exact top-{K}")
    moment = time.perf_counter()
    with torch.no_grad():
        data["truth"] = exact_top(data["vectors_t"], data["profiles_t"])
    exact_seconds = time.perf_counter() - moment
    moment = time.perf_counter()
    if args.centroids is not None:
        centroids = np.ascontiguousarray(np.load(args.centroids), dtype=np.float32)
        centroid_source = str(args.centroids)
    else:
        kmeans = faiss.Kmeans(dim, args.clusters, niter=20, seed=args.seed, spherical=True, verbose=False)
        kmeans.train(np.ascontiguousarray(data["vectors"][1:]))
        centroids = kmeans.centroids
        centroid_source = f"faiss.Kmeans spherical, C={args.clusters}, niter=20, seed={args.seed}, default sampling"
    kmeans_seconds = time.perf_counter() - moment
    progress(f"exact {exact_seconds:.1f} s, centroids {kmeans_seconds:.1f} s ({centroid_source})")
    results: list[dict[str, Any]] = []
    if "faiss" in args.model:
        results += run_faiss(data, centroids, args)
    if "efficientrec" in args.model:
        for number, item in enumerate(args.membership):
            temperature, threshold = (float(part) for part in item.split(":"))
            forward = number < args.forward_for and "histories_t" in data
            results += run_project(data, torch.from_numpy(centroids), temperature, threshold, args, forward)
    finish(
        "retrieval_scale",
        results,
        data=source,
        centroids=centroid_source,
        same_centroids_both_sides=True,
        n_items=n_items,
        n_queries=len(data["profiles"]),
        k=K,
        threads=args.threads,
        seed=args.seed,
        exact_seconds=round(exact_seconds, 2),
        centroid_seconds=round(kmeans_seconds, 2),
        load_average_start=[round(x, 2) for x in load],
        load_average_end=[round(x, 2) for x in os.getloadavg()],
        wall_seconds=round(time.time() - started, 1),
        faiss=faiss.__version__,
        torch=torch.__version__,
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
