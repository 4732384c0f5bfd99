"""Decision-boundary figures (seed 003): boundary distances benign vs adversarial (its Figure 4) and
adjacent-class purity (its Figure 5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

CLASS_COLOURS = plt.get_cmap("tab10")


def boundary_distances(
    panels: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    *,
    rows: Sequence[str],
    cols: Sequence[str],
    max_distance: float,
    reference: float | None = None,
    title: str = "",
) -> Figure:
    """Sorted boundary distances per direction, one panel per (row, col), e.g. (model, input kind).

    In each panel: the first input's distances in ascending order, one dot per direction coloured by its
    adjacent class (tab10), and the median over the panel's inputs of the k-th smallest distance (black
    line). Directions without a boundary (distance inf) are not drawn, so a curve that stops early means
    the rest of the directions met no boundary up to `max_distance`.

    Args:
      panels: (row, col) -> (distances [n, D] with inf for none, adjacent [n, D] int with −1 for none);
        a missing key or n = 0 leaves the panel empty.
      rows, cols: panel order.
      max_distance: the y-axis limit (the largest distance looked at).
      reference: a horizontal dashed line (e.g. the RMS of a region-classification sample, τ/√3).
      title: the figure title.
    """
    fig, axes = plt.subplots(
        len(rows), len(cols), figsize=(2.6 * len(cols), 2.3 * len(rows)), squeeze=False, sharey=True
    )
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            dist, adj = panels.get((r, c), (np.zeros((0, 1)), np.zeros((0, 1), int)))
            dist, adj = np.asarray(dist, np.float64), np.asarray(adj)
            if dist.shape[0]:
                d_count = dist.shape[1]
                rank = np.arange(d_count) / d_count
                order = np.argsort(dist[0], kind="stable")
                d0, a0 = dist[0][order], adj[0][order]
                hit = np.isfinite(d0)
                med = np.median(np.sort(dist, axis=1), axis=0)
                ax.plot(rank, np.where(np.isfinite(med), med, np.nan), color="black", lw=0.8, zorder=1)
                colours = CLASS_COLOURS(a0[hit] % 10)
                ax.scatter(rank[hit], d0[hit], c=colours, s=4, linewidths=0, zorder=2)
            ax.text(0.03, 0.93, f"n={dist.shape[0]}", transform=ax.transAxes, fontsize=7, va="top")
            if reference is not None:
                ax.axhline(reference, color="grey", ls="--", lw=0.8)
            ax.set_ylim(0, max_distance * 1.02)
            ax.set_xlim(0, 1)
            if i == 0:
                ax.set_title(c, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{r}\ndistance (RMS)", fontsize=8)
            if i == len(rows) - 1:
                ax.set_xlabel("direction (sorted), share", fontsize=8)
            ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def purity_curves(curves: Mapping[str, Mapping[str, np.ndarray]], *, title: str = "") -> Figure:
    """Mean adjacent-class purity P_k against k, one panel per row key (e.g. model), a line per kind.

    Args:
      curves: row -> kind -> purity [n, K] of the inputs to average (e.g. those with at least one
        boundary hit); kinds with n = 0 are left out.
      title: the figure title.
    """
    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.0), squeeze=False)
    for ax, (row, kinds) in zip(axes[0], curves.items(), strict=True):
        for kind, p in kinds.items():
            p = np.asarray(p, np.float64)
            if p.shape[0] == 0:
                continue
            k = np.arange(1, p.shape[1] + 1)
            ax.plot(k, p.mean(axis=0), marker="o", ms=3, label=f"{kind} (n={p.shape[0]})")
        ax.set(xlabel="top k classes", ylabel="purity (mean)", title=row, ylim=(0, 1.02))
        if ax.lines:
            ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def example_grid(
    columns: Mapping[str, np.ndarray],
    *,
    captions: Mapping[str, Sequence[str]] | None = None,
    title: str = "",
) -> Figure:
    """Images side by side: a column per key (e.g. "original", then each attack), a row per image.

    Args:
      columns: title -> images [n, H, W, C] in [0, 1] (the same n for every column; C = 1 is grey).
      captions: title -> n short texts under the images (e.g. the prediction and the RMS distortion).
      title: the figure title.
    """
    names = list(columns)
    n = len(next(iter(columns.values())))
    fig, axes = plt.subplots(n, len(names), figsize=(1.4 * len(names), 1.5 * n), squeeze=False)
    for j, name in enumerate(names):
        for i in range(n):
            ax = axes[i, j]
            img = np.asarray(columns[name][i])
            ax.imshow(np.squeeze(img), cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=7)
            if captions and name in captions:
                ax.set_xlabel(captions[name][i], fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
