"""Affine: elementwise y = x * scale + shift (an input normalisation, a batch norm), and its rules.

`scale` and `shift` broadcast over the per-example shape (numpy rules, aligned on the right): shape
() for one scalar, (C,) per channel of an [H, W, C] image, or the full shape. The op maps a box onto
a box exactly (each output depends on one input, monotonically), so interval arithmetic stays exact
through it (`box_exact`), and CROWN's patch mode crosses it (the scale and shift are gathered at the
patch). ONNX imports use it for a normalisation that cannot be folded exactly into a neighbouring
linear op (`lnjax.io.onnx`: e.g. Sub mean / Div std before a zero-padded Conv).

References:
  Zhang et al. 2018 (CROWN: the exact backward step of an affine op); Tjeng, Xiao & Tedrake,
    ICLR 2019 (the MILP's affine layers).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from flax import struct

from lnjax.models.ops import geometry as G
from lnjax.models.ops.base import Bounds, MilpRules, OpRules, PatchRules, register, row_sum


@struct.dataclass
class Affine:
    """Elementwise y = x * scale + shift; scale, shift: arrays broadcastable to the input shape."""

    scale: jax.Array
    shift: jax.Array


class _AffineLayer(nn.Module):
    """The Flax layer: params `scale` (initialised to 1) and `shift` (0) of shape `shape`."""

    shape: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, self.shape, jnp.float32)
        shift = self.param("shift", nn.initializers.zeros, self.shape, jnp.float32)
        return x * scale + shift


@dataclasses.dataclass(frozen=True)
class AffineSpec:
    """An elementwise affine layer in a `Sequential`; params {"scale", "shift"} of shape `shape`
    (broadcast over the per-example shape: () scalar, (C,) per channel, or the full shape)."""

    shape: tuple[int, ...] = ()

    def flax(self, x: jax.Array, name: str) -> jax.Array:
        if len(self.shape) > x.ndim - 1:
            raise ValueError(f"affine params of shape {self.shape} do not broadcast over {x.shape[1:]}")
        return _AffineLayer(tuple(self.shape), name=name)(x)

    def to_op(self, params: Any, in_shape: tuple[int, ...]) -> Affine:
        del in_shape
        return Affine(scale=jnp.asarray(params["scale"]), shift=jnp.asarray(params["shift"]))


def apply(op: Affine, x: jax.Array) -> jax.Array:
    return x * op.scale + op.shift


def linear(op: Affine, x: jax.Array) -> jax.Array:
    return x * op.scale


def interval(op: Affine, lower: jax.Array, upper: jax.Array) -> Bounds:
    """Exact (centre/radius): each output is a monotone function of one input."""
    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    out_mid, out_rad = apply(op, mid), rad * jnp.abs(op.scale)
    return out_mid - out_rad, out_mid + out_rad


def backward(
    op: Affine, a: jax.Array, l_in: jax.Array, u_in: jax.Array, alpha: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Exact: a · (x s + t) = (a s) · x + a · t (rows a: [R, *S])."""
    del alpha
    a_in = jnp.broadcast_to(a * op.scale, (a.shape[0], *l_in.shape))
    return a_in, row_sum(jnp.broadcast_to(a * op.shift, a_in.shape))


# ----------------------------------------------------------------------------- patch mode


def patch_context(
    op: Affine, offsets: jax.Array, in_bounds: Bounds, patch_in: tuple[int, int], frame_in: tuple[int, ...]
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Scale and shift gathered at the patches (offsets do not move; 0 outside the frame, where the
    rows are 0 anyway)."""
    del frame_in
    shape = in_bounds[0].shape
    s, t = (jnp.broadcast_to(v, shape).astype(in_bounds[0].dtype) for v in (op.scale, op.shift))
    return offsets, (G.gather_patches(s, offsets, patch_in), G.gather_patches(t, offsets, patch_in))


def patch_backward(
    op: Affine,
    a: jax.Array,
    entry: tuple[jax.Array, jax.Array],
    alpha: jax.Array | None = None,
    matrix: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    del op, alpha, matrix
    s, t = entry
    return a * s, jnp.sum(a * t, axis=(1, 2, 3))


# ----------------------------------------------------------------------------- MILP


def milp_matrix(op: Affine, in_shape: tuple[int, ...]) -> tuple[sp.csr_matrix, np.ndarray, tuple[int, ...]]:
    """A diagonal matrix over the row-major flattened input, and the broadcast shift."""
    n = math.prod(in_shape)
    s = np.broadcast_to(np.asarray(op.scale, np.float64), in_shape).reshape(n)
    t = np.broadcast_to(np.asarray(op.shift, np.float64), in_shape).reshape(n)
    diag = sp.csr_matrix((s, np.arange(n), np.arange(n + 1)), shape=(n, n))
    return diag, t.copy(), tuple(in_shape)


register(
    Affine,
    OpRules(
        apply=apply,
        interval=interval,
        backward=backward,
        linear=linear,
        box_exact=True,
        milp=MilpRules(matrix=milp_matrix),
        patch=PatchRules(grow=lambda op, patch: patch, context=patch_context, backward=patch_backward),
    ),
)
