"""The verifier's stages over one query's context: each predicts its cost and runs or ends the query.

A `Stage` is (name, after, predict, run): `run(ctx) -> Verdict | None` (a verdict ends the query,
None: go on), `predict(ctx) -> seconds | None` from the `CostModel` (None: no comparable run, or
a stage that is not predicted: PGD, interval, bab, MILP), and `after`, the label of the clock check
before it ("time limit reached after <after>"; None: no check). `build_stages` lists them in the
verifier's order from the config:

  pgd_quick           the quick box PGD from the box centre (`pgd.quick_steps` > 0)
  pgd                 the full box PGD here instead when there is no quick one
  interval            always: the base of every other bound
  crown               CROWN bounds of every pre-activation and of the spec rows
  alpha_crown         α-CROWN of the spec rows over CROWN's intermediate bounds
  pgd                 the full box PGD from the quick one's best point (after the bounds)
  alpha_intermediate  α-CROWN over every unstable intermediate neuron (`bounds.intermediate`)
  bab                 branch-and-bound over ReLU phases (`bab`: β-CROWN domains, MILP leaves)
  milp                MIPVerify MILP over the tightest bounds, in the worker, within what is left

The stats and `decided_by` name both PGD stages "pgd". Trust rules: `verdict`.

References:
  Tjeng, Xiao & Tedrake, ICLR 2019 (MIPVerify); Zhang et al., NeurIPS 2018 (CROWN);
  Xu et al., ICLR 2021 (α-CROWN); Madry et al., ICLR 2018 (PGD).
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
from lnjax.specs import SpecRows, margin_lower_bound
from lnjax.verify import bab as BB, milp as M
from lnjax.verify.config import VerifierConfig
from lnjax.verify.cost import CostModel
from lnjax.verify.verdict import Status, Verdict, VerifyStats, milp_proof

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


class QueryKeys(NamedTuple):
    """One query's keys: the quick PGD, the full PGD, and `refine`: the PGD refining an unconfirmed
    MILP point and (folded with the batch count) branch-and-bound's box attacks."""

    quick: jax.Array
    pgd: jax.Array
    refine: jax.Array


class QueryContext:
    """One query's state, read and written by the stages.

    Fixed: the view, the jitted functions, the config, the start time and deadline, the checked box
    (lo, hi), the spec rows (and c, offset, k on the device), the keys, the safety margin.
    Growing: `points` (every point scored, with its JAX margin), `proven` (every proven margin lower
    bound), `x_attack` (where the next PGD starts), `best` (the tightest bounds so far; set by the
    interval stage, which runs before any other bound stage), `row_lower` (lower bounds of c @ z),
    `stats`, `targets` (the multi-targeted attack's row sets, ranked at the first weakest point) and
    `targets_tried` (how many of them branch-and-bound's attacks have used, over all its runs).
    """

    def __init__(
        self,
        view: L.LayerView,
        fns: Jitted,
        cfg: VerifierConfig,
        t_start: float,
        lo: jax.Array,
        hi: jax.Array,
        rows: SpecRows,
        keys: QueryKeys,
        time_limit: float | None = None,
    ):
        self.view, self.fns, self.cfg, self.lo, self.hi, self.rows = view, fns, cfg, lo, hi, rows
        self.keys = keys
        self.t_start = t_start
        self.deadline = math.inf if time_limit is None else t_start + time_limit
        self.stats = VerifyStats()
        self.c, self.offset, self.k = jnp.asarray(rows.c), jnp.asarray(rows.offset), rows.k
        self.points: list[tuple[np.ndarray, float]] = []
        self.proven: list[float] = []
        z_centre = fns.logits(view, (lo + hi) / 2)
        self.safety = float(cfg.atol + cfg.rtol * max(1.0, float(jnp.max(jnp.abs(z_centre)))))
        self.stats.safety = self.safety
        self.x_attack = (lo + hi) / 2
        self.best: Any = None
        self.row_lower: np.ndarray = np.full(len(rows.offset), -np.inf)
        # α-CROWN's slopes of each spec row's best bound ({ReLU op: [M, ...]}): the BaB root's start.
        self.spec_alphas: dict[int, Any] | None = None
        self.targets: np.ndarray | None = None
        self.targets_tried = 0

    def lap(self, name: str, t0: float) -> float:
        """Adds the seconds since `t0` to stage `name`'s time; returns now."""
        now = time.monotonic()
        self.stats.time_s[name] = self.stats.time_s.get(name, 0.0) + now - t0
        return now

    def evaluate(self, x: Any) -> tuple[np.ndarray, float]:
        """The JAX margin at a candidate clipped into the box; recorded as a weakest point."""
        x = clip_point(x, self.lo, self.hi)
        m = float(self.fns.margin(self.view, x, self.c, self.offset, k=self.k))
        self.points.append((np.asarray(x), m))
        return self.points[-1]

    def first_counterexample(self, solutions: Any) -> np.ndarray | None:
        """The first MILP solution `(x, objective)` the JAX model scores at margin ≤ 0, clipped into
        the box (None if none). The model is the referee: this holds whatever the solver claimed, so
        a MILP "proof" next to such a point is never ROBUST. Each point scored is recorded."""
        for x, _ in solutions:
            xc, m = self.evaluate(x)
            if m <= 0:
                return xc
        return None

    def prove(self, name: str, bounds: Any, spec_lower: np.ndarray) -> bool:
        """New tightest bounds and spec-row lower bounds from bound stage `name`; True if the margin
        lower bound now exceeds the safety margin (ROBUST)."""
        self.best = bounds
        self.row_lower = np.fmax(self.row_lower, spec_lower)  # a NaN from one stage keeps the earlier bound
        self.stats.unstable[name] = B.unstable_counts(self.view, bounds)
        m_lb = margin_lower_bound(self.rows, self.row_lower)
        self.stats.margin_lower[name] = m_lb
        self.proven.append(m_lb)
        return m_lb > self.safety

    def finish(self, status: Status, decided_by: str | None, counterexample: Any = None) -> Verdict:
        """The verdict, with the points seen (smallest margin first) and the best proven bound."""
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
        """Past the deadline (with a note naming what ran last)?"""
        if time.monotonic() > self.deadline:
            self.stats.notes.append(f"time limit reached after {after}")
            return True
        return False

    def time_left(self) -> float:
        return self.deadline - time.monotonic()


class Stage(NamedTuple):
    """One step of the verifier (see the module docstring). `optional`: predicted to overrun, it is
    skipped and the next stage runs on the bounds so far (else the query ends UNKNOWN)."""

    name: str
    after: str | None
    predict: Callable[[QueryContext], float | None]
    run: Callable[[QueryContext], Verdict | None]
    optional: bool = False


def _unpredicted(ctx: QueryContext) -> float | None:
    return None


def pgd_stage(
    name: str, fn: Callable[..., Any], key: Callable[[QueryKeys], jax.Array], after: str | None
) -> Stage:
    """A box PGD from the last attack's best point: NOT_ROBUST if the JAX margin there is ≤ 0,
    UNKNOWN if the deadline has passed after it."""

    def run(ctx: QueryContext) -> Verdict | None:
        t0 = time.monotonic()
        res = fn(key(ctx.keys), ctx.view, ctx.lo, ctx.hi, ctx.c, ctx.offset, ctx.x_attack, k=ctx.k)
        ctx.x_attack = res.x
        x, m = ctx.evaluate(res.x)
        ctx.lap("pgd", t0)
        if m <= 0:
            return ctx.finish(Status.NOT_ROBUST, "pgd", x)
        if ctx.out_of_time("pgd"):
            return ctx.finish(Status.UNKNOWN, None)
        return None

    return Stage(name, after, _unpredicted, run)


def interval_stage(fn: Callable[..., Any]) -> Stage:
    """Interval bounds (always computed: the base of every other bound); ROBUST if proven."""

    def run(ctx: QueryContext) -> Verdict | None:
        t0 = time.monotonic()
        best = fn(ctx.view, ctx.lo, ctx.hi)
        proven = ctx.prove("interval", best, M.interval_row_lower(ctx.rows, best[-1]))
        ctx.lap("interval", t0)
        return ctx.finish(Status.ROBUST, "interval") if proven else None

    return Stage("interval", None, _unpredicted, run)


def bound_stage(
    name: str,
    bounds_fn: Callable[..., Any],
    spec_fn: Callable[..., Any],
    costs: CostModel,
    after: str,
    optional: bool = False,
) -> Stage:
    """A bound stage: tighter intermediate bounds (`bounds_fn`) and spec rows (`spec_fn`) over the
    best so far; ROBUST if proven. Its cost is predicted and recorded in `costs`."""

    def units(ctx: QueryContext) -> int:
        return costs.work(name, ctx.stats.unstable["interval"])

    def predict(ctx: QueryContext) -> float | None:
        return costs.predict(name, units(ctx))

    def run(ctx: QueryContext) -> Verdict | None:
        work = units(ctx)
        t0 = time.monotonic()
        best = bounds_fn(ctx.view, ctx.lo, ctx.hi, ctx.best)
        spec = spec_fn(ctx.view, ctx.lo, ctx.hi, ctx.c, best)
        if isinstance(spec, tuple):  # α-CROWN: the rows' bounds and their slopes (the BaB root's)
            spec, ctx.spec_alphas = spec
        spec_lower = np.asarray(spec, np.float64)
        proven = ctx.prove(name, best, spec_lower)
        costs.record(name, time.monotonic() - t0, work)
        ctx.lap(name, t0)
        return ctx.finish(Status.ROBUST, name) if proven else None

    return Stage(name, after, predict, run, optional)


def _same_bounds(view: L.LayerView, lo: jax.Array, hi: jax.Array, base: Any) -> Any:
    """The bounds stage of spec-only α-CROWN: the intermediate bounds stay CROWN's."""
    return base


class LazyNetwork:
    """The MILP network of a view, built on first use and kept (one per verifier)."""

    def __init__(self, view: L.LayerView):
        self.view, self.net = view, None

    def get(self) -> M.MilpNetwork:
        if self.net is None:
            self.net = M.network_from_view(self.view)
        return self.net


def milp_stage(milp_net: LazyNetwork, worker: Callable[[], M.MilpWorker]) -> Stage:
    """The MILP over the tightest bounds in the worker (`worker()`), within what is left of the
    budget; not started (UNKNOWN, with a note) above `milp.max_unstable` unstable ReLUs."""

    def run(ctx: QueryContext) -> Verdict:
        unstable_now = sum(list(ctx.stats.unstable.values())[-1])
        limit = ctx.cfg.milp.max_unstable
        if limit is not None and unstable_now > limit:
            ctx.stats.notes.append(
                f"milp not started: {unstable_now} unstable ReLUs > verifier.milp.max_unstable"
            )
            return ctx.finish(Status.UNKNOWN, None)
        return _solve_milp(ctx, milp_net, worker())

    return Stage("milp", "bounds", _unpredicted, run)


def _solve_milp(q: QueryContext, milp_net: LazyNetwork, worker: M.MilpWorker) -> Verdict:
    cfg, stats = q.cfg, q.stats
    t0 = time.monotonic()
    net = milp_net.get()
    query = M.make_query(net, q.lo, q.hi, q.best, q.rows, q.row_lower)
    remaining = q.deadline - time.monotonic()
    base_options = cfg.milp.solver or M.MilpOptions()
    options = base_options._replace(
        mode=cfg.milp.mode,
        cutoff=q.safety,
        time_limit=cfg.milp.solver_seconds(remaining),
        lp_tighten=cfg.milp.lp_tighten or base_options.lp_tighten,
    )
    result = worker.solve(net, query, options, deadline=q.deadline)
    q.lap("milp", t0)
    stats.milp_status = result.status
    stats.binaries = result.num_binaries
    stats.milp = {f: getattr(result, f) for f in _MILP_FACTS}
    if result.status == "error":
        logging.warning("MILP worker error: %s", result.message)
        stats.notes.append(f"milp error: {result.message.strip().splitlines()[-1] if result.message else ''}")
    bound, holds = milp_proof(result, cfg.milp.mode, q.safety)
    if result.status == "infeasible" and cfg.milp.mode != "sign":
        logging.warning("optimise-mode MILP infeasible: the bounds fed to it were not sound")
        stats.notes.append("optimise-mode MILP infeasible (unsound bounds?)")
        return q.finish(Status.UNKNOWN, None)
    if bound is not None:
        q.proven.append(bound)
    xc = q.first_counterexample(result.solutions)
    if xc is not None:
        if holds:  # a float mismatch or an encoding bug
            logging.warning("MILP proof contradicted by the model at one of its own points")
            stats.notes.append("milp proof contradicted: the model confirms a counterexample")
        return q.finish(Status.NOT_ROBUST, "milp", xc)
    if holds:
        return q.finish(Status.ROBUST, "milp")
    if result.solutions and time.monotonic() < q.deadline:
        # A MILP point the network does not confirm (tolerances): a short PGD from it.
        t0 = time.monotonic()
        x0 = jnp.asarray(result.solutions[0][0], jnp.float32).reshape(q.lo.shape)
        res = q.fns.pgd(q.keys.refine, q.view, q.lo, q.hi, q.c, q.offset, x0, k=q.k)
        xc, m = q.evaluate(res.x)
        q.lap("milp_refine", t0)
        stats.notes.append(f"MILP objective {result.objective:.3g} not confirmed; refined margin {m:.3g}")
        if m <= 0:
            return q.finish(Status.NOT_ROBUST, "milp", xc)
    return q.finish(Status.UNKNOWN, None)


def leaf_solver(milp_net: LazyNetwork, worker: Callable[[], M.MilpWorker]) -> Callable[..., M.MilpResult]:
    """`solve(ctx, bounds, rows, row_lower, seconds) -> MilpResult`: branch-and-bound's leaf MILP, the
    sign question of spec rows `rows` (the query's, or one of them for k = 1) over the query's box
    with a subdomain's bounds (its phases fixed by the clamping), in the worker, killed after
    `seconds`."""

    def solve(
        ctx: QueryContext, bounds: Any, rows: SpecRows, row_lower: np.ndarray, seconds: float
    ) -> M.MilpResult:
        net = milp_net.get()
        query = M.make_query(net, ctx.lo, ctx.hi, bounds, rows, row_lower)
        base = ctx.cfg.milp.solver or M.MilpOptions()
        options = base._replace(
            mode="sign",
            cutoff=ctx.safety,
            time_limit=ctx.cfg.milp.solver_seconds(seconds),
            lp_tighten=False,
        )
        return worker().solve(net, query, options, deadline=time.monotonic() + seconds)

    return solve


def bab_stage(milp_net: LazyNetwork | None, worker: Callable[[], M.MilpWorker]) -> Stage:
    """Branch-and-bound over ReLU phases from the tightest bounds so far (`bab`); its leaves go to the
    MILP when `milp_net` is given (the "milp" stage is on)."""
    leaf = None if milp_net is None else leaf_solver(milp_net, worker)
    seconds: dict[tuple[int, int], float] = {}  # batch timings by (rows, size), kept across queries

    def run(ctx: QueryContext) -> Verdict | None:
        return BB.run(ctx, leaf, seconds)

    return Stage("bab", "bounds", _unpredicted, run)


def build_stages(
    cfg: VerifierConfig,
    fns: Jitted,
    costs: CostModel,
    milp_net: LazyNetwork,
    worker: Callable[[], M.MilpWorker],
) -> tuple[Stage, ...]:
    """The stages `cfg.stages` asks for (interval always), in the verifier's order (module docstring)."""
    on = set(cfg.stages)
    quick = "pgd" in on and cfg.pgd.quick_steps > 0
    out: list[Stage] = []
    if "pgd" in on:
        if quick:
            out.append(pgd_stage("pgd_quick", fns.pgd_quick, lambda k: k.quick, None))
        else:
            out.append(pgd_stage("pgd", fns.pgd, lambda k: k.pgd, None))
    out.append(interval_stage(fns.interval))
    last_bound = "interval"
    if "crown" in on:
        out.append(bound_stage("crown", fns.crown, fns.crown_spec, costs, last_bound))
        last_bound = "crown"
    if "alpha_crown" in on:
        out.append(bound_stage("alpha_crown", _same_bounds, fns.alpha_spec, costs, last_bound))
        last_bound = "alpha_crown"
    if quick:
        out.append(pgd_stage("pgd", fns.pgd, lambda k: k.pgd, "bounds"))
    if cfg.bounds.intermediate and "alpha_crown" in on:
        after = "pgd" if quick else last_bound
        # Optional when branch-and-bound follows: it starts from the bounds so far instead.
        optional = "bab" in on
        out.append(bound_stage("alpha_intermediate", fns.alpha, fns.alpha_spec, costs, after, optional))
    if "bab" in on:
        out.append(bab_stage(milp_net if "milp" in on else None, worker))
    if "milp" in on:
        out.append(milp_stage(milp_net, worker))
    return tuple(out)


def clip_point(x: Any, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """A candidate point (any array-like of the input's size) as float32 in the input's shape, in the box."""
    return jnp.clip(jnp.asarray(x, jnp.float32).reshape(lo.shape), lo, hi)


# ---------------------------------------------------------------------------------- jitted stages


class Jitted(NamedTuple):
    """The verifier's compiled functions (the view is an argument: one compilation per architecture)."""

    margin: Callable[..., Any]
    pgd: Callable[..., Any]
    pgd_quick: Callable[..., Any]
    logits: Callable[..., Any]
    interval: Callable[..., Any]
    crown: Callable[..., Any]
    crown_spec: Callable[..., Any]
    alpha: Callable[..., Any]
    alpha_spec: Callable[..., Any]


def jitted(cfg: VerifierConfig) -> Jitted:
    """The jitted stage functions for `cfg`'s hyperparameters (shared by every verifier with the same)."""
    return _jitted(
        cfg.pgd.steps,
        cfg.pgd.restarts,
        cfg.pgd.step_size,
        cfg.bounds.alpha_steps,
        cfg.bounds.alpha_lr,
        cfg.pgd.quick_steps,
        cfg.pgd.quick_restarts,
        cfg.bounds.chunk,
        cfg.bounds.intermediate_steps,
        cfg.bounds.intermediate_lr,
        cfg.pgd.odi_steps,
    )


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
    odi_steps: int,
) -> Jitted:
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

    def alpha_spec(view, lo, hi, c, b):  # the rows' bounds and their best slopes
        return B.alpha_crown_spec(view, lo, hi, c, bounds=b, steps=alpha_steps, lr=alpha_lr)

    return Jitted(
        margin=jax.jit(view_margin, static_argnames="k"),
        pgd=view_box_pgd(pgd_steps, pgd_restarts, pgd_step_size, odi_steps),
        pgd_quick=view_box_pgd(quick_steps, quick_restarts, pgd_step_size),
        logits=jax.jit(L.apply_layers),
        interval=jax.jit(B.interval_bounds),
        crown=jax.jit(lambda view, lo, hi, base: B.crown_bounds(view, lo, hi, base=base, chunk=chunk)),
        crown_spec=jax.jit(lambda view, lo, hi, c, b: B.crown_spec_lower(view, lo, hi, c, bounds=b)),
        alpha=jax.jit(alpha),
        alpha_spec=jax.jit(alpha_spec),
    )


__all__ = [
    "Jitted",
    "LazyNetwork",
    "QueryContext",
    "QueryKeys",
    "Stage",
    "bab_stage",
    "bound_stage",
    "build_stages",
    "clip_point",
    "interval_stage",
    "jitted",
    "leaf_solver",
    "milp_stage",
    "pgd_stage",
]
