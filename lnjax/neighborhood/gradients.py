"""JAX pieces of the neighborhood optimizer: the spec margin, a box PGD, saliency, the RL gradient.

All functions take the network as a `LayerView` argument (not a closure constant) and the spec as
its rows (c, offset, k), so one compilation serves every image, target and model of an architecture.

RL gradient (the "robustness level" gradient of MaRVeL, Kabaha & Drachsler-Cohen, VMCAI 2023):
how the worst-case margin over N(x; ε) changes when ε_d grows. At a weakest point x* of the box,
write x* = clip(x + s ⊙ ε_pix, 0, 1) with s = (x* − x) / ε_pix ∈ [−1, 1] (s = ±1 on the faces the
attack pushed to); then ∂m/∂ε_d = Σ_{p ∈ l_d} ∂m/∂x_p · s_p for unclipped pixels: growing ε_d
pushes every face point of layer d further the way the attack went. Over several weakest points
the gradients are averaged with softmax(−margin / temperature) weights. For a box where the
attack pushes every pixel to a face this is −Σ_{p ∈ l_d} |∂m/∂x_p| (≤ 0).

References:
  Kabaha & Drachsler-Cohen, Maximal Robust Neural Network Specifications via Oracle-Guided
    Numerical Optimization, VMCAI 2023 (MaRVeL).
  Simonyan, Vedaldi & Zisserman, Deep Inside Convolutional Networks: Visualising Image
    Classification Models and Saliency Maps, 2013 (vanilla-gradient saliency).
  Madry et al., ICLR 2018 (PGD).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from lnjax.attacks.pgd import BoxAttackResult, view_box_pgd, view_margin
from lnjax.models import layers as L
from lnjax.neighborhood.layers import eps_per_pixel
from lnjax.specs import Spec

MAX_POINTS = 4  # weakest points per RL gradient (padded with zero-weight copies: one compilation)


def spec_arrays(spec: Spec, view: L.LayerView) -> tuple[jax.Array, jax.Array, int]:
    """(c [M, K], offset [M], k) of a spec for this network's number of classes."""
    num_classes = int(np.prod(view.output_shapes[-1]))
    rows = spec.rows(num_classes)
    return jnp.asarray(rows.c), jnp.asarray(rows.offset), int(rows.k)


@functools.partial(jax.jit, static_argnames="k")
def margin(view: L.LayerView, x: jax.Array, c: jax.Array, offset: jax.Array, *, k: int) -> jax.Array:
    """The spec margin at x: [*input_shape] -> scalar (positive = the property holds)."""
    return view_margin(view, x, c, offset, k)


@functools.partial(jax.jit, static_argnames="k")
def saliency(view: L.LayerView, x: jax.Array, c: jax.Array, offset: jax.Array, *, k: int) -> jax.Array:
    """Vanilla-gradient saliency |∂ margin / ∂x| (Simonyan et al. 2013): [*input_shape] -> same."""
    return jnp.abs(jax.grad(view_margin, argnums=1)(view, x, c, offset, k))


def pgd_in_box(
    key: jax.Array,
    view: L.LayerView,
    lo: jax.Array,
    hi: jax.Array,
    c: jax.Array,
    offset: jax.Array,
    x0: jax.Array,
    *,
    k: int,
    steps: int = 20,
    restarts: int = 2,
    step_size: float = 0.25,
    odi_steps: int = 0,
) -> BoxAttackResult:
    """The jitted box PGD (`attacks.view_box_pgd`) minimising the spec margin inside [lo, hi], from x0
    (odi_steps: output-diversified random starts, `attacks.odi_starts`; 0: uniform ones)."""
    pgd = view_box_pgd(int(steps), int(restarts), float(step_size), int(odi_steps))
    return pgd(key, view, lo, hi, c, offset, x0, k=k)


@functools.partial(jax.jit, static_argnames="k")
def rl_gradient(
    view: L.LayerView,
    x: jax.Array,
    layers: jax.Array,
    eps: jax.Array,
    points: jax.Array,
    margins: jax.Array,
    c: jax.Array,
    offset: jax.Array,
    temperature: jax.Array,
    *,
    k: int,
) -> tuple[jax.Array, jax.Array]:
    """∂(worst-case margin)/∂ε_d from weakest points.

    Args:
      view: the network.
      x: [H, W, C] the image (the neighborhood's centre).
      layers: int [H, W] layer map.
      eps: [R] the neighborhood's ε (> 0 where the points moved).
      points: [P, H, W, C] weakest points inside N(x; ε).
      margins: [P] their margins (+inf for padding: weight 0).
      c, offset, k: the spec rows.
      temperature: softmax temperature of the point weights softmax(−margin / temperature).

    Returns:
      ([R] gradient w.r.t. ε, [P] the point weights).
    """
    e = eps_per_pixel(layers, eps)[..., None]
    s = jnp.clip((points - x[None]) / jnp.maximum(e, 1e-12)[None], -1.0, 1.0)

    def at(eps, s):
        e = eps_per_pixel(layers, eps)[..., None]
        return view_margin(view, jnp.clip(x + s * e, 0.0, 1.0), c, offset, k)

    grads = jax.vmap(jax.grad(at), in_axes=(None, 0))(eps, s)
    w = jax.nn.softmax(-margins / temperature)
    return jnp.sum(w[:, None] * grads, axis=0), w


def pad_points(
    points: list[tuple[np.ndarray, float]], shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """The ≤ MAX_POINTS weakest (x, margin) pairs as arrays [MAX_POINTS, *shape], [MAX_POINTS]."""
    pts = sorted(points, key=lambda p: p[1])[:MAX_POINTS]
    xs = np.zeros((MAX_POINTS, *shape), np.float32)
    ms = np.full((MAX_POINTS,), np.inf, np.float32)
    for i, (p, m) in enumerate(pts):
        xs[i] = np.asarray(p, np.float32).reshape(shape)
        ms[i] = m
    if pts:
        xs[len(pts) :] = xs[0]
    return xs, ms
