"""Interval bounds over the layer view (interval bound propagation).

Per example: the input is a box `[lower, upper]` of shape `view.input_shape`; the result gives, for
every op of `view.ops`, elementwise bounds of that op's output over the box. Affine ops use the
centre/radius form (exact for a single affine map of a box, so the first pre-activation layer is
already tight); ReLU, max- and average-pooling are monotone and map bounds to bounds.

Bounds are computed in float32 without outward rounding: they are sound up to float rounding
(~1e-6 relative). Consumers that turn them into proofs (the MILP) add their own safety margin.

References:
  Gowal et al., On the Effectiveness of Interval Bound Propagation for Training Verifiably Robust
    Models, 2018; Tjeng, Xiao & Tedrake, Evaluating Robustness of Neural Networks with Mixed
    Integer Programming, ICLR 2019 (interval arithmetic as the first tightening step).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lnjax.models import layers as L

LayerBounds = tuple[tuple[jax.Array, jax.Array], ...]
"""(lower, upper) of the output of each op in `view.ops`; index i = after op i, same shape as it."""


def clip_box(lower: jax.Array, upper: jax.Array, lo: float = 0.0, hi: float = 1.0):
    """Clips an input box to the pixel range.

    Args:
      lower, upper: [*input_shape] box corners.
      lo, hi: the valid pixel range.

    Returns:
      (lower, upper) clipped elementwise to [lo, hi].
    """
    return jnp.clip(lower, lo, hi), jnp.clip(upper, lo, hi)


def linear_part(op: L.Op, x: jax.Array) -> jax.Array:
    """The op without its bias (a linear map). Only for `L.LINEAR_OPS`."""
    if isinstance(op, L.Conv):
        return L.conv2d(x, op.kernel, op.strides, op.padding)
    if isinstance(op, L.Dense):
        return jnp.dot(x, op.kernel, precision=jax.lax.Precision.HIGHEST)
    if isinstance(op, (L.Flatten, L.AvgPool)):
        return L.apply_op(op, x)
    raise TypeError(f"{type(op).__name__} is not linear")


def interval_op(op: L.Op, lower: jax.Array, upper: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Bounds of `op`'s output given elementwise bounds of its input (same shapes as the op)."""
    if isinstance(op, (L.Conv, L.Dense)):
        mid, rad = (upper + lower) / 2, (upper - lower) / 2
        abs_op = op.replace(kernel=jnp.abs(op.kernel))
        out_mid = L.apply_op(op, mid)
        out_rad = linear_part(abs_op, rad)
        return out_mid - out_rad, out_mid + out_rad
    # Monotone non-decreasing ops: ReLU, Flatten, MaxPool, AvgPool.
    return L.apply_op(op, lower), L.apply_op(op, upper)


def interval_bounds(view: L.LayerView, lower: jax.Array, upper: jax.Array) -> LayerBounds:
    """Interval bounds of every op output over the box `[lower, upper]`.

    Args:
      view: the network.
      lower, upper: [*view.input_shape] input box (clip it to the pixel range with `clip_box`).

    Returns:
      LayerBounds: ((l_0, u_0), ..., (l_{n-1}, u_{n-1})), l_i, u_i of the shape of op i's output.

    References:
      Gowal et al. 2018 (IBP).
    """
    out = []
    lo, hi = lower, upper
    for op in view.ops:
        lo, hi = interval_op(op, lo, hi)
        out.append((lo, hi))
    return tuple(out)
