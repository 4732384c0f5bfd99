"""Projected gradient descent on a spec margin inside a per-pixel box (the verifier's cheap stage).

Unlike a training-time PGD (an ε-ball around x), the feasible set here is an arbitrary box
[lower, upper] ⊆ [0, 1]; steps are signed gradients scaled by the box width, with a cosine-decayed
step size, from the box centre and from uniform random starts. The best point over all restarts
and iterations is kept, so the result never gets worse than the centre.

References:
  Madry, Makelov, Schmidt, Tsipras & Vladu, Towards Deep Learning Models Resistant to Adversarial
  Attacks, ICLR 2018 (PGD).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class BoxAttackResult(NamedTuple):
    """x: [*input_shape] the point with the smallest margin found; margin: its margin (scalar)."""

    x: jax.Array
    margin: jax.Array


def make_pgd_box(
    *, steps: int = 40, step_size: float = 0.25, restarts: int = 4
) -> Callable[..., BoxAttackResult]:
    """A PGD that minimises `margin_fn(x)` over the box.

    Args:
      steps: iterations per restart.
      step_size: initial step as a fraction of the box width per pixel (cosine-decayed to 0).
      restarts: number of starts: the box centre, then uniform random points.

    Returns:
      `attack(key, margin_fn, lower, upper, x0=None) -> BoxAttackResult`, with margin_fn: x -> scalar
      (traceable; positive = the property holds), lower, upper: [*input_shape], and x0 an optional
      first start (default: the box centre; e.g. a solver's candidate to refine). Jit the caller.
    """
    if steps < 0 or restarts < 1:
        raise ValueError(f"need steps ≥ 0 and restarts ≥ 1, got steps={steps}, restarts={restarts}")

    def attack(
        key: jax.Array, margin_fn, lower: jax.Array, upper: jax.Array, x0: jax.Array | None = None
    ) -> BoxAttackResult:
        width = upper - lower
        first = (lower + upper) / 2 if x0 is None else jnp.clip(x0, lower, upper)
        u = jax.random.uniform(key, (restarts - 1, *lower.shape), lower.dtype)
        starts = jnp.concatenate([first[None], lower + u * width], axis=0)
        value_and_grad = jax.value_and_grad(margin_fn)

        def run(x0):
            def body(i, carry):
                x, best_x, best_m = carry
                m, g = value_and_grad(x)
                better = m < best_m
                best_x = jnp.where(better, x, best_x)
                best_m = jnp.where(better, m, best_m)
                alpha = step_size * 0.5 * (1 + jnp.cos(jnp.pi * i / max(steps, 1)))
                x = jnp.clip(x - alpha * width * jnp.sign(g), lower, upper)
                return x, best_x, best_m

            x, best_x, best_m = lax.fori_loop(0, steps, body, (x0, x0, jnp.inf))
            m = margin_fn(x)
            better = m < best_m
            return jnp.where(better, x, best_x), jnp.where(better, m, best_m)

        xs, ms = jax.vmap(run)(starts)
        i = jnp.argmin(ms)
        return BoxAttackResult(x=xs[i], margin=ms[i])

    return attack
