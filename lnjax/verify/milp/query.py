"""A query (one box, its bounds and the spec rows), the solve options, the result and what it proves."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from lnjax.verify.milp.network import MilpNetwork, nonlinear_op_indices

if TYPE_CHECKING:
    from jax.typing import ArrayLike

    from lnjax.bounds.interval import LayerBounds
    from lnjax.specs import SpecRows


class MilpQuery(NamedTuple):
    """One question about one box.

    Attributes:
      lower, upper: [n_in] float64, the input box (the verifier's checked box, already clipped to
        its input domain).
      pre_bounds: per nonlinear layer (in order), (l, u) of its input, flattened float64.
      c, offset, k: the spec rows (`specs.SpecRows`): margin = k-th smallest of c @ z + offset.
      row_lower, row_upper: [M] sound bounds of c @ z + offset over the box.
    """

    lower: np.ndarray
    upper: np.ndarray
    pre_bounds: tuple[tuple[np.ndarray, np.ndarray], ...]
    c: np.ndarray
    offset: np.ndarray
    k: int
    row_lower: np.ndarray
    row_upper: np.ndarray


class _MilpOptionFields(NamedTuple):
    mode: str = "sign"
    cutoff: float = 0.0
    time_limit: float = 60.0
    threads: int = 1
    emphasis: int = 0
    lp_tighten: bool = False
    lp_tighten_seconds: float = 30.0
    bound_slack: float = 1e-5
    inline_max_terms: int = 1
    max_solutions: int = 10
    seed: int = 0
    solver: str = "cbc"
    stop_by: float = math.inf


class MilpOptions(_MilpOptionFields):
    """How to solve. A NamedTuple whose `solver` is checked whenever one is made (also by
    `_replace` and unpickling): an unknown name is a ValueError naming the known ones, "highs"
    without highspy an ImportError naming the `highs` extra.

    Attributes:
      mode: "sign" (cutoff, stop at the first solution) or "optimise" (to optimality / time limit).
      cutoff: sign mode: solutions with objective (margin) above it are pruned; infeasible ⇒
        margin ≥ cutoff everywhere in the box (up to the solver's tolerances, ~1e-6).
      time_limit: the backend's own (soft) time limit in seconds (CBC or HiGHS); the hard limit is
        the worker's deadline.
      threads: solver threads.
      emphasis: python-mip SearchEmphasis value (0 default, 1 feasibility, 2 optimality); CBC only.
      lp_tighten: tighten unstable pre-activations (beyond the first nonlinear layer) by LPs over
        the relaxation of the layers before them.
      lp_tighten_seconds: budget for LP tightening (stops early, keeping bounds found so far).
      bound_slack: bounds are widened by slack·(1 + |v|) before use (float32 bounds vs float64 MILP).
      inline_max_terms: identity ReLUs whose row has at most this many terms are inlined.
      max_solutions: at most this many saved solutions are returned (optimise mode).
      seed: the solver's random seed.
      solver: the MILP backend (`solver.SOLVERS`): "cbc", CBC through python-mip; "highs", HiGHS
        through highspy (`pip install 'lnjax[highs]'`).
      stop_by: a `time.monotonic()` time (system-wide on Linux, so valid in the worker process) by
        which the backend should have stopped: its own limit is also capped at what is left until
        then when the solve starts (`MilpWorker.solve` sets it `RESERVE_S` before the deadline, so
        the network's transfer and the worker's start count against the budget too).
    """

    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls, *args, **kwargs)
        from lnjax.verify.milp.solver import check_solver  # solver.py imports this module

        check_solver(self.solver)
        return self

    @classmethod
    def _make(cls, iterable):  # what `_replace` and copying build through: checked as well
        return cls(*iterable)


class MilpResult(NamedTuple):
    """What a solve produced. Only `infeasible` (sign mode) and `optimal` are proofs.

    Attributes:
      status: "infeasible" (no point with margin below the cutoff), "optimal", "feasible"
        (a solution, not proven optimal), "no_solution" (stopped, nothing found),
        "timeout" (killed at the hard deadline), "error".
      objective: the MILP objective of the best solution (the margin as the MILP sees it).
      bound: the solver's proven lower bound (meaningful only when `status == "optimal"`, and then
        only up to the 1e-4 relative MIP gap: CBC reports its objective as the bound when it stops
        at the gap).
      solutions: [(x [n_in] float64, objective)], best first; x as the solver returned it (not
        clipped). The first is the best solution found; for a worse one the objective (the MILP's
        s) may exceed the margin at its x, never fall below it.
      num_binaries, num_columns, num_rows: model size.
      unstable: unstable units per nonlinear layer as encoded (after slack and LP tightening).
      build_s, tighten_s, solve_s: seconds spent in the worker.
      wall_s: seconds from submission to answer, measured by the caller.
      message: error text or notes.
    """

    status: str
    objective: float | None = None
    bound: float | None = None
    solutions: tuple[tuple[np.ndarray, float], ...] = ()
    num_binaries: int = 0
    num_columns: int = 0
    num_rows: int = 0
    unstable: tuple[int, ...] = ()
    build_s: float = 0.0
    tighten_s: float = 0.0
    solve_s: float = 0.0
    wall_s: float = 0.0
    message: str = ""


MIP_REL_GAP = 1e-4
"""Both backends stop at this relative gap ("optimal" = within it; python-mip's default for CBC)."""


def proven_range(result: MilpResult, options: MilpOptions) -> tuple[float, float]:
    """What a result shows about the minimum margin over the box: (lower, upper), by the trust rules of
    `lnjax.verify.verdict` (up to the solvers' tolerances, ~1e-6).

    A solution's objective is an upper bound. Lower bounds come only from proofs: sign-mode
    "infeasible" (the cutoff), an "optimal" solve's bound (in sign mode with binaries, at most the
    cutoff, as the verifier reads it; proven only up to `MIP_REL_GAP`: CBC reports its objective as
    the bound when it stops at the gap). Optimise-mode "infeasible" claims an empty box (lower =
    inf). A time-limited solve proves nothing below. The ranges two sound backends give for the same
    query overlap (`contradict`).
    """
    lower, upper = -math.inf, math.inf
    if result.status == "infeasible":
        lower = float(options.cutoff) if options.mode == "sign" else math.inf
    if result.status in ("optimal", "feasible") and result.objective is not None:
        upper = float(result.objective)
    if result.status == "optimal" and result.bound is not None:
        sign_with_cutoff = options.mode == "sign" and result.num_binaries > 0
        lower = min(result.bound, options.cutoff) if sign_with_cutoff else float(result.bound)
    return lower, upper


def contradict(a: MilpResult, b: MilpResult, options: MilpOptions, *, atol: float = 1e-5) -> bool:
    """Whether two results for the same query (and `options`, up to the backend) cannot both be
    right: their `proven_range`s are disjoint, or one is empty by itself, by more than atol + the
    relative MIP gap of the largest finite end."""
    (la, ua), (lb, ub) = proven_range(a, options), proven_range(b, options)
    scale = max((abs(v) for v in (la, ua, lb, ub) if math.isfinite(v)), default=0.0)
    return max(la, lb) > min(ua, ub) + atol + MIP_REL_GAP * scale


def interval_row_lower(rows: SpecRows, logit_bounds: tuple[ArrayLike, ArrayLike]) -> np.ndarray:
    """Lower bounds [M] of c @ z (without the offset) from elementwise logit bounds ([K] each)."""
    zl, zu = (np.asarray(v, np.float64).ravel() for v in logit_bounds)
    c = np.asarray(rows.c, np.float64)
    return np.maximum(c, 0.0) @ zl + np.minimum(c, 0.0) @ zu


def make_query(
    net: MilpNetwork,
    lower: ArrayLike,
    upper: ArrayLike,
    bounds: LayerBounds,
    rows: SpecRows,
    row_lower: ArrayLike | None = None,
) -> MilpQuery:
    """Host data for one query.

    Args:
      net: the network (`network_from_view`).
      lower, upper: [*input_shape] the box, already clipped to the input domain.
      bounds: `lnjax.bounds.LayerBounds` over that box (output of every op).
      rows: the spec's `SpecRows`.
      row_lower: optional [M] proven lower bounds of c @ z (e.g. `crown_spec_lower`); combined with
        the interval bound from `bounds[-1]`.
    """
    lo64 = np.asarray(lower, np.float64).ravel()
    hi64 = np.asarray(upper, np.float64).ravel()
    pre = []
    for i in nonlinear_op_indices(net):
        if i == 0:
            pre.append((lo64, hi64))
        else:
            pre.append(tuple(np.asarray(v, np.float64).ravel() for v in bounds[i - 1]))
    zl, zu = (np.asarray(v, np.float64).ravel() for v in bounds[-1])
    c = np.asarray(rows.c, np.float64)
    off = np.asarray(rows.offset, np.float64)
    low = interval_row_lower(rows, bounds[-1])
    if row_lower is not None:
        low = np.maximum(low, np.asarray(row_lower, np.float64))
    return MilpQuery(
        lower=lo64,
        upper=hi64,
        pre_bounds=tuple(pre),
        c=c,
        offset=off,
        k=int(rows.k),
        row_lower=low + off,
        row_upper=np.maximum(c, 0.0) @ zu + np.minimum(c, 0.0) @ zl + off,
    )
