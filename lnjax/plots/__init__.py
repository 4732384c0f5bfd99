"""Pure matplotlib functions: results in, a Figure out (callers save it; nothing is shown)."""

from lnjax.plots.training import training_curves

__all__ = ["training_curves"]
