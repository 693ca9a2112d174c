"""PNG charts for asset metadata: saved as artifacts and inlined so the UI shows them."""

import base64
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd


def inline_png(path: Path, title: str) -> str:
    """Markdown that embeds the PNG, so it renders in the asset's metadata panel."""
    encoded = base64.b64encode(path.read_bytes()).decode()
    return f"![{title}](data:image/png;base64,{encoded})"


def bar_chart(table: pd.DataFrame, label: str, columns: list[str], ylabel: str, title: str, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(max(8, len(table) * 1.1), 4))
    table.set_index(label)[columns].plot.bar(ax=axis, rot=20)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def training_curves(history: dict, metric: str, path: Path) -> Path:
    """Loss and validation metric per epoch (and any extra series such as curriculum hardness)."""
    series = [("training loss", history["loss"]), (f"validation {metric}", history["valid_score"])]
    series += [(name, values) for name, values in history["extra"].items()]
    figure, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3.2))
    for axis, (name, values) in zip(axes, series):
        epochs = [epoch for epoch, value in enumerate(values) if math.isfinite(value)]  # skipped validations are NaN
        axis.plot(epochs, [values[epoch] for epoch in epochs], marker=".")
        axis.set_title(name)
        axis.set_xlabel("epoch")
        if name.startswith("validation") and history["best_epoch"] >= 0:
            axis.axvline(history["best_epoch"], color="grey", linestyle="--", linewidth=1)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def cluster_projection(points, labels, path: Path) -> Path:
    """Items in two dimensions, coloured by cluster."""
    figure, axis = plt.subplots(figsize=(5, 4.2))
    scatter = axis.scatter(points[:, 0], points[:, 1], c=labels % 10, s=4, cmap="tab10", vmin=0, vmax=9, alpha=0.7)
    axis.legend(*scatter.legend_elements(), title="cluster", loc="best", fontsize=7)
    axis.set_title("item embeddings, PCA")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
