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
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from lnjax.bounds.interval import LayerBounds
from lnjax.bounds.nodes import masked_node_bounds
from lnjax.bounds.relu import default_alpha, relu_relaxation
from lnjax.models import layers as L
from lnjax.models.conv import conv_general_dilated

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


MATRIX_MAX = 1 << 22
"""Largest patch-to-patch map (entries) applied as a dense matrix (BLAS) rather than a convolution."""


def _valid_conv(op: L.Conv, x: jax.Array) -> jax.Array:
    return conv_general_dilated(
        x,
        op.kernel,
        window_strides=tuple(op.strides),
        padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST,
    )


def _patch_in_shape(op: L.Conv, patch: tuple[int, int]) -> tuple[int, int, int]:
    kh, kw, c_in, _ = op.kernel.shape
    (sh, sw), (ph, pw) = op.strides, patch
    return ((ph - 1) * sh + kh, (pw - 1) * sw + kw, c_in)


def conv_patch_matrix(op: L.Conv, patch: tuple[int, int]) -> jax.Array | None:
    """The VALID conv from the input patch to an output patch of size `patch`, as [P_in, P_out]
    (None if larger than MATRIX_MAX entries)."""
    in_shape = _patch_in_shape(op, patch)
    p_in, p_out = math.prod(in_shape), patch[0] * patch[1] * op.kernel.shape[3]
    if p_in * p_out > MATRIX_MAX:
        return None
    basis = jnp.eye(p_in, dtype=op.kernel.dtype).reshape(p_in, *in_shape)
    return _valid_conv(op, basis).reshape(p_in, p_out)


def patch_matrices(view: L.LayerView, k: int, frames: list[Frame]) -> dict[int, jax.Array | None]:
    """{conv op j: `conv_patch_matrix` at its output patch} for the convolutions on the path."""
    return {
        j: conv_patch_matrix(view.ops[j], frames[step].patch)
        for step, j in enumerate(range(k, -1, -1))
        if isinstance(view.ops[j], L.Conv)
    }


def _conv_patch_transpose(op: L.Conv, a: jax.Array, matrix: jax.Array | None = None) -> jax.Array:
    """Rows [R, ph, pw, C_out] -> [R, (ph−1)s+kh, (pw−1)s+kw, C_in]: the transpose of a VALID conv.

    With `matrix` (`conv_patch_matrix`) one matmul, else the convolution's linear transpose.
    """
    rows = a.shape[0]
    in_shape = _patch_in_shape(op, a.shape[1:3])
    if matrix is not None:
        out = jnp.dot(a.reshape(rows, -1), matrix.T, precision=lax.Precision.HIGHEST)
        return out.reshape(rows, *in_shape)
    (out,) = jax.linear_transpose(
        lambda x: _valid_conv(op, x), jax.ShapeDtypeStruct((rows, *in_shape), a.dtype)
    )(a)
    return out


class PatchContext(NamedTuple):
    """What the backward pass reads from the bounds and the box at the rows' patches (gathered once,
    outside optimisation loops)."""

    relu: dict  # relu op j -> (lower, upper) [R, *its input patch]
    inside: dict  # conv op j -> [R, *its input patch, 1] 1 inside the frame; -1: op k's output patch
    mid: jax.Array  # [R, *input patch] box centre
    rad: jax.Array  # [R, *input patch] box half-width


def patch_context(
    view: L.LayerView,
    bounds: LayerBounds,
    k: int,
    offsets: jax.Array,
    lower: jax.Array,
    upper: jax.Array,
    frames: list[Frame],
) -> PatchContext:
    """Gathers everything `patch_lower` needs for rows at `offsets` (int [R, 2], op k's output)."""
    relu, inside = {}, {-1: _inside(offsets, frames[0].patch, frames[0].frame)}
    for step, j in enumerate(range(k, -1, -1)):
        op, fr_in = view.ops[j], frames[step + 1]
        if isinstance(op, L.ReLU):
            relu[j] = tuple(_gather(v, offsets, fr_in.patch) for v in bounds[j - 1])
        else:
            (pt, _), (pl, _) = op.padding
            offsets = offsets * jnp.asarray(op.strides) - jnp.asarray([pt, pl])
            inside[j] = _inside(offsets, fr_in.patch, fr_in.frame)
    patch = frames[-1].patch
    mid = _gather((upper + lower) / 2, offsets, patch)
    rad = _gather((upper - lower) / 2, offsets, patch)
    return PatchContext(relu=relu, inside=inside, mid=mid, rad=rad)


def patch_lower(
    view: L.LayerView,
    k: int,
    a: jax.Array,
    ctx: PatchContext,
    alphas: Mapping[int, jax.Array] | None = None,
    matrices: Mapping[int, jax.Array | None] | None = None,
) -> jax.Array:
    """Lower bounds of rows given as patches of op k's output (see the module docstring).

    Args:
      view: the network; ops 0..k are Conv / ReLU (`patch_frames(view, k)` is not None).
      k: op index.
      a: [R, 1, 1, C] rows at one neuron position each (patch mode starts from single neurons).
      ctx: `patch_context` of the rows.
      alphas: optional ReLU lower slopes {relu op index: [R, *its input patch]} (α-CROWN, see
        `patch_alphas`); missing ReLUs use `relu.default_alpha`.
      matrices: `patch_matrices(view, k, frames)` (computed once, outside loops), or None.

    Returns:
      [R] lower bounds of the rows' linear functions over the box.
    """
    alphas, matrices = alphas or {}, matrices or {}
    bias = jnp.zeros((a.shape[0],), a.dtype)
    a = a * ctx.inside[-1]
    for j in range(k, -1, -1):
        op = view.ops[j]
        if isinstance(op, L.ReLU):
            lo_s, up_s, up_b = relu_relaxation(*ctx.relu[j], alphas.get(j))
            a_pos, a_neg = jnp.maximum(a, 0.0), jnp.minimum(a, 0.0)
            bias = bias + jnp.sum(a_neg * up_b, axis=(1, 2, 3))
            a = a_pos * lo_s + a_neg * up_s
        else:  # Conv (patch_frames checked)
            bias = bias + jnp.sum(a * op.bias, axis=(1, 2, 3))
            a = _conv_patch_transpose(op, a, matrices.get(j)) * ctx.inside[j]
    return jnp.sum(a * ctx.mid, axis=(1, 2, 3)) - jnp.sum(jnp.abs(a) * ctx.rad, axis=(1, 2, 3)) + bias


def patch_backward_lower(
    view: L.LayerView,
    bounds: LayerBounds,
    k: int,
    a: jax.Array,
    offsets: jax.Array,
    lower: jax.Array,
    upper: jax.Array,
    frames: list[Frame],
    alphas: Mapping[int, jax.Array] | None = None,
    matrices: Mapping[int, jax.Array | None] | None = None,
) -> jax.Array:
    """`patch_lower` of rows at `offsets` (int [R, 2] in op k's output), gathering their context."""
    ctx = patch_context(view, bounds, k, offsets, lower, upper, frames)
    return patch_lower(view, k, a, ctx, alphas, matrices)


def patch_alphas(ctx: PatchContext) -> dict[int, jax.Array]:
    """CROWN's default lower slopes at the rows' patches: {relu op index: [R, ph, pw, C]}."""
    return {j: default_alpha(lo, hi) for j, (lo, hi) in ctx.relu.items()}


def patch_node_bounds(
    view: L.LayerView,
    bounds: LayerBounds,
    k: int,
    mask: jax.Array,
    lower: jax.Array,
    upper: jax.Array,
    frames: list[Frame],
    chunk: int = PATCH_CHUNK,
    row_lower: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
):
    """Bounds of the masked neurons of op k's output [H, W, C], `chunk` neurons per pass (`lax` loop).

    `row_lower(a, offsets) -> [R]` bounds rows of patches (default: `patch_backward_lower`; α-CROWN
    passes an optimising one).

    Returns:
      (lower, upper) [H, W, C]; −inf / +inf where not masked.
    """
    if row_lower is None:
        matrices = patch_matrices(view, k, frames)

        def row_lower(a, offsets):
            return patch_backward_lower(view, bounds, k, a, offsets, lower, upper, frames, matrices=matrices)

    h, w, c = mask.shape
    n = math.prod(mask.shape)

    def bound_ids(sel):
        valid = sel < n
        pos = jnp.where(valid, sel, 0)
        offsets = jnp.stack([pos // (w * c), (pos // c) % w], axis=1)
        e = (jax.nn.one_hot(pos % c, c, dtype=jnp.float32) * valid[:, None])[:, None, None, :]
        return row_lower(jnp.concatenate([e, -e]), jnp.concatenate([offsets, offsets]))

    return masked_node_bounds(bound_ids, mask, chunk)
