"""Interval bounds over the layer view (interval bound propagation).

Per example: the input is a box `[lower, upper]` of shape `view.input_shape`; the result gives, for
every op of `view.ops`, elementwise bounds of that op's output over the box. Each op's interval
rule lives with the op (`lnjax.models.ops`): affine ops use the centre/radius form (exact for a
single affine map of a box, so the first pre-activation layer is already tight); ReLU, flatten,
max- and average-pooling are monotone and map bounds to bounds.

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
from lnjax.models.ops import rules_of

LayerBounds = tuple[tuple[jax.Array, jax.Array], ...]
"""(lower, upper) of the output of each op in `view.ops`; index i = after op i, same shape as it."""


def clip_box(
    lower: jax.Array, upper: jax.Array, lo: float = 0.0, hi: float = 1.0
) -> tuple[jax.Array, jax.Array]:
    """Clips an input box to the pixel range.

    Args:
      lower, upper: [*input_shape] box corners.
      lo, hi: the valid pixel range.

    Returns:
      (lower, upper) clipped elementwise to [lo, hi].
    """
    return jnp.clip(lower, lo, hi), jnp.clip(upper, lo, hi)


def input_bounds_of(
    bounds: LayerBounds, j: int, lower: jax.Array, upper: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Bounds of the input of op j (the box for j = 0)."""
    return (lower, upper) if j == 0 else bounds[j - 1]


def interval_op(op: L.Op, lower: jax.Array, upper: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Bounds of `op`'s output given elementwise bounds of its input (the op's interval rule)."""
    return rules_of(op).interval(op, lower, upper)


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
