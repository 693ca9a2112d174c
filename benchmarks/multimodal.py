"""Multi-modal sequential models (Demure) against the id-only eSASRec: full ranking, cold targets, new items,
corrupted modalities.

Variants: ``esasrec`` (id only, the sequential benchmark's preset), ``fused`` (id + title text, genres and
year, summed), ``demure`` (fused + contribution-labelled denoising and the view contrastive term) and
``modalities_only`` (no id embedding). Every row reports test Recall/NDCG@10/20 on all targets and on
the cold ones (targets whose item has at most ``--cold-max`` training rows), seconds per epoch and, for
``demure``, the share of users for whom each modality ended labelled noise. Multi-modal rows also time the
explanation at batch 1 (PyTorch, the ONNX graph, and ``POST /explain`` through the running service);
``--compare-contributions`` measures occlusion against gradient x input on each trained model.

Splits: leave-one-out on ML-1M, per-user temporal on ML-100K; ``--protocol item_disjoint`` holds a seeded 10% of the items out of training (their rows are the test
targets); ``--corrupt titles:0.3`` (or ``genres:0.3``) shuffles that modality among a seeded 30% of the
items before anything is built, the noise-robustness test.

``python benchmarks/multimodal.py [--dataset ml-1m-seq/ml-1m.txt ml-100k] [--model esasrec fused demure ...]
[--seeds 0 1 2] [--protocol item_disjoint] [--corrupt titles:0.3] [--epochs N] [--compare-contributions]
[--set FIELD=JSON ...]``
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import finish, parser, percentile, prepare, progress, recserve, run_isolated, with_overrides

VARIANTS = ["esasrec", "fused", "demure", "modalities_only"]
DATASETS = ["ml-1m-seq/ml-1m.txt", "ml-100k"]
MAX_LEN = {"ml-1m-seq/ml-1m.txt": 200}
# ML-100K: per-user temporal, the pipeline's default (the global cut evaluates only 85 of its 943 users).
PROTOCOL = {"ml-100k": "user_temporal"}
DROPOUT = {"ml-1m-seq/ml-1m.txt": 0.1}
SHORT_MAX_LEN = 50
KS = (10, 20)
CORRUPTIBLE = {"titles": "title", "genres": "genres"}


def variant_model(variant: str, dataset: str, seed: int, epochs: int | None, patience: int, overrides: list[str]):
    """The variant's model, unfitted, and whether its fit reads the item modalities."""
    from recmodels.models.multimodal import MultiModal, demure, fused, modalities_only
    from recmodels.models.sasrec import SASRec, esasrec

    presets = {
        "esasrec": (SASRec, esasrec),
        "fused": (MultiModal, fused),
        "demure": (MultiModal, demure),
        "modalities_only": (MultiModal, modalities_only),
    }
    family, preset = presets[variant]
    config = preset(max_len=MAX_LEN.get(dataset, SHORT_MAX_LEN), dropout=DROPOUT.get(dataset, 0.2))
    trainer = dataclasses.replace(config.trainer, epochs=epochs or 200, patience=patience, lr=1e-3, batch_size=128)
    config = with_overrides(dataclasses.replace(config, seed=seed, trainer=trainer), overrides)
    return family(config), family is MultiModal


def corrupted(items, corruption: str | None, seed: int):
    """The item table with one modality shuffled among a seeded share of its rows (``titles:0.3``)."""
    if corruption is None:
        return items
    name, _, share = corruption.partition(":")
    if name not in CORRUPTIBLE or not share:
        raise ValueError(f"--corrupt {corruption!r}: use {' or '.join(CORRUPTIBLE)}:SHARE, e.g. titles:0.3")
    column = CORRUPTIBLE[name]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(items), size=round(float(share) * len(items)), replace=False)
    items = items.copy()
    values = items[column].to_numpy(copy=True)
    values[chosen] = values[rng.permutation(chosen)]
    items[column] = values
    return items


def run_one(options: dict[str, Any], dataset: str, variant: str, seed: int) -> dict[str, Any]:
    from recmodels.data.readers import load_dataset
    from recmodels.data.schemas import validate_items
    from recmodels.evaluation import evaluate
    from recmodels.features.modalities import ItemModalities
    from recmodels.features.text import TitleEncoder

    protocol = options["protocol"] or PROTOCOL.get(dataset)
    prepared = prepare(options["data_dir"], dataset, options["quick"], protocol=protocol)
    split, protocol = prepared.split, prepared.protocol
    raw = load_dataset(options["data_dir"] / dataset)
    if raw.items is None:
        raise ValueError(f"{dataset} has no item table: the multi-modal benchmark needs titles and genres")
    items = corrupted(validate_items(raw.items).valid, options["corrupt"], seed)
    encoder_started = time.perf_counter()
    modalities = ItemModalities.from_items(items, split.train.item_ids, TitleEncoder(), options["text_cache"])
    encoder_seconds = time.perf_counter() - encoder_started
    model, reads_modalities = variant_model(
        variant, dataset, seed, options["epochs"], options["patience"], options["overrides"]
    )
    started = time.perf_counter()
    model.fit(split, **({"modalities": modalities} if reads_modalities else {}))
    config = model.config
    train_seconds = time.perf_counter() - started
    counts = np.bincount(split.train.frame["item"].to_numpy(), minlength=split.n_items + 1)
    cold = np.flatnonzero(counts <= options["cold_max"])
    everyone = evaluate(model, split.test, KS)
    cold_targets = evaluate(model, split.test.only_items(cold), KS)
    history = model.history
    row = {
        "dataset": dataset,
        "split": protocol,
        "model": variant,
        "seed": seed,
        "corrupt": options["corrupt"],
        "metrics": _rounded(everyone.metrics),
        "cold_metrics": _rounded(cold_targets.metrics),
        "cold_users": len(cold_targets.users),
        "cold_max_training_rows": options["cold_max"],
        "valid_ndcg@10": round(history.best_score, 5),
        "epochs": len(history.seconds),
        "best_epoch": history.best_epoch,
        "seconds_per_epoch": round(sum(history.seconds) / len(history.seconds), 2),
        "train_seconds": round(train_seconds, 1),
        "text_seconds": round(encoder_seconds, 1),
        "modality_coverage": {name: round(share, 4) for name, share in modalities.coverage().items()},
        "config": config.to_dict(),
        "overrides": options["overrides"],
    }
    if reads_modalities:
        row["modalities"] = list(model.modality_names)
        row["noise_share_last_epoch"] = {name: round(values[-1], 4) for name, values in history.extra.items()}
        latency, by_genre = explanations(model, split, modalities, options["latency_users"])
        row["explain_latency_ms_batch1"] = latency | served_explain_latency(model, split, options["latency_users"])
        row["contributions_by_genre"] = by_genre
        if options["compare_contributions"]:
            row["contribution_methods"] = contribution_methods(model, split)
    return row


def contribution_methods(model, split) -> dict[str, Any]:
    """Occlusion against gradient x input on the trained model, over every training user: seconds per pass,
    the correlation of the per-user contribution shares per content modality, and how far the noise labels
    agree (both at the config's quantile)."""
    import torch

    from recmodels.models.multimodal import (
        CONTENT,
        DenoisingConfig,
        GradientContributionConfig,
        OcclusionContributionConfig,
        noise_labels,
    )

    sequences = split.train.sequences()
    measured = torch.from_numpy(sequences.lengths >= 2)
    content = torch.tensor([name in CONTENT for name in model.modality_names])
    quantile = (model.config.denoising or DenoisingConfig()).noise_quantile
    shares, labels, seconds = {}, {}, {}
    for method in (OcclusionContributionConfig(), GradientContributionConfig()):
        started = time.perf_counter()
        values = model.contributions(split, sequences, method)[measured]
        seconds[method.kind] = round(time.perf_counter() - started, 2)
        shares[method.kind] = (values / values.abs().sum(dim=1, keepdim=True).clamp(min=1e-12)).numpy()
        labels[method.kind] = noise_labels(values, content, quantile).numpy()
    occlusion, gradient = labels["occlusion_contribution"], labels["gradient_contribution"]
    correlation = {
        name: round(
            float(np.corrcoef(shares["occlusion_contribution"][:, m], shares["gradient_contribution"][:, m])[0, 1]), 4
        )
        for m, name in enumerate(model.modality_names)
        if name in CONTENT
    }
    on_content = content.numpy()
    return {
        "seconds": seconds,
        "users": int(measured.sum()),
        "share_correlation": correlation,
        "label_agreement": round(float((occlusion == gradient)[:, on_content].mean()), 4),
        "occlusion_noise_also_gradient_noise": round(float((occlusion & gradient).sum() / max(occlusion.sum(), 1)), 4),
    }


def served_explain_latency(model, split, users: int) -> dict[str, float]:
    """``POST /explain`` through the running service (export, register, ``python -m recserve``): batch 1, one
    client, the top 10 of each of the first ``users`` test histories; milliseconds at p50 and p99."""
    import tempfile

    import httpx
    import torch

    from recmodels.export import TopKHead, export_explainer, export_onnx, register_model
    from recmodels.registry import set_champion

    item_ids = split.train.item_ids
    histories = split.test.history.sequences().padded(split.test.users[:users], model.max_history_length)[0]
    head = TopKHead(model.scorer(), 10).eval()
    with torch.inference_mode():
        tops = head(torch.from_numpy(histories.astype(np.int64)))[0]
    bodies = [
        {"history": [str(item_ids[item]) for item in row if item], "items": [str(item_ids[item]) for item in top]}
        for row, top in zip(histories, tops.numpy())
    ]
    with tempfile.TemporaryDirectory() as scratch:
        work, registry = Path(scratch), Path(scratch) / "registry"
        spec = export_onnx(model, work / "model.onnx", k=10)
        explanation = export_explainer(model, work / "explain.onnx")
        folder = register_model(
            registry,
            work / "model.onnx",
            spec,
            model,
            explain_file=work / "explain.onnx",
            explain=explanation,
            name="multimodal_model",
            item_ids=item_ids,
            training_data_version="benchmark",
            metrics={},
            parity={},
        )
        set_champion(registry, "multimodal_model", folder.name, "multimodal benchmark")
        with recserve(registry) as service, httpx.Client(base_url=service.base, timeout=30) as http:
            http.post("/explain", json=bodies[0]).raise_for_status()
            latencies = []
            for body in bodies:
                started = time.perf_counter()
                http.post("/explain", json=body).raise_for_status()
                latencies.append(1000 * (time.perf_counter() - started))
    return {"http_p50": round(float(np.median(latencies)), 3), "http_p99": round(percentile(latencies, 0.99), 3)}


def explanations(model, split, modalities, users: int) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The explanations of the top 10 of the first ``users`` test histories: the median batch-1 milliseconds in
    PyTorch and through the exported ONNX graph (what ``POST /explain`` runs), and the mean contribution of each
    modality by the recommended item's first genre (with the number of recommendations behind each mean)."""
    import tempfile

    import onnxruntime as ort
    import torch

    from recmodels.export import TopKHead, export_explainer

    histories = split.test.history.sequences().padded(split.test.users[:users], model.max_history_length)[0]
    explainer, head = model.explainer(), TopKHead(model.scorer(), 10).eval()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "explain.onnx"
        export_explainer(model, path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    torch_ms, onnx_ms, recommended, contributions = [], [], [], []
    with torch.inference_mode():
        for row in histories:
            history = torch.from_numpy(row[row > 0][None, :].astype(np.int64))
            items = head(history)[0]
            started = time.perf_counter()
            explained = explainer(history, items)
            torch_ms.append(1000 * (time.perf_counter() - started))
            started = time.perf_counter()
            session.run(None, {"history": history.numpy(), "items": items.numpy()})
            onnx_ms.append(1000 * (time.perf_counter() - started))
            recommended.append(items[0].numpy())
            contributions.append(explained[0].numpy())
    latency = {"torch": round(float(np.median(torch_ms)), 3), "onnx": round(float(np.median(onnx_ms)), 3)}
    items, values = np.concatenate(recommended), np.concatenate(contributions)
    first = modalities.side.first_genres(items) if modalities.side is not None else ["none"] * len(items)
    by_genre = {}
    for genre in sorted(set(first)):
        chosen = np.asarray(first) == genre
        means = values[chosen].mean(axis=0)
        by_genre[genre] = {"n": int(chosen.sum())} | {
            name: round(float(mean), 4) for name, mean in zip(model.modality_names, means)
        }
    return latency, by_genre


def plot_contributions(results: list[dict[str, Any]], path: Path, min_count: int = 20) -> None:
    """Mean contribution per modality by the recommended item's first genre, one panel per variant (its rows'
    seeds pooled, weighted by count); genres with fewer than ``min_count`` recommendations are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = sorted({row["model"] for row in results if "contributions_by_genre" in row})
    figure, axes = plt.subplots(len(variants), 1, figsize=(10, 3.2 * len(variants)), squeeze=False)
    for axis, variant in zip(axes[:, 0], variants):
        pooled: dict[str, dict[str, float]] = {}
        for row in (row for row in results if row["model"] == variant):
            for genre, entry in row["contributions_by_genre"].items():
                total = pooled.setdefault(genre, {"n": 0})
                for name, value in entry.items():
                    if name != "n":
                        total[name] = total.get(name, 0.0) + value * entry["n"]
                total["n"] += entry["n"]
        genres = sorted(genre for genre, entry in pooled.items() if entry["n"] >= min_count)
        names = [name for name in pooled[genres[0]] if name != "n"] if genres else []
        width = 0.8 / max(len(names), 1)
        for offset, name in enumerate(names):
            axis.bar(
                np.arange(len(genres)) + offset * width,
                [pooled[genre][name] / pooled[genre]["n"] for genre in genres],
                width,
                label=name,
            )
        axis.set_xticks(np.arange(len(genres)) + 0.4 - width / 2, genres, rotation=30, ha="right", fontsize=8)
        axis.set_title(f"{variant}: score drop when the modality is masked in the history, by first genre")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {name: round(metrics[name], 5) for name in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")}


def main() -> None:
    args = parser("multimodal", DATASETS, VARIANTS)
    args.add_argument("--seeds", type=int, nargs="+", default=None, help="several seeds (overrides --seed)")
    args.add_argument("--patience", type=int, default=10)
    args.add_argument("--protocol", default=None, help="split protocol (default: temporal, or leave-one-out)")
    args.add_argument("--corrupt", default=None, help="shuffle one modality among a share of items: titles:0.3")
    args.add_argument("--cold-max", type=int, default=5, help="cold targets: items with at most this many rows")
    args.add_argument("--latency-users", type=int, default=200, help="test histories timed for /explain")
    args.add_argument(
        "--text-cache",
        type=Path,
        default=Path(os.environ.get("RECPIPE_TEXT_CACHE", Path.home() / ".cache" / "recpipe" / "title-embeddings")),
    )
    args.add_argument("--set", nargs="+", default=[], metavar="FIELD=JSON", dest="overrides")
    args.add_argument(
        "--compare-contributions",
        action="store_true",
        help="also measure occlusion against gradient x input on each trained multi-modal model",
    )
    args.add_argument("--plot", type=Path, default=None, help="write the contributions-by-genre chart here (PNG)")
    options = args.parse_args()
    shared = {
        "data_dir": options.data_dir,
        "protocol": options.protocol,
        "corrupt": options.corrupt,
        "cold_max": options.cold_max,
        "epochs": 3 if options.quick else options.epochs,
        "quick": options.quick,
        "latency_users": options.latency_users,
        "patience": options.patience,
        "text_cache": options.text_cache,
        "overrides": options.overrides,
        "compare_contributions": options.compare_contributions,
    }
    results = []
    for dataset in options.dataset:
        for variant in options.model:
            for seed in options.seeds or [options.seed]:
                progress(f"{dataset}: {variant} seed {seed} {options.protocol or ''} {options.corrupt or ''}")
                row = run_isolated(run_one, shared, dataset, variant, seed)
                progress(f"  test {row['metrics']} cold {row['cold_metrics']} {row['epochs']} epochs")
                results.append(row)
    if options.plot is not None:
        plot_contributions(results, options.plot)
    finish("multimodal", results)


if __name__ == "__main__":
    main()
