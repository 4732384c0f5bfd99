"""The layer view: a network as an explicit sequence of ops over plain arrays.

Bounds (interval, CROWN) and the MILP encoder consume this view; it never relies on jaxpr
internals. Every op is a `flax.struct` dataclass whose arrays are pytree leaves and whose
geometry (strides, padding, windows) is static, so a view can be passed through `jax.jit`.

Conventions: one example at a time, images `[H, W, C]` (NHWC without the batch axis),
convolution kernels `[KH, KW, C_in, C_out]` (HWIO), dense kernels `[D_in, D_out]`,
explicit padding `((top, bottom), (left, right))`, flatten in row-major (H, W, C) order —
exactly as Flax's `nn.Conv`, `nn.Dense` and `x.reshape(B, -1)` do.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import struct

from lnjax.models.conv import conv_general_dilated

Padding = tuple[tuple[int, int], tuple[int, int]]


@struct.dataclass
class Conv:
    """2-D convolution + bias. kernel: [KH, KW, C_in, C_out], bias: [C_out]."""

    kernel: jax.Array
    bias: jax.Array
    strides: tuple[int, int] = struct.field(pytree_node=False, default=(1, 1))
    padding: Padding = struct.field(pytree_node=False, default=((0, 0), (0, 0)))


@struct.dataclass
class Dense:
    """Affine map. kernel: [D_in, D_out], bias: [D_out]."""

    kernel: jax.Array
    bias: jax.Array


@struct.dataclass
class ReLU:
    """Elementwise max(x, 0)."""


@struct.dataclass
class Flatten:
    """[H, W, C] -> [H * W * C] in row-major order."""


@struct.dataclass
class MaxPool:
    """Max over windows; padded cells never win (padding value -inf)."""

    window: tuple[int, int] = struct.field(pytree_node=False, default=(2, 2))
    strides: tuple[int, int] = struct.field(pytree_node=False, default=(2, 2))
    padding: Padding = struct.field(pytree_node=False, default=((0, 0), (0, 0)))


@struct.dataclass
class AvgPool:
    """Mean over windows (no padding): a linear op."""

    window: tuple[int, int] = struct.field(pytree_node=False, default=(2, 2))
    strides: tuple[int, int] = struct.field(pytree_node=False, default=(2, 2))


Op = Conv | Dense | ReLU | Flatten | MaxPool | AvgPool
LINEAR_OPS = (Conv, Dense, Flatten, AvgPool)


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
            shape = jax.eval_shape(
                lambda x, op=op: apply_op(op, x), jax.ShapeDtypeStruct(shape, jnp.float32)
            ).shape
            shapes.append(tuple(shape))
        return shapes


def conv2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Padding) -> jax.Array:
    """Convolution without bias. x: [H, W, C_in] -> [H', W', C_out].

    The loop-friendly `conv.conv_general_dilated` (same values and derivatives as lax's), so a
    gradient of the layer view taken inside a `lax` loop stays on XLA CPU's fast path.
    """
    y = conv_general_dilated(
        x[None],
        kernel,
        window_strides=tuple(strides),
        padding=tuple(tuple(p) for p in padding),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )
    return y[0]


def max_pool(x: jax.Array, window, strides, padding: Padding) -> jax.Array:
    """x: [H, W, C] -> [H', W', C]."""
    return jax.lax.reduce_window(
        x,
        -jnp.inf,
        jax.lax.max,
        (*window, 1),
        (*strides, 1),
        (*padding, (0, 0)),
    )


def avg_pool(x: jax.Array, window, strides) -> jax.Array:
    """x: [H, W, C] -> [H', W', C]."""
    s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (*window, 1), (*strides, 1), "VALID")
    return s / (window[0] * window[1])


def apply_op(op: Op, x: jax.Array) -> jax.Array:
    """Applies one op to one example."""
    if isinstance(op, Conv):
        return conv2d(x, op.kernel, op.strides, op.padding) + op.bias
    if isinstance(op, Dense):
        return jnp.dot(x, op.kernel, precision=jax.lax.Precision.HIGHEST) + op.bias
    if isinstance(op, ReLU):
        return jax.nn.relu(x)
    if isinstance(op, Flatten):
        return x.reshape(-1)
    if isinstance(op, MaxPool):
        return max_pool(x, op.window, op.strides, op.padding)
    if isinstance(op, AvgPool):
        return avg_pool(x, op.window, op.strides)
    raise TypeError(
        f"unknown op {type(op).__name__}; expected one of Conv, Dense, ReLU, Flatten, MaxPool, AvgPool"
    )


def apply_layers(view: LayerView, x: jax.Array) -> jax.Array:
    """Runs the view on one example. x: input_shape -> logits [K]."""
    for op in view.ops:
        x = apply_op(op, x)
    return x


def apply_layers_batch(view: LayerView, x: jax.Array) -> jax.Array:
    """x: [B, *input_shape] -> logits [B, K]."""
    return jax.vmap(lambda xi: apply_layers(view, xi))(x)
