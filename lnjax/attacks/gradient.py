"""FGSM and PGD (L∞ and L2), untargeted or targeted, on a margin.

References:
  Goodfellow, Shlens & Szegedy, Explaining and Harnessing Adversarial Examples, ICLR 2015 (FGSM).
  Madry, Makelov, Schmidt, Tsipras & Vladu, Towards Deep Learning Models Resistant to Adversarial
  Attacks, ICLR 2018 (PGD).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from lnjax.attacks.common import AttackResult, bind, per_example
from lnjax.attacks.margins import MarginFn, argmax_margin


def _project(x0, x, eps, norm):
    if norm == "linf":
        x = jnp.clip(x, x0 - eps, x0 + eps)
    else:
        d = x - x0
        n = jnp.linalg.norm(d.ravel())
        x = x0 + d * jnp.minimum(1.0, eps / jnp.maximum(n, 1e-12))
    return jnp.clip(x, 0.0, 1.0)


def _direction(g, norm):
    if norm == "linf":
        return jnp.sign(g)
    return g / jnp.maximum(jnp.linalg.norm(g.ravel()), 1e-12)


def _random_start(key, x0, eps, norm):
    if norm == "linf":
        return x0 + jax.random.uniform(key, x0.shape, minval=-eps, maxval=eps)
    kd, kr = jax.random.split(key)
    d = jax.random.normal(kd, x0.shape)
    d = d / jnp.linalg.norm(d.ravel())
    r = eps * jax.random.uniform(kr) ** (1.0 / d.size)  # uniform in the ball
    return x0 + r * d


def make_pgd(
    *,
    eps: float,
    steps: int,
    step_size: float,
    norm: str = "linf",
    random_start: bool = True,
    restarts: int = 1,
    margin_fn: MarginFn = argmax_margin,
):
    """PGD minimising `margin_fn(logits, y)` in the `norm` ball of radius eps, inside [0, 1].

    Args:
      eps: ball radius (pixel units of [0, 1]; L2 in Euclidean norm over all pixels).
      steps, step_size: iterations and step length (L∞: per pixel; L2: Euclidean).
      norm: "linf" or "l2".
      random_start: start uniformly in the ball (else at x).
      restarts: independent starts; the point with the smallest margin is kept.
      margin_fn: (logits [K], label) -> margin; `targeted_margin` with y the targets for targeted attacks.

    Returns:
      attack(key, apply_fn, params, x, y) -> AttackResult. x: [B, ...] in [0, 1]; y: [B] labels.
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if eps < 0 or steps < 0 or step_size < 0 or restarts < 1:
        raise ValueError("need eps ≥ 0, steps ≥ 0, step_size ≥ 0 and restarts ≥ 1")

    def one(key, apply_fn, params, x0, y):
        f = per_example(apply_fn, params)
        loss = lambda x: margin_fn(f(x), y)
        grad = jax.grad(loss)

        def run(k):
            x = _project(x0, _random_start(k, x0, eps, norm), eps, norm) if random_start else x0
            x = lax.fori_loop(
                0, steps, lambda _, x: _project(x0, x - step_size * _direction(grad(x), norm), eps, norm), x
            )
            return x, loss(x)

        xs, ms = jax.vmap(run)(jax.random.split(key, restarts))
        best = jnp.argmin(ms)
        return xs[best], ms[best]

    @jax.jit
    def attack(key, apply_fn_params, x, y):
        apply_fn, params = apply_fn_params
        keys = jax.random.split(key, x.shape[0])
        x_adv, m = jax.vmap(lambda k, xi, yi: one(k, apply_fn, params, xi, yi))(keys, x, y)
        return AttackResult(x_adv=x_adv, success=m <= 0, margin=m)

    return bind(attack)


def make_fgsm(*, eps: float, margin_fn: MarginFn = argmax_margin):
    """One signed-gradient step of size eps (L∞), clipped to [0, 1]."""
    if eps < 0:
        raise ValueError(f"eps must be ≥ 0, got {eps}")

    def one(apply_fn, params, x0, y):
        f = per_example(apply_fn, params)
        g = jax.grad(lambda x: margin_fn(f(x), y))(x0)
        x = jnp.clip(x0 - eps * jnp.sign(g), 0.0, 1.0)
        return x, margin_fn(f(x), y)

    @jax.jit
    def attack(key, apply_fn_params, x, y):
        del key  # deterministic
        apply_fn, params = apply_fn_params
        x_adv, m = jax.vmap(lambda xi, yi: one(apply_fn, params, xi, yi))(x, y)
        return AttackResult(x_adv=x_adv, success=m <= 0, margin=m)

    return bind(attack)
