"""ReLU-stability regulariser for verification-friendly training.

References:
  Xiao, Tjeng, Shafiullah & Madry, Training for Faster Adversarial Robustness Verification via
  Inducing ReLU Stability, ICLR 2019.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lnjax.models import layers as L


def _abs_linear(op: L.Op, r: jax.Array) -> jax.Array:
    """The radius map of a linear op: |W| r (bias-free)."""
    if isinstance(op, L.Conv):
        return L.conv2d(r, jnp.abs(op.kernel), op.strides, op.padding)
    if isinstance(op, L.Dense):
        return jnp.dot(r, jnp.abs(op.kernel))
    return L.apply_op(op, r)  # Flatten, AvgPool: non-negative weights


def relu_stability_loss(view: L.LayerView, x: jax.Array, eps: float) -> jax.Array:
    """RS loss of one example: mean over ReLUs of −tanh(1 + l·u), l/u interval bounds of the
    pre-activation over the L∞ box of radius eps around x (clipped to [0, 1]).

    Args:
      view: the layer view of the model being trained (built from the params being differentiated).
      x: [H, W, C] in [0, 1].
      eps: box radius.

    Returns:
      Scalar in [−1, 1]; lower means more ReLUs are stable (l·u > 0 far from zero).
    """
    lo = jnp.clip(x - eps, 0.0, 1.0)
    hi = jnp.clip(x + eps, 0.0, 1.0)
    total, count = 0.0, 0
    for op in view.ops:
        if isinstance(op, L.ReLU):
            total = total + jnp.sum(-jnp.tanh(1.0 + lo * hi))
            count += lo.size
            lo, hi = jax.nn.relu(lo), jax.nn.relu(hi)
        elif isinstance(op, L.MaxPool):
            lo, hi = L.apply_op(op, lo), L.apply_op(op, hi)
        else:
            c, r = (lo + hi) / 2, (hi - lo) / 2
            c = L.apply_op(op, c)
            r = _abs_linear(op, r)
            lo, hi = c - r, c + r
    return total / max(count, 1)
