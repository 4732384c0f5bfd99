"""The verifier's cost model: predicted seconds of its bound stages, from comparable earlier runs.

A compiled JAX stage cannot be interrupted, so before a bound stage starts its cost is predicted
from its last timed run in this verifier (seconds per unit of work, scaled to this query's work;
the work of a bound stage is the number of unstable neurons it has to bound, +1 for the logits).
Time grows with work but not proportionally (fixed costs: dispatch, the walk over the layers, the
spec rows), so scaling up overestimates by at most the factor and scaling down underestimates. A
run predicts a query's cost only if it did at least 1/`SCALE_UP` of that query's work: far beyond
the factor the guess is mostly multiplied fixed cost (a zero-width warm-up box bounds no neuron,
and its CROWN time scaled to the quickstart CNN's queries was ~500x too high, so CROWN was never
started and never re-timed). Without a comparable run there is no prediction and the stage runs;
every run replaces its stage's estimate.
"""

from __future__ import annotations

from typing import NamedTuple

SCALE_UP = 4  # a run predicts a query's cost only if it did at least 1/SCALE_UP of that query's work


class Run(NamedTuple):
    """A timed run of a bound stage: `seconds` for `units` of work (`CostModel.work`)."""

    seconds: float
    units: int


def scaled(run: Run | None, units: int) -> float | None:
    """The run's seconds scaled to `units` of work, or None when there is no run or it did less than
    1/SCALE_UP of that work (see the module docstring)."""
    if run is None or units > SCALE_UP * run.units:
        return None
    return run.seconds * units / run.units


class CostModel:
    """Predicted seconds of the bound stages, from each stage's last timed run.

    `SEEDED` are the stages `warm_up` times a second time (after compiling them) to seed the
    predictions; every query's run of a bound stage is recorded too and replaces the estimate.
    "alpha_intermediate" not yet timed at this scale is predicted from CROWN's run, one CROWN pass
    per Adam step (+1).
    """

    SEEDED = ("crown", "alpha_intermediate")

    def __init__(self, alpha_intermediate_steps: int):
        self.runs: dict[str, Run] = {}
        self.alpha_intermediate_steps = alpha_intermediate_steps

    @staticmethod
    def work(name: str, unstable_after_interval: tuple[int, ...]) -> int:
        """Backward-pass work of bound stage `name`: the unstable neurons it refines (+1: the logits).

        `unstable_after_interval`: unstable ReLUs per ReLU layer under interval bounds. Spec-only
        α-CROWN ("alpha_crown") bounds only the spec rows: 1 unit whatever the box.
        """
        if name == "alpha_crown":
            return 1
        return 1 + sum(unstable_after_interval[1:])  # the first layer is exact under interval bounds

    def record(self, name: str, seconds: float, units: int) -> None:
        """A run of stage `name`: `seconds` for `units` of work (replaces its previous run)."""
        self.runs[name] = Run(seconds, units)

    def predict(self, name: str, units: int) -> float | None:
        """Seconds of stage `name` on `units` of work; None: no comparable run (then it runs)."""
        own = scaled(self.runs.get(name), units)
        if own is not None or name != "alpha_intermediate":
            return own
        # Not timed at this scale: from CROWN's run (this query's, if it ran), one pass per step.
        crown = scaled(self.runs.get("crown"), units)
        return None if crown is None else crown * (self.alpha_intermediate_steps + 1)


__all__ = ["SCALE_UP", "CostModel", "Run", "scaled"]
