"""The solver seam: `solve` asks a `Solver` (a MILP backend) to build, optimise and read one model.

`solve(net, query, options)` holds what every backend shares (timing, the sign / optimise modes,
the `MilpResult`); the backend named by `options.solver` holds what is its own. Two backends
(`SOLVERS`), both over the model `encoding.encode` builds:

- "cbc": `CbcSolver`, CBC through python-mip (a core dependency);
- "highs": `HighsSolver`, HiGHS directly through highspy (the optional `highs` extra). python-mip 2.0
  has a HiGHS interface, but it dlopens highspy's extension module for HiGHS's C API, which that
  module (highspy 1.16, Linux) does not export, so it cannot load HiGHS without the separate
  highsbox package; it also refuses a search emphasis (our encoder sets one) and keeps one solution.
  highspy gives the model in whole CSR blocks and the improving solutions.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numpy as np

from lnjax.verify.milp.encoding import _Encoder, _HighsEncoder, encode, import_highspy
from lnjax.verify.milp.network import MilpNetwork
from lnjax.verify.milp.query import MilpOptions, MilpQuery, MilpResult


class BuildInfo(NamedTuple):
    """What building a model reports: its size and the encoding's facts (`MilpResult` fields)."""

    num_binaries: int
    num_columns: int
    num_rows: int
    unstable: tuple[int, ...]
    tighten_s: float


class Solver(Protocol):
    """What `solve` needs from a MILP backend (one model per query: built, optimised once, read).

    - `build(net, query, options, deadline=...)`: encodes the query (LP tightening stops at
      `deadline`, a `time.monotonic()` time); raises on failure.
    - `optimise(seconds, cutoff=, first_solution=, pool_size=)`: searches for at most `seconds`.
      Sign mode passes `cutoff` (solutions with a larger objective are pruned) and
      `first_solution=True` (stop at the first one); optimise mode passes `pool_size` (solutions
      kept). Returns (status, detail): status one of "infeasible", "optimal", "feasible",
      "no_solution", "error"; detail the backend's own status text.
    - After "optimal" or "feasible": `objective()` of the best solution, `bound()` (the proven lower
      bound, or None), `num_solutions()`, and `solution(i)` -> (x [n_in] float64, objective), best
      first, x the input point as the backend returned it (fixed pixels at `query.lower`).
    """

    def build(
        self, net: MilpNetwork, query: MilpQuery, options: MilpOptions, *, deadline: float
    ) -> BuildInfo: ...

    def optimise(
        self,
        seconds: float,
        *,
        cutoff: float | None = None,
        first_solution: bool = False,
        pool_size: int | None = None,
    ) -> tuple[str, str]: ...

    def objective(self) -> float: ...

    def bound(self) -> float | None: ...

    def num_solutions(self) -> int: ...

    def solution(self, i: int) -> tuple[np.ndarray, float]: ...


class CbcSolver:
    """CBC through python-mip, over the model `encode` builds (`_Encoder`: a CBC `mip.Model`)."""

    _enc: _Encoder
    _x_cols: np.ndarray
    _lower: np.ndarray

    def build(
        self, net: MilpNetwork, query: MilpQuery, options: MilpOptions, *, deadline: float
    ) -> BuildInfo:
        enc, x_cols, _, info = encode(net, query, options, deadline=deadline)
        self._enc, self._x_cols, self._lower = enc, x_cols, np.asarray(query.lower, np.float64)
        m = enc.model
        return BuildInfo(
            num_binaries=enc.num_binaries,
            num_columns=m.num_cols,
            num_rows=m.num_rows,
            unstable=info["unstable"],
            tighten_s=info["tighten_s"],
        )

    def optimise(
        self,
        seconds: float,
        *,
        cutoff: float | None = None,
        first_solution: bool = False,
        pool_size: int | None = None,
    ) -> tuple[str, str]:
        import mip

        m = self._enc.model
        if cutoff is not None:
            m.cutoff = cutoff
        if pool_size is not None:
            m.sol_pool_size = pool_size
        if first_solution:
            status = m.optimize(max_seconds=seconds, max_solutions=1)  # pyright: ignore[reportArgumentType]
        else:
            status = m.optimize(max_seconds=seconds)  # pyright: ignore[reportArgumentType] (numbers.Real)
        S = mip.OptimizationStatus
        if status in (S.INFEASIBLE, S.INT_INFEASIBLE):
            return "infeasible", str(status)
        if status == S.OPTIMAL:
            return "optimal", str(status)
        if status == S.FEASIBLE:
            return "feasible", str(status)
        return ("no_solution" if status == S.NO_SOLUTION_FOUND else "error"), str(status)

    def objective(self) -> float:
        return float(self._enc.model.objective_value)  # pyright: ignore[reportArgumentType] (a solution exists)

    def bound(self) -> float | None:
        m = self._enc.model
        return float(m.objective_bound) if m.objective_bound is not None else None

    def num_solutions(self) -> int:
        return self._enc.model.num_solutions

    def solution(self, i: int) -> tuple[np.ndarray, float]:
        enc, x_cols, m = self._enc, self._x_cols, self._enc.model
        x = self._lower.copy()
        free = np.flatnonzero(x_cols >= 0)
        if i == 0:
            x[free] = [enc.cols[j].x for j in x_cols[free]]
            obj = float(m.objective_value)  # pyright: ignore[reportArgumentType] (a solution exists)
        else:
            x[free] = [enc.cols[j].xi(i) for j in x_cols[free]]
            obj = float(m.objective_values[i])
        return x, obj


class HighsSolver:
    """HiGHS through highspy, over the model `encode` builds (`_HighsEncoder`).

    Sign mode: HiGHS's `objective_bound` is the cutoff (its MIP search starts with that upper limit,
    so "infeasible" means no point below it) and `mip_max_improving_sols = 1` stops at the first
    solution. As for CBC, a model without binaries (an LP) gets no cutoff: it is solved to
    optimality, and its bound is its optimum. Optimise mode saves HiGHS's improving solutions
    (`mip_improving_solution_save`): the solutions returned are HiGHS's final incumbent (the one its
    objective reports: a saved solution can differ from it, e.g. after postsolve) and then the
    saved ones worse than it, best first.
    HiGHS's `time_limit` is per run and held closely (unlike CBC's); the worker still enforces the
    hard deadline.
    """

    _enc: _HighsEncoder
    _x_cols: np.ndarray
    _lower: np.ndarray
    _status: str = ""
    _saved: list  # optimise mode: HiGHS's improving solutions worse than its final incumbent, best first

    def build(
        self, net: MilpNetwork, query: MilpQuery, options: MilpOptions, *, deadline: float
    ) -> BuildInfo:
        enc, x_cols, _, info = encode(net, query, options, deadline=deadline, make_encoder=_HighsEncoder)
        self._enc, self._x_cols, self._lower = enc, x_cols, np.asarray(query.lower, np.float64)
        return BuildInfo(
            num_binaries=enc.num_binaries,
            num_columns=enc.model.getNumCol(),
            num_rows=enc.model.getNumRow(),
            unstable=info["unstable"],
            tighten_s=info["tighten_s"],
        )

    def optimise(
        self,
        seconds: float,
        *,
        cutoff: float | None = None,
        first_solution: bool = False,
        pool_size: int | None = None,
    ) -> tuple[str, str]:
        h, highspy = self._enc.model, self._enc.highspy
        h.setOptionValue("time_limit", float(seconds))
        if cutoff is not None and self._enc.num_binaries > 0:
            h.setOptionValue("objective_bound", float(cutoff))
        if first_solution:
            h.setOptionValue("mip_max_improving_sols", 1)
        if pool_size is not None:
            h.setOptionValue("mip_improving_solution_save", True)
        run_status = h.run()
        model_status = h.getModelStatus()
        saved = list(h.getSavedMipSolutions()) if pool_size is not None and self._has_solution() else []
        final = self.objective() if saved else 0.0
        self._saved = [s for s in reversed(saved) if float(s.objective) > final]
        detail = f"{model_status} ({run_status})"
        S = highspy.HighsModelStatus
        if model_status == S.kInfeasible:
            self._status = "infeasible"
        elif model_status == S.kOptimal:
            self._status = "optimal"
        elif model_status in (S.kTimeLimit, S.kSolutionLimit, S.kIterationLimit, S.kInterrupt):
            self._status = "feasible" if self._has_solution() else "no_solution"
        else:  # errors, kNotset, unbounded (every column is bounded), kObjectiveBound (LPs get no cutoff)
            self._status = "error"
        return self._status, detail

    def _has_solution(self) -> bool:
        feasible = self._enc.highspy.SolutionStatus.kSolutionStatusFeasible
        return self._enc.model.getInfo().primal_solution_status == int(feasible)

    def objective(self) -> float:
        return float(self._enc.model.getInfo().objective_function_value)

    def bound(self) -> float | None:
        if self._enc.num_binaries == 0:  # an LP: solved to optimality, its optimum is the bound
            return self.objective() if self._status == "optimal" else None
        v = float(self._enc.model.getInfo().mip_dual_bound)
        return v if np.isfinite(v) else None

    def num_solutions(self) -> int:
        return 1 + len(self._saved) if self._has_solution() else 0

    def solution(self, i: int) -> tuple[np.ndarray, float]:
        if i == 0:  # the final incumbent, the one `objective()` reports
            col_value, obj = self._enc.model.getSolution().col_value, self.objective()
        else:
            s = self._saved[i - 1]
            col_value, obj = s.col_value, float(s.objective)
        x = self._lower.copy()
        free = np.flatnonzero(self._x_cols >= 0)
        x[free] = np.asarray(col_value, np.float64)[self._x_cols[free]]
        return x, obj


SOLVERS: dict[str, Callable[[], Solver]] = {"cbc": CbcSolver, "highs": HighsSolver}
"""`MilpOptions.solver` -> a factory of fresh backends (one per query)."""


def check_solver(name: object) -> None:
    """Raises ValueError unless `name` is in `SOLVERS`, and ImportError (naming the extra) when the
    backend's optional package is missing. `MilpOptions` calls it on construction."""
    if not isinstance(name, str) or name not in SOLVERS:
        raise ValueError(f"MilpOptions.solver = {name!r}; expected one of {tuple(SOLVERS)}")
    if name == "highs":
        import_highspy()


def solve(net: MilpNetwork, query: MilpQuery, options: MilpOptions) -> MilpResult:
    """Encodes and solves in this process with the backend `options.solver` (no hard time limit;
    see `MilpWorker`)."""
    make = SOLVERS.get(options.solver)
    if make is None:
        return MilpResult(
            status="error", message=f"unknown solver {options.solver!r} (known: {sorted(SOLVERS)})"
        )
    solver = make()
    t0 = time.monotonic()
    limit = min(options.time_limit, options.stop_by - t0)  # the backend's own (soft) limit
    try:
        info = solver.build(net, query, options, deadline=t0 + limit)
    except Exception:  # noqa: BLE001 — reported to the caller as a status, never raised in the worker
        return MilpResult(status="error", message=traceback.format_exc())
    t1 = time.monotonic()
    sizes: dict[str, Any] = dict(
        num_binaries=info.num_binaries,
        num_columns=info.num_columns,
        num_rows=info.num_rows,
        unstable=info.unstable,
        build_s=t1 - t0 - info.tighten_s,
        tighten_s=info.tighten_s,
    )
    seconds = max(limit - (t1 - t0), 0.01)
    if options.mode == "sign":
        status, detail = solver.optimise(seconds, cutoff=float(options.cutoff), first_solution=True)
    elif options.mode == "optimise":
        status, detail = solver.optimise(seconds, pool_size=max(options.max_solutions, 1))
    else:
        return MilpResult(status="error", message=f"unknown mode {options.mode!r}", **sizes)
    solve_s = time.monotonic() - t1
    if status == "infeasible":
        return MilpResult(status="infeasible", solve_s=solve_s, **sizes)
    if status not in ("optimal", "feasible"):
        return MilpResult(status=status, solve_s=solve_s, message=detail, **sizes)
    n = min(solver.num_solutions(), options.max_solutions) if options.mode == "optimise" else 1
    return MilpResult(
        status=status,
        objective=solver.objective(),
        bound=solver.bound(),
        solutions=tuple(solver.solution(i) for i in range(n)),
        solve_s=solve_s,
        **sizes,
    )
