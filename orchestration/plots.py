"""PNG charts for asset metadata: saved as artifacts and inlined so the UI shows them."""

import base64
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch


def inline_png(png: bytes, title: str) -> str:
    """Markdown that embeds the PNG, so it renders in the asset's metadata panel."""
    encoded = base64.b64encode(png).decode()
    return f"![{title}](data:image/png;base64,{encoded})"


def rendered(draw: Callable[[Path], Path]) -> bytes:
    """The PNG bytes ``draw(path)`` writes: charts travel inside an asset's value, the IO layer stores them."""
    with tempfile.TemporaryDirectory() as scratch:
        return draw(Path(scratch) / "chart.png").read_bytes()


def leaderboard_chart(
    table: pd.DataFrame,
    columns: list[str],
    tied_with_best: pd.Series,
    sort_by: str,
    confidence: float,
    title: str,
    path: Path,
) -> Path:
    """The leaderboard figure (``leaderboard_figure``) as a PNG."""
    figure = leaderboard_figure(table, columns, tied_with_best, sort_by, confidence, title)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def leaderboard_figure(
    table: pd.DataFrame, columns: list[str], tied_with_best: pd.Series, sort_by: str, confidence: float, title: str
) -> Figure:
    """One panel per metric, a horizontal bar per model (best on top) with its interval as an error bar.

    Blue bars: the best model and those not significantly different from it on ``sort_by``; grey:
    significantly below. Models are rows, so names stay readable however many there are; the legend
    sits under the panels and never covers a bar.
    """
    n_models = len(table)
    positions = np.arange(n_models)[::-1]
    colours = np.where(tied_with_best.loc[table["model"]].to_numpy(), "tab:blue", "silver")
    figure, axes = plt.subplots(
        1, len(columns), figsize=(1.8 + 3.0 * len(columns), 1.6 + 0.3 * n_models), sharey=True, squeeze=False
    )
    for axis, metric in zip(axes[0], columns):
        values = table[metric].to_numpy(dtype=float)
        below = np.clip(values - table[f"{metric}_ci_low"].to_numpy(dtype=float), 0, None)
        above = np.clip(table[f"{metric}_ci_high"].to_numpy(dtype=float) - values, 0, None)
        axis.barh(positions, values, color=colours, xerr=[below, above], error_kw={"elinewidth": 1, "capsize": 2})
        axis.set_title(metric)
        axis.grid(axis="x", alpha=0.3)
        axis.set_axisbelow(True)
    axes[0][0].set_yticks(positions, table["model"])
    handles = [
        Patch(color="tab:blue", label=f"best, or not significantly different from it on {sort_by}"),
        Patch(color="silver", label=f"significantly below the best on {sort_by}"),
        Line2D(
            [], [], color="black", marker="|", linestyle="-", linewidth=1, label=f"{confidence:.0%} interval over users"
        ),
    ]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.45 / figure.get_figheight(), 1, 1))  # room under the panels for the legend
    return figure


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


def labelled_projection(points, labels: list[str], path: Path, title: str, legend: str) -> Path:
    """Items in two dimensions, coloured by a named label: the nine commonest labels, the rest grey."""
    names, counts = np.unique(np.asarray(labels, dtype=object), return_counts=True)
    shown = list(names[np.argsort(-counts, kind="stable")][:9])
    figure, axis = plt.subplots(figsize=(5.4, 4.2))
    palette = plt.get_cmap("tab10")
    label_array = np.asarray(labels, dtype=object)
    rest = ~np.isin(label_array, shown)
    axis.scatter(points[rest, 0], points[rest, 1], s=4, color="lightgrey", alpha=0.6, label="other")
    for position, name in enumerate(shown):
        chosen = label_array == name
        axis.scatter(points[chosen, 0], points[chosen, 1], s=4, color=palette(position), alpha=0.7, label=str(name))
    axis.legend(title=legend, loc="best", fontsize=7, markerscale=2)
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
