"""MaxPool and AvgPool over [H, W, C], and all their rules (see `base`).

MaxPool's CROWN relaxation, given input bounds: per window, j = the input with the largest lower
bound. Lower relaxation: y >= x_j (always sound). Upper relaxation: y <= x_j when x_j dominates the
window (l_j >= u_i for every other i; then y = x_j exactly), otherwise the constant y <= max_i u_i.
Padded cells (-inf) never win. Its MILP encoding takes binaries only over the window inputs whose
upper bound exceeds the largest lower bound in the window, plus the input attaining it.

References:
  Tjeng, Xiao & Tedrake, ICLR 2019 (MIPVerify: the max-pool encoding); Zhang et al. 2018 (CROWN).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from flax import struct

from lnjax.models.ops import geometry as G
from lnjax.models.ops.base import (
    MilpEncoder,
    MilpOptionsLike,
    MilpRules,
    OpRules,
    monotone_interval,
    no_bias,
    register,
    row_sum,
    vjp_transpose,
)


@struct.dataclass
class MaxPool:
    """Max over windows; padded cells never win (padding value -inf)."""

    window: tuple[int, int] = struct.field(pytree_node=False, default=(2, 2))
    strides: tuple[int, int] = struct.field(pytree_node=False, default=(2, 2))
    padding: G.Padding = struct.field(pytree_node=False, default=((0, 0), (0, 0)))


@struct.dataclass
class AvgPool:
    """Mean over windows (no padding): a linear op."""

    window: tuple[int, int] = struct.field(pytree_node=False, default=(2, 2))
    strides: tuple[int, int] = struct.field(pytree_node=False, default=(2, 2))


@dataclasses.dataclass(frozen=True)
class MaxPoolSpec:
    """A max-pooling layer in a `Sequential`."""

    window: tuple[int, int] = (2, 2)
    strides: tuple[int, int] | None = None  # defaults to the window
    padding: str | G.Padding = "VALID"  # "SAME", "VALID" or explicit ((top, bottom), (left, right))

    def flax(self, x: jax.Array, name: str) -> jax.Array:
        del name
        # flax takes explicit pairs too; its signature only shows the string default
        padding: Any = self.padding
        return nn.max_pool(x, self.window, self.strides or self.window, padding=padding)

    def to_op(self, params: Any, in_shape: tuple[int, ...]) -> MaxPool:
        del params
        window = (int(self.window[0]), int(self.window[1]))
        strides = self.strides or window
        strides = (int(strides[0]), int(strides[1]))
        padding = G.explicit_padding(self.padding, in_shape[:2], window, strides)
        return MaxPool(window=window, strides=strides, padding=padding)


@dataclasses.dataclass(frozen=True)
class AvgPoolSpec:
    """An average-pooling layer (VALID) in a `Sequential`."""

    window: tuple[int, int] = (2, 2)
    strides: tuple[int, int] | None = None

    def flax(self, x: jax.Array, name: str) -> jax.Array:
        del name
        return nn.avg_pool(x, self.window, self.strides or self.window, padding="VALID")

    def to_op(self, params: Any, in_shape: tuple[int, ...]) -> AvgPool:
        del params, in_shape
        strides = self.strides or self.window
        return AvgPool(window=tuple(self.window), strides=tuple(strides))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- apply


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int], padding: G.Padding) -> jax.Array:
    """x: [H, W, C] -> [H', W', C]."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (*window, 1), (*strides, 1), (*padding, (0, 0)))


def avg_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int]) -> jax.Array:
    """x: [H, W, C] -> [H', W', C]."""
    s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (*window, 1), (*strides, 1), "VALID")
    return s / (window[0] * window[1])


def apply_max(op: MaxPool, x: jax.Array) -> jax.Array:
    return max_pool(x, op.window, op.strides, op.padding)


def apply_avg(op: AvgPool, x: jax.Array) -> jax.Array:
    return avg_pool(x, op.window, op.strides)


# ----------------------------------------------------------------------------- CROWN


def pool_index(op: MaxPool, in_hw: tuple[int, ...]) -> np.ndarray:
    """[H', W', P] indices into the flattened [H * W] input (H * W marks a padded cell)."""
    return G.window_index(in_hw, op.window, op.strides, op.padding, pad=in_hw[0] * in_hw[1])


def maxpool_relaxation(
    op: MaxPool, lower: jax.Array, upper: jax.Array
) -> tuple[np.ndarray, jax.Array, jax.Array, jax.Array, jax.Array]:
    """Linear bounds of max-pooling given input bounds (see the module docstring).

    Args:
      op: the pooling op.
      lower, upper: [H, W, C] input bounds.

    Returns:
      idx: [H', W', P] window cell indices (`pool_index`);
      w_lo: [H', W', P, C] one-hot lower-bound weights (y >= sum_p w_lo x_p);
      w_up: [H', W', P, C] upper-bound weights (y <= sum_p w_up x_p + up_bias);
      up_bias: [H', W', C];
      undecided: [H', W', C] bool, windows where no input dominates.
    """
    idx = pool_index(op, lower.shape[:2])
    lp, up = G.window_patches(lower, idx, -jnp.inf), G.window_patches(upper, idx, -jnp.inf)
    p = idx.shape[-1]
    onehot = jnp.argmax(lp, axis=2)[:, :, None, :] == jnp.arange(p)[None, None, :, None]
    u_other = jnp.max(jnp.where(onehot, -jnp.inf, up), axis=2)
    decided = jnp.max(lp, axis=2) >= u_other
    w_lo = onehot.astype(lower.dtype)
    w_up = (onehot & decided[:, :, None, :]).astype(lower.dtype)
    up_bias = jnp.where(decided, 0.0, jnp.max(up, axis=2))
    return idx, w_lo, w_up, up_bias, ~decided


def undecided_inputs(op: MaxPool, lower: jax.Array, upper: jax.Array) -> jax.Array:
    """[H, W, C] bool: inputs that lie in some window where no input dominates."""
    idx, _, _, _, undecided = maxpool_relaxation(op, lower, upper)
    cells = jnp.broadcast_to(undecided[:, :, None, :], (*idx.shape, lower.shape[-1]))
    hits = G.window_patches_transpose(cells[None].astype(lower.dtype), lower.shape, idx)[0]
    return hits > 0


def backward_max(
    op: MaxPool, a: jax.Array, l_in: jax.Array, u_in: jax.Array, alpha: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    del alpha
    idx, w_lo, w_up, up_b, _ = maxpool_relaxation(op, l_in, u_in)
    a_pos, a_neg = jnp.maximum(a, 0.0), jnp.minimum(a, 0.0)
    cells = a_pos[:, :, :, None, :] * w_lo + a_neg[:, :, :, None, :] * w_up
    return G.window_patches_transpose(cells, l_in.shape, idx), row_sum(a_neg * up_b)


def backward_avg(
    op: AvgPool, a: jax.Array, l_in: jax.Array, u_in: jax.Array, alpha: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    del u_in, alpha
    return vjp_transpose(lambda x: apply_avg(op, x), l_in.shape, a), no_bias(a)


# ----------------------------------------------------------------------------- MILP


def avg_pool_matrix(
    in_shape: tuple[int, ...], window: Sequence[int], strides: Sequence[int]
) -> tuple[sp.csr_matrix, tuple[int, ...]]:
    """Average pooling (VALID) as a sparse matrix over row-major flattened [H, W, C]."""
    h, w, c = in_shape
    windows = G.element_windows(in_shape, window, strides, ((0, 0), (0, 0)))
    n_out, p = windows.shape
    rows = np.repeat(np.arange(n_out), p)
    vals = np.full(rows.shape, 1.0 / (window[0] * window[1]))
    ho, wo = G.output_size((h, w), window, strides, ((0, 0), (0, 0)))
    return sp.csr_matrix((vals, (rows, windows.ravel())), shape=(n_out, h * w * c)), (ho, wo, c)


def milp_matrix_avg(op: AvgPool, in_shape: tuple[int, ...]) -> tuple[sp.csr_matrix, None, tuple[int, ...]]:
    m, out = avg_pool_matrix(in_shape, op.window, op.strides)
    return m, None, out


def milp_layer_max(op: MaxPool, in_shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Flat input indices of every window: [Ho·Wo·C, KH·KW] (−1 for padded cells)."""
    h, w, c = in_shape
    ho, wo = G.output_size((h, w), op.window, op.strides, op.padding)
    return G.element_windows(in_shape, op.window, op.strides, op.padding), (ho, wo, c)


def milp_forward_max(windows: np.ndarray, v: np.ndarray) -> np.ndarray:
    padded = np.concatenate([v, [-np.inf]])  # index −1 reads −inf
    return padded[windows].max(axis=1)


def milp_encode_max(
    enc: MilpEncoder,
    a: sp.csr_matrix,
    b: np.ndarray,
    raw: tuple[np.ndarray, np.ndarray],
    lo: np.ndarray,
    hi: np.ndarray,
    windows: np.ndarray,
    options: MilpOptionsLike | None = None,
) -> tuple[sp.csr_matrix, np.ndarray, int]:
    """y = max over the window: one y per open window, one binary per candidate input."""
    del options
    n_out = windows.shape[0]
    out_rows, out_cols, out_vals = [], [], []
    out_b = np.zeros(n_out)
    n_unstable = 0
    pending = []  # (o, candidates, y lower, y upper)
    for o in range(n_out):
        w = windows[o]
        w = w[w >= 0]
        # Inputs that can exceed the largest lower bound L, plus one input attaining L (an input
        # with u ≤ L can only tie with it).
        j = w[np.argmax(raw[0][w])]
        cand = np.union1d(w[raw[1][w] > raw[0][j]], [j])
        if len(cand) == 1:
            i = cand[0]
            rs, re = a.indptr[i], a.indptr[i + 1]
            out_rows += [o] * (re - rs)
            out_cols += a.indices[rs:re].tolist()
            out_vals += a.data[rs:re].tolist()
            out_b[o] = b[i]
            continue
        n_unstable += 1
        pending.append((o, cand, lo[w].max(), hi[cand].max()))
    # Columns first (one y per open window, one binary per candidate), then the rows.
    if pending:
        ys = enc.add_columns(np.array([p[2] for p in pending]), np.array([p[3] for p in pending]))
        a = enc.resize(a)
        for (o, cand, _, big_u), y in zip(pending, ys, strict=True):
            g = enc.add_columns(np.zeros(len(cand)), np.ones(len(cand)), binary=True)
            a = enc.resize(a)
            x = a[cand]
            sel_y = sp.csr_matrix(
                (np.ones(len(cand)), (np.arange(len(cand)), np.full(len(cand), y))),
                shape=(len(cand), enc.ncols),
            )
            sel_g = sp.csr_matrix((big_u - lo[cand], (np.arange(len(cand)), g)), shape=(len(cand), enc.ncols))
            enc.add_rows(sel_y - x, b[cand], ">=")  # y ≥ x_i
            enc.add_rows(sel_y - x + sel_g, b[cand] + big_u - lo[cand], "<=")  # y ≤ x_i + (U − l_i)(1 − g_i)
            enc.add_rows(
                sp.csr_matrix((np.ones(len(cand)), (np.zeros(len(cand), int), g)), shape=(1, enc.ncols)),
                np.ones(1),
                "==",
            )
            out_rows.append(o)
            out_cols.append(y)
            out_vals.append(1.0)
    out = sp.csr_matrix((out_vals, (out_rows, out_cols)), shape=(n_out, enc.ncols))
    return out, out_b, n_unstable


register(
    MaxPool,
    OpRules(
        apply=apply_max,
        interval=monotone_interval,
        backward=backward_max,
        milp=MilpRules(layer=milp_layer_max, forward=milp_forward_max, encode=milp_encode_max),
        refine=undecided_inputs,
    ),
)
register(
    AvgPool,
    OpRules(
        apply=apply_avg,
        interval=monotone_interval,
        backward=backward_avg,
        linear=apply_avg,
        milp=MilpRules(matrix=milp_matrix_avg),
    ),
)
