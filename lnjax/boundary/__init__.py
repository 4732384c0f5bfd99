"""Decision-boundary analysis (seed 003, SPEC §3): region classification, boundary distances along
random directions, adjacent-class purity, and the detector built on them. Pure JAX; the functions
that draw random numbers take a typed key first.

Typical use:
  classify = make_region_classifier(tau=0.3, samples=100)
  region = classify(key, apply_fn, params, x)                      # RegionVotes(label, counts)
  dirs = random_directions(key_dirs, x.shape[1:], 784, antipodal=True)
  b = make_boundary_distances(mode="bisect")(apply_fn, params, x, dirs)  # BoundaryDistances
  purity = adjacent_purity(b.adjacent, num_classes=10)             # [B, 10]
  f = detector_features(b.distance, b.adjacent, num_classes=10)
"""

from lnjax.attacks.directions import random_directions  # the one direction helper, re-exported
from lnjax.boundary.detector import (
    MIN_DISTANCES,
    PURITY_K,
    BoundaryDetector,
    DetectorFeatures,
    DetectorFit,
    DetectorRates,
    detect,
    detector_features,
    detector_rates,
    init_detector,
    train_detector,
)
from lnjax.boundary.distances import (
    MODES,
    BoundaryDistanceFn,
    BoundaryDistances,
    bisection_steps,
    grid,
    make_boundary_distances,
)
from lnjax.boundary.purity import adjacent_purity, class_counts
from lnjax.boundary.region import SAMPLES, RegionClassifier, RegionVotes, make_region_classifier

__all__ = [
    "MIN_DISTANCES",
    "MODES",
    "PURITY_K",
    "SAMPLES",
    "BoundaryDetector",
    "BoundaryDistanceFn",
    "BoundaryDistances",
    "DetectorFeatures",
    "DetectorFit",
    "DetectorRates",
    "RegionClassifier",
    "RegionVotes",
    "adjacent_purity",
    "bisection_steps",
    "class_counts",
    "detect",
    "detector_features",
    "detector_rates",
    "grid",
    "init_detector",
    "make_boundary_distances",
    "make_region_classifier",
    "random_directions",
    "train_detector",
]
