"""Maximal robust layer-neighborhoods: layers of pixels by distance from the non-target object,
their boxes, the MaRVeL-style optimizer, shrink weights, the per-layer and uniform binary-search
baselines, and the maximality certificate of a verified neighborhood."""

from lnjax.neighborhood.baseline import (
    binary_search,
    bisect,
    largest_robust,
    queries_per_layer,
    uniform_search,
)
from lnjax.neighborhood.certificate import (
    Bracket,
    Certificate,
    Falsifier,
    boundary,
    certify_maximality,
    make_falsifier,
)
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
    relative_gain,
    step_gradient,
)
from lnjax.neighborhood.problem import (
    CONVERGED,
    CountingOracle,
    Problem,
    Result,
    linear_norm,
    log_volume,
    make_problem,
    zero_pixels,
)
from lnjax.neighborhood.sensitivity import fixed_weights, layer_sensitivity, sensitivity_weights

__all__ = [
    "CONVERGED",
    "METRICS",
    "Bracket",
    "Certificate",
    "CountingOracle",
    "Falsifier",
    "Optimizer",
    "OptimizerConfig",
    "OptimizerState",
    "Problem",
    "Result",
    "binary_search",
    "bisect",
    "boundary",
    "box_of",
    "certify_maximality",
    "distance_map",
    "eps_per_pixel",
    "fixed_weights",
    "layer_map",
    "layer_sensitivity",
    "layer_sizes",
    "largest_robust",
    "layer_sum",
    "linear_norm",
    "log_volume",
    "make_falsifier",
    "make_optimizer",
    "make_problem",
    "neighborhood_box",
    "norm_gradient",
    "num_layers",
    "queries_per_layer",
    "relative_gain",
    "sensitivity_weights",
    "step_gradient",
    "uniform_search",
    "zero_pixels",
]
