"""lnjax.neighborhood.OptimizerConfig: today's defaults, and one clear ValueError per bad value."""

import math

import pytest

from lnjax.neighborhood import OptimizerConfig


def test_defaults():
    c = OptimizerConfig()
    assert (c.lam, c.lam_decay, c.lam_min, c.max_queries, c.time_budget) == (0.99, 0.75, 0.01, 20, None)


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
    ],
)
def test_bad_value_is_one_line_naming_the_field(field, value):
    with pytest.raises(ValueError) as e:
        OptimizerConfig(**{field: value})
    msg = str(e.value)
    assert f"optimizer.{field}" in msg and "expected" in msg and "\n" not in msg
