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
stage cannot be interrupted, so before each bound stage its cost is predicted from the earlier
queries of this verifier (seconds per unstable neuron it has to bound); a stage predicted to end
after the deadline is not started and the query is UNKNOWN at once. A time-out is UNKNOWN, never
ROBUST. See `verdict` for the trust rules.

References:
  Tjeng, Xiao & Tedrake, Evaluating Robustness of Neural Networks with Mixed Integer Programming,
    ICLR 2019 (MIPVerify; progressive bound tightening, the sign question).
  Zhang et al., NeurIPS 2018 (CROWN); Xu et al., ICLR 2021 (α-CROWN); Madry et al., ICLR 2018 (PGD).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lnjax import bounds as B
from lnjax.models import layers as L
from lnjax.verify import milp as M
from lnjax.verify.config import STAGES
from lnjax.verify.pgd_box import make_pgd_box
from lnjax.verify.specs import Spec, SpecRows, kth_smallest, margin_lower_bound
from lnjax.verify.verdict import Status, Verdict, VerifyStats

_KNOWN = set(STAGES) | {"interval"}

VerifyFn = Callable[[jax.Array, jax.Array, jax.Array, Spec], Verdict]


def _rows_margin(view: L.LayerView, x: jax.Array, c: jax.Array, offset: jax.Array, k: int) -> jax.Array:
    return kth_smallest(c @ L.apply_layers(view, x) + offset, k)


def make_verifier(
    *,
    view: L.LayerView,
    stages: Sequence[str] = STAGES,
    time_limit: float | None = 60.0,
    milp_mode: str = "sign",
    atol: float = 1e-4,
    rtol: float = 1e-4,
    pgd_steps: int = 40,
    pgd_restarts: int = 4,
    pgd_step_size: float = 0.5,
    pgd_quick_steps: int = 10,
    pgd_quick_restarts: int = 1,
    alpha_steps: int = 20,
    alpha_lr: float = 0.1,
    alpha_intermediate: bool = True,
    alpha_intermediate_steps: int = 5,
    alpha_intermediate_lr: float = 0.3,
    bound_chunk: int = 32,
    milp_max_unstable: int | None = None,
    lp_tighten: bool = False,
    milp_options: M.MilpOptions | None = None,
    cbc_fraction: float = 0.6,
    worker: M.MilpWorker | None = None,
) -> VerifyFn:
    """Builds `verify(key, x_lower, x_upper, spec) -> Verdict` for one network.

    Args:
      view: the network (`models.layer_view`).
      stages: a subset of ("pgd", "crown", "alpha_crown", "milp"), run cheapest first. Interval
        bounds are always computed; "interval" may be listed but changes nothing.
      time_limit: wall-clock budget per query in seconds (None: unlimited).
      milp_mode: "sign" (cutoff, first solution) or "optimise" (to optimality or the time limit;
        returns every saved solution as a weakest point).
      atol, rtol: safety margin = atol + rtol · max(1, ‖z(centre)‖∞); ROBUST needs a proven
        margin bound above it.
      pgd_steps, pgd_restarts, pgd_step_size: the box PGD (`pgd_box.make_pgd_box`). A first step of
        half the box width found more counterexamples than a quarter on 80 held-out DOUBLE-MNIST
        boxes (quick PGD 30 vs 26, full 40 × 4: 41 vs 40), never fewer at any scale; a whole width
        was no better.
      pgd_quick_steps, pgd_quick_restarts: the quick PGD run before the bounds (0 steps: none; then
        the full PGD runs first, as its own stage before the bounds).
      alpha_steps, alpha_lr: α-CROWN's Adam steps and learning rate.
      alpha_intermediate: after the full PGD, α-CROWN also optimises the bounds of every unstable
        intermediate neuron (stats name "alpha_intermediate"; tighter bounds for the spec and the
        MILP). Its first cost prediction: CROWN's time × (steps + 1) (`warm_up` measures it).
      alpha_intermediate_steps, alpha_intermediate_lr: Adam steps and learning rate of that pass
        (each step a backward pass of every unstable neuron's two rows). Measured on 10 held-out
        quickstart boxes (not the benchmark's): 5 steps at 0.3 reach a spec bound at least as high
        as 10 steps at 0.1 on every box, in ~55 % of the time; 10 at 0.3 gains ~0.2 more for 2×.
      bound_chunk: neurons per CROWN backward pass (`crown_bounds(chunk=...)`). Passes are padded
        to whole chunks, so small chunks suit verification-friendly nets with few unstable neurons
        (DOUBLE-MNIST CNN, ~100 unstable per layer: 32 → 0.12 s, 256 → 0.75 s) and cost nothing
        measurable with thousands.
      milp_max_unstable: skip the MILP (UNKNOWN at once, with a note) when more ReLUs than this are
        still unstable after the bounds (each is a binary; CBC rarely settles more than a few hundred
        within seconds). None: always try.
      lp_tighten: per-neuron LP tightening in the MILP worker (off: it costs ~0.1 s per LP and adds
        little over CROWN).
      milp_options: base `milp.MilpOptions` (threads, emphasis, slack, ...); mode, cutoff and the
        CBC time limit are set per query.
      cbc_fraction: CBC's own (soft) limit as a fraction of the remaining budget, so it usually
        stops by itself before the hard kill and returns what it found.
      worker: the MILP worker process (default: the shared one).

    Returns:
      verify(key, x_lower, x_upper, spec): key a typed PRNG key; x_lower, x_upper:
      [*view.input_shape] (clipped to [0, 1] here); spec a `specs` object. The first call of each
      jitted stage compiles it (CROWN on a 64×64 CNN: ~15 s on 2 cores), inside that query's budget;
      `verify.warm_up(x_lower, x_upper, spec) -> seconds` runs every configured stage once on a box
      (results discarded; also builds the MILP network and starts the worker), so that timed queries
      with the same spec type measure only themselves, then times CROWN and α-CROWN's intermediate
      pass once more to seed the cost predictions.

    References:
      Tjeng, Xiao & Tedrake, ICLR 2019 (MIPVerify).
    """
    unknown = set(stages) - _KNOWN
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; expected a subset of {STAGES}")
    if milp_mode not in ("sign", "optimise"):
        raise ValueError(f"milp_mode must be 'sign' or 'optimise', got {milp_mode!r}")
    stages = tuple(
        s for s in ("pgd", "interval", "crown", "alpha_crown", "milp") if s in stages or s == "interval"
    )
    base_options = milp_options or M.MilpOptions()
    num_classes = int(math.prod(view.output_shapes[-1]))
    net: M.MilpNetwork | None = None
    rates: dict[str, float] = {}  # bound stage -> seconds per unit of work, from the last query

    def work(name: str, unstable_after_interval: tuple[int, ...]) -> int:
        """Backward-pass work of a bound stage: the unstable neurons it refines (+1: the logits)."""
        if name == "alpha_crown":
            return 1
        return 1 + sum(unstable_after_interval[1:])  # the first layer is exact under interval bounds

    def predicted(name: str, units: int) -> float:
        if name in rates:
            return rates[name] * units
        if name == "alpha_intermediate":  # never timed yet: from CROWN's rate, one pass per step
            return rates.get("crown", 0.0) * units * (alpha_intermediate_steps + 1)
        return 0.0

    if pgd_quick_steps < 0 or pgd_quick_restarts < 1:
        raise ValueError("need pgd_quick_steps ≥ 0 and pgd_quick_restarts ≥ 1")
    if bound_chunk < 1:
        raise ValueError(f"bound_chunk must be ≥ 1, got {bound_chunk}")
    fns = _jitted(
        pgd_steps,
        pgd_restarts,
        pgd_step_size,
        alpha_steps,
        alpha_lr,
        pgd_quick_steps,
        pgd_quick_restarts,
        bound_chunk,
        alpha_intermediate_steps,
        alpha_intermediate_lr,
    )
    margin_fn, pgd_fn, pgd_quick_fn, logits_fn = fns.margin, fns.pgd, fns.pgd_quick, fns.logits
    quick = "pgd" in stages and pgd_quick_steps > 0
    interval_fn, crown_fn, crown_spec_fn = fns.interval, fns.crown, fns.crown_spec
    alpha_spec_fn = fns.alpha_spec
    late_alpha = alpha_intermediate and "alpha_crown" in stages

    def same_bounds(view, lo, hi, base):
        return base

    def verify(key: jax.Array, x_lower: jax.Array, x_upper: jax.Array, spec: Spec) -> Verdict:
        nonlocal net
        t_start = time.monotonic()
        deadline = math.inf if time_limit is None else t_start + time_limit
        stats = VerifyStats()
        lo, hi = B.clip_box(jnp.asarray(x_lower, jnp.float32), jnp.asarray(x_upper, jnp.float32))
        if lo.shape != tuple(view.input_shape) or hi.shape != lo.shape:
            raise ValueError(
                f"box shapes {lo.shape}, {hi.shape} do not match the input shape {view.input_shape}"
            )
        if bool(jnp.any(lo > hi)):
            raise ValueError("empty box: x_lower > x_upper somewhere after clipping to [0, 1]")
        rows: SpecRows = spec.rows(num_classes)
        c, offset, k = jnp.asarray(rows.c), jnp.asarray(rows.offset), rows.k
        points: list[tuple[np.ndarray, float]] = []
        proven: list[float] = []

        z_centre = logits_fn(view, (lo + hi) / 2)
        stats.safety = safety = float(atol + rtol * max(1.0, float(jnp.max(jnp.abs(z_centre)))))

        def lap(name: str, t0: float) -> float:
            now = time.monotonic()
            stats.time_s[name] = stats.time_s.get(name, 0.0) + now - t0
            return now

        def evaluate(x) -> tuple[np.ndarray, float]:
            x = _clip_point(x, lo, hi)
            m = float(margin_fn(view, x, c, offset, k=k))
            points.append((np.asarray(x), m))
            return points[-1]

        def finish(status: Status, decided_by: str | None, counterexample=None) -> Verdict:
            stats.decided_by = decided_by
            stats.time_s["total"] = time.monotonic() - t_start
            pts = sorted(points, key=lambda p: p[1])
            return Verdict(
                status=status,
                proven_bound=max(proven) if proven else None,
                best_objective=pts[0][1] if pts else None,
                counterexample=counterexample,
                weakest_points=pts,
                stats=stats,
            )

        def out_of_time(after: str) -> bool:
            if time.monotonic() > deadline:
                stats.notes.append(f"time limit reached after {after}")
                return True
            return False

        key_quick, key_pgd, key_refine = jax.random.split(key, 3)
        x_attack = (lo + hi) / 2

        def attack(fn, key_) -> Verdict | None:
            nonlocal x_attack
            t0 = time.monotonic()
            res = fn(key_, view, lo, hi, c, offset, x_attack, k=k)
            x_attack = res.x
            x, m = evaluate(res.x)
            lap("pgd", t0)
            if m <= 0:
                return finish(Status.NOT_ROBUST, "pgd", x)
            if out_of_time("pgd"):
                return finish(Status.UNKNOWN, None)
            return None

        # --- PGD (quick, or the full one when there is no quick one) ----------------------------
        if "pgd" in stages:
            verdict = attack(pgd_quick_fn if quick else pgd_fn, key_quick if quick else key_pgd)
            if verdict is not None:
                return verdict

        # --- bounds ----------------------------------------------------------------------------
        t0 = time.monotonic()
        best = interval_fn(view, lo, hi)
        row_lower = M.interval_row_lower(rows, best[-1])
        stats.unstable["interval"] = B.unstable_counts(view, best)
        m_lb = margin_lower_bound(rows, row_lower)
        stats.margin_lower["interval"] = m_lb
        proven.append(m_lb)
        lap("interval", t0)
        if m_lb > safety:
            return finish(Status.ROBUST, "interval")

        def refine(name: str, bounds_fn, spec_fn, after: str) -> Verdict | None:
            """One bound stage: tighter bounds and spec rows; ROBUST if proven, UNKNOWN if out of time."""
            nonlocal best, row_lower
            if out_of_time(after):
                return finish(Status.UNKNOWN, None)
            units = work(name, stats.unstable["interval"])
            expected = predicted(name, units)
            if time.monotonic() + expected > deadline:
                left = deadline - time.monotonic()
                stats.notes.append(f"{name} not started: predicted {expected:.1f} s, {left:.1f} s left")
                return finish(Status.UNKNOWN, None)
            t0 = time.monotonic()
            best = bounds_fn(view, lo, hi, best)
            row_lower = np.maximum(row_lower, np.asarray(spec_fn(view, lo, hi, c, best), np.float64))
            stats.unstable[name] = B.unstable_counts(view, best)
            m_lb = margin_lower_bound(rows, row_lower)
            stats.margin_lower[name] = m_lb
            proven.append(m_lb)
            rates[name] = (time.monotonic() - t0) / units
            lap(name, t0)
            return finish(Status.ROBUST, name) if m_lb > safety else None

        after = "interval"
        for name, bounds_fn, spec_fn in (
            ("crown", crown_fn, crown_spec_fn),
            ("alpha_crown", same_bounds, alpha_spec_fn),
        ):
            if name in stages:
                verdict = refine(name, bounds_fn, spec_fn, after)
                if verdict is not None:
                    return verdict
                after = name

        # --- the full PGD, from the quick one's best point -------------------------------------
        if quick:
            if out_of_time("bounds"):
                return finish(Status.UNKNOWN, None)
            verdict = attack(pgd_fn, key_pgd)
            if verdict is not None:
                return verdict

        # --- α-CROWN over the intermediate neurons too -----------------------------------------
        if late_alpha:
            verdict = refine("alpha_intermediate", fns.alpha, alpha_spec_fn, "pgd" if quick else after)
            if verdict is not None:
                return verdict

        if "milp" not in stages:
            return finish(Status.UNKNOWN, None)
        if out_of_time("bounds"):
            return finish(Status.UNKNOWN, None)
        unstable_now = sum(list(stats.unstable.values())[-1])
        if milp_max_unstable is not None and unstable_now > milp_max_unstable:
            stats.notes.append(f"milp not started: {unstable_now} unstable ReLUs > milp_max_unstable")
            return finish(Status.UNKNOWN, None)

        # --- MILP ------------------------------------------------------------------------------
        t0 = time.monotonic()
        if net is None:
            net = M.network_from_view(view)
        query = M.make_query(net, lo, hi, best, rows, row_lower)
        remaining = deadline - time.monotonic()
        cbc_seconds = 1e9 if math.isinf(remaining) else max(cbc_fraction * remaining, 0.01)
        options = base_options._replace(
            mode=milp_mode,
            cutoff=safety,
            cbc_seconds=cbc_seconds,
            lp_tighten=lp_tighten or base_options.lp_tighten,
        )
        w = worker or M.shared_worker()
        result = w.solve(net, query, options, deadline=deadline)
        lap("milp", t0)
        stats.milp_status = result.status
        stats.binaries = result.num_binaries
        stats.milp = {
            f: getattr(result, f)
            for f in (
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
        }
        if result.status == "error":
            logging.warning("MILP worker error: %s", result.message)
            stats.notes.append(
                f"milp error: {result.message.strip().splitlines()[-1] if result.message else ''}"
            )
        if result.status == "infeasible":
            if milp_mode == "sign":
                proven.append(safety)
                return finish(Status.ROBUST, "milp")
            logging.warning("optimise-mode MILP infeasible: the bounds fed to it were not sound")
            stats.notes.append("optimise-mode MILP infeasible (unsound bounds?)")
            return finish(Status.UNKNOWN, None)
        if result.status == "optimal" and result.bound is not None:
            # Optimise mode: CBC's bound is proven. Sign mode: nodes above the cutoff were pruned,
            # so an optimal solution above the cutoff proves margin ≥ cutoff (the bound itself only
            # for a pure LP, i.e. no binaries, where CBC ignores the cutoff).
            if milp_mode == "optimise" or result.num_binaries == 0:
                bound, holds = result.bound, result.bound > safety
            else:
                bound, holds = min(result.bound, safety), result.objective > safety
            proven.append(bound)
            if holds:
                for x, _ in result.solutions:
                    evaluate(x)
                return finish(Status.ROBUST, "milp")
        # Candidates: confirm in JAX, clipped into the box.
        for x, _ in result.solutions:
            xc, m = evaluate(x)
            if m <= 0:
                return finish(Status.NOT_ROBUST, "milp", xc)
        if result.solutions and time.monotonic() < deadline:
            # A MILP point the network does not confirm (tolerances): a short PGD from it.
            t0 = time.monotonic()
            x0 = jnp.asarray(result.solutions[0][0], jnp.float32).reshape(lo.shape)
            res = pgd_fn(key_refine, view, lo, hi, c, offset, x0, k=k)
            xc, m = evaluate(res.x)
            lap("milp_refine", t0)
            stats.notes.append(f"MILP objective {result.objective:.3g} not confirmed; refined margin {m:.3g}")
            if m <= 0:
                return finish(Status.NOT_ROBUST, "milp", xc)
        return finish(Status.UNKNOWN, None)

    def warm_up(x_lower: jax.Array, x_upper: jax.Array, spec: Spec) -> float:
        nonlocal net
        t0 = time.monotonic()
        lo, hi = B.clip_box(jnp.asarray(x_lower, jnp.float32), jnp.asarray(x_upper, jnp.float32))
        rows = spec.rows(num_classes)
        c, offset, k = jnp.asarray(rows.c), jnp.asarray(rows.offset), rows.k
        centre = (lo + hi) / 2
        out = [logits_fn(view, centre), margin_fn(view, centre, c, offset, k=k)]
        if "pgd" in stages:
            # The same argument kinds as in `verify`: the full PGD starts from the quick one's point
            # (an output of a jitted function, which carries a sharding a host-made array lacks: a
            # different cache key), and `evaluate` clips and scores each attack's point.
            x0 = centre
            if quick:
                x0 = pgd_quick_fn(jax.random.key(0), view, lo, hi, c, offset, centre, k=k).x
                out.append(margin_fn(view, _clip_point(x0, lo, hi), c, offset, k=k))
            x1 = pgd_fn(jax.random.key(0), view, lo, hi, c, offset, x0, k=k).x
            out.append(margin_fn(view, _clip_point(x1, lo, hi), c, offset, k=k))
        best = base = interval_fn(view, lo, hi)
        if "crown" in stages:
            best = crown_fn(view, lo, hi, best)
            out.append(crown_spec_fn(view, lo, hi, c, best))
        if "alpha_crown" in stages:
            out.append(alpha_spec_fn(view, lo, hi, c, best))
        if late_alpha:
            best = fns.alpha(view, lo, hi, best)
            out.append(alpha_spec_fn(view, lo, hi, c, best))
        jax.block_until_ready((out, best))  # (compile-time runs never feed the cost predictions)
        if "milp" in stages and net is None:
            net = M.network_from_view(view)
        # One whole query: compiles the small eager ops around the stages (clipping, checks, key
        # splits; ~0.1 s each on CPU), which would otherwise land in the first timed query.
        verify(jax.random.key(0), x_lower, x_upper, spec)
        # A second, timed run of the costly bound stages seeds their cost predictions.
        units = work("crown", B.unstable_counts(view, base))
        best = base
        for name, fn, on in (
            ("crown", crown_fn, "crown" in stages),
            ("alpha_intermediate", fns.alpha, late_alpha),
        ):
            if on:
                t1 = time.monotonic()
                best = jax.block_until_ready(fn(view, lo, hi, best))
                rates[name] = (time.monotonic() - t1) / units
        if "milp" in stages:
            (worker or M.shared_worker()).start()
        return time.monotonic() - t0

    verify.warm_up = warm_up
    return verify


def _clip_point(x, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """A candidate point (any array-like of the input's size) as float32 in the input's shape, in the box."""
    return jnp.clip(jnp.asarray(x, jnp.float32).reshape(lo.shape), lo, hi)


class _Jitted(NamedTuple):
    margin: Callable
    pgd: Callable
    pgd_quick: Callable
    logits: Callable
    interval: Callable
    crown: Callable
    crown_spec: Callable
    alpha: Callable
    alpha_spec: Callable


@functools.lru_cache(maxsize=16)
def _jitted(
    pgd_steps,
    pgd_restarts,
    pgd_step_size,
    alpha_steps,
    alpha_lr,
    quick_steps,
    quick_restarts,
    chunk,
    intermediate_steps,
    intermediate_lr,
) -> _Jitted:
    """Jitted stage functions, shared by every verifier with the same hyperparameters.

    The view is an argument (not a closure constant), so networks of the same architecture reuse
    one compilation.
    """
    attack = make_pgd_box(steps=pgd_steps, step_size=pgd_step_size, restarts=pgd_restarts)
    quick_attack = make_pgd_box(steps=quick_steps, step_size=pgd_step_size, restarts=quick_restarts)

    @functools.partial(jax.jit, static_argnames="k")
    def margin(view, x, c, offset, *, k):
        return _rows_margin(view, x, c, offset, k)

    @functools.partial(jax.jit, static_argnames="k")
    def pgd(key, view, lo, hi, c, offset, x0, *, k):
        return attack(key, lambda x: _rows_margin(view, x, c, offset, k), lo, hi, x0)

    @functools.partial(jax.jit, static_argnames="k")
    def pgd_quick(key, view, lo, hi, c, offset, x0, *, k):
        return quick_attack(key, lambda x: _rows_margin(view, x, c, offset, k), lo, hi, x0)

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
        margin=margin,
        pgd=pgd,
        pgd_quick=pgd_quick,
        logits=jax.jit(L.apply_layers),
        interval=jax.jit(B.interval_bounds),
        crown=jax.jit(lambda view, lo, hi, base: B.crown_bounds(view, lo, hi, base=base, chunk=chunk)),
        crown_spec=jax.jit(lambda view, lo, hi, c, b: B.crown_spec_lower(view, lo, hi, c, bounds=b)),
        alpha=jax.jit(alpha),
        alpha_spec=jax.jit(alpha_spec),
    )
