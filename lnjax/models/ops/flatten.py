"""Flatten: [H, W, C] -> [H * W * C] in row-major order (as `x.reshape(B, -1)`), and its rules."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
from flax import struct

from lnjax.models.ops.base import MilpRules, OpRules, monotone_interval, no_bias, register


@struct.dataclass
class Flatten:
    """[H, W, C] -> [H * W * C] in row-major order."""


@dataclasses.dataclass(frozen=True)
class FlattenSpec:
    """A flatten in a `Sequential`."""

    def flax(self, x: jax.Array, name: str) -> jax.Array:
        del name
        return x.reshape(x.shape[0], -1)

    def to_op(self, params: Any, in_shape: tuple[int, ...]) -> Flatten:
        del params, in_shape
        return Flatten()


def apply(op: Flatten, x: jax.Array) -> jax.Array:
    del op
    return x.reshape(-1)


def backward(
    op: Flatten, a: jax.Array, l_in: jax.Array, u_in: jax.Array, alpha: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    del op, u_in, alpha
    return a.reshape(a.shape[0], *l_in.shape), no_bias(a)


def milp_matrix(op: Flatten, in_shape: tuple[int, ...]) -> tuple[None, None, tuple[int]]:
    """A reshape: no matrix, no offset."""
    del op
    return None, None, (math.prod(in_shape),)


register(
    Flatten,
    OpRules(
        apply=apply,
        interval=monotone_interval,
        backward=backward,
        linear=apply,
        box_exact=True,
        reshape=True,
        milp=MilpRules(matrix=milp_matrix),
    ),
)
