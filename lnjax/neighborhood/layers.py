"""Layers of pixels by distance from an object, and the per-pixel boxes of a layer-neighborhood.

An object is a boolean pixel mask (a digit's ink, its bounding box, any segmentation). Layer d is
the set of pixels whose distance to the nearest object pixel is d; the object's own pixels are
layer 0. Distances are between pixel centres on the integer grid:

- "chebyshev" (default): max(|Δy|, |Δx|) — square rings; layer 1 is the 8-neighbourhood of the object.
- "euclidean": ⌊√(Δy² + Δx²)⌋ (rounded down, so layer d holds distances in [d, d + 1)).
- "manhattan": |Δy| + |Δx| — diamond rings; layer 1 is the 4-neighbourhood.

With `max_layers = r + 1`, pixels farther than r fall into the last layer r. Given the target
object's mask (`layer_map(..., target_mask=...)`), the target's own pixels form one more layer,
r + 1, taken out of the rings they lie in: the far background (layer r) and the target then get
separate ε, so figures show ε across the target (by default the target shares the far layer).
A vector ε = (ε_0..ε_r)
then defines the neighborhood N(x; ε) = {x' : |x'_p − x_p| ≤ ε_d for p in layer d, x' ∈ [0, 1]}
(SPEC §2), as the per-pixel box `neighborhood_box(x, layers, eps)`.

The layer map is computed once per image on the host (numpy + scipy.ndimage exact distance
transforms); the ε → box map and the per-layer sums are JAX (jit- and grad-friendly), so the
optimizer can differentiate through them.
"""

from __future__ import annotations

from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jax.typing import ArrayLike
from scipy import ndimage

METRICS = ("chebyshev", "euclidean", "manhattan")


def _check_mask(mask) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"the object mask must be 2-D [H, W], got shape {mask.shape}")
    mask = mask.astype(bool)
    if not mask.any():
        raise ValueError("the object mask is empty: distances to the object are undefined")
    return mask


def distance_map(mask: ArrayLike, *, metric: str = "chebyshev") -> np.ndarray:
    """Integer distance of every pixel to the nearest pixel of the object.

    Args:
      mask: bool [H, W], True on the object (at least one pixel).
      metric: "chebyshev", "euclidean" (rounded down) or "manhattan".

    Returns:
      int32 [H, W]; 0 on the object.

    Raises:
      ValueError: unknown metric, a mask that is not 2-D, or an empty mask.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    mask = _check_mask(mask)
    background = ~mask  # distance transforms measure the distance to the nearest zero
    if metric == "chebyshev":
        return np.asarray(ndimage.distance_transform_cdt(background, metric="chessboard"), np.int32)
    if metric == "manhattan":
        return np.asarray(ndimage.distance_transform_cdt(background, metric="taxicab"), np.int32)
    # Euclidean: exact squared distance to the nearest object pixel, then an exact integer floor(sqrt).
    _, (iy, ix) = cast(Any, ndimage.distance_transform_edt(background, return_indices=True))
    yy, xx = np.indices(mask.shape)
    d2 = (yy - iy).astype(np.int64) ** 2 + (xx - ix).astype(np.int64) ** 2
    d = np.floor(np.sqrt(d2.astype(np.float64))).astype(np.int64)
    d = np.where((d + 1) ** 2 <= d2, d + 1, d)
    d = np.where(d * d > d2, d - 1, d)
    return d.astype(np.int32)


def layer_map(
    mask: ArrayLike,
    *,
    metric: str = "chebyshev",
    max_layers: int | None = None,
    target_mask: ArrayLike | None = None,
) -> np.ndarray:
    """The layer of every pixel: its distance to the object, capped at `max_layers − 1`.

    Args:
      mask: bool [H, W], True on the object (the non-target digit's ink, or its bounding box).
      metric: "chebyshev" (default), "euclidean" (rounded down) or "manhattan".
      max_layers: at most this many distance layers (≥ 1); pixels farther than `max_layers − 1`
        join the last one. None: one layer per distance.
      target_mask: bool [H, W], True on the target object (its ink or box), or None (default: no
        target layer). Its pixels outside `mask` become one layer of their own after the distance
        layers (index: 1 + the largest distance layer of the other pixels), so the target and the
        far background get separate ε; pixels of both masks stay with the non-target object
        (layer 0). A ring lying wholly inside the target is left empty (size 0): ring indices keep
        their distance.

    Returns:
      int32 [H, W] with values in 0..num_layers − 1 (the object is layer 0; the target, if given,
      the last layer).

    Raises:
      ValueError: bad metric, mask, max_layers or target_mask (wrong shape, or no pixel outside
        `mask`).
    """
    if max_layers is not None and (isinstance(max_layers, bool) or int(max_layers) < 1):
        raise ValueError(f"max_layers = {max_layers!r}; expected an integer ≥ 1 or None")
    d = distance_map(mask, metric=metric)
    if max_layers is not None:
        d = np.minimum(d, int(max_layers) - 1)
    if target_mask is None:
        return d
    target = np.asarray(target_mask)
    if target.shape != d.shape:
        raise ValueError(f"target_mask has shape {target.shape}; expected the object mask's {d.shape}")
    own = target.astype(bool) & ~np.asarray(mask).astype(bool)
    if not own.any():
        raise ValueError("target_mask has no pixel outside the non-target mask; expected a target layer")
    rings = int(d[~own].max()) + 1  # the distance layers left once the target is taken out
    return np.where(own, rings, d).astype(np.int32)


def num_layers(layers: ArrayLike) -> int:
    """The number of layers of a layer map (its largest layer index + 1)."""
    return int(np.max(np.asarray(layers))) + 1


def layer_sizes(layers: ArrayLike, num: int | None = None) -> np.ndarray:
    """Pixels per layer.

    Args:
      layers: int [H, W] layer map.
      num: the length of the result (≥ the number of layers; default: the number of layers).

    Returns:
      int64 [num], |l_d| for d = 0..num − 1 (zeros for layers beyond the map's last).
    """
    layers = np.asarray(layers)
    n = num_layers(layers) if num is None else int(num)
    if n < num_layers(layers):
        raise ValueError(f"num = {n} is smaller than the number of layers in the map ({num_layers(layers)})")
    return np.bincount(layers.ravel(), minlength=n).astype(np.int64)


def box_of(mask: ArrayLike) -> np.ndarray:
    """The tight bounding box of an object, as a mask: bool [H, W], True inside the box."""
    mask = _check_mask(mask)
    ys, xs = np.nonzero(mask)
    out = np.zeros_like(mask)
    out[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
    return out


def _is_concrete(v) -> bool:
    return not isinstance(v, Tracer)


def eps_per_pixel(layers: ArrayLike, eps: ArrayLike) -> jax.Array:
    """ε of every pixel: eps[layers].

    Args:
      layers: int [H, W] layer map.
      eps: [R] ε per layer, R ≥ the number of layers (extra entries are unused).

    Returns:
      [H, W] float32 (differentiable in eps).
    """
    eps = jnp.asarray(eps, jnp.float32)
    if eps.ndim != 1:
        raise ValueError(f"eps must be a vector [num_layers], got shape {eps.shape}")
    if _is_concrete(layers) and eps.shape[0] < num_layers(layers):
        raise ValueError(f"eps has {eps.shape[0]} entries but the layer map has {num_layers(layers)} layers")
    return jnp.take(eps, jnp.asarray(layers))


def neighborhood_box(x: ArrayLike, layers: ArrayLike, eps: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """The per-pixel box of N(x; ε): [x − ε_d, x + ε_d] on layer d, clipped to [0, 1].

    Args:
      x: [H, W] or [H, W, C] in [0, 1] (channels share their pixel's ε).
      layers: int [H, W] layer map.
      eps: [R] ε per layer (≥ 0), R ≥ the number of layers.

    Returns:
      (lower, upper), each shaped like x, float32.

    Raises:
      ValueError: shapes that do not match, or a negative ε (checked when eps is concrete).
    """
    x = jnp.asarray(x, jnp.float32)
    if tuple(x.shape[:2]) != tuple(np.shape(layers)):
        raise ValueError(f"image {x.shape} and layer map {np.shape(layers)} differ in height/width")
    if _is_concrete(eps) and bool(np.any(np.asarray(eps) < 0)):
        raise ValueError(f"eps must be ≥ 0 in every layer, got {np.asarray(eps).tolist()}")
    e = eps_per_pixel(layers, eps)
    if x.ndim == 3:
        e = e[..., None]
    return jnp.clip(x - e, 0.0, 1.0), jnp.clip(x + e, 0.0, 1.0)


def layer_sum(values: ArrayLike, layers: ArrayLike, num: int) -> jax.Array:
    """Sums per-pixel values over each layer (e.g. a gradient w.r.t. the per-pixel ε → w.r.t. ε_d).

    Args:
      values: [H, W] or [H, W, C] (channels are summed too).
      layers: int [H, W] layer map.
      num: number of layers in the result (static).

    Returns:
      [num] sums.
    """
    values = jnp.asarray(values)
    if values.ndim == 3:
        values = values.sum(axis=-1)
    return jax.ops.segment_sum(values.ravel(), jnp.asarray(layers).ravel(), num_segments=num)
