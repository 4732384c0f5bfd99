"""Verdicts: what the verifier may claim, and what it carries for the optimizer.

Trust rules (enforced by `verifier`, documented here):
- ROBUST only when a proven lower bound on the spec margin over the whole box exceeds
  `safety = atol + rtol · max(1, ‖z(centre)‖∞)` (defaults 1e-4, 1e-4). The bound comes from
  interval / CROWN / α-CROWN rows (float32 JAX; must exceed `safety`) or from CBC: in the sign
  question the cutoff is `safety`, and the model proven infeasible (or solved to optimality with
  its optimum above the cutoff) shows margin ≥ safety up to CBC's tolerances (~1e-6); solved to
  optimality ("optimise" mode), CBC's bound less the relative MIP gap must exceed `safety`. The
  margin covers float32 rounding of the JAX bounds and CBC's feasibility/integrality tolerances
  (1e-6, amplified by big-M coefficients). A time-limited solve is never a proof, whatever its bound says.
- NOT_ROBUST only with a counterexample: a point clipped into the box whose margin, evaluated by
  the JAX model (`apply_layers`, float32), is ≤ 0. Ties count as violations: top-k holds iff
  fewer than k competitors have z_j ≥ z_t, so margin = 0 already breaks it.
- UNKNOWN otherwise (time-out, solver error, a MILP "solution" the network does not confirm).

References:
  Tjeng, Xiao & Tedrake, Evaluating Robustness of Neural Networks with Mixed Integer Programming,
  ICLR 2019 (MIPVerify).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import numpy as np

from lnjax.verify.milp.query import MIP_REL_GAP


class Status(str, enum.Enum):
    """The answer to "does the property hold on the whole box?"."""

    ROBUST = "robust"
    NOT_ROBUST = "not_robust"
    UNKNOWN = "unknown"


@dataclasses.dataclass
class VerifyStats:
    """How an answer was reached.

    Attributes:
      decided_by: the stage that decided ("pgd", "interval", "crown", "alpha_crown",
        "alpha_intermediate", "bab", "milp"),
        or None for UNKNOWN.
      time_s: seconds per stage, in the order run (plus "total").
      unstable: unstable ReLUs per ReLU layer after each bound method ("interval", "crown", ...).
      margin_lower: the proven margin lower bound of each bound stage.
      binaries: binaries in the MILP (0 if no MILP was built).
      milp_status: the MILP result's status ("infeasible", "optimal", "feasible", "no_solution",
        "timeout", "error") or None.
      milp: other MILP facts (columns, rows, unstable units as encoded, build/solve seconds).
      safety: the safety margin used for ROBUST.
      bab: branch-and-bound facts (domains bounded, batches, largest queue and depth, MILP leaves
        tried and closed, leaves nothing could close, domains open at the end, box attacks run,
        spec-row groups run and proven, the open bound where it stopped); empty if it did not run.
      notes: anything surprising (e.g. a MILP solution the JAX model does not confirm).
    """

    decided_by: str | None = None
    time_s: dict[str, float] = dataclasses.field(default_factory=dict)
    unstable: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    margin_lower: dict[str, float] = dataclasses.field(default_factory=dict)
    binaries: int = 0
    milp_status: str | None = None
    milp: dict[str, Any] = dataclasses.field(default_factory=dict)
    safety: float = 0.0
    bab: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Verdict:
    """The verifier's answer for one box and one spec.

    Attributes:
      status: ROBUST / NOT_ROBUST / UNKNOWN.
      proven_bound: the best proven lower bound on the margin over the box (None if none).
      best_objective: the smallest margin the JAX model confirmed at any point found (attack or
        solver), i.e. an upper bound on the true minimum (None if nothing was evaluated).
      counterexample: [*input_shape] float32 inside the box with margin ≤ 0 (NOT_ROBUST only).
      weakest_points: [(x [*input_shape], margin)] — the solver's solutions and the best attack
        point, clipped into the box, with their JAX margins, smallest margin first.
      stats: `VerifyStats`.
    """

    status: Status
    proven_bound: float | None = None
    best_objective: float | None = None
    counterexample: np.ndarray | None = None
    weakest_points: list[tuple[np.ndarray, float]] = dataclasses.field(default_factory=list)
    stats: VerifyStats = dataclasses.field(default_factory=VerifyStats)

    @property
    def robust(self) -> bool:
        return self.status is Status.ROBUST

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly summary (no arrays)."""
        return {
            "status": self.status.value,
            "proven_bound": self.proven_bound,
            "best_objective": self.best_objective,
            "has_counterexample": self.counterexample is not None,
            "weakest_margins": [m for _, m in self.weakest_points],
            "stats": dataclasses.asdict(self.stats),
        }


def milp_proof(result: Any, mode: str, safety: float) -> tuple[float | None, bool]:
    """What a MILP result proves (the trust rule above): (proven margin bound or None, margin > safety).

    Sign mode: infeasible under the cutoff `safety` proves margin ≥ safety; an optimal solution above
    the cutoff proves it too (the search ended without a point below the cutoff: every node whose LP
    bound was below it was explored), and for a pure LP (no binaries, where CBC ignores the cutoff)
    the bound itself is proven. Optimise mode: the optimal bound is proven up to the relative MIP gap
    (`MIP_REL_GAP`: CBC reports its objective as the bound when it stops at the gap), so the bound
    less the gap is what is proven (an infeasible optimise-mode model means unsound input bounds:
    nothing is proven). A bound proves the spec when strictly above `safety`. A time-limited or failed solve
    proves nothing. `result`: a `milp.MilpResult`.
    """
    if result.status == "infeasible":
        return (safety, True) if mode == "sign" else (None, False)
    if result.status != "optimal" or result.bound is None:
        return None, False
    if result.num_binaries == 0:  # an LP solved to optimality: no MIP gap
        return result.bound, result.bound > safety
    if mode == "optimise":
        proven = result.bound - MIP_REL_GAP * abs(result.bound)
        return proven, proven > safety
    return min(result.bound, safety), result.objective is not None and result.objective > safety
