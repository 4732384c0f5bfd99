"""The solver seam: `solve` asks a `Solver` (a MILP backend) to build, optimise and read one model.

`solve(net, query, options)` holds what every backend shares (timing, the sign / optimise modes,
the `MilpResult`); the backend named by `options.solver` holds what is its own. Today's only backend
is `CbcSolver`: CBC through python-mip, over the model `encoding.encode` builds.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numpy as np

from lnjax.verify.milp.encoding import _Encoder, encode
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


SOLVERS: dict[str, Callable[[], Solver]] = {"cbc": CbcSolver}
"""`MilpOptions.solver` -> a factory of fresh backends (one per query)."""


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
    try:
        info = solver.build(net, query, options, deadline=t0 + options.cbc_seconds)
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
    seconds = max(options.cbc_seconds - (t1 - t0), 0.01)
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
