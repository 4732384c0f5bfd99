"""lnjax.verify.VerifierConfig: today's defaults, and one clear ValueError per bad value."""

import dataclasses
import math

import pytest

from lnjax.verify import STAGES, VerifierConfig


def test_defaults_are_valid_and_frozen():
    c = VerifierConfig()
    assert c.stages == STAGES and c.pgd_restarts == 4 and c.time_limit == 60.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.pgd_steps = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "field, value",
    [
        ("pgd_restarts", 0),
        ("pgd_steps", 0),
        ("pgd_step_size", -1.0),
        ("pgd_step_size", math.nan),
        ("time_limit", math.inf),
        ("time_limit", 0.0),
        ("atol", -1e-3),
        ("milp_mode", "fast"),
        ("stages", ("pgd", "magic")),
        ("stages", "pgd,crown"),
        ("pgd_quick_restarts", 0),
        ("bound_chunk", 0),
        ("alpha_lr", math.nan),
        ("milp_max_unstable", -1),
        ("cbc_fraction", 0.0),
        ("pgd_steps", 2.5),
        ("alpha_intermediate", 1),
    ],
)
def test_bad_value_is_one_line_naming_the_field(field, value):
    with pytest.raises(ValueError) as e:
        VerifierConfig(**{field: value})
    msg = str(e.value)
    assert f"verifier.{field}" in msg and "expected" in msg and "\n" not in msg
