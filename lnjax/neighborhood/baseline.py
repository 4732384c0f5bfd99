"""The straightforward baselines: ε by binary search with the verifier, layer by layer or uniform.

Layers are searched from the object outwards (d = 0, 1, ..., r). While layer d is searched, the
layers before it keep the ε they were fixed at and the layers after it are 0; the largest ε_d the
verifier proves robust (within the tolerance) is fixed. Cost: (r + 1) · (number of bisections)
queries:

- scale "linear": bisect ε_d ∈ [0, eps_max] until the bracket is narrower than `tol`
  (⌈log2(eps_max / tol)⌉ queries per layer; the seed's (r+1)·log2(range/tol));
- scale "log": bisect log ε_d ∈ [log eps_min, log eps_max] until hi / lo < 1 + tol
  (⌈log2(ln(eps_max / eps_min) / ln(1 + tol))⌉ queries per layer, plus one at eps_min); ε_d = 0 if
  not even eps_min is robust. Fairer on the log-volume, whose ε span decades.

The uniform baseline (`uniform_search`) bisects one ε shared by every pixel the same way (one
layer's worth of queries): the usual L∞ robustness radius, the yardstick for per-layer ε.

One bisection (`bisect`) serves both baselines and the maximality certificate (`certificate`).
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
from typing import Any

import jax
import numpy as np

from lnjax.checks import check_choice, check_float
from lnjax.neighborhood.problem import CountingOracle, Problem, Result, finish
from lnjax.types import VerifyFn
from lnjax.verify.verdict import Status

SCALES = ("linear", "log")


def queries_per_layer(*, scale: str, eps_max: float, tol: float, eps_min: float = 1e-5) -> int:
    """Queries the bisection of one layer makes (without budget cuts)."""
    if scale == "linear":
        return max(math.ceil(math.log2(eps_max / tol)), 0)
    return 1 + max(math.ceil(math.log2(math.log(eps_max / eps_min) / math.log1p(tol))), 0)


def bisect(
    holds: Callable[[float], bool | None], lo: float, hi: float, width: float
) -> tuple[float, float, bool]:
    """Bisects [lo, hi] until it is at most `width` wide, keeping `holds(lo)` true and `holds(hi)` false.

    The ends are taken as given (not asked): lo holds, hi does not (or is the search's ceiling).
    `holds` returns None when the search must stop (out of budget).

    Args:
      holds: the monotone predicate (true below some threshold), asked only at midpoints.
      lo, hi: the bracket (lo < hi), on whatever scale `holds` takes (e.g. log ε).
      width: the bracket width at which to stop (> 0).

    Returns:
      (lo, hi, complete): the final bracket and whether it reached `width` (False: `holds` said None).
    """
    while hi - lo > width * (1 + 1e-9):  # a bracket `width` wide up to rounding (log(1.1) > log1p(0.1))
        mid = (lo + hi) / 2
        ok = holds(mid)
        if ok is None:
            return lo, hi, False
        lo, hi = (mid, hi) if ok else (lo, mid)
    return lo, hi, True


def largest_robust(
    robust_at: Callable[[float], bool | None], *, scale: str, eps_max: float, eps_min: float, tol: float
) -> float:
    """The largest ε in [0, eps_max] with `robust_at(ε)` by bisection (the module docstring's scales).

    "linear": bisect [0, eps_max] to width tol (neither end asked); "log": ask eps_min (0 if it is
    not robust), then bisect [log eps_min, log eps_max] to width log(1 + tol). Returns the lower end
    of the final bracket, the last ε found robust (or 0 / eps_min's bracket end if none was asked).
    """
    if scale == "linear":
        return bisect(robust_at, 0.0, float(eps_max), tol)[0]
    if not robust_at(eps_min):
        return 0.0
    lo, _, _ = bisect(lambda t: robust_at(math.exp(t)), math.log(eps_min), math.log(eps_max), math.log1p(tol))
    return math.exp(lo)


def _check(scale: str, eps_max: float, eps_min: float, tol: float) -> None:
    check_choice("scale", scale, SCALES)
    check_float("tol", tol, low=0.0, low_open=True)
    check_float("eps_max", eps_max, low=0.0, low_open=True)
    check_float("eps_min", eps_min, low=0.0, high=eps_max, low_open=True, high_open=True)


class _Search:
    """One search's oracle, budget and bookkeeping: `ask(eps) -> bool | None` (None: out of budget)."""

    def __init__(
        self,
        key: jax.Array,
        verify: VerifyFn,
        problem: Problem,
        max_queries: int | None,
        time_budget: float | None,
    ):
        self.key, self.oracle = key, CountingOracle(verify, problem)
        self.max_queries, self.time_budget = max_queries, time_budget
        self.t_start = time.perf_counter()
        self.verified, self.reason = False, "done"

    def out_of_budget(self) -> bool:
        if self.max_queries is not None and self.oracle.log.queries >= self.max_queries:
            self.reason = "max_queries"
        elif self.time_budget is not None and time.perf_counter() - self.t_start >= self.time_budget:
            self.reason = "time_budget"
        return self.reason != "done"

    def ask(self, eps: np.ndarray, **extra: Any) -> bool | None:
        if self.out_of_budget():
            return None
        verdict, _, _ = self.oracle(jax.random.fold_in(self.key, self.oracle.log.queries), eps, **extra)
        ok = verdict.status is Status.ROBUST
        self.verified |= ok
        return ok

    def finish(self, eps: np.ndarray, setup: dict[str, Any] | None = None) -> Result:
        R = self.oracle.problem.num_layers
        out = eps if self.verified else np.zeros(R)
        return finish(self.oracle, out, self.verified, self.t_start, self.reason, setup=setup)


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
    _check(scale, eps_max, eps_min, tol)
    search = _Search(key, verify, problem, max_queries, time_budget)
    eps = np.zeros(problem.num_layers, np.float64)

    def robust_at(d: int, value: float) -> bool | None:
        """Is (ε_0..ε_{d−1}, value, 0..) robust? None when out of budget."""
        trial = eps.copy()
        trial[d] = value
        return search.ask(trial, layer=d)

    for d in range(problem.num_layers):
        eps[d] = largest_robust(
            lambda v, d=d: robust_at(d, v), scale=scale, eps_max=eps_max, eps_min=eps_min, tol=tol
        )
        if progress is not None:
            progress(d, eps.copy())
        if search.reason != "done":
            break
    return search.finish(eps)


def uniform_search(
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
) -> Result:
    """One ε for every pixel, the largest the verifier proves (the same bisection as `binary_search`).

    Args:
      key: a typed PRNG key (folded per query).
      verify: the oracle (`lnjax.verify.make_verifier`).
      problem: `problem.make_problem(x, layers, spec)` (the layers only shape the result: ε is
        reported per layer, all equal).
      scale, eps_max, eps_min, tol: as `binary_search` (for a single layer).
      max_queries, time_budget: stop early (None: no limit).

    Returns:
      `Result` with eps = [ε] * R, the last uniform ε answered ROBUST (zeros, verified=False, if
      none was); setup["uniform_eps"] is that ε.
    """
    _check(scale, eps_max, eps_min, tol)
    search = _Search(key, verify, problem, max_queries, time_budget)
    R = problem.num_layers
    value = largest_robust(
        lambda v: search.ask(np.full(R, v)), scale=scale, eps_max=eps_max, eps_min=eps_min, tol=tol
    )
    eps = np.full(R, value if search.verified else 0.0)
    return search.finish(eps, setup={"uniform_eps": float(eps[0])})
