"""lnjax.plots.curves: one line per curve in x order, interval bars, gaps for missing values."""

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.container import ErrorbarContainer

from lnjax.plots import Curve, rate_curves


def test_rate_curves_sort_by_x_draw_percent_and_bars_and_go_log_over_a_decade():
    curves = {
        "lr=0.01": Curve([1000, 100, 300], [0.9, 0.5, None], [0.8, 0.4, None], [0.95, 0.6, None]),
        "lr=0.1": Curve([100, 1000], [0.7, 1.0], [0.6, None], [0.8, 1.0]),
    }
    fig = rate_curves(curves, xlabel="total steps", title="t", dodge=0.0)
    ax = fig.axes[0]
    first, second = ax.containers  # one errorbar per curve, in order
    assert isinstance(first, ErrorbarContainer)
    assert (first.get_label(), second.get_label()) == ("lr=0.01", "lr=0.1")
    line, _, (bars,) = first.lines
    assert np.asarray(line.get_xdata()).tolist() == [100, 300, 1000]
    y = np.asarray(line.get_ydata()).tolist()
    assert y[0] == 50 and math.isnan(y[1]) and y[2] == 90
    np.testing.assert_allclose(bars.get_segments()[0], [[100, 40], [100, 60]])  # its 95 % interval
    assert ax.get_xscale() == "log" and ax.get_title() == "t"
    legend = ax.get_legend()
    assert legend is not None and [t.get_text() for t in legend.get_texts()] == ["lr=0.01", "lr=0.1"]
    plt.close(fig)
    one = rate_curves({"a": Curve([2, 4], [0.5, 0.5], [0.1, 0.1], [0.9, 0.9])}, xlabel="x")
    assert one.axes[0].get_xscale() == "linear" and one.axes[0].get_legend() is None
    plt.close(one)
    # dodged: the curves sit side by side around the true x (log axis: by a factor)
    fig = rate_curves(curves, xlabel="total steps", dodge=0.1)
    bars = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    xs = [np.asarray(c.lines[0].get_xdata()) for c in bars]
    np.testing.assert_allclose(xs[0][0] * xs[1][0], 100 * 100)  # shifted by 10^∓0.05 around 100
    assert xs[0][0] < 100 < xs[1][0]
    plt.close(fig)
