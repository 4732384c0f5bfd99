"""Solving one query in this process: encode, then CBC (python-mip) in sign or optimise mode."""

from __future__ import annotations

import time
import traceback
from typing import Any

import numpy as np

from lnjax.verify.milp.encoding import encode
from lnjax.verify.milp.network import MilpNetwork
from lnjax.verify.milp.query import MilpOptions, MilpQuery, MilpResult


def solve(net: MilpNetwork, query: MilpQuery, options: MilpOptions) -> MilpResult:
    """Encodes and solves in this process (no hard time limit; see `MilpWorker`)."""
    import mip

    t0 = time.monotonic()
    try:
        enc, x_cols, s_col, info = encode(net, query, options, deadline=t0 + options.cbc_seconds)
    except Exception:  # noqa: BLE001 — reported to the caller as a status, never raised in the worker
        return MilpResult(status="error", message=traceback.format_exc())
    t1 = time.monotonic()
    m = enc.model
    sizes: dict[str, Any] = dict(
        num_binaries=enc.num_binaries,
        num_columns=m.num_cols,
        num_rows=m.num_rows,
        unstable=info["unstable"],
        build_s=t1 - t0 - info["tighten_s"],
        tighten_s=info["tighten_s"],
    )
    seconds = max(options.cbc_seconds - (t1 - t0), 0.01)
    if options.mode == "sign":
        m.cutoff = float(options.cutoff)
        status = m.optimize(max_seconds=seconds, max_solutions=1)  # pyright: ignore[reportArgumentType]
    elif options.mode == "optimise":
        m.sol_pool_size = max(options.max_solutions, 1)
        status = m.optimize(max_seconds=seconds)  # pyright: ignore[reportArgumentType] (numbers.Real)
    else:
        return MilpResult(status="error", message=f"unknown mode {options.mode!r}", **sizes)
    solve_s = time.monotonic() - t1
    S = mip.OptimizationStatus
    if status in (S.INFEASIBLE, S.INT_INFEASIBLE):
        return MilpResult(status="infeasible", solve_s=solve_s, **sizes)
    if status not in (S.OPTIMAL, S.FEASIBLE):
        name = "no_solution" if status == S.NO_SOLUTION_FOUND else "error"
        return MilpResult(status=name, solve_s=solve_s, message=str(status), **sizes)
    sols = []
    for i in range(min(m.num_solutions, options.max_solutions) if options.mode == "optimise" else 1):
        x = np.asarray(query.lower, np.float64).copy()
        free = np.flatnonzero(x_cols >= 0)
        if i == 0:
            x[free] = [enc.cols[j].x for j in x_cols[free]]
            obj = float(m.objective_value)  # pyright: ignore[reportArgumentType] (a solution exists)
        else:
            x[free] = [enc.cols[j].xi(i) for j in x_cols[free]]
            obj = float(m.objective_values[i])
        sols.append((x, obj))
    return MilpResult(
        status="optimal" if status == S.OPTIMAL else "feasible",
        objective=float(m.objective_value),  # pyright: ignore[reportArgumentType] (a solution exists)
        bound=float(m.objective_bound) if m.objective_bound is not None else None,
        solutions=tuple(sols),
        solve_s=solve_s,
        **sizes,
    )
