"""Distances to the decision boundary along fixed random directions, and the class found there.

Directions are orthonormal (the columns of a QR factorisation of a Gaussian matrix) and scaled by
√(number of pixels), so a step of t along a direction changes the input by exactly t RMS (root mean
square over the pixels): distances are in RMS units, like the seed's distortions. Along direction v
the point at magnitude t is clip(x + t·v, 0, 1) — the reference clips to the pixel box too (its
`gxr3.py`), so we do; after clipping the point's RMS distance from x can be below t, and t (the
magnitude along v) is what is reported. The distance along v is the first magnitude at which the point
classifier's prediction differs from its prediction at x itself (the "center" class, not the label);
the adjacent class is the prediction found there.

Two methods, both counting the model evaluations they need:
  "linear"  the reference's scan: t = step, 2·step, …, max_distance (MNIST 0.01 … 0.49; CIFAR-10
            2/255 … 126/255), stopping per direction at the first change. The distance is the first
            grid point with a changed prediction; the prediction is unchanged one step below it.
  "bisect"  (default) a coarse scan t = coarse_step, 2·coarse_step, … (the last point is max_distance)
            to the first changed point, then ⌈log2(coarse_step / tol)⌉ bisection steps in the bracket.
            The distance is the bracket's upper end (its prediction is changed, verified); the prediction
            is unchanged at `lower` = distance − coarse_step / 2^steps ≤ tol below it.
Where a direction has a single crossing in [0, max_distance] both find it, the scan within `step` and
the bisection within `tol` above the crossing, so they agree within max(step, tol). A region of
another class narrower than the coarse step can be stepped over by the coarse scan (the linear scan
misses those narrower than its step); `benchmarks/boundary_bench.py` measures the disagreement.
A direction with no change up to max_distance has distance +inf and adjacent class −1.

Forward passes are counted per direction as the reference's scan spends them (it evaluates only the
directions still running): linear = index of the first changed grid point (or the whole grid);
bisect = index of the first changed coarse point (or the whole coarse grid) + the bisection steps of
the directions that found a change. The center evaluation (one per example) is not counted. On the
device the scan evaluates every direction at every step until all have changed (masked), and the
bisection all directions: the counts are the algorithm's cost, the wall time is the implementation's.

References:
  He, Li & Song, Decision Boundary Analysis of Adversarial Examples, ICLR 2018 (gxr3: 784 directions
    and their negatives on MNIST, 1000 on CIFAR-10).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lnjax.types import ApplyFn

MODES = ("bisect", "linear")


class BoundaryDistances(NamedTuple):
    """Per example and direction (D directions).

    distance: [B, D] float32, RMS units; +inf where the prediction does not change up to max_distance.
    lower: [B, D] float32, a magnitude below `distance` at which the prediction is still the center's
      (distance − resolution, ≥ 0); +inf where distance is.
    adjacent: [B, D] int32, the class predicted at `distance`; −1 where none.
    center: [B] int32, the prediction at x itself.
    forward_passes: [B] int32, model evaluations the method needed over all D directions.
    """

    distance: jax.Array
    lower: jax.Array
    adjacent: jax.Array
    center: jax.Array
    forward_passes: jax.Array


def grid(step: float, max_distance: float) -> np.ndarray:
    """The magnitudes a scan visits: step, 2·step, …, with the last one max_distance. [n] float32."""
    n = max(math.ceil(max_distance / step - 1e-6), 1)
    return np.minimum(step * np.arange(1, n + 1), max_distance).astype(np.float32)


def bisection_steps(coarse_step: float, tol: float) -> int:
    """Bisection steps that shrink a bracket of width coarse_step to ≤ tol."""
    return max(math.ceil(math.log2(coarse_step / tol) - 1e-9), 0)


def _predict(apply_fn, params, x0, dirs, t, chunk):
    """Predictions at clip(x0 + t_i · v_i) for every direction i. t: [D] -> [D] int32."""
    if chunk and chunk < dirs.shape[0]:
        f = lambda a: jnp.argmax(apply_fn(params, jnp.clip(x0 + a[1] * a[0], 0.0, 1.0)[None])[0])
        return lax.map(f, (dirs, t), batch_size=chunk).astype(jnp.int32)
    points = jnp.clip(x0[None] + t.reshape((-1,) + (1,) * x0.ndim) * dirs, 0.0, 1.0)
    return jnp.argmax(apply_fn(params, points), axis=-1).astype(jnp.int32)


def _first_change(pred, center, ts, num_dirs):
    """Scan the magnitudes ts for every direction: (first index with a changed prediction (len(ts)
    where none), the class there (−1), found?). Stops when every direction has changed."""
    n = ts.shape[0]

    def cond(s):
        return (s[0] < n) & ~jnp.all(s[3])

    def body(s):
        i, first, adj, done = s
        p = pred(jnp.full((num_dirs,), ts[i]))
        new = ~done & (p != center)
        return i + 1, jnp.where(new, i, first), jnp.where(new, p, adj), done | new

    init = (
        jnp.int32(0),
        jnp.full((num_dirs,), n, jnp.int32),
        jnp.full((num_dirs,), -1, jnp.int32),
        jnp.zeros((num_dirs,), bool),
    )
    _, first, adj, done = lax.while_loop(cond, body, init)
    return first, adj, done


def _one(apply_fn, params, x0, dirs, ts, n_bisect, chunk):
    num_dirs, n_grid = dirs.shape[0], ts.shape[0]
    center = jnp.argmax(apply_fn(params, x0[None])[0]).astype(jnp.int32)
    pred = lambda t: _predict(apply_fn, params, x0, dirs, t, chunk)
    first, adj, done = _first_change(pred, center, ts, num_dirs)
    idx = jnp.minimum(first, n_grid - 1)
    hi = ts[idx]
    lo = jnp.where(idx > 0, ts[jnp.maximum(idx - 1, 0)], 0.0)

    def halve(_, s):
        lo, hi, adj = s
        mid = (lo + hi) / 2
        p = pred(mid)
        changed = p != center
        return jnp.where(changed, lo, mid), jnp.where(changed, mid, hi), jnp.where(changed, p, adj)

    if n_bisect:
        lo, hi, adj = lax.fori_loop(0, n_bisect, halve, (lo, hi, adj))
    passes = jnp.where(done, first + 1 + n_bisect, n_grid)
    inf = jnp.float32(jnp.inf)
    return BoundaryDistances(
        distance=jnp.where(done, hi, inf),
        lower=jnp.where(done, lo, inf),
        adjacent=jnp.where(done, adj, -1),
        center=center,
        forward_passes=jnp.sum(passes).astype(jnp.int32),
    )


@functools.partial(jax.jit, static_argnames=("apply_fn", "n_bisect", "chunk"))
def _distances(params, x, directions, ts, *, apply_fn, n_bisect, chunk):
    return jax.vmap(lambda xi: _one(apply_fn, params, xi, directions, ts, n_bisect, chunk))(x)


class BoundaryDistanceFn(NamedTuple):
    """Boundary distances with their settings; call as `distances(apply_fn, params, x, directions)`.

    grid: the magnitudes scanned; bisection_steps: halvings of each bracket (0 for "linear");
    chunk: directions per `lax.map` batch (0 = all at once)."""

    grid: np.ndarray
    bisection_steps: int
    chunk: int

    def __call__(
        self, apply_fn: ApplyFn, params: Any, x: jax.Array, directions: jax.Array
    ) -> BoundaryDistances:
        return _distances(
            params,
            x,
            directions,
            self.grid,
            apply_fn=apply_fn,
            n_bisect=self.bisection_steps,
            chunk=self.chunk,
        )

    @property
    def jitted(self) -> jax.stages.Wrapped:
        """The jitted function behind every distance function (for compilation counts)."""
        return _distances


def make_boundary_distances(
    *,
    mode: str = "bisect",
    max_distance: float = 0.49,
    step: float = 0.01,
    coarse_step: float = 0.1,
    tol: float = 0.01,
    chunk: int = 0,
) -> BoundaryDistanceFn:
    """Boundary distances along given directions (see the module docstring for the two methods).

    Args:
      mode: "bisect" (coarse scan + bisection, the default) or "linear" (the reference's scan).
      max_distance: the largest magnitude looked at (RMS units); MNIST reference 0.49.
      step: the linear scan's step (MNIST reference 0.01; CIFAR-10 2/255).
      coarse_step: the coarse scan's step ("bisect").
      tol: "bisect" refines each bracket to width ≤ tol (0.01 = the reference's step: at least as exact
        as its scan; the actual width is coarse_step / 2^⌈log2(coarse_step / tol)⌉).
      chunk: evaluate the directions in batches of `chunk` (`lax.map`) to bound memory; 0 = all at once.

    Returns:
      distances(apply_fn, params, x, directions) -> BoundaryDistances, with x: [B, H, W, C] in [0, 1]
      and directions: [D, H, W, C] (e.g. from `random_directions`). One jit, vmapped over the examples,
      `lax.while_loop` over the scan and `lax.fori_loop` over the bisection. `apply_fn`, the number of
      grid points and bisection steps and `chunk` are static; params, x, directions and the grid values
      are traced (functions made here with the same static settings share their compilations).
      A `BoundaryDistanceFn`: `.jitted` is the jitted function; `.grid` the magnitudes scanned;
      `.bisection_steps` the halvings.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not (0 < step <= max_distance and 0 < coarse_step and 0 < tol and chunk >= 0):
        raise ValueError("need 0 < step ≤ max_distance, coarse_step > 0, tol > 0 and chunk ≥ 0")
    ts = grid(step if mode == "linear" else coarse_step, max_distance)
    n_bisect = bisection_steps(coarse_step, tol) if mode == "bisect" else 0

    return BoundaryDistanceFn(ts, n_bisect, int(chunk))
