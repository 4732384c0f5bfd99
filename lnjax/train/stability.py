"""Verification-friendly training: the ReLU-stability regulariser and the IBP worst-case loss.

References:
  Xiao, Tjeng, Shafiullah & Madry, Training for Faster Adversarial Robustness Verification via
  Inducing ReLU Stability, ICLR 2019.
  Gowal, Dvijotham, Stanforth, Bunel, Qin, Uesato, Arandjelovic, Mann & Kohli, On the Effectiveness
  of Interval Bound Propagation for Training Verifiably Robust Models, 2018 (arXiv:1810.12715;
  reference code github.com/deepmind/interval-bound-propagation): the worst-case logits, eq. 7,
  and the mixed loss κ·ℓ(z, y) + (1 − κ)·ℓ(ẑ, y) with ε ramped up from 0.
  Müller, Eckert, Fischer & Vechev, Certified Training: Small Boxes are All You Need, ICLR 2023
  (SABR): the IBP box shrunk to radius λ·ε around an adversarial point, kept inside the ε-ball.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lnjax.bounds.interval import clip_box, interval_bounds, interval_op
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


def worst_case_logits(lower: jax.Array, upper: jax.Array, labels: jax.Array, task: str) -> jax.Array:
    """IBP's worst-case logits (Gowal et al. 2018, eq. 7): each true label at its lower bound, every
    other label at its upper bound.

    For the multi-label loss (`losses.sigmoid_bce`, decreasing in a positive label's logit and
    increasing in a negative one's) and the softmax cross-entropy alike, the loss of these logits
    bounds the loss of every point of the box from above.

    Args:
      lower, upper: [B, K] bounds of the logits over each example's box.
      labels: [B, K] multi-hot ("multilabel") or [B] int ("single").
      task: "multilabel" or "single".

    Returns:
      [B, K] logits.
    """
    if task == "multilabel":
        positive = labels > 0.5
    elif task == "single":
        positive = jax.nn.one_hot(labels, lower.shape[-1], dtype=jnp.bool_)
    else:
        raise ValueError(f"task = {task!r} is unknown; expected 'multilabel' or 'single'")
    return jnp.where(positive, lower, upper)


def ibp_logit_bounds(view: L.LayerView, x: jax.Array, eps: jax.Array | float) -> tuple[jax.Array, jax.Array]:
    """Interval bounds of one example's logits over the L∞ box of radius eps around x, clipped to
    [0, 1] (`bounds.interval_bounds`; differentiable in the network's parameters).

    Args:
      view: the layer view of the model being trained.
      x: [H, W, C] in [0, 1].
      eps: box radius (may be traced, e.g. ramped with the step).

    Returns:
      (lower, upper) [K].
    """
    lo, hi = clip_box(x - eps, x + eps)
    return interval_bounds(view, lo, hi)[-1]


def sabr_centre(
    x_adv: jax.Array, x: jax.Array, eps: jax.Array | float, radius: jax.Array | float
) -> jax.Array:
    """SABR's small-box centre (Müller et al. 2023): the attack's point moved the least so that the
    box of `radius` around it lies inside the ε-ball around x (needs radius ≤ eps).

    Args:
      x_adv: the attack's point (within eps of x); x: the clean example; same shapes.
      eps, radius: the ball's and the small box's L∞ radii.

    Returns:
      The centre, within eps − radius of x.
    """
    room = eps - radius
    return jnp.clip(x_adv, x - room, x + room)
