"""Maximal robust layer-neighborhoods: layers of pixels by distance from the non-target object,
their boxes, the MaRVeL-style optimizer, shrink weights and the per-layer binary-search baseline."""

from lnjax.neighborhood.baseline import binary_search, queries_per_layer
from lnjax.neighborhood.config import OptimizerConfig
from lnjax.neighborhood.layers import (
    METRICS,
    box_of,
    distance_map,
    eps_per_pixel,
    layer_map,
    layer_sizes,
    layer_sum,
    neighborhood_box,
    num_layers,
)
from lnjax.neighborhood.optimizer import (
    Optimizer,
    OptimizerState,
    make_optimizer,
    norm_gradient,
    step_gradient,
)
from lnjax.neighborhood.problem import CountingOracle, Problem, Result, linear_norm, log_volume, make_problem
from lnjax.neighborhood.sensitivity import fixed_weights, layer_sensitivity, sensitivity_weights

__all__ = [
    "METRICS",
    "CountingOracle",
    "Optimizer",
    "OptimizerConfig",
    "OptimizerState",
    "Problem",
    "Result",
    "binary_search",
    "box_of",
    "distance_map",
    "eps_per_pixel",
    "fixed_weights",
    "layer_map",
    "layer_sensitivity",
    "layer_sizes",
    "layer_sum",
    "linear_norm",
    "log_volume",
    "make_optimizer",
    "make_problem",
    "neighborhood_box",
    "norm_gradient",
    "num_layers",
    "queries_per_layer",
    "sensitivity_weights",
    "step_gradient",
]
