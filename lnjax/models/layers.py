"""The layer view: a network as an explicit sequence of ops over plain arrays.

Bounds (interval, CROWN) and the MILP encoder consume this view; it never relies on jaxpr
internals. Every op is a `flax.struct` dataclass whose arrays are pytree leaves and whose
geometry (strides, padding, windows) is static, so a view can be passed through `jax.jit`.
The ops and their rules live in `lnjax.models.ops` (one module per op, one rule table); this
module re-exports them and runs a view.

Conventions: one example at a time, images `[H, W, C]` (NHWC without the batch axis),
convolution kernels `[KH, KW, C_in, C_out]` (HWIO), dense kernels `[D_in, D_out]`,
explicit padding `((top, bottom), (left, right))`, flatten in row-major (H, W, C) order —
exactly as Flax's `nn.Conv`, `nn.Dense` and `x.reshape(B, -1)` do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from lnjax.models.ops import (
    Affine,
    AvgPool,
    Conv,
    Dense,
    Flatten,
    MaxPool,
    Op,
    Padding,
    ReLU,
    is_linear,
    rules_of,
)
from lnjax.models.ops.conv import conv2d
from lnjax.models.ops.pool import avg_pool, max_pool

__all__ = [
    "Affine",
    "AvgPool",
    "Conv",
    "Dense",
    "Flatten",
    "LayerView",
    "MaxPool",
    "Op",
    "Padding",
    "ReLU",
    "apply_layers",
    "apply_layers_batch",
    "apply_op",
    "avg_pool",
    "conv2d",
    "is_linear",
    "max_pool",
]


@struct.dataclass
class LayerView:
    """A network as ops. `input_shape` is the per-example input shape, e.g. (64, 64, 1)."""

    ops: tuple[Op, ...]
    input_shape: tuple[int, ...] = struct.field(pytree_node=False)

    @property
    def output_shapes(self) -> list[tuple[int, ...]]:
        """Per-example shape after each op (len == len(ops))."""
        shapes, shape = [], self.input_shape
        for op in self.ops:
            shape = op_output_shape(op, shape)
            shapes.append(shape)
        return shapes


def op_output_shape(op: Op, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The per-example output shape of `op` on inputs of shape `in_shape` (traced abstractly)."""
    out = jax.eval_shape(lambda x: apply_op(op, x), jax.ShapeDtypeStruct(tuple(in_shape), jnp.float32))
    return tuple(out.shape)


def apply_op(op: Op, x: jax.Array) -> jax.Array:
    """Applies one op to one example."""
    return rules_of(op).apply(op, x)


def apply_layers(view: LayerView, x: jax.Array) -> jax.Array:
    """Runs the view on one example. x: input_shape -> logits [K]."""
    for op in view.ops:
        x = apply_op(op, x)
    return x


def apply_layers_batch(view: LayerView, x: jax.Array) -> jax.Array:
    """x: [B, *input_shape] -> logits [B, K]."""
    return jax.vmap(lambda xi: apply_layers(view, xi))(x)
