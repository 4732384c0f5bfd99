"""CROWN rows in patch mode: backward passes cropped to each neuron's receptive field.

A neuron of a convolutional layer depends only on a small window of the input (its receptive
field). The full backward pass of `crown.backward_lower` carries a row over the whole frame of every
layer (e.g. 64×64 pixels for a neuron that sees 7×7 of them), which is where CROWN spends its time
on convolutional nets. In patch mode a row is a small dense patch [ph, pw, C] plus its offset (top-
left corner, may be negative) in the current layer's frame:

- through a convolution (stride s, kernel k, padding p) the patch grows to (ph − 1)·s + k and its
  offset becomes offset·s − p; cells that fall outside the frame are zero padding and are zeroed;
- through a ReLU the relaxation (the same as `crown.relu_relaxation`) is gathered at the patch;
- at the input the patch is concretised against the gathered box.

The result equals the full backward pass up to float rounding (the same linear function, restricted
to the cells where it is non-zero); tests compare both. Patch mode applies to neurons whose path to
the input has only Conv and ReLU ops and whose patches stay smaller than the frames they live in;
other neurons use the full pass.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from lnjax.bounds.interval import LayerBounds
from lnjax.bounds.relu import relu_relaxation
from lnjax.models import layers as L

PATCH_CHUNK = 512
"""Neurons per patch-mode backward pass (patches are small, so far more rows fit than in full mode)."""


class Frame(NamedTuple):
    """A patch size in the frame of one op's output (or the input for index −1)."""

    patch: tuple[int, int]
    frame: tuple[int, int]


def patch_frames(view: L.LayerView, k: int) -> list[Frame] | None:
    """Patch and frame sizes from op k's output back to the input, or None if patch mode does not apply.

    Returns [frame of op k's output, ..., frame of op 0's output, frame of the input]; None if an op in
    0..k is neither Conv nor ReLU, if op k's output is not [H, W, C], or if a patch would be at least
    as large as its frame (then the full pass is no more expensive).
    """
    shapes = [tuple(view.input_shape), *view.output_shapes]  # shapes[j] = input of op j
    if len(shapes[k + 1]) != 3:
        return None
    ph, pw = 1, 1
    frames = [Frame((1, 1), shapes[k + 1][:2])]
    for j in range(k, -1, -1):
        op = view.ops[j]
        if isinstance(op, L.Conv):
            kh, kw = op.kernel.shape[:2]
            (sh, sw) = op.strides
            ph, pw = (ph - 1) * sh + kh, (pw - 1) * sw + kw
        elif not isinstance(op, L.ReLU):
            return None
        frames.append(Frame((ph, pw), shapes[j][:2]))
    if any(f.patch[0] * f.patch[1] >= f.frame[0] * f.frame[1] for f in frames):
        return None
    return frames


def _gather(x: jax.Array, offsets: jax.Array, patch: tuple[int, int]) -> jax.Array:
    """x: [H, W, C]; offsets: int [R, 2] (may be negative) -> [R, ph, pw, C] (0 outside the frame)."""
    ph, pw = patch
    xp = jnp.pad(x, ((ph, ph), (pw, pw), (0, 0)))

    def one(o):
        return lax.dynamic_slice(xp, (o[0] + ph, o[1] + pw, 0), (ph, pw, x.shape[2]))

    return jax.vmap(one)(offsets)


def _inside(offsets: jax.Array, patch: tuple[int, int], frame: tuple[int, int]) -> jax.Array:
    """[R, ph, pw, 1] float: 1 where the patch cell lies inside the frame."""
    rows = offsets[:, 0, None] + jnp.arange(patch[0])[None]
    cols = offsets[:, 1, None] + jnp.arange(patch[1])[None]
    ok_r = (rows >= 0) & (rows < frame[0])
    ok_c = (cols >= 0) & (cols < frame[1])
    return (ok_r[:, :, None] & ok_c[:, None, :]).astype(jnp.float32)[..., None]


def _conv_patch_transpose(op: L.Conv, a: jax.Array) -> jax.Array:
    """Rows [R, ph, pw, C_out] -> [R, (ph−1)s+kh, (pw−1)s+kw, C_in]: the transpose of a VALID conv."""
    kh, kw, c_in, _ = op.kernel.shape
    sh, sw = op.strides
    rows, ph, pw, _ = a.shape
    in_shape = (rows, (ph - 1) * sh + kh, (pw - 1) * sw + kw, c_in)

    def conv(x):
        return lax.conv_general_dilated(
            x,
            op.kernel,
            window_strides=(sh, sw),
            padding="VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=lax.Precision.HIGHEST,
        )

    (out,) = jax.linear_transpose(conv, jax.ShapeDtypeStruct(in_shape, a.dtype))(a)
    return out


def patch_backward_lower(
    view: L.LayerView,
    bounds: LayerBounds,
    k: int,
    a: jax.Array,
    offsets: jax.Array,
    lower: jax.Array,
    upper: jax.Array,
    frames: list[Frame],
) -> jax.Array:
    """Lower bounds of rows given as patches of op k's output (see the module docstring).

    Args:
      view: the network; ops 0..k are Conv / ReLU (`patch_frames(view, k)` is not None).
      bounds: bounds of the outputs of ops 0..k−1.
      k: op index.
      a: [R, 1, 1, C] rows at one neuron position each (patch mode starts from single neurons).
      offsets: int [R, 2] the neurons' (row, column) in op k's output.
      lower, upper: [*input_shape] input box.
      frames: `patch_frames(view, k)`.

    Returns:
      [R] lower bounds of the rows' linear functions over the box.
    """
    bias = jnp.zeros((a.shape[0],), a.dtype)
    a = a * _inside(offsets, frames[0].patch, frames[0].frame)
    for step, j in enumerate(range(k, -1, -1)):
        op = view.ops[j]
        fr_in = frames[step + 1]
        if isinstance(op, L.ReLU):
            l_in, u_in = bounds[j - 1]
            lo_s, up_s, up_b = relu_relaxation(*(_gather(v, offsets, fr_in.patch) for v in (l_in, u_in)))
            a_pos, a_neg = jnp.maximum(a, 0.0), jnp.minimum(a, 0.0)
            bias = bias + jnp.sum(a_neg * up_b, axis=(1, 2, 3))
            a = a_pos * lo_s + a_neg * up_s
        else:  # Conv (patch_frames checked)
            bias = bias + jnp.sum(a * op.bias, axis=(1, 2, 3))
            a = _conv_patch_transpose(op, a)
            (pt, _), (pl, _) = op.padding
            offsets = offsets * jnp.asarray(op.strides) - jnp.asarray([pt, pl])
            a = a * _inside(offsets, fr_in.patch, fr_in.frame)
    mid = _gather((upper + lower) / 2, offsets, frames[-1].patch)
    rad = _gather((upper - lower) / 2, offsets, frames[-1].patch)
    return jnp.sum(a * mid, axis=(1, 2, 3)) - jnp.sum(jnp.abs(a) * rad, axis=(1, 2, 3)) + bias


def patch_node_bounds(
    view: L.LayerView,
    bounds: LayerBounds,
    k: int,
    mask: jax.Array,
    lower: jax.Array,
    upper: jax.Array,
    frames: list[Frame],
    chunk: int = PATCH_CHUNK,
):
    """Bounds of the masked neurons of op k's output [H, W, C], `chunk` neurons per pass (`lax` loop).

    Returns:
      (lower, upper) [H, W, C]; −inf / +inf where not masked.
    """
    shape = mask.shape
    h, w, c = shape
    n = math.prod(shape)
    chunk = min(chunk, n)
    n_pad = -(-n // chunk) * chunk
    ids = jnp.nonzero(mask.reshape(-1), size=n_pad, fill_value=n)[0]
    n_chunks = (jnp.sum(mask) + chunk - 1) // chunk

    def body(i, carry):
        lo, hi = carry
        sel = lax.dynamic_slice(ids, (i * chunk,), (chunk,))
        valid = sel < n
        pos = jnp.where(valid, sel, 0)
        offsets = jnp.stack([pos // (w * c), (pos // c) % w], axis=1)
        e = jax.nn.one_hot(pos % c, c, dtype=jnp.float32) * valid[:, None]
        e = e[:, None, None, :]
        res = patch_backward_lower(
            view,
            bounds,
            k,
            jnp.concatenate([e, -e]),
            jnp.concatenate([offsets, offsets]),
            lower,
            upper,
            frames,
        )
        lo = lo.at[sel].set(res[:chunk], mode="drop")
        hi = hi.at[sel].set(-res[chunk:], mode="drop")
        return lo, hi

    init = (jnp.full((n,), -jnp.inf), jnp.full((n,), jnp.inf))
    lo, hi = lax.fori_loop(0, n_chunks, body, init)
    return lo.reshape(shape), hi.reshape(shape)
