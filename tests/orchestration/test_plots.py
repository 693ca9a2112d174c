"""The leaderboard chart: error bars from the intervals, a legend that covers no bar, readable with many models."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer

from orchestration.plots import leaderboard_chart, leaderboard_figure

COLUMNS = ["recall@10", "recall@20", "ndcg@10", "ndcg@20"]


@pytest.fixture
def fourteen_models() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(0)
    names = [f"a_rather_long_model_name_{i}_model" for i in range(14)]
    table = pd.DataFrame({"model": names})
    for column in COLUMNS:
        values = np.sort(rng.random(14))[::-1] * 0.3
        table[column] = values
        table[f"{column}_ci_low"] = values - 0.02
        table[f"{column}_ci_high"] = values + 0.03
    tied = pd.Series([True] * 3 + [False] * 11, index=names[::-1]).loc[names]  # looked up by name, not position
    return table, tied


def test_legend_covers_no_panel_and_every_model_is_labelled(fourteen_models):
    table, tied = fourteen_models
    figure = leaderboard_figure(table, COLUMNS, tied, "ndcg@10", 0.95, "title")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    [legend] = figure.legends
    legend_box = legend.get_window_extent(renderer)
    assert [text.get_text() for text in legend.get_texts()][2] == "95% interval over users"
    for axis in figure.axes:
        assert not legend_box.overlaps(axis.get_window_extent(renderer))
        assert not legend_box.overlaps(axis.get_tightbbox(renderer))  # nor their tick labels
    labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert labels == list(table["model"])
    # model labels do not overlap each other
    boxes = [label.get_window_extent(renderer) for label in figure.axes[0].get_yticklabels()]
    assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))
    assert figure.get_figheight() > 5  # grows with the number of models
    plt.close(figure)


def test_bars_carry_the_intervals_and_the_tie_colours(fourteen_models):
    table, tied = fourteen_models
    figure = leaderboard_figure(table, COLUMNS, tied, "ndcg@10", 0.95, "title")
    for axis, column in zip(figure.axes, COLUMNS):
        [bars] = [container for container in axis.containers if isinstance(container, BarContainer)]
        [errors] = [container for container in axis.containers if isinstance(container, ErrorbarContainer)]
        widths = [patch.get_width() for patch in bars.patches]
        np.testing.assert_allclose(widths, table[column])
        [segments] = errors.lines[2]
        spans = [segment[:, 0] for segment in segments.get_segments()]
        np.testing.assert_allclose([span.min() for span in spans], table[f"{column}_ci_low"])
        np.testing.assert_allclose([span.max() for span in spans], table[f"{column}_ci_high"])
        colours = [patch.get_facecolor() for patch in bars.patches]
        tied_models = tied.loc[table["model"]].to_numpy()
        assert len({colours[i] for i in np.flatnonzero(tied_models)}) == 1
        assert colours[np.flatnonzero(tied_models)[0]] != colours[np.flatnonzero(~tied_models)[0]]
    plt.close(figure)


def test_chart_is_written_as_png(fourteen_models, tmp_path):
    table, tied = fourteen_models
    path = leaderboard_chart(table, COLUMNS, tied, "ndcg@10", 0.95, "title", tmp_path / "leaderboard.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
