"""How cost grows with the log: the pipeline's stages on ML-1M replicated to 1M, 5M, 10M and 20M interactions.

The synthetic logs (``replicated_log``): ML-1M's 1,000,209 rows (``ml-1m-seq/ml-1m.txt``) copied R times
(R = 1, 5, 10, 20). Copy r gives every user a fresh id, drawn by a seeded permutation of r*U .. (r+1)*U - 1
(U = 6,040), and keeps the user's items and their order; the R copies' rows are then shuffled by one seeded
permutation, so every stage sorts and groups as it would for a real log arriving in time order. R = 1 is
ML-1M itself, in a shuffled row order. The catalogue stays ML-1M's.

Stages, each in a fresh spawned process so its peak memory is its own, each reading the previous stage's
files as the pipeline's assets do: pandera validation (``validate_interactions``), the k-core and internal
ids (the ``interactions`` asset), the split (leave-one-out, what order-only data gets), the item transition
graph and its neighbourhood overlap (GNNO's inputs), EASE, one eSASRec epoch (the ML-1M preset: max length
200, dropout 0.1) and one DiffRec epoch (its preset). Per stage: wall seconds of the stage's own call (an
epoch's seconds for the two trainings, validation excluded) and the process's peak resident memory, with
the peak while it loaded its input (``loading_peak_rss_mb``).

Catalogue growth (``spread_catalogue``): the graph stages again on the largest log's training sequences with
every user's items moved into one of V copies of the catalogue (V = ceil(1M / items), the copy drawn per
user with the seed), so the same rows name about 1M items, about 20 rows each.

Id hashing (``id_hashing``): the seconds per row of ``pd.factorize`` on text ids, the step every string stage
(validation, k-core, the id maps) repeats, for 1M and 20M rows drawn uniformly from 6,040 and from 120,800
distinct ids (ML-1M's users at R = 1 and R = 20): whether a stage's cost per row grows with the rows or
with the distinct ids it has to tell apart.

Prints one JSON line; ``--plot`` draws seconds and peak memory against interactions, log-log.

``python benchmarks/scale.py [--copies 1 5 10 20] [--stage ...] [--catalogue-items 1000000] [--plot FILE]``
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from common import default_data_dir, finish, peak_rss_mb, progress, run_isolated, with_overrides

from recmodels.data.interactions import Interactions, Sequences, k_core, load_interactions, save_interactions
from recmodels.data.readers import load_dataset
from recmodels.data.schemas import validate_interactions
from recmodels.data.splits import load_split, make_split, save_split

DATASET = "ml-1m-seq/ml-1m.txt"
RAW_FILE, VALID_FILE, GRAPH_FILE = "raw.parquet", "valid.parquet", "graph.npz"
INTERACTIONS_DIR, SPLIT_DIR = "interactions", "split"


def replicated_log(frame: pd.DataFrame, copies: int, seed: int) -> pd.DataFrame:
    """``copies`` copies of the reader's rows, each user under a fresh id per copy, rows shuffled (seeded)."""
    rng = np.random.default_rng(seed)
    users, user_index = np.unique(frame["user_id"].to_numpy(dtype=str), return_inverse=True)
    fresh = np.concatenate([copy * len(users) + rng.permutation(len(users)) for copy in range(copies)])
    owners = (fresh.reshape(copies, len(users))[:, user_index]).ravel()
    order = rng.permutation(len(owners))
    names = np.array([str(user) for user in range(copies * len(users))], dtype=object)
    return pd.DataFrame(
        {
            "user_id": names[owners[order]],
            "item_id": np.tile(frame["item_id"].to_numpy(dtype=object), copies)[order],
            "timestamp": np.tile(frame["timestamp"].to_numpy(dtype=np.int64), copies)[order],
            "rating": np.full(len(order), np.nan),
            "source_row": np.arange(1, len(order) + 1, dtype=np.int64),
        }
    )


def spread_catalogue(sequences: Sequences, n_items: int, target_items: int, seed: int) -> tuple[Sequences, int]:
    """The sequences with each user's items moved into one of ``ceil(target_items / n_items)`` catalogue copies."""
    copies = math.ceil(target_items / n_items)
    variant = np.random.default_rng(seed).integers(copies, size=len(sequences.lengths))
    owners = np.repeat(np.arange(len(sequences.lengths)), sequences.lengths)
    items = (sequences.items - 1) * copies + variant[owners] + 1
    return Sequences(sequences.indptr, items, sequences.timestamps), n_items * copies


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def _loaded() -> dict[str, float]:
    return {"loading_peak_rss_mb": round(peak_rss_mb(), 1)}


def stage_validation(work: Path, options: dict[str, Any]) -> dict[str, Any]:
    frame = pd.read_parquet(work / RAW_FILE)
    loaded = _loaded()
    result, seconds = _timed(lambda: validate_interactions(frame))
    result.valid.to_parquet(work / VALID_FILE)
    return {"seconds": seconds, "rows": len(frame), "rows_quarantined": len(result.quarantined), **loaded}


def stage_k_core(work: Path, options: dict[str, Any]) -> dict[str, Any]:
    frame = pd.read_parquet(work / VALID_FILE)
    loaded = _loaded()

    def run() -> Interactions:
        kept, _ = k_core(frame, 5, 5)
        return Interactions.from_frame(kept)

    interactions, seconds = _timed(run)
    save_interactions(interactions, work / INTERACTIONS_DIR)
    return {"seconds": seconds, "rows": len(interactions), "users": interactions.n_users, **loaded}


def stage_split(work: Path, options: dict[str, Any]) -> dict[str, Any]:
    interactions = load_interactions(work / INTERACTIONS_DIR)
    loaded = _loaded()
    split, seconds = _timed(lambda: make_split(interactions, "leave_one_out"))
    save_split(split, work / SPLIT_DIR)
    return {"seconds": seconds, "train_rows": len(split.train), "items": split.n_items, **loaded}


def _training_sequences(work: Path, options: dict[str, Any]) -> tuple[Sequences, int]:
    split = load_split(work / SPLIT_DIR)
    sequences = split.train.sequences()
    if options["catalogue_items"]:
        return spread_catalogue(sequences, split.n_items, options["catalogue_items"], options["seed"])
    return sequences, split.n_items


def stage_transition_graph(work: Path, options: dict[str, Any]) -> dict[str, Any]:
    import scipy.sparse as sp

    from recmodels.graph.overlap import NeighbourhoodConfig
    from recmodels.graph.transitions import item_transition_graph

    sequences, n_items = _training_sequences(work, options)
    loaded = _loaded()
    distance = NeighbourhoodConfig().max_distance
    graph, seconds = _timed(lambda: item_transition_graph(sequences, n_items, distance))
    sp.save_npz(work / GRAPH_FILE, graph)
    return {"seconds": seconds, "items": n_items, "edges": graph.nnz, **loaded}


def stage_overlap(work: Path, options: dict[str, Any]) -> dict[str, Any]:
    import scipy.sparse as sp

    from recmodels.graph.overlap import NeighbourhoodConfig, neighbourhood_overlap

    graph = sp.load_npz(work / GRAPH_FILE).tocsr()
    loaded = _loaded()
    overlap, seconds = _timed(lambda: neighbourhood_overlap(graph, NeighbourhoodConfig()))
    return {"seconds": seconds, "items": overlap.n_items, "pairs": int((overlap.scores > 0).sum()), **loaded}


def stage_ease(work: Path, options: dict[str, Any]) -> dict[str, Any]:
    from recmodels.models.baselines import EASE, EASEConfig

    split = load_split(work / SPLIT_DIR)
    loaded = _loaded()
    _, seconds = _timed(lambda: EASE(EASEConfig()).fit(split))
    return {"seconds": seconds, **loaded}


def _one_epoch(model_class: type, config: Any, work: Path, options: dict[str, Any]) -> dict[str, Any]:
    split = load_split(work / SPLIT_DIR)
    loaded = _loaded()
    config = with_overrides(config, [f"seed={options['seed']}", "trainer.epochs=1", 'trainer.device="cpu"'])
    model, fit_seconds = _timed(lambda: model_class(config).fit(split))
    return {"seconds": model.history.seconds[0], "fit_seconds": fit_seconds, **loaded}


def stage_esasrec_epoch(work: Path, options: dict[str, Any]) -> dict[str, Any]:
    from recmodels.models.sasrec import SASRec, esasrec

    return _one_epoch(SASRec, esasrec(max_len=200, dropout=0.1), work, options)


def stage_diffrec_epoch(work: Path, options: dict[str, Any]) -> dict[str, Any]:
    from recmodels.models.diffrec import DiffRec, diffrec

    return _one_epoch(DiffRec, diffrec(), work, options)


STAGES: dict[str, Callable[[Path, dict[str, Any]], dict[str, Any]]] = {
    "validation": stage_validation,
    "k_core": stage_k_core,
    "split": stage_split,
    "transition_graph": stage_transition_graph,
    "overlap": stage_overlap,
    "ease": stage_ease,
    "esasrec_epoch": stage_esasrec_epoch,
    "diffrec_epoch": stage_diffrec_epoch,
}
# What each stage needs from the ones before it.
NEEDS = {"k_core": "validation", "split": "k_core", "transition_graph": "split", "overlap": "transition_graph"}
CATALOGUE_STAGES = ("transition_graph", "overlap")


def _with_needs(stages: list[str]) -> list[str]:
    """The stages asked for plus what they read, in the pipeline's order."""
    wanted = set(stages)
    for stage in stages:
        while stage in NEEDS:
            stage = NEEDS[stage]
            wanted.add(stage)
    wanted |= {"split"} if wanted & {"ease", "esasrec_epoch", "diffrec_epoch"} else set()
    wanted |= {"validation", "k_core"} if "split" in wanted else set()
    return [stage for stage in STAGES if stage in wanted]


def _run_stage(stage: str, work: Path, options: dict[str, Any], rows: int, label: str) -> dict[str, Any]:
    progress(f"{label}: {stage}")
    result = run_isolated(STAGES[stage], work, options)
    row = {"stage": stage, "interactions": rows, "catalogue": label, **result}
    row["seconds"] = round(row["seconds"], 3)
    progress(f"  {row}")
    return row


def id_hashing(seed: int, sizes: tuple[int, ...], distinct_ids: tuple[int, ...]) -> list[dict[str, Any]]:
    """Nanoseconds per row of one ``pd.factorize`` of text ids, per (rows, distinct ids)."""
    rng = np.random.default_rng(seed)
    rows = []
    for size in sizes:
        for distinct in distinct_ids:
            names = np.array([str(name) for name in range(distinct)], dtype=object)
            ids = pd.Series(names[rng.integers(distinct, size=size)])
            _, seconds = _timed(lambda: pd.factorize(ids))
            rows.append(
                {
                    "rows": size,
                    "distinct_ids": distinct,
                    "seconds": round(seconds, 3),
                    "ns_per_row": round(seconds / size * 1e9, 1),
                }
            )
            progress(f"  id hashing {rows[-1]}")
    return rows


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    frame = pd.DataFrame([row for row in results if row["catalogue"] == "ml-1m"])
    for stage, rows in frame.groupby("stage", sort=False):
        time_axis.plot(rows["interactions"], rows["seconds"], marker="o", label=stage)
        memory_axis.plot(rows["interactions"], rows["peak_rss_mb"] / 1024, marker="o", label=stage)
    sizes = np.array(sorted(frame["interactions"].unique()), dtype=float)
    reference = frame.loc[frame["interactions"] == sizes[0], "seconds"].median()
    time_axis.plot(sizes, reference * sizes / sizes[0], "k:", label="linear")
    for axis, label in ((time_axis, "seconds"), (memory_axis, "peak resident memory (GiB)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("interactions")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    time_axis.legend(fontsize=8)
    figure.suptitle("recpipe stages on ML-1M replicated to 20M interactions (2 cores)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> None:
    args = argparse.ArgumentParser(prog="benchmarks/scale.py", description=__doc__)
    args.add_argument("--data-dir", type=Path, default=default_data_dir())
    args.add_argument("--seed", type=int, default=0)
    args.add_argument("--quick", action="store_true", help="300 users per copy, for smoke tests")
    args.add_argument("--copies", type=int, nargs="+", default=[1, 5, 10, 20], help="ML-1M copies per log")
    args.add_argument("--stage", nargs="+", default=list(STAGES), choices=list(STAGES))
    args.add_argument("--catalogue-items", type=int, default=1_000_000, help="0: skip the catalogue growth")
    args.add_argument("--plot", type=Path, default=None, help="write the log-log chart here (PNG)")
    args.add_argument("--work-dir", type=Path, default=None, help="where the logs are written (default: a temp)")
    options = args.parse_args()
    source = load_dataset(options.data_dir / DATASET).interactions
    if options.quick:
        source = source.loc[source["user_id"].isin(source["user_id"].unique()[:300])].reset_index(drop=True)
    stages = _with_needs(options.stage)
    results = []
    with tempfile.TemporaryDirectory(prefix="recpipe-scale-", dir=options.work_dir) as scratch:
        for copies in sorted(options.copies):
            work = Path(scratch) / f"x{copies}"
            work.mkdir()
            log = replicated_log(source, copies, options.seed)
            log.to_parquet(work / RAW_FILE)
            rows = len(log)
            del log
            settings = {"seed": options.seed, "catalogue_items": 0}
            for stage in stages:
                results.append(_run_stage(stage, work, settings, rows, "ml-1m"))
            if options.catalogue_items and copies == max(options.copies):
                grown = {**settings, "catalogue_items": options.catalogue_items}
                for stage in [stage for stage in CATALOGUE_STAGES if stage in stages]:
                    results.append(_run_stage(stage, work, grown, rows, f"{options.catalogue_items} items"))
            shutil.rmtree(work)  # a 20M log's files beside every smaller one's would only cost disk
    if options.plot:
        plot(results, options.plot)
    hashing = id_hashing(options.seed, (1_000_000, 20_000_000), (6_040, 120_800)) if not options.quick else []
    finish("scale", results, source=DATASET, copies=sorted(options.copies), id_hashing=hashing)


if __name__ == "__main__":
    main()
