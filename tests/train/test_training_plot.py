"""lnjax.plots.training: curves from logged history, a null (non-finite) loss drawn as a gap."""

import math

import matplotlib.pyplot as plt

from lnjax.plots import training_curves


def test_training_curves_plot_every_logged_step_and_gaps_for_nulls():
    history = [{"step": s, "loss": None if s == 3 else 1.0 / s, "examples_per_s": 100.0} for s in (1, 2, 3)]
    fig = training_curves(history, title="t")
    loss_line = fig.axes[0].get_lines()[0]
    assert list(loss_line.get_xdata()) == [1, 2, 3]
    y = list(loss_line.get_ydata())
    assert y[:2] == [1.0, 0.5] and math.isnan(y[2])
    assert fig.texts[0].get_text() == "t"
    plt.close(fig)
