"""CROWN rows in patch mode: backward passes cropped to each neuron's receptive field.

A neuron of a convolutional layer depends only on a small window of the input (its receptive
field). The full backward pass of `crown.backward_lower` carries a row over the whole frame of every
layer (e.g. 64×64 pixels for a neuron that sees 7×7 of them), which is where CROWN spends its time
on convolutional nets. In patch mode a row is a small dense patch [ph, pw, C] plus its offset (top-
left corner, may be negative) in the current layer's frame:

- through a convolution (stride s, kernel k, padding p) the patch grows to (ph − 1)·s + k and its
  offset becomes offset·s − p; cells that fall outside the frame are zero padding and are zeroed;
- through a ReLU the relaxation (`ops.relu.relu_relaxation`) is gathered at the patch;
- at the input the patch is concretised against the gathered box.

Each step is the op's patch rule (`lnjax.models.ops`, `OpRules.patch`; Conv and ReLU have one).
The result equals the full backward pass up to float rounding (the same linear function, restricted
to the cells where it is non-zero); tests compare both. Patch mode applies to neurons whose path to
the input has only Conv and ReLU ops and whose patches stay smaller than the frames they live in;
other neurons use the full pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lnjax.bounds.interval import LayerBounds, input_bounds_of
from lnjax.bounds.nodes import masked_node_bounds
from lnjax.models import layers as L
from lnjax.models.ops import geometry as G, rules_of

PATCH_CHUNK = 512
"""Neurons per patch-mode backward pass (patches are small, so far more rows fit than in full mode)."""


class Frame(NamedTuple):
    """A patch size in the frame of one op's output (or the input for index −1)."""

    patch: tuple[int, int]
    frame: tuple[int, ...]


def patch_frames(view: L.LayerView, k: int) -> list[Frame] | None:
    """Patch and frame sizes from op k's output back to the input, or None if patch mode does not apply.

    Returns [frame of op k's output, ..., frame of op 0's output, frame of the input]; None if an op in
    0..k has no patch rule (Conv and ReLU have one), if op k's output is not [H, W, C], or if a patch
    would be at least as large as its frame (then the full pass is no more expensive).
    """
    shapes = [tuple(view.input_shape), *view.output_shapes]  # shapes[j] = input of op j
    if len(shapes[k + 1]) != 3:
        return None
    ph, pw = 1, 1
    frames = [Frame((1, 1), shapes[k + 1][:2])]
    for j in range(k, -1, -1):
        op = view.ops[j]
        rule = rules_of(op).patch
        if rule is None:
            return None
        ph, pw = rule.grow(op, (ph, pw))
        frames.append(Frame((ph, pw), shapes[j][:2]))
    if any(f.patch[0] * f.patch[1] >= f.frame[0] * f.frame[1] for f in frames):
        return None
    return frames


def patch_matrices(view: L.LayerView, k: int, frames: list[Frame]) -> dict[int, jax.Array | None]:
    """{op j: its patch rule's dense matrix at its output patch (None: none)} for the ops on the path."""
    out: dict[int, jax.Array | None] = {}
    for step, j in enumerate(range(k, -1, -1)):
        op = view.ops[j]
        rule = rules_of(op).patch
        assert rule is not None  # patch_frames checked
        out[j] = rule.matrix(op, frames[step].patch)
    return out


class PatchContext(NamedTuple):
    """What the backward pass reads from the bounds and the box at the rows' patches (gathered once,
    outside optimisation loops)."""

    entries: dict[int, Any]  # op j -> its patch rule's context (ReLU: input bounds; Conv: inside mask)
    inside: jax.Array  # [R, *op k's output patch, 1] 1 inside the frame
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
    entries: dict[int, Any] = {}
    inside = G.inside_frame(offsets, frames[0].patch, frames[0].frame)
    for step, j in enumerate(range(k, -1, -1)):
        op, fr_in = view.ops[j], frames[step + 1]
        rule = rules_of(op).patch
        assert rule is not None  # patch_frames checked
        in_bounds = input_bounds_of(bounds, j, lower, upper)
        offsets, entries[j] = rule.context(op, offsets, in_bounds, fr_in.patch, fr_in.frame)
    patch = frames[-1].patch
    mid = G.gather_patches((upper + lower) / 2, offsets, patch)
    rad = G.gather_patches((upper - lower) / 2, offsets, patch)
    return PatchContext(entries=entries, inside=inside, mid=mid, rad=rad)


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
        `patch_alphas`); missing ReLUs use `ops.relu.default_alpha`.
      matrices: `patch_matrices(view, k, frames)` (computed once, outside loops), or None.

    Returns:
      [R] lower bounds of the rows' linear functions over the box.
    """
    alphas, matrices = alphas or {}, matrices or {}
    bias = jnp.zeros((a.shape[0],), a.dtype)
    a = a * ctx.inside
    for j in range(k, -1, -1):
        op = view.ops[j]
        rule = rules_of(op).patch
        assert rule is not None  # patch_frames checked
        a, term = rule.backward(op, a, ctx.entries[j], alphas.get(j), matrices.get(j))
        bias = bias + term
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


def patch_alphas(view: L.LayerView, ctx: PatchContext) -> dict[int, jax.Array]:
    """CROWN's default lower slopes at the rows' patches: {relu op index: [R, ph, pw, C]}."""
    out = {}
    for j, entry in ctx.entries.items():
        rule = rules_of(view.ops[j]).patch
        alpha = None if rule is None else rule.alpha_init(entry)
        if alpha is not None:
            out[j] = alpha
    return out


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
) -> tuple[jax.Array, jax.Array]:
    """Bounds of the masked neurons of op k's output [H, W, C], `chunk` neurons per pass (`lax` loop).

    `row_lower(a, offsets) -> [R]` bounds rows of patches (default: `patch_backward_lower`; α-CROWN
    passes an optimising one).

    Returns:
      (lower, upper) [H, W, C]; −inf / +inf where not masked.
    """
    if row_lower is None:
        matrices = patch_matrices(view, k, frames)

        def default_row_lower(a, offsets):
            return patch_backward_lower(view, bounds, k, a, offsets, lower, upper, frames, matrices=matrices)

        row_lower = default_row_lower

    h, w, c = mask.shape
    n = math.prod(mask.shape)

    def bound_ids(sel):
        valid = sel < n
        pos = jnp.where(valid, sel, 0)
        offsets = jnp.stack([pos // (w * c), (pos // c) % w], axis=1)
        e = (jax.nn.one_hot(pos % c, c, dtype=jnp.float32) * valid[:, None])[:, None, None, :]
        return row_lower(jnp.concatenate([e, -e]), jnp.concatenate([offsets, offsets]))

    return masked_node_bounds(bound_ids, mask, chunk)
