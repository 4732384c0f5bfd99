"""Pure matplotlib functions: results in, a Figure out (callers save it; nothing is shown)."""

from lnjax.plots.boundary import boundary_distances, purity_curves
from lnjax.plots.curves import Curve, rate_curves
from lnjax.plots.neighborhood import eps_by_distance, eps_by_layer, heatmaps, panel
from lnjax.plots.training import training_curves

__all__ = [
    "Curve",
    "boundary_distances",
    "eps_by_distance",
    "eps_by_layer",
    "heatmaps",
    "panel",
    "purity_curves",
    "rate_curves",
    "training_curves",
]
