"""lnjax: robustness of image classifiers around their inputs, in JAX.

Subpackages (data flows top to bottom; a room never imports from one below it):
  data, models, train, attacks, bounds, verify, neighborhood, boundary, plots.
"""

__version__ = "0.1.0"
