"""95 % confidence intervals for the experiments' claims: proportions (Wilson) and means (Student t).

NumPy, SciPy (t quantiles; installed with jax) and the standard library; every function returns
Python floats (JSON as they are).

References:
  Wilson, Probable Inference, the Law of Succession, and Statistical Inference, JASA 1927.
  Brown, Cai & DasGupta, Interval Estimation for a Binomial Proportion, Statistical Science 2001
    (why Wilson and not the normal approximation at small counts or rates near 0 and 1).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import NamedTuple

import numpy as np

__all__ = ["Interval", "mean_interval", "wilson_interval"]


class Interval(NamedTuple):
    """An estimate with its confidence interval (low ≤ value ≤ high); None-free: n = 0 gives NaNs."""

    value: float
    low: float
    high: float
    n: int

    def as_list(self) -> list[float | None]:
        """[low, high] with None for NaN (JSON has no NaN)."""
        return [None if math.isnan(v) else v for v in (self.low, self.high)]


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence = {confidence}; expected a level in (0, 1), e.g. 0.95")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> Interval:
    """The proportion successes / n and its Wilson score interval.

    Args:
      successes: count in 0..n; n: trials (0 gives NaN for the value and both ends).
      confidence: the interval's level.
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 ≤ successes ≤ n, got successes = {successes}, n = {n}")
    z = _z(confidence)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), n)


def mean_interval(values: np.ndarray | list[float], *, confidence: float = 0.95) -> Interval:
    """The mean of finite `values` and its Student t interval (n < 2: the mean alone, NaN ends).

    Non-finite values are dropped (n counts the rest)."""
    _z(confidence)
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, 1)
    import scipy.stats  # a dependency of jax; imported here: ~0.8 s that every run and Ray actor would pay

    half = float(scipy.stats.t.ppf(0.5 + confidence / 2, n - 1)) * float(v.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)
