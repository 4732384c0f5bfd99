"""ReLU: elementwise max(x, 0), and all its rules (see `base`).

References:
  Zhang et al. 2018 (CROWN: the linear relaxation and the adaptive lower slope); Xu et al. 2021
    (α-CROWN: optimised lower slopes); Tjeng, Xiao & Tedrake, ICLR 2019 (the big-M MILP encoding).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from flax import struct

from lnjax.models.ops import geometry as G
from lnjax.models.ops.base import (
    Bounds,
    MilpEncoder,
    MilpOptionsLike,
    MilpRules,
    OpRules,
    PatchRules,
    monotone_interval,
    register,
    relaxation_backward,
)


@struct.dataclass
class ReLU:
    """Elementwise max(x, 0)."""


@dataclasses.dataclass(frozen=True)
class ReLUSpec:
    """A ReLU in a `Sequential`."""

    def flax(self, x: jax.Array, name: str) -> jax.Array:
        del name
        return jax.nn.relu(x)

    def to_op(self, params: Any, in_shape: tuple[int, ...]) -> ReLU:
        del params, in_shape
        return ReLU()


def apply(op: ReLU, x: jax.Array) -> jax.Array:
    del op
    return jax.nn.relu(x)


def unstable(lower: jax.Array, upper: jax.Array) -> jax.Array:
    """Neurons whose sign is undecided on the box: l < 0 < u."""
    return (lower < 0) & (upper > 0)


def default_alpha(lower: jax.Array, upper: jax.Array) -> jax.Array:
    """CROWN's adaptive ReLU lower slope: 1 where u >= -l, else 0."""
    return (upper >= -lower).astype(lower.dtype)


def relu_relaxation(
    lower: jax.Array, upper: jax.Array, alpha: jax.Array | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Linear bounds lo_slope*x <= relu(x) <= up_slope*x + up_bias for x in [lower, upper].

    Identity if l >= 0, zero if u <= 0, otherwise alpha*x <= relu(x) <= u/(u-l) * (x - l).

    Args:
      lower, upper: [*S] pre-activation bounds.
      alpha: lower slopes in [0, 1] for unstable neurons, broadcastable against [*S] (e.g. [R, *S]);
        None for `default_alpha`.

    Returns:
      (lo_slope, up_slope, up_bias), broadcast shapes.
    """
    is_unstable = unstable(lower, upper)
    active = (lower >= 0).astype(lower.dtype)
    denom = jnp.where(is_unstable, upper - lower, 1.0)
    up_slope = jnp.where(is_unstable, upper / denom, active)
    up_bias = jnp.where(is_unstable, -up_slope * lower, 0.0)
    if alpha is None:
        alpha = default_alpha(lower, upper)
    lo_slope = jnp.where(is_unstable, alpha, active)
    return lo_slope, up_slope, up_bias


def backward(
    op: ReLU, a: jax.Array, l_in: jax.Array, u_in: jax.Array, alpha: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    del op
    return relaxation_backward(a, *relu_relaxation(l_in, u_in, alpha))


def refine(op: ReLU, lower: jax.Array, upper: jax.Array) -> jax.Array:
    """The relaxation depends on the bounds of the unstable inputs only."""
    del op
    return unstable(lower, upper)


# ----------------------------------------------------------------------------- patch mode


def patch_context(
    op: ReLU, offsets: jax.Array, in_bounds: Bounds, patch_in: tuple[int, int], frame_in: tuple[int, ...]
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """The input bounds gathered at the patches (the offsets do not move)."""
    del op, frame_in
    return offsets, tuple(G.gather_patches(v, offsets, patch_in) for v in in_bounds)


def patch_backward(
    op: ReLU,
    a: jax.Array,
    bounds: tuple[jax.Array, jax.Array],
    alpha: jax.Array | None = None,
    matrix: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    del op, matrix
    lo_s, up_s, up_b = relu_relaxation(bounds[0], bounds[1], alpha)
    a_pos, a_neg = jnp.maximum(a, 0.0), jnp.minimum(a, 0.0)
    return a_pos * lo_s + a_neg * up_s, jnp.sum(a_neg * up_b, axis=(1, 2, 3))


# ----------------------------------------------------------------------------- MILP


def milp_layer(op: ReLU, in_shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    del op
    return int(np.prod(in_shape)), tuple(in_shape)


def milp_forward(size: int, v: np.ndarray) -> np.ndarray:
    del size
    return np.maximum(v, 0.0)


def selector(idx: np.ndarray, ncols: int, cols: np.ndarray, coef: np.ndarray | float) -> sp.csr_matrix:
    """A [len(idx), ncols] matrix with coef at (row r, column cols[r])."""
    coef = np.broadcast_to(np.asarray(coef, float), (len(idx),))
    return sp.csr_matrix((coef, (np.arange(len(idx)), cols)), shape=(len(idx), ncols))


def milp_encode(
    enc: MilpEncoder,
    a: sp.csr_matrix,
    b: np.ndarray,
    raw: tuple[np.ndarray, np.ndarray],
    lo: np.ndarray,
    hi: np.ndarray,
    size: int,
    options: MilpOptionsLike,
) -> tuple[sp.csr_matrix, np.ndarray, int]:
    """u ≤ 0 → 0; l ≥ 0 → identity (inlined, or a column tied by an equality when its row has more
    than `options.inline_max_terms` terms); otherwise y ≥ x, y ≥ 0, y ≤ u·g, y ≤ x − l(1 − g), g binary."""
    del size
    n = a.shape[0]  # pyright: ignore[reportOptionalSubscript] (scipy's `shape` is inferred Optional)
    active = raw[0] >= 0
    inactive = (raw[1] <= 0) & ~active
    is_unstable = ~active & ~inactive
    nnz = np.diff(a.indptr)
    tie = active & (nnz > options.inline_max_terms)
    # Output rows: start from the pre-activation rows, then overwrite.
    keep = active & ~tie
    out_rows = [a.multiply(keep[:, None]).tocsr()]
    out_b = np.where(keep, b, 0.0)
    # Identity units with long rows: a continuous column y with y = x.
    idx = np.flatnonzero(tie)
    if len(idx):
        cols = enc.add_columns(lo[idx], hi[idx])
        ax = enc.resize(a[idx])
        enc.add_rows(selector(idx, enc.ncols, cols, 1.0) - ax, b[idx], "==")
    else:
        cols = np.zeros(0, int)
    tie_cols = cols
    # Unstable units: y ∈ [0, u], binary g; y ≥ x; y ≤ x − l(1 − g); y ≤ u·g.
    idx_u = np.flatnonzero(is_unstable)
    if len(idx_u):
        y = enc.add_columns(np.zeros(len(idx_u)), hi[idx_u])
        g = enc.add_columns(np.zeros(len(idx_u)), np.ones(len(idx_u)), binary=True)
        ax = enc.resize(a[idx_u])
        sel_y = selector(idx_u, enc.ncols, y, 1.0)
        l_u, h_u = lo[idx_u], hi[idx_u]
        enc.add_rows(sel_y - ax, b[idx_u], ">=")
        enc.add_rows(sel_y - ax - selector(idx_u, enc.ncols, g, l_u), b[idx_u] - l_u, "<=")
        enc.add_rows(sel_y - selector(idx_u, enc.ncols, g, h_u), np.zeros(len(idx_u)), "<=")
    else:
        y = np.zeros(0, int)
    # New rows: selectors for tied and unstable units.
    rows = np.concatenate([idx, idx_u])
    cols = np.concatenate([tie_cols, y])
    new = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, enc.ncols))
    out = enc.resize(out_rows[0]) + new
    return out.tocsr(), out_b, int(is_unstable.sum())


register(
    ReLU,
    OpRules(
        apply=apply,
        interval=monotone_interval,
        backward=backward,
        milp=MilpRules(layer=milp_layer, forward=milp_forward, encode=milp_encode, lp_tighten=True),
        refine=refine,
        unstable=unstable,
        alpha_init=default_alpha,
        patch=PatchRules(
            grow=lambda op, patch: patch,
            context=patch_context,
            backward=patch_backward,
            alpha_init=lambda bounds: default_alpha(bounds[0], bounds[1]),
        ),
    ),
)
