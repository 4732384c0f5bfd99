"""One layer-neighborhood search: the problem, its norms, a counting oracle and the result.

Shared by the MaRVeL-style optimizer (`optimizer`) and the per-layer binary-search baseline
(`baseline`), so both count verifier queries, measure time and report norms the same way.

Norms of ε = (ε_0..ε_r) with layer sizes |l_d|:
  log-volume  Σ_d |l_d| · log max(ε_d, floor)   (the log of the box volume, per-pixel widths 2ε_d
              up to a constant; the floor keeps ε_d = 0 finite; default floor 1e-6)
  linear      Σ_d |l_d| · ε_d                    (the L1 size; / Σ|l_d| is the mean per-pixel ε)

A `Result` reports its log-volume without the floor: over the pixels with ε > 0 only, and the
pixels at ε = 0 as a count (`zero_pixels`), so a zero layer shows as what it is instead of as a
large negative term (1e-6 per pixel: −13.8 each) that depends on an arbitrary floor. The floored
value stays in the JSON as `log_volume_floored`, comparable with older records.

Stop reasons: a search `converged` when it stopped by its own criterion ("lambda_min" or "gain"
for the optimizer, "done" for the bisections); "max_queries" and "time_budget" are safety nets.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.typing import ArrayLike

from lnjax.neighborhood.layers import layer_sizes, neighborhood_box
from lnjax.specs import Spec
from lnjax.types import VerifyFn
from lnjax.verify.verdict import Status, Verdict

LOG_FLOOR = 1e-6
CONVERGED = ("lambda_min", "gain", "done")  # stop reasons of a search that ran to its criterion


class Problem(NamedTuple):
    """A layer-neighborhood question for one image and one target.

    Attributes:
      x: [H, W, C] in [0, 1], the image.
      layers: int [H, W] layer map (`layers.layer_map` of the non-target object).
      sizes: int64 [R] pixels per layer (R = number of layers).
      spec: the property that must hold on the whole neighborhood (e.g. `TopK(target, 2)`).
    """

    x: np.ndarray
    layers: np.ndarray
    sizes: np.ndarray
    spec: Spec

    @property
    def num_layers(self) -> int:
        return int(len(self.sizes))


def make_problem(x: ArrayLike, layers: ArrayLike, spec: Spec) -> Problem:
    """x: [H, W] or [H, W, C] in [0, 1]; layers: int [H, W]; spec: the target's property."""
    x = np.asarray(x, np.float32)
    if x.ndim == 2:
        x = x[..., None]
    layers = np.asarray(layers, np.int32)
    if x.shape[:2] != layers.shape:
        raise ValueError(f"image {x.shape} and layer map {layers.shape} differ in height/width")
    return Problem(x=x, layers=layers, sizes=layer_sizes(layers), spec=spec)


def log_volume(eps: ArrayLike, sizes: ArrayLike, *, floor: float | None = LOG_FLOOR) -> float:
    """Σ_d |l_d| · log max(ε_d, floor); with floor=None, Σ over the layers with ε_d > 0 only
    (−inf when no pixel has ε > 0; count the rest with `zero_pixels`)."""
    eps = np.asarray(eps, np.float64)
    sizes = np.asarray(sizes, np.float64)
    if floor is not None:
        return float(np.sum(sizes * np.log(np.maximum(eps, floor))))
    positive = (eps > 0) & (sizes > 0)
    if not positive.any():
        return -math.inf
    return float(np.sum(sizes[positive] * np.log(eps[positive])))


def zero_pixels(eps: ArrayLike, sizes: ArrayLike) -> int:
    """Pixels whose layer has ε_d ≤ 0 (the box is flat there): Σ_{d: ε_d ≤ 0} |l_d|."""
    eps = np.asarray(eps, np.float64)
    return int(np.sum(np.asarray(sizes, np.int64)[eps <= 0]))


def linear_norm(eps: ArrayLike, sizes: ArrayLike) -> float:
    """Σ_d |l_d| · ε_d."""
    return float(np.sum(np.asarray(sizes, np.float64) * np.asarray(eps, np.float64)))


def mean_width(eps: ArrayLike, sizes: ArrayLike) -> float:
    """The mean per-pixel ε: Σ_d |l_d| ε_d / Σ_d |l_d|."""
    return linear_norm(eps, sizes) / float(np.sum(sizes))


@dataclasses.dataclass
class QueryLog:
    """Every verifier query of one search: counts by verdict and deciding stage, seconds, a trail."""

    queries: int = 0
    by_status: dict[str, int] = dataclasses.field(default_factory=dict)
    by_stage: dict[str, int] = dataclasses.field(default_factory=dict)
    verify_s: float = 0.0
    trail: list[dict[str, Any]] = dataclasses.field(default_factory=list)


class CountingOracle:
    """Wraps `verify` for one problem: ε → Verdict, counting and timing each query.

    Only a ROBUST verdict is ever committed by the searches; UNKNOWN (a time-out, a solver error)
    counts as not robust.
    """

    def __init__(self, verify: VerifyFn, problem: Problem):
        self.verify = verify
        self.problem = problem
        self.log = QueryLog()

    def box(self, eps: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = neighborhood_box(self.problem.x, self.problem.layers, np.asarray(eps, np.float32))
        return np.asarray(lo), np.asarray(hi)

    def __call__(
        self, key: jax.Array, eps: ArrayLike, **extra: Any
    ) -> tuple[Verdict, np.ndarray, np.ndarray]:
        eps = np.asarray(eps, np.float32)
        lo, hi = self.box(eps)
        t0 = time.perf_counter()
        verdict = self.verify(key, lo, hi, self.problem.spec)
        seconds = time.perf_counter() - t0
        status = Status(verdict.status).value
        stage = verdict.stats.decided_by or "none"
        log = self.log
        log.queries += 1
        log.by_status[status] = log.by_status.get(status, 0) + 1
        log.by_stage[stage] = log.by_stage.get(stage, 0) + 1
        log.verify_s += seconds
        log.trail.append(
            {
                "query": log.queries,
                "eps": [float(e) for e in eps],
                "status": status,
                "decided_by": verdict.stats.decided_by,
                "seconds": seconds,
                "best_objective": verdict.best_objective,
                "proven_bound": verdict.proven_bound,
                "stage_bounds": {k: float(v) for k, v in verdict.stats.margin_lower.items()},
                "bab_domains": int(verdict.stats.bab.get("domains", 0)),
                **extra,
            }
        )
        return verdict, lo, hi


@dataclasses.dataclass
class Result:
    """The outcome of a search.

    Attributes:
      eps: [R] the robust ε the search reports (the optimizer: the largest-norm one it was answered
        ROBUST for; the bisections: the last; zeros if no query was robust).
      verified: whether `eps` was answered ROBUST by a query (False only if no query was robust).
      queries, by_status, by_stage: verifier queries, in total / by verdict / by deciding stage.
      time_s: wall-clock seconds of the whole search (queries, attacks, gradients).
      verify_s: of which inside the verifier.
      stop_reason: why the search stopped (`converged`: by its own criterion, see CONVERGED).
      trail: one dict per query (ε, verdict, stage, seconds, and the search's own facts).
      sizes: [R] layer sizes (for the norms).
      setup: the search's own facts (start, weights, ...).
    """

    eps: np.ndarray
    verified: bool
    queries: int
    by_status: dict[str, int]
    by_stage: dict[str, int]
    time_s: float
    verify_s: float
    stop_reason: str
    trail: list[dict[str, Any]]
    sizes: np.ndarray
    setup: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def log_volume(self) -> float:
        """Σ |l_d| log ε_d over the layers with ε_d > 0 (−inf if none); see `zero_pixels`."""
        return log_volume(self.eps, self.sizes, floor=None)

    @property
    def zero_pixels(self) -> int:
        """Pixels at ε = 0 (not in `log_volume`)."""
        return zero_pixels(self.eps, self.sizes)

    @property
    def converged(self) -> bool:
        """Whether the search stopped by its own criterion (not by a query cap or time budget)."""
        return self.stop_reason in CONVERGED

    @property
    def linear_norm(self) -> float:
        return linear_norm(self.eps, self.sizes)

    @property
    def unproved_scale(self) -> float | None:
        """The scale s > 1 the optimizer's scale-up asked for s · `eps` and did not get proved (None:
        no scale-up, or it ended on its factor cap): `certify_maximality`'s upper end of the proof."""
        return self.setup.get("scale_up", {}).get("unproved_scale")

    def to_json(self) -> dict[str, Any]:
        return {
            "eps": [float(e) for e in self.eps],
            "verified": bool(self.verified),
            "log_volume": self.log_volume,
            "zero_pixels": self.zero_pixels,
            "log_volume_floored": log_volume(self.eps, self.sizes),
            "linear_norm": self.linear_norm,
            "mean_eps": mean_width(self.eps, self.sizes),
            "queries": self.queries,
            "by_status": dict(self.by_status),
            "by_stage": dict(self.by_stage),
            "time_s": self.time_s,
            "verify_s": self.verify_s,
            "stop_reason": self.stop_reason,
            "converged": self.converged,
            "trail": self.trail,
            "setup": self.setup,
        }


def finish(
    oracle: CountingOracle,
    eps: ArrayLike,
    verified: bool,
    t_start: float,
    stop_reason: str,
    setup: dict[str, Any] | None = None,
) -> Result:
    """The `Result` of a search that committed `eps` (verified: answered ROBUST by a query)."""
    log = oracle.log
    return Result(
        eps=np.asarray(eps, np.float32),
        verified=bool(verified),
        queries=log.queries,
        by_status=dict(log.by_status),
        by_stage=dict(log.by_stage),
        time_s=time.perf_counter() - t_start,
        verify_s=log.verify_s,
        stop_reason=stop_reason,
        trail=log.trail,
        sizes=np.asarray(oracle.problem.sizes),
        setup=dict(setup or {}),
    )
