"""Layer-neighborhood figures: log ε per pixel over the image, ε against layer index, a panel, and
the mean log10 ε against distance with its interval band (one line per run, e.g. per defense).

The heatmaps follow the seed's Figures 2–3: every pixel is coloured by log10 of its layer's ε
(one colour per layer), over the image drawn faintly in grey, with the target digit outlined in
white and the non-target digit (the object the layers grow from) in black.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.image import AxesImage
    from numpy.typing import ArrayLike

FLOOR = 1e-6  # ε = 0 is drawn as this


def close(*figs) -> None:
    """Frees figures (pyplot keeps them alive otherwise)."""
    for f in figs:
        plt.close(f)


def _log_eps_image(layers, eps) -> np.ndarray:
    eps = np.maximum(np.asarray(eps, np.float64), FLOOR)
    return np.log10(eps)[np.asarray(layers)]


def draw_heatmap(
    ax: Axes,
    x: ArrayLike,
    layers: ArrayLike,
    eps: ArrayLike,
    *,
    target_mask: ArrayLike | None = None,
    other_mask: ArrayLike | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    title: str = "",
) -> AxesImage:
    """Draws log10 ε per pixel on `ax`; returns the image artist (for a colorbar).

    Args:
      x: [H, W] or [H, W, 1] in [0, 1] (drawn faintly underneath).
      layers: int [H, W]; eps: [R] ε per layer.
      target_mask, other_mask: bool [H, W] digits to outline (white / black).
    """
    x = np.asarray(x, np.float32).reshape(np.shape(layers))
    ax.imshow(x, cmap="gray", vmin=0, vmax=1)
    im = ax.imshow(_log_eps_image(layers, eps), cmap="viridis", alpha=0.85, vmin=vmin, vmax=vmax)
    for mask, colour in ((target_mask, "white"), (other_mask, "black")):
        if mask is not None and np.any(mask):
            ax.contour(np.asarray(mask, np.float32), levels=[0.5], colors=colour, linewidths=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return im


def _range(eps_list) -> tuple[float, float]:
    vals = np.concatenate([np.log10(np.maximum(np.asarray(e, np.float64), FLOOR)) for e in eps_list])
    lo, hi = float(vals.min()), float(vals.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def heatmaps(
    x: ArrayLike,
    layers: ArrayLike,
    eps: Mapping[str, Sequence[float] | np.ndarray],
    *,
    target_mask: ArrayLike | None = None,
    other_mask: ArrayLike | None = None,
    title: str = "",
) -> Figure:
    """One heatmap per method (a shared colour scale): {name: ε [R]} -> Figure."""
    names = list(eps)
    vmin, vmax = _range([eps[n] for n in names])
    fig, axes = plt.subplots(
        1, len(names), figsize=(3.2 * len(names) + 0.8, 3.6), squeeze=False, constrained_layout=True
    )
    im = None
    for ax, name in zip(axes[0], names, strict=True):
        im = draw_heatmap(
            ax,
            x,
            layers,
            eps[name],
            target_mask=target_mask,
            other_mask=other_mask,
            vmin=vmin,
            vmax=vmax,
            title=name,
        )
    assert im is not None, "eps names no method"
    fig.colorbar(im, ax=axes[0].tolist(), label="log10 ε")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def eps_by_layer(eps: Mapping[str, Sequence[float] | np.ndarray], *, title: str = "") -> Figure:
    """ε against layer index (log scale), one line per method."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4), constrained_layout=True)
    for name, e in eps.items():
        e = np.maximum(np.asarray(e, np.float64), FLOOR)
        ax.plot(np.arange(len(e)), e, marker="o", ms=3, label=name)
    ax.set(xlabel="layer d (distance to the non-target digit)", ylabel="ε_d", yscale="log")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def panel(
    cells: Mapping[tuple[str, str], Mapping], *, rows: Sequence[str], cols: Sequence[str], title: str = ""
) -> Figure:
    """A grid of heatmaps with one colour scale (the seed's Figures 2–3: defenses × shrink methods).

    Args:
      cells: {(row, col): {"x", "layers", "eps", optional "target_mask", "other_mask", "note"}};
        missing cells are left blank.
      rows, cols: their order (e.g. ("none", "l0", "linf") × ("fixed", "sensitivity")).
    """
    present = [cells[k]["eps"] for k in cells]
    vmin, vmax = _range(present) if present else (-6.0, 0.0)
    fig, axes = plt.subplots(
        len(rows),
        len(cols),
        figsize=(3.1 * len(cols) + 1.0, 3.0 * len(rows) + 0.5),
        squeeze=False,
        constrained_layout=True,
    )
    im = None
    for i, r in enumerate(rows):
        for j, col in enumerate(cols):
            ax = axes[i][j]
            cell = cells.get((r, col))
            if cell is None:
                ax.axis("off")
                ax.set_title(f"{r} / {col}: no result", fontsize=8)
                continue
            note = cell.get("note", "")
            im = draw_heatmap(
                ax,
                cell["x"],
                cell["layers"],
                cell["eps"],
                target_mask=cell.get("target_mask"),
                other_mask=cell.get("other_mask"),
                vmin=vmin,
                vmax=vmax,
                title=f"{r} / {col}" + (f"\n{note}" if note else ""),
            )
    if im is not None:
        fig.colorbar(im, ax=[a for row in axes for a in row], label="log10 ε", shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _nan(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], np.float64)


def eps_by_distance(
    curves: Mapping[tuple[str, str], Mapping],
    *,
    rows: Sequence[str],
    cols: Sequence[str],
    title: str = "",
) -> Figure:
    """Mean log10 ε against the distance layer with its interval as a band: one panel per column (e.g.
    shrink method), one line per row (e.g. defense); the far layer and the target layer as separate
    markers right of the rings.

    Args:
      curves: {(row, col): {"mean": [R] mean log10 ε per layer (None: no value), "ci": [R] [low, high]
        (None ends: no interval), "rings": r (layers 0..r − 1 are distance rings), "far": the far
        layer's index, "target": the target layer's index or None}}; missing pairs are left out.
      rows, cols: their order (e.g. ("none", "l0", "linf") × ("fixed", "sensitivity")).
    """
    fig, axes = plt.subplots(
        1,
        len(cols),
        figsize=(4.6 * len(cols) + 0.6, 3.6),
        squeeze=False,
        sharey=True,
        constrained_layout=True,
    )
    r_max = max((int(c["rings"]) for c in curves.values()), default=0)
    far_x, target_x = r_max + 1, r_max + 3  # apart, so their tick labels do not run together
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, col in zip(axes[0], cols, strict=True):
        for i, row in enumerate(rows):
            c = curves.get((row, col))
            if c is None:
                continue
            colour = colours[i % len(colours)]
            mean = _nan(c["mean"])
            ci = c["ci"]
            lo, hi = _nan([v[0] for v in ci]), _nan([v[1] for v in ci])
            r = int(c["rings"])
            d = np.arange(r)
            ax.plot(d, mean[:r], marker="o", ms=3, color=colour, label=row)
            ax.fill_between(d, lo[:r], hi[:r], color=colour, alpha=0.2, linewidth=0)
            for index, x, marker in ((c["far"], far_x, "s"), (c.get("target"), target_x, "^")):
                if index is None or np.isnan(mean[index]):
                    continue
                err = np.array([[mean[index] - lo[index]], [hi[index] - mean[index]]])
                ax.errorbar(
                    [x],
                    [mean[index]],
                    yerr=None if np.isnan(err).any() else err,
                    fmt=marker,
                    color=colour,
                    ms=5,
                )
        rings = list(range(0, r_max, max(1, r_max // 6)))
        ends = [(far_x, "far")] + [(target_x, "target")] * any(
            c.get("target") is not None for c in curves.values()
        )
        ax.set_xticks(rings + [x for x, _ in ends], [str(d) for d in rings] + [name for _, name in ends])
        ax.set(xlabel="layer d (distance to the non-target digit)", title=col)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean log10 ε (95 % interval)")
    drawn = next((ax for ax in axes[0] if ax.get_legend_handles_labels()[0]), None)
    if drawn is not None:
        drawn.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
