"""Conv: 2-D convolution + bias, and all its rules (see `base`).

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
from jax import lax

from lnjax.models.conv import conv_general_dilated
from lnjax.models.ops import geometry as G
from lnjax.models.ops.base import (
    Bounds,
    MilpRules,
    OpRules,
    PatchRules,
    affine_interval,
    clip_by_halfspaces,
    halfspace_reach,
    register,
    row_sum,
)


@struct.dataclass
class Conv:
    """2-D convolution + bias. kernel: [KH, KW, C_in, C_out], bias: [C_out]."""

    kernel: jax.Array
    bias: jax.Array
    strides: tuple[int, int] = struct.field(pytree_node=False, default=(1, 1))
    padding: G.Padding = struct.field(pytree_node=False, default=((0, 0), (0, 0)))


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """A Flax conv layer (`nn.Conv`, with bias) in a `Sequential`."""

    features: int
    kernel: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    padding: str | G.Padding = "SAME"  # "SAME", "VALID" or explicit ((top, bottom), (left, right))

    def flax(self, x: jax.Array, name: str) -> jax.Array:
        """x: [B, H, W, C] -> [B, H', W', features]; params under `name`."""
        return nn.Conv(
            self.features,
            self.kernel,
            self.strides,
            padding=self.padding,
            conv_general_dilated=conv_general_dilated,  # fast input gradients in loops
            name=name,
        )(x)

    def to_op(self, params: Any, in_shape: tuple[int, ...]) -> Conv:
        """The layer-view op (params: this layer's {"kernel", "bias"}; in_shape: [H, W, C])."""
        return Conv(
            kernel=jnp.asarray(params["kernel"]),
            bias=jnp.asarray(params["bias"]),
            strides=(int(self.strides[0]), int(self.strides[1])),
            padding=G.explicit_padding(self.padding, in_shape[:2], self.kernel, self.strides),
        )


def conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...], padding: G.Padding) -> jax.Array:
    """Convolution without bias. x: [H, W, C_in] -> [H', W', C_out].

    The loop-friendly `models.conv.conv_general_dilated` (same values and derivatives as lax's), so a
    gradient of the layer view taken inside a `lax` loop stays on XLA CPU's fast path.
    """
    y = conv_general_dilated(
        x[None],
        kernel,
        window_strides=tuple(strides),
        padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )
    return y[0]


def apply(op: Conv, x: jax.Array) -> jax.Array:
    return conv2d(x, op.kernel, op.strides, op.padding) + op.bias


def linear(op: Conv, x: jax.Array) -> jax.Array:
    return conv2d(x, op.kernel, op.strides, op.padding)


def conv_transpose(op: Conv, in_shape: tuple[int, ...], a: jax.Array) -> jax.Array:
    """Transpose of the convolution (no bias) applied to rows: [R, H', W', C_out] -> [R, *in_shape].

    Equal to `jax.vjp` of `conv2d` (tests check it), but written as one stride-1 convolution per
    stride phase, all phases stacked along the output channels, followed by depth-to-space: XLA's
    CPU path for the input-dilated convolution that the vjp of a strided convolution produces is
    several times slower.
    """
    h, w, c_in = in_shape
    kh, kw, _, c_out = op.kernel.shape
    (sh, sw), ((pt, _), (pl, _)) = op.strides, op.padding
    rows, oh, ow = a.shape[:3]
    mh, mw = -(-kh // sh), -(-kw // sw)  # taps per phase
    qh, qw = -(-(h + pt) // sh), -(-(w + pl) // sw)  # outputs per phase
    # x[s*q + r - p] = sum_m y[q - m] K[s*m + r]: phase r correlates y with K[s*(M-1-t) + r], t < M.
    k = jnp.pad(op.kernel, ((0, sh * mh - kh), (0, sw * mw - kw), (0, 0), (0, 0)))
    k = k.reshape(mh, sh, mw, sw, c_in, c_out)[::-1, :, ::-1]
    k = k.transpose(0, 2, 5, 1, 3, 4).reshape(mh, mw, c_out, sh * sw * c_in)
    out = conv_general_dilated(  # α-CROWN differentiates this inside a loop: see models/conv.py
        a,
        k,
        window_strides=(1, 1),
        padding=((mh - 1, max(0, qh - oh)), (mw - 1, max(0, qw - ow))),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST,
    )[:, :qh, :qw]
    out = out.reshape(rows, qh, qw, sh, sw, c_in).transpose(0, 1, 3, 2, 4, 5)
    return out.reshape(rows, qh * sh, qw * sw, c_in)[:, pt : pt + h, pl : pl + w]


def clip(op: Conv, lower: jax.Array, upper: jax.Array, sign: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`OpRules.clip`: every output neuron with s_n ≠ 0 as the half-space s_n·y_n ≥ 0 over its
    receptive field; one pass per kernel tap, each taking the candidates of the pixels at that tap
    of every output position (a strided view of the padded box) and scatter-reducing them back."""
    reach = halfspace_reach(op, lower, upper, sign)[:, :, None, :]  # [H', W', 1, C_out]
    kh, kw = op.kernel.shape[:2]
    (sh, sw), ((pt, pb), (pl, pr)) = op.strides, op.padding
    oh, ow = reach.shape[:2]
    pad = ((pt, pb), (pl, pr), (0, 0))
    lo_p, hi_p = jnp.pad(lower, pad), jnp.pad(upper, pad)  # padding is the constant 0
    new_lo, new_hi = jnp.full(lo_p.shape, -jnp.inf, lower.dtype), jnp.full(hi_p.shape, jnp.inf, upper.dtype)
    for dy in range(kh):
        for dx in range(kw):
            at = (slice(dy, dy + sh * (oh - 1) + 1, sh), slice(dx, dx + sw * (ow - 1) + 1, sw))
            a = op.kernel[dy, dx][None, None] * sign[:, :, None, :]  # [H', W', C_in, C_out]
            lo, hi = clip_by_halfspaces(a, reach, lo_p[at][..., None], hi_p[at][..., None])
            new_lo, new_hi = new_lo.at[at].max(lo), new_hi.at[at].min(hi)
    h, w = lower.shape[:2]
    return jnp.maximum(lower, new_lo[pt : pt + h, pl : pl + w]), jnp.minimum(
        upper, new_hi[pt : pt + h, pl : pl + w]
    )


def backward(
    op: Conv, a: jax.Array, l_in: jax.Array, u_in: jax.Array, alpha: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Exact: a · (conv(x) + b) = conv^T(a) · x + a · b."""
    del u_in, alpha
    return conv_transpose(op, l_in.shape, a), row_sum(a * op.bias)


# ----------------------------------------------------------------------------- MILP


def conv_matrix(
    kernel: np.ndarray, in_shape: tuple[int, ...], strides: tuple[int, int], padding: G.Padding
) -> tuple[sp.csr_matrix, tuple[int, int, int]]:
    """The convolution (without bias) as a sparse matrix over row-major flattened [H, W, C].

    Args:
      kernel: [KH, KW, C_in, C_out].
      in_shape: (H, W, C_in).
      strides: (sh, sw); padding: ((top, bottom), (left, right)).

    Returns:
      (matrix [Ho·Wo·C_out, H·W·C_in], output shape (Ho, Wo, C_out)).
    """
    kernel = np.asarray(kernel, np.float64)
    kh, kw, ci, co = kernel.shape
    h, w, _ = in_shape
    ih, iw, inside = G.window_cells((h, w), (kh, kw), strides, padding)  # [Ho, Wo, KH, KW]
    ho, wo = ih.shape[:2]
    oh, ow, ih_k, iw_k, c_in, c_out = np.meshgrid(
        np.arange(ho),
        np.arange(wo),
        np.arange(kh),
        np.arange(kw),
        np.arange(ci),
        np.arange(co),
        indexing="ij",
    )
    ih, iw, inside = (np.broadcast_to(v[..., None, None], oh.shape) for v in (ih, iw, inside))
    vals = kernel[ih_k, iw_k, c_in, c_out]
    keep = inside & (vals != 0)
    rows = ((oh * wo + ow) * co + c_out)[keep]
    cols = ((ih * w + iw) * ci + c_in)[keep]
    m = sp.csr_matrix((vals[keep], (rows, cols)), shape=(ho * wo * co, h * w * ci))
    return m, (ho, wo, co)


def milp_matrix(
    op: Conv, in_shape: tuple[int, ...]
) -> tuple[sp.csr_matrix, np.ndarray, tuple[int, int, int]]:
    m, out = conv_matrix(np.asarray(op.kernel), in_shape, op.strides, op.padding)
    return m, np.tile(np.asarray(op.bias, np.float64), out[0] * out[1]), out


# ----------------------------------------------------------------------------- patch mode

MATRIX_MAX = 1 << 22
"""Largest patch-to-patch map (entries) applied as a dense matrix (BLAS) rather than a convolution."""


def _valid_conv(op: Conv, x: jax.Array) -> jax.Array:
    return conv_general_dilated(
        x,
        op.kernel,
        window_strides=tuple(op.strides),
        padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST,
    )


def patch_grow(op: Conv, patch: tuple[int, int]) -> tuple[int, int]:
    return G.receptive_patch(patch, op.kernel.shape[:2], op.strides)


def _patch_in_shape(op: Conv, patch: tuple[int, int]) -> tuple[int, int, int]:
    return (*patch_grow(op, patch), op.kernel.shape[2])


def conv_patch_matrix(op: Conv, patch: tuple[int, int]) -> jax.Array | None:
    """The VALID conv from the input patch to an output patch of size `patch`, as [P_in, P_out]
    (None if larger than MATRIX_MAX entries)."""
    in_shape = _patch_in_shape(op, patch)
    p_in, p_out = math.prod(in_shape), patch[0] * patch[1] * op.kernel.shape[3]
    if p_in * p_out > MATRIX_MAX:
        return None
    basis = jnp.eye(p_in, dtype=op.kernel.dtype).reshape(p_in, *in_shape)
    return _valid_conv(op, basis).reshape(p_in, p_out)


def conv_patch_transpose(op: Conv, a: jax.Array, matrix: jax.Array | None = None) -> jax.Array:
    """Rows [R, ph, pw, C_out] -> [R, (ph−1)s+kh, (pw−1)s+kw, C_in]: the transpose of a VALID conv.

    With `matrix` (`conv_patch_matrix`) one matmul, else the convolution's linear transpose.
    """
    rows = a.shape[0]
    in_shape = _patch_in_shape(op, (a.shape[1], a.shape[2]))
    if matrix is not None:
        out = jnp.dot(a.reshape(rows, -1), matrix.T, precision=lax.Precision.HIGHEST)
        return out.reshape(rows, *in_shape)
    (out,) = jax.linear_transpose(
        lambda x: _valid_conv(op, x), jax.ShapeDtypeStruct((rows, *in_shape), a.dtype)
    )(a)
    return out


def patch_context(
    op: Conv, offsets: jax.Array, in_bounds: Bounds, patch_in: tuple[int, int], frame_in: tuple[int, ...]
) -> tuple[jax.Array, jax.Array]:
    """Input offsets, and the mask of input patch cells inside the frame (the rest is zero padding)."""
    del in_bounds
    offsets = G.receptive_offsets(offsets, op.strides, op.padding)
    return offsets, G.inside_frame(offsets, patch_in, frame_in)


def patch_backward(
    op: Conv,
    a: jax.Array,
    inside: jax.Array,
    alpha: jax.Array | None = None,
    matrix: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    del alpha
    bias = jnp.sum(a * op.bias, axis=(1, 2, 3))
    return conv_patch_transpose(op, a, matrix) * inside, bias


register(
    Conv,
    OpRules(
        apply=apply,
        interval=affine_interval,
        backward=backward,
        linear=linear,
        milp=MilpRules(matrix=milp_matrix),
        clip=clip,
        patch=PatchRules(
            grow=patch_grow, context=patch_context, backward=patch_backward, matrix=conv_patch_matrix
        ),
    ),
)
