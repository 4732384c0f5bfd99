"""lnjax.neighborhood.OptimizerConfig: today's defaults, and one clear ValueError per bad value."""

import math

import pytest

from lnjax.neighborhood import OptimizerConfig


def test_defaults():
    c = OptimizerConfig()
    assert (c.lam, c.lam_decay, c.lam_min, c.time_budget) == (0.99, 0.75, 0.01, None)
    # Convergence stops the search; the query cap is a safety net (it was 20, the stopping rule).
    assert c.max_queries >= 100 and (c.gain_tol, c.gain_window) == (1e-3, 5)


@pytest.mark.parametrize(
    "field, value",
    [
        ("pgd_restarts", 0),
        ("lr", math.nan),
        ("lam_decay", 1.5),
        ("pgd_step_size", -1),
        ("grow", 0.5),
        ("backoff", 0.0),
        ("eps_min", 2.0),
        ("first_shrink", 1.0),
        ("init_fraction", math.inf),
        ("max_queries", 0),
        ("time_budget", -1.0),
        ("norm", "l2"),
        ("shrink", "random"),
        ("temperature", 0.0),
        ("gain_tol", -0.1),
        ("gain_tol", math.inf),
        ("gain_window", 0),
        ("gain_window", 2.0),
        ("start", "random"),
        ("start_tol", 0.0),
    ],
)
def test_bad_value_is_one_line_naming_the_field(field, value):
    with pytest.raises(ValueError) as e:
        OptimizerConfig(**{field: value})
    msg = str(e.value)
    assert f"optimizer.{field}" in msg and "expected" in msg and "\n" not in msg


def test_make_optimizer_takes_the_config_and_checks_overrides():
    import numpy as np

    from lnjax.neighborhood import make_optimizer

    by_config = make_optimizer(OptimizerConfig(lr=0.25, lam_decay=0.5))
    by_keywords = make_optimizer(lr=0.25, lam_decay=0.5)
    sizes, w = np.ones(3), np.full(3, 0.5)
    a = by_config.update(by_config.init(np.full(3, 0.01)), False, np.zeros(3), sizes, w)
    b = by_keywords.update(by_keywords.init(np.full(3, 0.01)), False, np.zeros(3), sizes, w)
    np.testing.assert_array_equal(a.theta, b.theta)
    assert a.lam == b.lam == 0.99 * 0.5 and a.step == b.step == 0.125
    with pytest.raises(ValueError, match=r"optimizer\.pgd_restarts = 0"):
        make_optimizer(OptimizerConfig(), pgd_restarts=0)
