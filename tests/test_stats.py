"""Confidence intervals: Wilson against its textbook values, t intervals against their coverage."""

import math

import numpy as np
import pytest

from lnjax import stats


def test_wilson_matches_published_values():
    # Brown, Cai & DasGupta (2001) / Newcombe (1998), example 1: 81 of 263 -> [0.2553, 0.3662].
    iv = stats.wilson_interval(81, 263)
    assert iv.value == pytest.approx(81 / 263)
    assert (iv.low, iv.high) == pytest.approx((0.2553, 0.3662), abs=5e-4)
    # 7 of 20 (the detector's old false-negative rate): about 18-57 %.
    iv = stats.wilson_interval(7, 20)
    assert (iv.low, iv.high) == pytest.approx((0.181, 0.567), abs=2e-3)
    # at the edges the interval stays in [0, 1] and is not degenerate
    zero, full = stats.wilson_interval(0, 50), stats.wilson_interval(50, 50)
    assert zero.low == 0 and 0.05 < zero.high < 0.08 and full.high == 1 and 0.92 < full.low < 0.95


def test_wilson_rejects_bad_counts_and_reports_empty():
    with pytest.raises(ValueError, match="successes"):
        stats.wilson_interval(5, 3)
    assert math.isnan(stats.wilson_interval(0, 0).value)
    assert stats.wilson_interval(0, 0).as_list() == [None, None]


def test_mean_interval_is_the_t_interval_and_covers():
    v = [1.0, 2.0, 3.0, 4.0]  # mean 2.5, sd 1.29, t_0.975(3) = 3.182 -> half 2.054
    iv = stats.mean_interval(v)
    assert (iv.value, iv.low, iv.high, iv.n) == pytest.approx((2.5, 0.4457, 4.5543, 4), abs=1e-3)
    rng = np.random.default_rng(0)
    covered = [
        (lambda i: i.low <= 0.0 <= i.high)(stats.mean_interval(rng.normal(size=8))) for _ in range(2000)
    ]
    assert np.mean(covered) == pytest.approx(0.95, abs=0.015)
    assert stats.mean_interval([np.inf, 3.0]).n == 1
