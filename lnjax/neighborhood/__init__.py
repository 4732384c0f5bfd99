"""Layer-neighborhoods: layers of pixels by distance from the non-target object, and their boxes."""

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

__all__ = [
    "METRICS",
    "box_of",
    "distance_map",
    "eps_per_pixel",
    "layer_map",
    "layer_sizes",
    "layer_sum",
    "neighborhood_box",
    "num_layers",
]
