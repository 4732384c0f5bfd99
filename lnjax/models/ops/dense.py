"""Dense: an affine map on the last axis, and all its rules (see `base`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from flax import struct

from lnjax.models.ops.base import (
    MilpRules,
    OpRules,
    affine_interval,
    clip_by_halfspaces,
    halfspace_reach,
    register,
    row_sum,
)


@struct.dataclass
class Dense:
    """Affine map. kernel: [D_in, D_out], bias: [D_out]."""

    kernel: jax.Array
    bias: jax.Array


@dataclasses.dataclass(frozen=True)
class DenseSpec:
    """A Flax dense layer (`nn.Dense`, with bias) in a `Sequential`."""

    features: int

    def flax(self, x: jax.Array, name: str) -> jax.Array:
        return nn.Dense(self.features, name=name)(x)

    def to_op(self, params: Any, in_shape: tuple[int, ...]) -> Dense:
        del in_shape
        return Dense(kernel=jnp.asarray(params["kernel"]), bias=jnp.asarray(params["bias"]))


def linear(op: Dense, x: jax.Array) -> jax.Array:
    return jnp.dot(x, op.kernel, precision=jax.lax.Precision.HIGHEST)


def apply(op: Dense, x: jax.Array) -> jax.Array:
    return linear(op, x) + op.bias


def backward(
    op: Dense, a: jax.Array, l_in: jax.Array, u_in: jax.Array, alpha: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Exact: a · (x W + b) = (a W^T) · x + a · b."""
    del l_in, u_in, alpha
    return jnp.dot(a, op.kernel.T, precision=jax.lax.Precision.HIGHEST), row_sum(a * op.bias)


def clip(op: Dense, lower: jax.Array, upper: jax.Array, sign: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`OpRules.clip`: every output neuron with s_n ≠ 0 as the half-space s_n·(x W + b)_n ≥ 0."""
    reach = halfspace_reach(op, lower, upper, sign)
    lo, hi = clip_by_halfspaces(op.kernel * sign, reach, lower[..., None], upper[..., None])
    return jnp.maximum(lower, lo), jnp.minimum(upper, hi)


def milp_matrix(op: Dense, in_shape: tuple[int, ...]) -> tuple[sp.csr_matrix, np.ndarray, tuple[int]]:
    del in_shape
    m = sp.csr_matrix(np.asarray(op.kernel, np.float64).T)
    return m, np.asarray(op.bias, np.float64), (int(op.kernel.shape[1]),)


register(
    Dense,
    OpRules(
        apply=apply,
        interval=affine_interval,
        backward=backward,
        linear=linear,
        milp=MilpRules(matrix=milp_matrix),
        clip=clip,
    ),
)
