"""The ReLU's linear relaxation, shared by CROWN's full and patch-mode backward passes."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def default_alpha(lower: jax.Array, upper: jax.Array) -> jax.Array:
    """CROWN's adaptive ReLU lower slope: 1 where u >= -l, else 0."""
    return (upper >= -lower).astype(lower.dtype)


def relu_relaxation(lower, upper, alpha=None):
    """Linear bounds lo_slope*x <= relu(x) <= up_slope*x + up_bias for x in [lower, upper].

    Args:
      lower, upper: [*S] pre-activation bounds.
      alpha: lower slopes in [0, 1] for unstable neurons, broadcastable against [*S] (e.g. [R, *S]);
        None for `default_alpha`.

    Returns:
      (lo_slope, up_slope, up_bias), broadcast shapes.
    """
    unstable = (lower < 0) & (upper > 0)
    active = (lower >= 0).astype(lower.dtype)
    denom = jnp.where(unstable, upper - lower, 1.0)
    up_slope = jnp.where(unstable, upper / denom, active)
    up_bias = jnp.where(unstable, -up_slope * lower, 0.0)
    if alpha is None:
        alpha = default_alpha(lower, upper)
    lo_slope = jnp.where(unstable, alpha, active)
    return lo_slope, up_slope, up_bias
