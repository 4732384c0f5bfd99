"""CROWN: backward linear bounds over the layer view, per example.

A bound on a linear function `a · z_k` of the output of op k is propagated backwards op by op to
an affine function of the input and concretised against the input box:
- affine ops (Conv, Dense, Flatten, AvgPool): exactly, through the transpose of their linear part
  (`jax.vjp`, so strides and padding need no hand-written transposed convolution);
- ReLU with input bounds [l, u]: identity if l >= 0, zero if u <= 0, otherwise the standard
  relaxation alpha*x <= relu(x) <= u/(u-l) * (x - l), with the adaptive lower slope
  alpha = 1 if u >= -l else 0 (alpha-CROWN optimises alpha instead);
- MaxPool with input bounds: per window, j = the input with the largest lower bound. Lower
  relaxation: y >= x_j (always sound). Upper relaxation: y <= x_j when x_j dominates the window
  (l_j >= u_i for every other i; then y = x_j exactly), otherwise the constant y <= max_i u_i.
  Padded cells (-inf) never win.

`crown_bounds` applies this to every pre-activation (the output of an affine op that feeds a ReLU or
MaxPool) and to the logits, intersected with interval (or the given `base`) bounds; ops in between
are propagated by interval arithmetic from the tightened bounds. Rows are computed only for
neurons that can still matter (unstable ReLU inputs; inputs of undecided max-pool windows; all
logits), in fixed-size chunks of `chunk` neurons inside a `lax` loop, so one compilation serves
every box of the same shape. The first pre-activation layer (one affine map of the box) is exact
under interval arithmetic and is skipped.

All bounds are float32 and sound up to float rounding; see `interval`.

References:
  Zhang et al., Efficient Neural Network Robustness Certification with General Activation
    Functions (CROWN), NeurIPS 2018; Xu et al., Fast and Complete: Enabling Complete Neural Network
    Verification with Rapid and Massively Parallel Incomplete Verifiers (alpha-CROWN), ICLR 2021.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lnjax.bounds import patches as P
from lnjax.bounds.interval import LayerBounds, interval_bounds, interval_op, linear_part
from lnjax.bounds.nodes import masked_node_bounds
from lnjax.bounds.relu import relu_relaxation
from lnjax.models import layers as L
from lnjax.models.conv import conv_general_dilated

CHUNK = 256
"""Neurons per backward pass (each gives two rows: lower and upper)."""

# (bounds so far, op index, mask) -> the node's (lower, upper), or None to use the row passes.
NodeBounds = Callable[[LayerBounds, int, jax.Array], "tuple[jax.Array, jax.Array] | None"]

# A function from rows A: [R, *shape of op k's output] to lower bounds [R] of A · z_k over the box.
RowLower = Callable[[LayerBounds, int, jax.Array], jax.Array]


# ----------------------------------------------------------------------------- relaxations


def _pool_index(in_hw, window, strides, padding) -> np.ndarray:
    """[H', W', P] indices into the flattened [H * W] input (H * W marks a padded cell)."""
    (h, w), (kh, kw), (sh, sw) = in_hw, window, strides
    (pt, pb), (pl, pr) = padding
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    r = np.arange(oh)[:, None, None, None] * sh + np.arange(kh)[None, None, :, None] - pt
    c = np.arange(ow)[None, :, None, None] * sw + np.arange(kw)[None, None, None, :] - pl
    r, c = np.broadcast_arrays(r, c)
    idx = np.where((r >= 0) & (r < h) & (c >= 0) & (c < w), r * w + c, h * w)
    return idx.reshape(oh, ow, kh * kw)


def _patches(x: jax.Array, idx: np.ndarray, fill: float) -> jax.Array:
    """x: [H, W, C] -> [H', W', P, C] window cells (padded cells = fill)."""
    h, w, c = x.shape
    flat = jnp.pad(x.reshape(h * w, c), ((0, 1), (0, 0)), constant_values=fill)
    return flat[idx]


def _patches_transpose(a: jax.Array, in_shape, idx: np.ndarray) -> jax.Array:
    """Transpose of `_patches(., idx, 0)`: a: [R, H', W', P, C] -> [R, H, W, C] (scatter-add)."""
    _, vjp = jax.vjp(lambda x: _patches(x, idx, 0.0), jnp.zeros(in_shape, a.dtype))
    return jax.vmap(lambda ai: vjp(ai)[0])(a)


def maxpool_relaxation(op: L.MaxPool, lower, upper):
    """Linear bounds of max-pooling given input bounds (see the module docstring).

    Args:
      op: the pooling op.
      lower, upper: [H, W, C] input bounds.

    Returns:
      idx: [H', W', P] window cell indices (`_pool_index`);
      w_lo: [H', W', P, C] one-hot lower-bound weights (y >= sum_p w_lo x_p);
      w_up: [H', W', P, C] upper-bound weights (y <= sum_p w_up x_p + up_bias);
      up_bias: [H', W', C];
      undecided: [H', W', C] bool, windows where no input dominates.
    """
    idx = _pool_index(lower.shape[:2], op.window, op.strides, op.padding)
    lp, up = _patches(lower, idx, -jnp.inf), _patches(upper, idx, -jnp.inf)
    p = idx.shape[-1]
    onehot = jnp.argmax(lp, axis=2)[:, :, None, :] == jnp.arange(p)[None, None, :, None]
    u_other = jnp.max(jnp.where(onehot, -jnp.inf, up), axis=2)
    decided = jnp.max(lp, axis=2) >= u_other
    w_lo = onehot.astype(lower.dtype)
    w_up = (onehot & decided[:, :, None, :]).astype(lower.dtype)
    up_bias = jnp.where(decided, 0.0, jnp.max(up, axis=2))
    return idx, w_lo, w_up, up_bias, ~decided


def _undecided_pool_inputs(op: L.MaxPool, lower, upper) -> jax.Array:
    """[H, W, C] bool: inputs that lie in some window where no input dominates."""
    idx, _, _, _, undecided = maxpool_relaxation(op, lower, upper)
    cells = jnp.broadcast_to(undecided[:, :, None, :], (*idx.shape, lower.shape[-1]))
    hits = _patches_transpose(cells[None].astype(lower.dtype), lower.shape, idx)[0]
    return hits > 0


# ----------------------------------------------------------------------------- backward pass


def _row_sum(x: jax.Array) -> jax.Array:
    return jnp.sum(x.reshape(x.shape[0], -1), axis=1)


def conv_transpose(op: L.Conv, in_shape, a: jax.Array) -> jax.Array:
    """Transpose of the convolution (no bias) applied to rows: [R, H', W', C_out] -> [R, *in_shape].

    Equal to `jax.vjp` of `conv2d` (tests check it), but written as one stride-1 convolution per
    stride phase, all phases stacked along the output channels, followed by depth-to-space: XLA's
    CPU path for the input-dilated convolution that the vjp of a strided convolution produces is
    several times slower.
    """
    h, w, c_in = in_shape
    kh, kw, _, c_out = op.kernel.shape
    (sh, sw), ((pt, _), (pl, _)) = op.strides, op.padding
    rows, oh, ow = a.shape[:3]
    mh, mw = -(-kh // sh), -(-kw // sw)  # taps per phase
    qh, qw = -(-(h + pt) // sh), -(-(w + pl) // sw)  # outputs per phase
    # x[s*q + r - p] = sum_m y[q - m] K[s*m + r]: phase r correlates y with K[s*(M-1-t) + r], t < M.
    k = jnp.pad(op.kernel, ((0, sh * mh - kh), (0, sw * mw - kw), (0, 0), (0, 0)))
    k = k.reshape(mh, sh, mw, sw, c_in, c_out)[::-1, :, ::-1]
    k = k.transpose(0, 2, 5, 1, 3, 4).reshape(mh, mw, c_out, sh * sw * c_in)
    out = conv_general_dilated(  # α-CROWN differentiates this inside a loop: see models/conv.py
        a,
        k,
        window_strides=(1, 1),
        padding=((mh - 1, max(0, qh - oh)), (mw - 1, max(0, qw - ow))),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST,
    )[:, :qh, :qw]
    out = out.reshape(rows, qh, qw, sh, sw, c_in).transpose(0, 1, 3, 2, 4, 5)
    return out.reshape(rows, qh * sh, qw * sw, c_in)[:, pt : pt + h, pl : pl + w]


def _linear_transpose(op: L.Op, in_shape, a: jax.Array) -> jax.Array:
    """Rows a: [R, *out] -> [R, *in_shape] through the transpose of the op's linear part."""
    if isinstance(op, L.Dense):
        return jnp.dot(a, op.kernel.T, precision=lax.Precision.HIGHEST)
    if isinstance(op, L.Conv):
        return conv_transpose(op, in_shape, a)
    if isinstance(op, L.Flatten):
        return a.reshape(a.shape[0], *in_shape)
    _, vjp = jax.vjp(lambda x: linear_part(op, x), jnp.zeros(in_shape, a.dtype))
    return jax.vmap(lambda ai: vjp(ai)[0])(a)


def input_bounds_of(bounds: LayerBounds, j: int, lower, upper):
    """Bounds of the input of op j (the box for j = 0)."""
    return (lower, upper) if j == 0 else bounds[j - 1]


def backward_lower(
    view: L.LayerView,
    bounds: LayerBounds,
    k: int,
    a: jax.Array,
    lower: jax.Array,
    upper: jax.Array,
    alphas: Mapping[int, jax.Array] | None = None,
) -> jax.Array:
    """Lower bounds of a · z_k over the box, z_k the output of op k.

    Args:
      view: the network.
      bounds: bounds of the outputs of ops 0..k-1 (at least), used by the relaxations.
      k: op index.
      a: [R, *shape of op k's output] rows.
      lower, upper: [*input_shape] input box.
      alphas: optional ReLU lower slopes {relu op index: [R, *its input shape]} (alpha-CROWN);
        missing ReLUs use `default_alpha`.

    Returns:
      [R] lower bounds.
    """
    alphas = alphas or {}
    bias = jnp.zeros((a.shape[0],), a.dtype)
    for j in range(k, -1, -1):
        op = view.ops[j]
        l_in, u_in = input_bounds_of(bounds, j, lower, upper)
        if isinstance(op, L.ReLU):
            lo_s, up_s, up_b = relu_relaxation(l_in, u_in, alphas.get(j))
            a_pos, a_neg = jnp.maximum(a, 0.0), jnp.minimum(a, 0.0)
            bias = bias + _row_sum(a_neg * up_b)
            a = a_pos * lo_s + a_neg * up_s
        elif isinstance(op, L.MaxPool):
            idx, w_lo, w_up, up_b, _ = maxpool_relaxation(op, l_in, u_in)
            a_pos, a_neg = jnp.maximum(a, 0.0), jnp.minimum(a, 0.0)
            bias = bias + _row_sum(a_neg * up_b)
            cells = a_pos[:, :, :, None, :] * w_lo + a_neg[:, :, :, None, :] * w_up
            a = _patches_transpose(cells, l_in.shape, idx)
        elif isinstance(op, (L.Conv, L.Dense)):
            bias = bias + _row_sum(a * op.bias)
            a = _linear_transpose(op, l_in.shape, a)
        elif isinstance(op, L.LINEAR_OPS):
            a = _linear_transpose(op, l_in.shape, a)
        else:
            raise TypeError(f"unknown op {type(op).__name__}")
    flat = a.reshape(a.shape[0], -1)
    mid, rad = ((upper + lower) / 2).reshape(-1), ((upper - lower) / 2).reshape(-1)
    hi = lax.Precision.HIGHEST
    return jnp.dot(flat, mid, precision=hi) - jnp.dot(jnp.abs(flat), rad, precision=hi) + bias


# ----------------------------------------------------------------------------- driver


def _exact_by_interval(view: L.LayerView, k: int) -> bool:
    """True if op k's output is a single affine map of the box (interval bounds are exact)."""
    prefix = view.ops[: k + 1]
    affine = sum(isinstance(op, (L.Conv, L.Dense, L.AvgPool)) for op in prefix)
    return all(isinstance(op, L.LINEAR_OPS) for op in prefix) and affine <= 1


def refine_mask(view: L.LayerView, k: int, lower, upper) -> jax.Array | None:
    """Neurons of op k's output worth a backward pass, or None for no pass at all.

    Outputs of affine ops that feed a ReLU (unstable neurons) or a MaxPool (inputs of undecided
    windows), and the logits (all), unless interval bounds are already exact there.
    """
    op = view.ops[k]
    if not isinstance(op, L.LINEAR_OPS) or _exact_by_interval(view, k):
        return None
    if k == len(view.ops) - 1:
        return jnp.ones(lower.shape, bool)
    nxt = view.ops[k + 1]
    if isinstance(nxt, L.ReLU):
        return (lower < 0) & (upper > 0)
    if isinstance(nxt, L.MaxPool):
        return _undecided_pool_inputs(nxt, lower, upper)
    return None


def _node_bounds(row_lower: Callable[[jax.Array], jax.Array], mask: jax.Array, chunk: int):
    """Bounds of the masked neurons of one node, `chunk` neurons per call of row_lower.

    Args:
      row_lower: rows [2 * chunk, *S] -> lower bounds [2 * chunk].
      mask: [*S] bool, neurons to bound.
      chunk: neurons per call (static).

    Returns:
      (lower, upper) [*S]; -inf / +inf where not masked.
    """
    shape, n = mask.shape, math.prod(mask.shape)

    def bound_ids(sel):
        e = jax.nn.one_hot(sel, n, dtype=jnp.float32).reshape(sel.shape[0], *shape)  # id n -> zero row
        return row_lower(jnp.concatenate([e, -e]))

    return masked_node_bounds(bound_ids, mask, chunk)


def refine_bounds(
    view: L.LayerView,
    lower,
    upper,
    base: LayerBounds,
    row_lower: RowLower,
    chunk: int,
    node_bounds: NodeBounds | None = None,
) -> LayerBounds:
    """Walks the ops: interval from the tightened bounds ∩ base, then `row_lower` where it matters.

    `node_bounds(bounds, k, mask)`, if given, may bound a node itself (returning (lower, upper)) or
    decline (None), e.g. patch mode for convolutional nodes.
    """
    out: list[tuple[jax.Array, jax.Array]] = []
    lo, hi = lower, upper
    for k, op in enumerate(view.ops):
        lo, hi = interval_op(op, lo, hi)
        lo, hi = jnp.maximum(lo, base[k][0]), jnp.minimum(hi, base[k][1])
        mask = refine_mask(view, k, lo, hi)
        if mask is not None:
            node = None if node_bounds is None else node_bounds(tuple(out), k, mask)
            if node is None:
                fn = functools.partial(row_lower, tuple(out), k)
                node = _node_bounds(fn, mask, chunk)
            node_lo, node_hi = node
            lo, hi = jnp.maximum(lo, node_lo), jnp.minimum(hi, node_hi)
        # Sound bounds from different computations can cross by float rounding; never leave an
        # empty interval behind (an infeasible MILP would read as "robust").
        lo, hi = jnp.minimum(lo, hi), jnp.maximum(lo, hi)
        out.append((lo, hi))
    return tuple(out)


# ----------------------------------------------------------------------------- public API


def crown_bounds(
    view: L.LayerView,
    lower: jax.Array,
    upper: jax.Array,
    *,
    base: LayerBounds | None = None,
    chunk: int = CHUNK,
    patches: bool = True,
) -> LayerBounds:
    """CROWN bounds of every op output over the box `[lower, upper]`.

    Pre-activations (outputs of affine ops feeding a ReLU or MaxPool) and the logits get backward
    linear bounds, intersected with `base` (interval bounds by default); other outputs are
    propagated by interval arithmetic from the tightened bounds.

    Args:
      view: the network.
      lower, upper: [*view.input_shape] input box.
      base: bounds to intersect with (e.g. from an earlier, cheaper method); interval if None.
      chunk: neurons per backward pass (static; memory ~ 2 * chunk * largest activation).
      patches: bound convolutional neurons in patch mode (`patches`: the backward pass cropped to
        each neuron's receptive field; same bounds up to float rounding, far cheaper).

    Returns:
      LayerBounds: (lower, upper) of the output of each op.

    References:
      Zhang et al. 2018 (CROWN).
    """
    if base is None:
        base = interval_bounds(view, lower, upper)

    def row_lower(bounds, k, a):
        return backward_lower(view, bounds, k, a, lower, upper)

    def node_bounds(bounds, k, mask):
        frames = P.patch_frames(view, k) if patches else None
        if frames is None:
            return None
        return P.patch_node_bounds(
            view, bounds, k, mask, lower, upper, frames, chunk=max(chunk, P.PATCH_CHUNK)
        )

    return refine_bounds(view, lower, upper, base, row_lower, chunk, node_bounds)


def interval_spec_lower(c: jax.Array, logit_bounds) -> jax.Array:
    """Lower bounds [M] of c @ z from elementwise logit bounds. c: [M, K]."""
    lo, hi = logit_bounds
    return jnp.maximum(c, 0.0) @ lo.reshape(-1) + jnp.minimum(c, 0.0) @ hi.reshape(-1)


def crown_spec_lower(
    view: L.LayerView, lower: jax.Array, upper: jax.Array, c: jax.Array, *, bounds: LayerBounds
) -> jax.Array:
    """CROWN lower bounds of the specification c @ logits over the box.

    Args:
      view: the network.
      lower, upper: [*view.input_shape] input box.
      c: [M, K] specification rows (e.g. z_t - z_j as e_t - e_j).
      bounds: intermediate bounds (`interval_bounds`, `crown_bounds`, `alpha_crown_bounds`).

    Returns:
      [M] lower bounds, never looser than the interval bound from `bounds[-1]`.

    References:
      Zhang et al. 2018 (CROWN).
    """
    k = len(view.ops) - 1
    a = c.reshape(c.shape[0], *bounds[k][0].shape)
    return jnp.maximum(backward_lower(view, bounds, k, a, lower, upper), interval_spec_lower(c, bounds[k]))


def unstable_counts(view: L.LayerView, bounds: LayerBounds) -> tuple[int, ...]:
    """Number of unstable ReLUs (l < 0 < u on the ReLU's input) for each ReLU op, in order (host)."""
    counts = []
    for k, op in enumerate(view.ops):
        if isinstance(op, L.ReLU):
            if k == 0:
                raise ValueError("a ReLU as the first op has no input bounds in LayerBounds")
            lo, hi = np.asarray(bounds[k - 1][0]), np.asarray(bounds[k - 1][1])
            counts.append(int(np.sum((lo < 0) & (hi > 0))))
    return tuple(counts)
