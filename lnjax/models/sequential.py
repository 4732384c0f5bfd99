"""Sequential Flax (Linen) networks described by layer specs, and their layer view.

A model is a tuple of small frozen specs. The same specs drive `Sequential.__call__` (Flax) and
`layer_view` (plain arrays for bounds and the MILP), so the two cannot drift apart; tests check
they agree within 1e-5 on every model of the zoo.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lnjax.models import layers as L
from lnjax.models.conv import conv_general_dilated


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    features: int
    kernel: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    padding: str = "SAME"  # "SAME" or "VALID"


@dataclasses.dataclass(frozen=True)
class DenseSpec:
    features: int


@dataclasses.dataclass(frozen=True)
class ReLUSpec:
    pass


@dataclasses.dataclass(frozen=True)
class FlattenSpec:
    pass


@dataclasses.dataclass(frozen=True)
class MaxPoolSpec:
    window: tuple[int, int] = (2, 2)
    strides: tuple[int, int] | None = None  # defaults to the window
    padding: str = "VALID"


@dataclasses.dataclass(frozen=True)
class AvgPoolSpec:
    window: tuple[int, int] = (2, 2)
    strides: tuple[int, int] | None = None


Spec = ConvSpec | DenseSpec | ReLUSpec | FlattenSpec | MaxPoolSpec | AvgPoolSpec


class Sequential(nn.Module):
    """A feed-forward network. x: [B, H, W, C] in [0, 1] -> logits [B, K].

    Parameters are named `layer_{i}` after the spec index i of each Conv/Dense.
    """

    specs: tuple[Spec, ...]
    input_shape: tuple[int, ...]  # per example, e.g. (64, 64, 1); used by `layer_view`

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, s in enumerate(self.specs):
            if isinstance(s, ConvSpec):
                x = nn.Conv(
                    s.features,
                    s.kernel,
                    s.strides,
                    padding=s.padding,
                    conv_general_dilated=conv_general_dilated,  # fast input gradients in loops
                    name=f"layer_{i}",
                )(x)
            elif isinstance(s, DenseSpec):
                x = nn.Dense(s.features, name=f"layer_{i}")(x)
            elif isinstance(s, ReLUSpec):
                x = nn.relu(x)
            elif isinstance(s, FlattenSpec):
                x = x.reshape(x.shape[0], -1)
            elif isinstance(s, MaxPoolSpec):
                x = nn.max_pool(x, s.window, s.strides or s.window, padding=s.padding)
            elif isinstance(s, AvgPoolSpec):
                x = nn.avg_pool(x, s.window, s.strides or s.window, padding="VALID")
            else:
                raise TypeError(f"unknown layer spec {s!r}")
        return x

    def init_params(self, key: jax.Array):
        """Initial parameters for this model's input shape."""
        return self.init(key, jnp.zeros((1, *self.input_shape), jnp.float32))["params"]


@functools.cache
def apply_fn(model: Sequential):
    """`apply(params, x) -> logits` of a model (x: [B, *input_shape]); one function object per
    architecture (models are frozen and compare by value), so jitted attacks, region classifiers and
    boundary scans that take it as a static argument compile once per architecture."""
    return lambda params, x: model.apply({"params": params}, x)


def _explicit_padding(padding: str, in_hw: Sequence[int], window, strides) -> L.Padding:
    pads = lax.padtype_to_pads(tuple(in_hw), tuple(window), tuple(strides), padding)
    return tuple((int(lo), int(hi)) for lo, hi in pads)


def layer_view(model: Sequential, params) -> L.LayerView:
    """The model with its params as an explicit sequence of ops (see `layers`)."""
    ops: list[L.Op] = []
    shape = tuple(model.input_shape)
    for i, s in enumerate(model.specs):
        if isinstance(s, ConvSpec):
            p = params[f"layer_{i}"]
            op = L.Conv(
                kernel=jnp.asarray(p["kernel"]),
                bias=jnp.asarray(p["bias"]),
                strides=tuple(s.strides),
                padding=_explicit_padding(s.padding, shape[:2], s.kernel, s.strides),
            )
        elif isinstance(s, DenseSpec):
            p = params[f"layer_{i}"]
            op = L.Dense(kernel=jnp.asarray(p["kernel"]), bias=jnp.asarray(p["bias"]))
        elif isinstance(s, ReLUSpec):
            op = L.ReLU()
        elif isinstance(s, FlattenSpec):
            op = L.Flatten()
        elif isinstance(s, MaxPoolSpec):
            strides = tuple(s.strides or s.window)
            op = L.MaxPool(
                window=tuple(s.window),
                strides=strides,
                padding=_explicit_padding(s.padding, shape[:2], s.window, strides),
            )
        elif isinstance(s, AvgPoolSpec):
            op = L.AvgPool(window=tuple(s.window), strides=tuple(s.strides or s.window))
        else:
            raise TypeError(f"unknown layer spec {s!r}")
        ops.append(op)
        shape = jax.eval_shape(
            lambda x, op=op: L.apply_op(op, x), jax.ShapeDtypeStruct(shape, jnp.float32)
        ).shape
    return L.LayerView(ops=tuple(ops), input_shape=tuple(model.input_shape))
