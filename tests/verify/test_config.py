"""lnjax.verify.VerifierConfig: today's defaults, and one clear ValueError per bad value."""

import dataclasses
import math

import pytest

from lnjax.verify import STAGES, BabOptions, VerifierConfig
from lnjax.verify.config import GROUPS


def test_defaults_are_valid_and_frozen():
    c = VerifierConfig()
    assert c.stages == STAGES and c.pgd.restarts == 4 and c.time_limit == 60.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.pgd.steps = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.bab = BabOptions()  # type: ignore[misc]


@pytest.mark.parametrize(
    "field, value",
    [
        ("pgd.restarts", 0),
        ("pgd.steps", 0),
        ("pgd.step_size", -1.0),
        ("pgd.step_size", math.nan),
        ("time_limit", math.inf),
        ("time_limit", 0.0),
        ("atol", -1e-3),
        ("milp.mode", "fast"),
        ("stages", ("pgd", "magic")),
        ("stages", "pgd,crown"),
        ("pgd.quick_restarts", 0),
        ("pgd.odi_steps", -1),
        ("bounds.chunk", 0),
        ("bounds.alpha_lr", math.nan),
        ("milp.max_unstable", -1),
        ("milp.time_fraction", 0.0),
        ("pgd.steps", 2.5),
        ("bounds.intermediate", 1),
        # issue 15 (item 6): once accepted by make_verifier
        ("atol", -1),
        ("bounds.alpha_lr", -1),
        ("time_limit", -1.0),
        ("stages", "pgd,milp"),
        ("stages", None),
        ("stages", ("pgd", 3)),
        ("input_domain", (1.0, 0.0)),
        ("input_domain", (0.0, math.inf)),
        ("input_domain", [0.0, 1.0]),
        ("bab.attack_targets", -1),
        ("bab.attack_restarts", 0),
        ("bab.attack_steps", 1.5),
        ("bab.attack_share", 1.5),
    ],
)
def test_bad_value_is_one_line_naming_the_field(field, value):
    group, _, name = field.rpartition(".")
    with pytest.raises(ValueError) as e:
        VerifierConfig(**{field: value}) if not group else GROUPS[group](**{name: value})
    msg = str(e.value)
    assert f"verifier.{field}" in msg and "expected" in msg and "\n" not in msg


def test_stages_string_is_named_whole_not_split_into_characters():
    with pytest.raises(ValueError) as e:
        VerifierConfig(stages="pgd,milp")  # type: ignore[arg-type]
    assert "verifier.stages = 'pgd,milp'; expected a tuple of names" in str(e.value)
    assert "unknown" not in str(e.value)


def test_stages_may_be_any_iterable_of_names():
    assert VerifierConfig(stages=["milp", "pgd"]).stages == ("milp", "pgd")  # type: ignore[arg-type]
    assert VerifierConfig(stages=()).stages == ()  # interval bounds only
