"""The straightforward baseline: ε_d by binary search with the verifier, layer by layer.

Layers are searched from the object outwards (d = 0, 1, ..., r). While layer d is searched, the
layers before it keep the ε they were fixed at and the layers after it are 0; the largest ε_d the
verifier proves robust (within the tolerance) is fixed. Cost: (r + 1) · (number of bisections)
queries:

- scale "linear": bisect ε_d ∈ [0, eps_max] until the bracket is narrower than `tol`
  (⌈log2(eps_max / tol)⌉ queries per layer; the seed's (r+1)·log2(range/tol));
- scale "log": bisect log ε_d ∈ [log eps_min, log eps_max] until hi / lo < 1 + tol
  (⌈log2(ln(eps_max / eps_min) / ln(1 + tol))⌉ queries per layer, plus one at eps_min); ε_d = 0 if
  not even eps_min is robust. Fairer on the log-volume, whose ε span decades.

NOT_ROBUST and UNKNOWN both count as "not robust". The result is always the last ε answered
ROBUST (every later fixed layer only grows it from there, so it is also the largest).

References:
  Mour, Maximal Robust Layer-Neighborhoods in Multi-Label Neural Networks (Technion 2023): the
    baseline the optimizer must beat.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import jax
import numpy as np

from lnjax.neighborhood.problem import CountingOracle, Problem, Result, finish
from lnjax.types import VerifyFn
from lnjax.verify.verdict import Status

SCALES = ("linear", "log")


def queries_per_layer(*, scale: str, eps_max: float, tol: float, eps_min: float = 1e-5) -> int:
    """Queries the bisection of one layer makes (without budget cuts)."""
    if scale == "linear":
        return max(math.ceil(math.log2(eps_max / tol)), 0)
    return 1 + max(math.ceil(math.log2(math.log(eps_max / eps_min) / math.log1p(tol))), 0)


def binary_search(
    key: jax.Array,
    verify: VerifyFn,
    problem: Problem,
    *,
    scale: str = "log",
    eps_max: float = 1.0,
    eps_min: float = 1e-5,
    tol: float = 0.1,
    max_queries: int | None = None,
    time_budget: float | None = None,
    progress: Callable[[int, np.ndarray], None] | None = None,
) -> Result:
    """Per-layer binary search (see the module docstring).

    Args:
      key: a typed PRNG key (folded per query).
      verify: the oracle (`lnjax.verify.make_verifier`).
      problem: `problem.make_problem(x, layers, spec)`.
      scale: "linear" (absolute tolerance `tol`) or "log" (relative tolerance `tol`).
      eps_max: the top of every search; eps_min: the bottom of a log search.
      tol: the bracket width ("linear") or ratio − 1 ("log") at which a layer is fixed.
      max_queries, time_budget: stop early (None: no limit); the fixed layers are kept.
      progress: called with (layer, ε) after each layer.

    Returns:
      `Result`; eps is the last ε answered ROBUST (zeros, verified=False, if none was).
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {SCALES}")
    if not (tol > 0 and eps_max > 0 and 0 < eps_min < eps_max):
        raise ValueError(f"need tol > 0 and 0 < eps_min < eps_max, got {tol}, {eps_min}, {eps_max}")
    t_start = time.perf_counter()
    oracle = CountingOracle(verify, problem)
    R = problem.num_layers
    eps = np.zeros(R, np.float64)
    verified = False
    reason = "done"

    def out_of_budget() -> bool:
        nonlocal reason
        if max_queries is not None and oracle.log.queries >= max_queries:
            reason = "max_queries"
            return True
        if time_budget is not None and time.perf_counter() - t_start >= time_budget:
            reason = "time_budget"
            return True
        return False

    def robust(d: int, value: float) -> bool | None:
        """Is (ε_0..ε_{d−1}, value, 0..) robust? None when out of budget."""
        nonlocal verified
        if out_of_budget():
            return None
        trial = eps.copy()
        trial[d] = value
        verdict, _, _ = oracle(jax.random.fold_in(key, oracle.log.queries), trial, layer=d)
        ok = verdict.status is Status.ROBUST
        if ok:
            verified = True
        return ok

    for d in range(R):
        if scale == "linear":
            lo, hi = 0.0, float(eps_max)
            while hi - lo > tol:
                mid = (lo + hi) / 2
                ok = robust(d, mid)
                if ok is None:
                    break
                lo, hi = (mid, hi) if ok else (lo, mid)
        else:
            ok = robust(d, eps_min)
            lo, hi = (math.log(eps_min), math.log(eps_max)) if ok else (-math.inf, -math.inf)
            while ok and hi - lo > math.log1p(tol):
                mid = (lo + hi) / 2
                ok_mid = robust(d, math.exp(mid))
                if ok_mid is None:
                    break
                lo, hi = (mid, hi) if ok_mid else (lo, mid)
            lo = math.exp(lo) if lo > -math.inf else 0.0
        eps[d] = lo
        if progress is not None:
            progress(d, eps.copy())
        if reason != "done":
            break
    return finish(oracle, eps if verified else np.zeros(R), verified, t_start, reason)
