"""Pure matplotlib functions: results in, a Figure out (callers save it; nothing is shown)."""

from lnjax.plots.neighborhood import eps_by_layer, heatmaps, panel
from lnjax.plots.training import training_curves

__all__ = ["eps_by_layer", "heatmaps", "panel", "training_curves"]
