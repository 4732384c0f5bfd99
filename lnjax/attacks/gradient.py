"""FGSM (on the cross-entropy or a margin) and PGD (L∞ and L2, on a margin) on a model, untargeted or
targeted; PGD runs the one core (`attacks.pgd`).

References:
  Goodfellow, Shlens & Szegedy, Explaining and Harnessing Adversarial Examples, ICLR 2015 (FGSM).
  Madry, Makelov, Schmidt, Tsipras & Vladu, Towards Deep Learning Models Resistant to Adversarial
  Attacks, ICLR 2018 (PGD).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from lnjax.attacks import pgd as P
from lnjax.attacks.common import AttackResult, per_example
from lnjax.specs import MarginFn, argmax_margin
from lnjax.types import ApplyFn, AttackFn, Params


def make_pgd(
    *,
    eps: float,
    steps: int,
    step_size: float,
    norm: str = "linf",
    random_start: bool = True,
    restarts: int = 1,
    margin_fn: MarginFn = argmax_margin,
) -> AttackFn:
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
      Jitted with apply_fn static: one compilation per model function and batch shape.
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if eps < 0 or steps < 0 or step_size < 0 or restarts < 1:
        raise ValueError("need eps ≥ 0, steps ≥ 0, step_size ≥ 0 and restarts ≥ 1")

    def one(key, apply_fn, params, x0, y):
        f = per_example(apply_fn, params)
        if norm == "linf":
            project = P.box_projection(*P.linf_box(x0, eps))
            step, start = P.sign_step(step_size), P.uniform_linf_start
        else:
            project, step, start = P.l2_projection(x0, eps), P.l2_step(step_size), P.uniform_l2_start
        keys = jax.random.split(key, restarts)
        if random_start:
            starts = jax.vmap(lambda k: project(start(k, x0, eps)))(keys)
        else:
            starts = jnp.broadcast_to(x0, (restarts, *x0.shape))
        res = P.best_of_starts(lambda x: margin_fn(f(x), y), starts, steps=steps, step=step, project=project)
        return res.x, res.margin

    def attack(key: jax.Array, apply_fn: ApplyFn, params: Params, x: jax.Array, y: jax.Array) -> AttackResult:
        keys = jax.random.split(key, x.shape[0])
        x_adv, m = jax.vmap(lambda k, xi, yi: one(k, apply_fn, params, xi, yi))(keys, x, y)
        return AttackResult(x_adv=x_adv, success=m <= 0, margin=m)

    return jax.jit(attack, static_argnames="apply_fn")


FGSM_LOSSES = ("xent", "margin")


def make_fgsm(*, eps: float, loss: str = "xent", margin_fn: MarginFn = argmax_margin) -> AttackFn:
    """One signed-gradient step of size eps (L∞), clipped to [0, 1].

    Args:
      eps: the step (pixel units of [0, 1]).
      loss: "xent" steps up the cross-entropy of the true label, as Goodfellow et al. and the seed
        (He, Li & Song 2018, §4) define FGSM; "margin" steps down `margin_fn`.
      margin_fn: the margin success is judged on (both losses), and the "margin" loss.

    Returns:
      attack(key, apply_fn, params, x, y) -> AttackResult; success = margin ≤ 0 at x_adv.
    """
    if eps < 0:
        raise ValueError(f"eps must be ≥ 0, got {eps}")
    if loss not in FGSM_LOSSES:
        raise ValueError(f"loss must be one of {FGSM_LOSSES}, got {loss!r}")

    def descent(f, x, y):  # the objective FGSM steps down
        logits = f(x)
        if loss == "xent":
            return -optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return margin_fn(logits, y)

    def one(apply_fn, params, x0, y):
        f = per_example(apply_fn, params)
        g = jax.grad(lambda x: descent(f, x, y))(x0)
        x = jnp.clip(x0 - eps * jnp.sign(g), 0.0, 1.0)
        return x, margin_fn(f(x), y)

    def attack(key: jax.Array, apply_fn: ApplyFn, params: Params, x: jax.Array, y: jax.Array) -> AttackResult:
        del key  # deterministic
        x_adv, m = jax.vmap(lambda xi, yi: one(apply_fn, params, xi, yi))(x, y)
        return AttackResult(x_adv=x_adv, success=m <= 0, margin=m)

    return jax.jit(attack, static_argnames="apply_fn")
