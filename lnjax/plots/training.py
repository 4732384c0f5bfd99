"""Training curves."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def _value(v: Any) -> float:
    """A logged number; a non-finite one is stored as null in strict JSON and plotted as a gap."""
    return math.nan if v is None else float(v)


def training_curves(history: Sequence[dict[str, Any]], *, title: str = "") -> Figure:
    """Loss and throughput against step, from the train loop's logged metric dicts."""
    steps = [m["step"] for m in history]
    fig, (ax_loss, ax_speed) = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    ax_loss.plot(steps, [_value(m["loss"]) for m in history])
    ax_loss.set(xlabel="step", ylabel="training loss", yscale="log")
    ax_speed.plot(steps, [_value(m["examples_per_s"]) for m in history])
    ax_speed.set(xlabel="step", ylabel="examples / s")
    if title:
        fig.suptitle(title)
    return fig
