"""Rates with confidence intervals against a budget (e.g. an attack's success rate against its steps)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


class Curve(NamedTuple):
    """One line: x [n] (e.g. total steps), value [n] and its interval low [n] ≤ value ≤ high [n];
    None marks a missing value or end (drawn as a gap / no bar)."""

    x: Sequence[float]
    value: Sequence[float | None]
    low: Sequence[float | None]
    high: Sequence[float | None]


def _floats(values: Sequence[float | None]) -> np.ndarray:
    return np.array([math.nan if v is None else float(v) for v in values], np.float64)


def rate_curves(
    curves: Mapping[str, Curve],
    *,
    xlabel: str,
    ylabel: str = "success rate",
    title: str = "",
    dodge: float = 0.015,
) -> Figure:
    """One line per curve (points sorted by x) with its interval as error bars; rates in [0, 1]
    drawn as percentages. The x axis is logarithmic when the positive x values span ≥ 10×.

    Args:
      dodge: curves k = 0..n−1 are shifted sideways by (k − (n − 1) / 2) · dodge of the x range (in
        log space on a log axis), so equal rates at equal x do not hide each other's bars; 0: none.
    """
    xs = [np.asarray(c.x, np.float64) for c in curves.values()]
    x_all = np.concatenate(xs) if xs else np.zeros(0)
    positive = x_all[x_all > 0]
    log = bool(positive.size) and positive.max() >= 10 * positive.min()
    t = np.log10(positive) if log else x_all
    span = float(t.max() - t.min()) if t.size else 0.0
    fig, ax = plt.subplots(figsize=(6.4, 4.0), constrained_layout=True)
    for k, (label, c) in enumerate(curves.items()):
        order = np.argsort(xs[k], kind="stable")
        shift = (k - (len(curves) - 1) / 2) * dodge * span
        x = xs[k][order] * 10**shift if log else xs[k][order] + shift
        v, lo, hi = (_floats(a)[order] for a in (c.value, c.low, c.high))
        err = np.stack([np.nan_to_num(v - lo), np.nan_to_num(hi - v)])  # no bar where an end is missing
        ax.errorbar(x, 100 * v, yerr=100 * err, marker="o", capsize=3, label=label)
    if log:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=f"{ylabel} (%)", ylim=(-2, 102))
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return fig
