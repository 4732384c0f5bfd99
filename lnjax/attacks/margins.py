"""Attack margins with per-example (traced) labels: positive = the model is still right.

The same quantities as the verifier's specs (`lnjax.verify.specs`: Argmax, TopK, Threshold), written
for a label that is a traced array, so one jitted attack serves a whole batch with different labels.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

MarginFn = Callable[[jax.Array, jax.Array], jax.Array]  # (logits [K], label) -> scalar


def argmax_margin(logits: jax.Array, label: jax.Array) -> jax.Array:
    """Single-label: z_y − max_{j≠y} z_j. logits: [K], label: int scalar."""
    others = jnp.where(jnp.arange(logits.shape[-1]) == label, -jnp.inf, logits)
    return logits[label] - jnp.max(others)


def make_topk_margin(k: int) -> MarginFn:
    """Multi-label: z_t − (k-th largest z_j, j ≠ t); label t an int scalar (the target label)."""

    def margin(logits: jax.Array, label: jax.Array) -> jax.Array:
        others = jnp.where(jnp.arange(logits.shape[-1]) == label, -jnp.inf, logits)
        return logits[label] - jax.lax.top_k(others, k)[0][k - 1]

    return margin


def make_threshold_margin(tau: float = 0.0) -> MarginFn:
    """Multi-label: z_t − τ (τ = 0: sigmoid(z_t) > 0.5)."""
    return lambda logits, label: logits[label] - tau


def targeted_margin(logits: jax.Array, target: jax.Array) -> jax.Array:
    """Targeted attacks: max_{j≠t} z_j − z_t (positive = the target class t is not yet the argmax)."""
    return -argmax_margin(logits, target)
