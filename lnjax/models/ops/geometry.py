"""Window and convolution index arithmetic, in one place.

Convolutions and poolings slide a window `(kh, kw)` with strides `(sh, sw)` over an `[H, W, C]`
image padded by `((top, bottom), (left, right))`. Every consumer of that geometry — the Flax
builder (string padding -> explicit padding), the JAX layer view and bounds (pooling windows,
patch mode's receptive fields), the NumPy MILP network (sparse conv / pooling matrices, max-pool
windows) — computes it here, so the three can only disagree on what they do with the indices.

Conventions: images are row-major `[H, W, C]`; a flat spatial index is `r * W + c`; a flat
element index is `(r * W + c) * C + ch` (the order of `x.reshape(-1)`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Pair = tuple[int, int]
Padding = tuple[Pair, Pair]
"""Explicit padding ((top, bottom), (left, right))."""


def explicit_padding(
    padding: str | Padding, in_hw: Sequence[int], window: Sequence[int], strides: Sequence[int]
) -> Padding:
    """Flax/lax string padding ("SAME" / "VALID") as explicit padding, resolved exactly as lax does;
    explicit padding ((top, bottom), (left, right)) is returned as plain ints."""
    if isinstance(padding, str):
        (t, b), (left, right) = lax.padtype_to_pads(tuple(in_hw), tuple(window), tuple(strides), padding)
    else:
        (t, b), (left, right) = padding
    return (int(t), int(b)), (int(left), int(right))


def output_size(
    in_hw: Sequence[int], window: Sequence[int], strides: Sequence[int], padding: Padding
) -> Pair:
    """(H', W'): the number of window positions along each spatial axis."""
    (h, w), (kh, kw), (sh, sw) = in_hw, window, strides
    (pt, pb), (pl, pr) = padding
    return (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1


def window_cells(
    in_hw: Sequence[int], window: Sequence[int], strides: Sequence[int], padding: Padding
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Input row and column of every window cell, and whether it lies inside the image.

    Returns:
      (rows, cols, inside), each [H', W', KH, KW]: output position (i, j), cell (a, b) reads input
      (i * sh - top + a, j * sw - left + b); `inside` is False for padded cells.
    """
    (h, w), (kh, kw), (sh, sw) = in_hw, window, strides
    (pt, _), (pl, _) = padding
    oh, ow = output_size(in_hw, window, strides, padding)
    r = np.arange(oh)[:, None, None, None] * sh + np.arange(kh)[None, None, :, None] - pt
    c = np.arange(ow)[None, :, None, None] * sw + np.arange(kw)[None, None, None, :] - pl
    r, c = np.broadcast_arrays(r, c)
    return r, c, (r >= 0) & (r < h) & (c >= 0) & (c < w)


def window_index(
    in_hw: Sequence[int], window: Sequence[int], strides: Sequence[int], padding: Padding, *, pad: int
) -> np.ndarray:
    """[H', W', KH * KW] flat spatial input indices (r * W + c) of every window, `pad` for padded cells."""
    r, c, inside = window_cells(in_hw, window, strides, padding)
    oh, ow, kh, kw = r.shape
    return np.where(inside, r * in_hw[1] + c, pad).reshape(oh, ow, kh * kw)


def element_windows(
    in_shape: Sequence[int], window: Sequence[int], strides: Sequence[int], padding: Padding
) -> np.ndarray:
    """[H' * W' * C, KH * KW] flat element indices of every window of every channel (−1 = padding).

    Row o = (i * W' + j) * C + ch: the order of the output's `reshape(-1)`.
    """
    h, w, c = in_shape
    idx = window_index((h, w), window, strides, padding, pad=-1)  # [H', W', P]
    oh, ow, p = idx.shape
    ch = np.arange(c)[None, None, :, None]
    out = np.where(idx[:, :, None, :] >= 0, idx[:, :, None, :] * c + ch, -1)
    return out.reshape(oh * ow * c, p)


def window_patches(x: jax.Array, idx: np.ndarray, fill: float) -> jax.Array:
    """x: [H, W, C] -> [H', W', P, C] window cells (idx: `window_index(..., pad=H * W)`; padded = fill)."""
    h, w, c = x.shape
    flat = jnp.pad(x.reshape(h * w, c), ((0, 1), (0, 0)), constant_values=fill)
    return flat[idx]


def window_patches_transpose(a: jax.Array, in_shape: Sequence[int], idx: np.ndarray) -> jax.Array:
    """Transpose of `window_patches(., idx, 0)`: a: [R, H', W', P, C] -> [R, H, W, C] (scatter-add)."""
    _, vjp = jax.vjp(lambda x: window_patches(x, idx, 0.0), jnp.zeros(tuple(in_shape), a.dtype))
    return jax.vmap(lambda ai: vjp(ai)[0])(a)


def receptive_patch(patch: Pair, window: Sequence[int], strides: Sequence[int]) -> Pair:
    """Input patch size seen by an output patch `patch` of a window op: (p − 1)·s + k per axis."""
    (ph, pw), (kh, kw), (sh, sw) = patch, window, strides
    return (ph - 1) * sh + kh, (pw - 1) * sw + kw


def receptive_offsets(offsets: jax.Array, strides: Sequence[int], padding: Padding) -> jax.Array:
    """Top-left corners int [R, 2] of output patches -> those of their input patches (offset·s − pad)."""
    (pt, _), (pl, _) = padding
    return offsets * jnp.asarray(tuple(strides)) - jnp.asarray([pt, pl])


def gather_patches(x: jax.Array, offsets: jax.Array, patch: Pair) -> jax.Array:
    """x: [H, W, C]; offsets: int [R, 2] (may be negative) -> [R, ph, pw, C] (0 outside the frame)."""
    ph, pw = patch
    xp = jnp.pad(x, ((ph, ph), (pw, pw), (0, 0)))

    def one(o):
        return lax.dynamic_slice(xp, (o[0] + ph, o[1] + pw, 0), (ph, pw, x.shape[2]))

    return jax.vmap(one)(offsets)


def inside_frame(offsets: jax.Array, patch: Pair, frame: Sequence[int]) -> jax.Array:
    """[R, ph, pw, 1] float: 1 where the patch cell at `offsets` lies inside the frame [H, W]."""
    rows = offsets[:, 0, None] + jnp.arange(patch[0])[None]
    cols = offsets[:, 1, None] + jnp.arange(patch[1])[None]
    ok_r = (rows >= 0) & (rows < frame[0])
    ok_c = (cols >= 0) & (cols < frame[1])
    return (ok_r[:, :, None] & ok_c[:, None, :]).astype(jnp.float32)[..., None]
