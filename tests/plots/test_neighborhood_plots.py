"""lnjax.plots.neighborhood: the ε-by-distance figure (rings as a line with a band, far and target
layers as separate markers) and the panel of heatmaps."""

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer

from lnjax.plots import eps_by_distance, panel


def curve(mean, ci, rings, target=True):
    return {"mean": mean, "ci": ci, "rings": rings, "far": rings, "target": rings + 1 if target else None}


def test_eps_by_distance_draws_rings_band_and_far_and_target_markers():
    mean = [-3.0, -2.5, None, -2.0, -1.0, -4.0]  # rings 0..3, far 4, target 5
    ci = [[-3.2, -2.8], [-2.7, -2.3], [None, None], [-2.1, -1.9], [-1.5, -0.5], [None, None]]
    curves = {
        ("none", "fixed"): curve(mean, ci, 4),
        ("linf", "fixed"): curve(
            [-2.0, -1.5, -1.0, -0.5], [[-2.2, -1.8]] * 3 + [[-0.7, -0.3]], 3, target=False
        ),
    }
    fig = eps_by_distance(curves, rows=["none", "linf"], cols=["fixed", "sensitivity"], title="t")
    ax, empty = fig.axes
    assert ax.get_title() == "fixed" and empty.get_title() == "sensitivity" and not empty.lines
    none_line, linf_line = (line for line in ax.lines if line.get_label() in ("none", "linf"))
    assert np.asarray(none_line.get_xdata()).tolist() == [0, 1, 2, 3]
    y = np.asarray(none_line.get_ydata()).tolist()
    assert y[:2] == [-3.0, -2.5] and math.isnan(y[2]) and y[3] == -2.0
    assert np.asarray(linf_line.get_xdata()).tolist() == [0, 1, 2]
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 2  # one band per line
    # far at x = 5 (max rings + 1) with its interval; the target without one at x = 7; linf's far
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    points = sorted(
        (float(np.asarray(b.lines[0].get_xdata())[0]), float(np.asarray(b.lines[0].get_ydata())[0]))
        for b in bars
    )
    assert points == [(5.0, -1.0), (5.0, -0.5), (7.0, -4.0)]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[-2:] == ["far", "target"]
    legend = ax.get_legend()
    assert legend is not None and [t.get_text() for t in legend.get_texts()] == ["none", "linf"]
    plt.close(fig)


def test_eps_by_distance_with_nothing_to_draw_is_still_a_figure():
    fig = eps_by_distance({}, rows=["none"], cols=["fixed"])
    assert len(fig.axes) == 1 and fig.axes[0].get_legend() is None
    plt.close(fig)


def test_panel_leaves_missing_cells_blank():
    layers = np.zeros((8, 8), np.int32)
    layers[4:] = 1
    cell = {"x": np.zeros((8, 8, 1)), "layers": layers, "eps": [1e-3, 1e-1], "note": "n"}
    fig = panel({("a", "fixed"): cell}, rows=["a", "b"], cols=["fixed"], title="t")
    titles = [a.get_title() for a in fig.axes]
    assert "a / fixed\nn" in titles and "b / fixed: no result" in titles
    plt.close(fig)
