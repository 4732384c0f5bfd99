"""Sequential Flax (Linen) networks described by layer specs, and their layer view.

A model is a tuple of small frozen specs (defined with their ops in `lnjax.models.ops`: each spec
knows its Flax layer, `spec.flax(x, name)`, and its layer-view op, `spec.to_op(params, in_shape)`).
The same specs drive `Sequential.__call__` (Flax) and
`layer_view` (plain arrays for bounds and the MILP), so the two cannot drift apart; tests check
they agree within 1e-5 on every model of the zoo.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import flax.linen as nn
import jax
import jax.numpy as jnp

from lnjax.models import layers as L
from lnjax.models.ops import (
    AffineSpec,
    AvgPoolSpec,
    ConvSpec,
    DenseSpec,
    FlattenSpec,
    MaxPoolSpec,
    ReLUSpec,
    Spec,
)
from lnjax.types import Params

__all__ = [
    "AffineSpec",
    "AvgPoolSpec",
    "ConvSpec",
    "DenseSpec",
    "FlattenSpec",
    "MaxPoolSpec",
    "ReLUSpec",
    "Sequential",
    "Spec",
    "apply_fn",
    "layer_view",
]


class Sequential(nn.Module):
    """A feed-forward network. x: [B, H, W, C] in [0, 1] -> logits [B, K].

    Parameters are named `layer_{i}` after the spec index i of each Conv/Dense.
    """

    specs: tuple[Spec, ...]
    input_shape: tuple[int, ...]  # per example, e.g. (64, 64, 1); used by `layer_view`

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, s in enumerate(self.specs):
            x = s.flax(x, name=f"layer_{i}")
        return x

    def init_params(self, key: jax.Array) -> Params:
        """Initial parameters for this model's input shape."""
        return self.init(key, jnp.zeros((1, *self.input_shape), jnp.float32))["params"]


_APPLY_FNS: dict[Sequential, Callable[[Params, jax.Array], jax.Array]] = {}


def apply_fn(model: Sequential) -> Callable[[Params, jax.Array], jax.Array]:
    """`apply(params, x) -> logits` of a model (x: [B, *input_shape]); one function object per
    architecture (models are frozen and compare by value), so jitted attacks, region classifiers and
    boundary scans that take it as a static argument compile once per architecture."""
    if model not in _APPLY_FNS:
        _APPLY_FNS[model] = lambda params, x: cast(jax.Array, model.apply({"params": params}, x))
    return _APPLY_FNS[model]


def layer_view(model: Sequential, params: Params) -> L.LayerView:
    """The model with its params as an explicit sequence of ops (see `layers`)."""
    ops: list[L.Op] = []
    shape = tuple(model.input_shape)
    for i, s in enumerate(model.specs):
        name = f"layer_{i}"
        op = s.to_op(params[name] if name in params else None, shape)
        ops.append(op)
        shape = L.op_output_shape(op, shape)
    return L.LayerView(ops=tuple(ops), input_shape=tuple(model.input_shape))
