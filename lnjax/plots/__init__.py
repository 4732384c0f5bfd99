"""Pure matplotlib functions: results in, a Figure out (callers save it; nothing is shown)."""

from lnjax.plots.boundary import boundary_distances, purity_curves
from lnjax.plots.neighborhood import eps_by_layer, heatmaps, panel
from lnjax.plots.training import training_curves

__all__ = ["boundary_distances", "eps_by_layer", "heatmaps", "panel", "purity_curves", "training_curves"]
