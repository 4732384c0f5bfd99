"""The staged verifier: cheapest stage first, stop at the first sound answer.

Stages (each optional, in this order):
  pgd          PGD on the spec margin inside the box; a point whose JAX margin is ≤ 0 → NOT_ROBUST.
               Run in two parts: a quick attack first (`pgd_quick_steps`, from the box centre: clear
               counterexamples cost ~10 gradient steps), the full one (`pgd_steps` × `pgd_restarts`,
               from the quick attack's best point) only when the bound stages fail, before the MILP.
  (interval)   always computed (the base of every other bound); rows proven → ROBUST.
  crown        CROWN bounds of every pre-activation and of the spec rows → ROBUST if proven.
  alpha_crown  α-CROWN (optimised slopes) on top of CROWN → ROBUST if proven, in two steps: first
               only the spec rows' slopes (over CROWN's intermediate bounds: 21 backward passes of
               M rows, ~0.1 s); then, after the full PGD and only if nothing is decided yet,
               `alpha_intermediate` also optimises the slopes of every unstable intermediate
               neuron's bound (on the quickstart CNN ~3 s with patch mode, and the difference
               between UNKNOWN and ROBUST on most of its hard boxes; on nets without patch mode,
               e.g. max-pooling or dense ones with thousands of unstable neurons, minutes — the
               cost prediction below then skips it).
  milp         MIPVerify MILP over the tightest bounds, asked as a sign question (cutoff at the
               safety margin, stop at the first solution) or solved to optimality ("optimise"),
               in a worker process killed at the query's deadline.

The whole query has one wall-clock budget (`time_limit`); the JAX stages are checked against it
between stages and the MILP gets what is left (a hard limit, see `milp.MilpWorker`). A compiled JAX
stage cannot be interrupted, so before each bound stage its cost is predicted from its last run in
this verifier (seconds per unstable neuron it has to bound, scaled to this query's count); a stage
predicted to end after the deadline is not started and the query is UNKNOWN at once. A prediction
counts only if that run did at least a quarter of this query's work: scaled up further it mostly
multiplies fixed costs (a zero-width warm-up box bounds no neuron, and its CROWN time scaled to the
quickstart CNN's queries was ~500x too high, so CROWN was never started and never re-timed). Without
one the stage runs, and every run replaces its stage's estimate. A time-out or a stage not started
is UNKNOWN, never ROBUST. See `verdict` for the trust rules.

Arguments are checked first (`inputs`: the view and options in `make_verifier`, the box and the
spec in each query): a bad one raises one TypeError/ValueError line, so no verdict comes from it.

References:
  Tjeng, Xiao & Tedrake, Evaluating Robustness of Neural Networks with Mixed Integer Programming,
    ICLR 2019 (MIPVerify; progressive bound tightening, the sign question).
  Zhang et al., NeurIPS 2018 (CROWN); Xu et al., ICLR 2021 (α-CROWN); Madry et al., ICLR 2018 (PGD).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lnjax import bounds as B
from lnjax.attacks.pgd import view_box_pgd, view_margin
from lnjax.models import layers as L
from lnjax.specs import Spec, SpecRows, margin_lower_bound
from lnjax.verify import milp as M
from lnjax.verify.config import STAGES, VerifierConfig, resolved_config
from lnjax.verify.inputs import checked_box, checked_rows, checked_view
from lnjax.verify.verdict import Status, Verdict, VerifyStats

_ORDER = ("pgd", "interval", "crown", "alpha_crown", "milp")
_MILP_FACTS = (
    "objective",
    "bound",
    "num_columns",
    "num_rows",
    "unstable",
    "build_s",
    "tighten_s",
    "solve_s",
    "wall_s",
)


class Verifier(NamedTuple):
    """`make_verifier`'s functions; calling the tuple calls `verify`.

    verify(key, x_lower, x_upper, spec) -> Verdict: key a typed PRNG key; x_lower, x_upper:
      [*view.input_shape] float images in [0, 1] (finite; overshoots up to 0.5 are clipped to
      [0, 1], anything else raises ValueError, as does an integer array); spec a `lnjax.specs`
      TopK, Argmax or Threshold (else TypeError). The first call of each jitted stage compiles it
      (CROWN on a 64×64 CNN: ~15 s on 2 cores), inside that query's budget.
    warm_up(x_lower, x_upper, spec) -> seconds: runs every configured stage once on a box (results
      discarded; also builds the MILP network and starts the worker), so that timed queries with the
      same spec type measure only themselves, then times CROWN and α-CROWN's intermediate pass once
      more to seed the cost predictions. A zero-width box compiles everything, but its timings
      (passes that bound no neuron) predict no box with unstable neurons: the first such queries
      run those stages and time them.
    """

    verify: Callable[[jax.Array, jax.Array, jax.Array, Spec], Verdict]
    warm_up: Callable[[jax.Array, jax.Array, Spec], float]

    def __call__(self, key: jax.Array, x_lower: jax.Array, x_upper: jax.Array, spec: Spec) -> Verdict:
        return self.verify(key, x_lower, x_upper, spec)


def make_verifier(
    view: L.LayerView,
    config: VerifierConfig | None = None,
    *,
    worker: M.MilpWorker | None = None,
    **overrides: Any,
) -> Verifier:
    """Builds the staged verifier of one network.

    Args:
      view: the network (`models.layer_view`).
      config: the options (`VerifierConfig`, whose fields document each one; default: its defaults).
      worker: the MILP worker process (default: the shared one).
      **overrides: `VerifierConfig` fields replacing the config's (e.g. `time_limit=5.0`); checked
        by `VerifierConfig` (ValueError naming the field).

    Returns:
      A `Verifier` (verify, warm_up); `verifier(key, x_lower, x_upper, spec)` calls verify.

    Raises:
      TypeError: `view` is not a LayerView, `config` not a VerifierConfig, an unknown option.
      ValueError: a bad option value, or a view with no ops or non-finite parameters.

    References:
      Tjeng, Xiao & Tedrake, ICLR 2019 (MIPVerify).
    """
    view = checked_view(view)
    cfg = resolved_config(config, overrides)
    stages = tuple(s for s in _ORDER if s in cfg.stages or s == "interval")
    num_classes = int(math.prod(view.output_shapes[-1]))
    fns = _jitted(
        cfg.pgd_steps,
        cfg.pgd_restarts,
        cfg.pgd_step_size,
        cfg.alpha_steps,
        cfg.alpha_lr,
        cfg.pgd_quick_steps,
        cfg.pgd_quick_restarts,
        cfg.bound_chunk,
        cfg.alpha_intermediate_steps,
        cfg.alpha_intermediate_lr,
    )
    quick = "pgd" in stages and cfg.pgd_quick_steps > 0
    late_alpha = cfg.alpha_intermediate and "alpha_crown" in stages
    costs = _Costs(cfg.alpha_intermediate_steps)
    milp_net = _LazyNetwork(view)

    def verify(key: jax.Array, x_lower: jax.Array, x_upper: jax.Array, spec: Spec) -> Verdict:
        t_start = time.monotonic()
        rows = checked_rows(spec, num_classes)
        lo, hi = checked_box(view, x_lower, x_upper)
        q = _Query(view, fns, cfg, t_start, lo, hi, rows)
        key_quick, key_pgd, key_refine = jax.random.split(key, 3)

        # --- PGD (quick, or the full one when there is no quick one) ----------------------------
        if "pgd" in stages:
            verdict = q.attack(fns.pgd_quick if quick else fns.pgd, key_quick if quick else key_pgd)
            if verdict is not None:
                return verdict

        # --- bounds ----------------------------------------------------------------------------
        verdict = q.interval()
        if verdict is not None:
            return verdict
        after = "interval"
        for name, bounds_fn, spec_fn in (
            ("crown", fns.crown, fns.crown_spec),
            ("alpha_crown", _same_bounds, fns.alpha_spec),
        ):
            if name in stages:
                verdict = q.refine(costs, name, bounds_fn, spec_fn, after)
                if verdict is not None:
                    return verdict
                after = name

        # --- the full PGD, from the quick one's best point -------------------------------------
        if quick:
            if q.out_of_time("bounds"):
                return q.finish(Status.UNKNOWN, None)
            verdict = q.attack(fns.pgd, key_pgd)
            if verdict is not None:
                return verdict

        # --- α-CROWN over the intermediate neurons too -----------------------------------------
        if late_alpha:
            verdict = q.refine(
                costs, "alpha_intermediate", fns.alpha, fns.alpha_spec, "pgd" if quick else after
            )
            if verdict is not None:
                return verdict

        if "milp" not in stages:
            return q.finish(Status.UNKNOWN, None)
        if q.out_of_time("bounds"):
            return q.finish(Status.UNKNOWN, None)
        unstable_now = sum(list(q.stats.unstable.values())[-1])
        if cfg.milp_max_unstable is not None and unstable_now > cfg.milp_max_unstable:
            q.stats.notes.append(f"milp not started: {unstable_now} unstable ReLUs > milp_max_unstable")
            return q.finish(Status.UNKNOWN, None)
        return _milp_stage(q, milp_net, cfg, worker or M.shared_worker(), key_refine)

    def warm_up(x_lower: jax.Array, x_upper: jax.Array, spec: Spec) -> float:
        t0 = time.monotonic()
        rows = checked_rows(spec, num_classes)
        lo, hi = checked_box(view, x_lower, x_upper)
        c, offset, k = jnp.asarray(rows.c), jnp.asarray(rows.offset), rows.k
        centre = (lo + hi) / 2
        out = [fns.logits(view, centre), fns.margin(view, centre, c, offset, k=k)]
        if "pgd" in stages:
            # The same argument kinds as in `verify`: the full PGD starts from the quick one's point
            # (an output of a jitted function, which carries a sharding a host-made array lacks: a
            # different cache key), and `evaluate` clips and scores each attack's point.
            x0 = centre
            if quick:
                x0 = fns.pgd_quick(jax.random.key(0), view, lo, hi, c, offset, centre, k=k).x
                out.append(fns.margin(view, _clip_point(x0, lo, hi), c, offset, k=k))
            x1 = fns.pgd(jax.random.key(0), view, lo, hi, c, offset, x0, k=k).x
            out.append(fns.margin(view, _clip_point(x1, lo, hi), c, offset, k=k))
        best = base = fns.interval(view, lo, hi)
        if "crown" in stages:
            best = fns.crown(view, lo, hi, best)
            out.append(fns.crown_spec(view, lo, hi, c, best))
        if "alpha_crown" in stages:
            out.append(fns.alpha_spec(view, lo, hi, c, best))
        if late_alpha:
            best = fns.alpha(view, lo, hi, best)
            out.append(fns.alpha_spec(view, lo, hi, c, best))
        jax.block_until_ready((out, best))  # (compile-time runs never feed the cost predictions)
        if "milp" in stages:
            milp_net.get()
        # One whole query: compiles the small eager ops around the stages (clipping, checks, key
        # splits; ~0.1 s each on CPU), which would otherwise land in the first timed query.
        verify(jax.random.key(0), x_lower, x_upper, spec)
        # A second, timed run of the costly bound stages seeds their cost predictions (used only for
        # queries with at most 4x its work: see `_scaled`).
        units = _Costs.work("crown", B.unstable_counts(view, base))
        best = base
        for name, fn, on in (
            ("crown", fns.crown, "crown" in stages),
            ("alpha_intermediate", fns.alpha, late_alpha),
        ):
            if on:
                t1 = time.monotonic()
                best = jax.block_until_ready(fn(view, lo, hi, best))
                costs.record(name, time.monotonic() - t1, units)
        if "milp" in stages:
            (worker or M.shared_worker()).start()
        return time.monotonic() - t0

    return Verifier(verify=verify, warm_up=warm_up)


# ------------------------------------------------------------------------------------------ stages


def _same_bounds(view: L.LayerView, lo: jax.Array, hi: jax.Array, base: Any) -> Any:
    """The bounds stage of spec-only α-CROWN: the intermediate bounds stay CROWN's."""
    return base


class _LazyNetwork:
    """The MILP network of a view, built on first use and kept (one per verifier)."""

    def __init__(self, view: L.LayerView):
        self.view, self.net = view, None

    def get(self) -> M.MilpNetwork:
        if self.net is None:
            self.net = M.network_from_view(self.view)
        return self.net


class _Run(NamedTuple):
    """A timed run of a bound stage: `seconds` for `units` of work (`_Costs.work`)."""

    seconds: float
    units: int


_SCALE_UP = 4  # a run predicts a query's cost only if it did at least 1/_SCALE_UP of that query's work


def _scaled(run: _Run | None, units: int) -> float | None:
    """The run's seconds scaled to `units` of work, or None when there is no run or it did less than
    1/_SCALE_UP of that work.

    Time grows with work but not proportionally (fixed costs: dispatch, the walk over the layers,
    the spec rows), so scaling up overestimates by at most the factor and scaling down underestimates.
    Far beyond the factor the guess is mostly multiplied fixed cost: a zero-width warm-up box (1 unit)
    predicted CROWN at ~500x its time on the quickstart CNN's queries. Such a guess must not keep a
    stage from running, or its estimate would never be corrected.
    """
    if run is None or units > _SCALE_UP * run.units:
        return None
    return run.seconds * units / run.units


class _Costs:
    """Predicted seconds of the bound stages, from each stage's last timed run (every run replaces it)."""

    def __init__(self, alpha_intermediate_steps: int):
        self.runs: dict[str, _Run] = {}
        self.alpha_intermediate_steps = alpha_intermediate_steps

    @staticmethod
    def work(name: str, unstable_after_interval: tuple[int, ...]) -> int:
        """Backward-pass work of a bound stage: the unstable neurons it refines (+1: the logits)."""
        if name == "alpha_crown":
            return 1
        return 1 + sum(unstable_after_interval[1:])  # the first layer is exact under interval bounds

    def record(self, name: str, seconds: float, units: int) -> None:
        self.runs[name] = _Run(seconds, units)

    def predicted(self, name: str, units: int) -> float | None:
        """Seconds of stage `name` on `units` of work; None: no run to predict from (then it runs)."""
        own = _scaled(self.runs.get(name), units)
        if own is not None or name != "alpha_intermediate":
            return own
        # Not timed at this scale: from CROWN's run (this query's, if it ran), one pass per step.
        crown = _scaled(self.runs.get("crown"), units)
        return None if crown is None else crown * (self.alpha_intermediate_steps + 1)


class _Query:
    """One query's state: the box, the spec rows, the clock, the points seen, the proven bounds."""

    def __init__(
        self,
        view: L.LayerView,
        fns: _Jitted,
        cfg: VerifierConfig,
        t_start: float,
        lo: jax.Array,
        hi: jax.Array,
        rows: SpecRows,
    ):
        self.view, self.fns, self.lo, self.hi, self.rows = view, fns, lo, hi, rows
        self.t_start = t_start
        self.deadline = math.inf if cfg.time_limit is None else t_start + cfg.time_limit
        self.stats = VerifyStats()
        self.c, self.offset, self.k = jnp.asarray(rows.c), jnp.asarray(rows.offset), rows.k
        self.points: list[tuple[np.ndarray, float]] = []
        self.proven: list[float] = []
        z_centre = fns.logits(view, (lo + hi) / 2)
        self.safety = float(cfg.atol + cfg.rtol * max(1.0, float(jnp.max(jnp.abs(z_centre)))))
        self.stats.safety = self.safety
        self.x_attack = (lo + hi) / 2
        self.best: Any = None  # the tightest bounds so far (set by `interval`, which runs first)
        self.row_lower: np.ndarray = np.full(len(rows.offset), -np.inf)  # lower bounds of c @ z

    def lap(self, name: str, t0: float) -> float:
        now = time.monotonic()
        self.stats.time_s[name] = self.stats.time_s.get(name, 0.0) + now - t0
        return now

    def evaluate(self, x: Any) -> tuple[np.ndarray, float]:
        """The JAX margin at a candidate clipped into the box; recorded as a weakest point."""
        x = _clip_point(x, self.lo, self.hi)
        m = float(self.fns.margin(self.view, x, self.c, self.offset, k=self.k))
        self.points.append((np.asarray(x), m))
        return self.points[-1]

    def finish(self, status: Status, decided_by: str | None, counterexample: Any = None) -> Verdict:
        self.stats.decided_by = decided_by
        self.stats.time_s["total"] = time.monotonic() - self.t_start
        pts = sorted(self.points, key=lambda p: p[1])
        return Verdict(
            status=status,
            proven_bound=max(self.proven) if self.proven else None,
            best_objective=pts[0][1] if pts else None,
            counterexample=counterexample,
            weakest_points=pts,
            stats=self.stats,
        )

    def out_of_time(self, after: str) -> bool:
        if time.monotonic() > self.deadline:
            self.stats.notes.append(f"time limit reached after {after}")
            return True
        return False

    def attack(self, fn: Callable[..., Any], key: jax.Array) -> Verdict | None:
        """A box PGD from the last attack's best point: NOT_ROBUST if it finds margin ≤ 0."""
        t0 = time.monotonic()
        res = fn(key, self.view, self.lo, self.hi, self.c, self.offset, self.x_attack, k=self.k)
        self.x_attack = res.x
        x, m = self.evaluate(res.x)
        self.lap("pgd", t0)
        if m <= 0:
            return self.finish(Status.NOT_ROBUST, "pgd", x)
        if self.out_of_time("pgd"):
            return self.finish(Status.UNKNOWN, None)
        return None

    def interval(self) -> Verdict | None:
        """Interval bounds (always computed: the base of every other bound); ROBUST if proven."""
        t0 = time.monotonic()
        self.best = self.fns.interval(self.view, self.lo, self.hi)
        self.row_lower = M.interval_row_lower(self.rows, self.best[-1])
        self.stats.unstable["interval"] = B.unstable_counts(self.view, self.best)
        m_lb = margin_lower_bound(self.rows, self.row_lower)
        self.stats.margin_lower["interval"] = m_lb
        self.proven.append(m_lb)
        self.lap("interval", t0)
        return self.finish(Status.ROBUST, "interval") if m_lb > self.safety else None

    def refine(
        self, costs: _Costs, name: str, bounds_fn: Callable[..., Any], spec_fn: Callable[..., Any], after: str
    ) -> Verdict | None:
        """One bound stage: tighter bounds and spec rows; ROBUST if proven, UNKNOWN if out of time."""
        if self.out_of_time(after):
            return self.finish(Status.UNKNOWN, None)
        units = costs.work(name, self.stats.unstable["interval"])
        expected = costs.predicted(name, units)
        left = self.deadline - time.monotonic()
        if expected is not None and expected > left:
            self.stats.notes.append(f"{name} not started: predicted {expected:.1f} s, {left:.1f} s left")
            return self.finish(Status.UNKNOWN, None)
        t0 = time.monotonic()
        self.best = bounds_fn(self.view, self.lo, self.hi, self.best)
        spec_lower = np.asarray(spec_fn(self.view, self.lo, self.hi, self.c, self.best), np.float64)
        self.row_lower = np.maximum(self.row_lower, spec_lower)
        self.stats.unstable[name] = B.unstable_counts(self.view, self.best)
        m_lb = margin_lower_bound(self.rows, self.row_lower)
        self.stats.margin_lower[name] = m_lb
        self.proven.append(m_lb)
        costs.record(name, time.monotonic() - t0, units)
        self.lap(name, t0)
        return self.finish(Status.ROBUST, name) if m_lb > self.safety else None


def _milp_stage(
    q: _Query, milp_net: _LazyNetwork, cfg: VerifierConfig, worker: M.MilpWorker, key_refine: jax.Array
) -> Verdict:
    """The MILP over the tightest bounds in the worker, within what is left of the budget."""
    stats = q.stats
    t0 = time.monotonic()
    net = milp_net.get()
    query = M.make_query(net, q.lo, q.hi, q.best, q.rows, q.row_lower)
    remaining = q.deadline - time.monotonic()
    cbc_seconds = 1e9 if math.isinf(remaining) else max(cfg.cbc_fraction * remaining, 0.01)
    base_options = cfg.milp_options or M.MilpOptions()
    options = base_options._replace(
        mode=cfg.milp_mode,
        cutoff=q.safety,
        cbc_seconds=cbc_seconds,
        lp_tighten=cfg.lp_tighten or base_options.lp_tighten,
    )
    result = worker.solve(net, query, options, deadline=q.deadline)
    q.lap("milp", t0)
    stats.milp_status = result.status
    stats.binaries = result.num_binaries
    stats.milp = {f: getattr(result, f) for f in _MILP_FACTS}
    if result.status == "error":
        logging.warning("MILP worker error: %s", result.message)
        stats.notes.append(f"milp error: {result.message.strip().splitlines()[-1] if result.message else ''}")
    if result.status == "infeasible":
        if cfg.milp_mode == "sign":
            q.proven.append(q.safety)
            return q.finish(Status.ROBUST, "milp")
        logging.warning("optimise-mode MILP infeasible: the bounds fed to it were not sound")
        stats.notes.append("optimise-mode MILP infeasible (unsound bounds?)")
        return q.finish(Status.UNKNOWN, None)
    if result.status == "optimal" and result.bound is not None:
        # Optimise mode: CBC's bound is proven. Sign mode: nodes above the cutoff were pruned,
        # so an optimal solution above the cutoff proves margin ≥ cutoff (the bound itself only
        # for a pure LP, i.e. no binaries, where CBC ignores the cutoff).
        if cfg.milp_mode == "optimise" or result.num_binaries == 0:
            bound, holds = result.bound, result.bound > q.safety
        else:
            assert result.objective is not None  # an optimal solve has a solution
            bound, holds = min(result.bound, q.safety), result.objective > q.safety
        q.proven.append(bound)
        if holds:
            for x, _ in result.solutions:
                q.evaluate(x)
            return q.finish(Status.ROBUST, "milp")
    # Candidates: confirm in JAX, clipped into the box.
    for x, _ in result.solutions:
        xc, m = q.evaluate(x)
        if m <= 0:
            return q.finish(Status.NOT_ROBUST, "milp", xc)
    if result.solutions and time.monotonic() < q.deadline:
        # A MILP point the network does not confirm (tolerances): a short PGD from it.
        t0 = time.monotonic()
        x0 = jnp.asarray(result.solutions[0][0], jnp.float32).reshape(q.lo.shape)
        res = q.fns.pgd(key_refine, q.view, q.lo, q.hi, q.c, q.offset, x0, k=q.k)
        xc, m = q.evaluate(res.x)
        q.lap("milp_refine", t0)
        stats.notes.append(f"MILP objective {result.objective:.3g} not confirmed; refined margin {m:.3g}")
        if m <= 0:
            return q.finish(Status.NOT_ROBUST, "milp", xc)
    return q.finish(Status.UNKNOWN, None)


def _clip_point(x: Any, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """A candidate point (any array-like of the input's size) as float32 in the input's shape, in the box."""
    return jnp.clip(jnp.asarray(x, jnp.float32).reshape(lo.shape), lo, hi)


# ---------------------------------------------------------------------------------- jitted stages


class _Jitted(NamedTuple):
    margin: Callable[..., Any]
    pgd: Callable[..., Any]
    pgd_quick: Callable[..., Any]
    logits: Callable[..., Any]
    interval: Callable[..., Any]
    crown: Callable[..., Any]
    crown_spec: Callable[..., Any]
    alpha: Callable[..., Any]
    alpha_spec: Callable[..., Any]


@functools.lru_cache(maxsize=16)
def _jitted(
    pgd_steps: int,
    pgd_restarts: int,
    pgd_step_size: float,
    alpha_steps: int,
    alpha_lr: float,
    quick_steps: int,
    quick_restarts: int,
    chunk: int,
    intermediate_steps: int,
    intermediate_lr: float,
) -> _Jitted:
    """Jitted stage functions, shared by every verifier with the same hyperparameters.

    The view is an argument (not a closure constant), so networks of the same architecture reuse
    one compilation.
    """

    def alpha(view, lo, hi, base):
        return B.alpha_crown_bounds(
            view,
            lo,
            hi,
            steps=intermediate_steps,
            lr=intermediate_lr,
            base=base,
            chunk=chunk,
            logits=False,  # the spec rows get their own α-CROWN pass (alpha_spec)
        )

    def alpha_spec(view, lo, hi, c, b):
        return B.alpha_crown_spec_lower(view, lo, hi, c, bounds=b, steps=alpha_steps, lr=alpha_lr)

    return _Jitted(
        margin=jax.jit(view_margin, static_argnames="k"),
        pgd=view_box_pgd(pgd_steps, pgd_restarts, pgd_step_size),
        pgd_quick=view_box_pgd(quick_steps, quick_restarts, pgd_step_size),
        logits=jax.jit(L.apply_layers),
        interval=jax.jit(B.interval_bounds),
        crown=jax.jit(lambda view, lo, hi, base: B.crown_bounds(view, lo, hi, base=base, chunk=chunk)),
        crown_spec=jax.jit(lambda view, lo, hi, c, b: B.crown_spec_lower(view, lo, hi, c, bounds=b)),
        alpha=jax.jit(alpha),
        alpha_spec=jax.jit(alpha_spec),
    )


__all__ = ["STAGES", "Verifier", "VerifierConfig", "make_verifier"]
