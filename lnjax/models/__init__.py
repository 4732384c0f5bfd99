"""Flax models and their explicit layer view."""

from lnjax.models.layers import (
    AvgPool,
    Conv,
    Dense,
    Flatten,
    LayerView,
    MaxPool,
    Op,
    ReLU,
    apply_layers,
    apply_layers_batch,
    apply_op,
)
from lnjax.models.sequential import (
    AvgPoolSpec,
    ConvSpec,
    DenseSpec,
    FlattenSpec,
    MaxPoolSpec,
    ReLUSpec,
    Sequential,
    apply_fn,
    layer_view,
)
from lnjax.models.zoo import MODELS, get_model, mlp

__all__ = [
    "apply_fn",
    "AvgPool",
    "AvgPoolSpec",
    "Conv",
    "ConvSpec",
    "Dense",
    "DenseSpec",
    "Flatten",
    "FlattenSpec",
    "LayerView",
    "MODELS",
    "MaxPool",
    "MaxPoolSpec",
    "Op",
    "ReLU",
    "ReLUSpec",
    "Sequential",
    "apply_layers",
    "apply_layers_batch",
    "apply_op",
    "get_model",
    "layer_view",
    "mlp",
]
