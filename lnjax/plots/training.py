"""Training curves."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def training_curves(history: Sequence[dict], *, title: str = "") -> plt.Figure:
    """Loss and throughput against step, from the train loop's logged metric dicts."""
    steps = [m["step"] for m in history]
    fig, (ax_loss, ax_speed) = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    ax_loss.plot(steps, [m["loss"] for m in history])
    ax_loss.set(xlabel="step", ylabel="training loss", yscale="log")
    ax_speed.plot(steps, [m["examples_per_s"] for m in history])
    ax_speed.set(xlabel="step", ylabel="examples / s")
    if title:
        fig.suptitle(title)
    return fig
