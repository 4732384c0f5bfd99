"""ReLU-stability regulariser for verification-friendly training.

References:
  Xiao, Tjeng, Shafiullah & Madry, Training for Faster Adversarial Robustness Verification via
  Inducing ReLU Stability, ICLR 2019.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lnjax.bounds.interval import clip_box, interval_op
from lnjax.models import layers as L
from lnjax.models.ops import rules_of


def relu_stability_loss(view: L.LayerView, x: jax.Array, eps: float) -> jax.Array:
    """RS loss of one example: mean over ReLUs of −tanh(1 + l·u), l/u interval bounds of the
    pre-activation over the L∞ box of radius eps around x (clipped to [0, 1]).

    The bounds are each op's interval rule (`lnjax.bounds.interval_op`); "ReLUs" are the ops with an
    `unstable` rule (`lnjax.models.ops`).

    Args:
      view: the layer view of the model being trained (built from the params being differentiated).
      x: [H, W, C] in [0, 1].
      eps: box radius.

    Returns:
      Scalar in [−1, 1]; lower means more ReLUs are stable (l·u > 0 far from zero).
    """
    lo, hi = clip_box(x - eps, x + eps)
    total, count = jnp.zeros((), jnp.float32), 0
    for op in view.ops:
        if rules_of(op).unstable is not None:
            total = total + jnp.sum(-jnp.tanh(1.0 + lo * hi))
            count += lo.size
        lo, hi = interval_op(op, lo, hi)
    return total / max(count, 1)
