"""Training-time defenses: L0 rectangle occlusion and L∞ PGD adversarial examples.

References:
  L0: random-rectangle occlusion (cutout), DeVries & Taylor, arXiv:1708.04552 (2017), as used for the
    L0 defense of the MuLLoC thesis code.
  L∞: Madry, Makelov, Schmidt, Tsipras & Vladu, Towards Deep Learning Models Resistant to
    Adversarial Attacks, ICLR 2018.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from lnjax.attacks import pgd as P


def l0_rectangle(key: jax.Array, x: jax.Array, *, min_size: int, max_size: int) -> jax.Array:
    """Zeros one random axis-aligned rectangle of one image.

    Args:
      key: PRNG key.
      x: [H, W, C] in [0, 1].
      min_size, max_size: side lengths drawn uniformly from [min_size, max_size] (inclusive).

    Returns:
      [H, W, C], x with the rectangle set to 0.
    """
    h, w = x.shape[:2]
    kh, kw, ky, kx = jax.random.split(key, 4)
    rh = jax.random.randint(kh, (), min_size, max_size + 1)
    rw = jax.random.randint(kw, (), min_size, max_size + 1)
    y0 = jax.random.randint(ky, (), 0, jnp.maximum(h - rh, 0) + 1)
    x0 = jax.random.randint(kx, (), 0, jnp.maximum(w - rw, 0) + 1)
    rows = jnp.arange(h)[:, None]
    cols = jnp.arange(w)[None, :]
    inside = (rows >= y0) & (rows < y0 + rh) & (cols >= x0) & (cols < x0 + rw)
    return jnp.where(inside[..., None], 0.0, x)


def pgd_linf(
    key: jax.Array,
    loss_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    *,
    eps: float,
    steps: int,
    step_size: float,
    random_start: bool,
) -> jax.Array:
    """Projected gradient ascent on `loss_fn` inside the L∞ ball of radius eps and [0, 1].

    The one PGD core (`attacks.pgd.descend`) on −loss, over the whole batch at once (one start
    drawn for the batch from `key`; the last iterate is kept).

    Args:
      key: PRNG key (random start).
      loss_fn: x -> scalar loss to maximise (for a batch, the sum of per-example losses, so each
        example gets its own gradient).
      x: inputs in [0, 1], any shape.

    Returns:
      Adversarial inputs, same shape, |x_adv - x| ≤ eps and inside [0, 1].
    """
    lo, hi = P.linf_box(x, eps)
    start = P.uniform_linf_start(key, x, eps) if random_start else x
    project = P.box_projection(lo, hi)
    return P.descend(
        lambda xa: -loss_fn(xa), project(start), steps=steps, step=P.sign_step(step_size), project=project
    ).x
