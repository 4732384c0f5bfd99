"""A MaRVeL-style optimizer of maximal robust layer-neighborhoods, with the verifier as the oracle.

The search works in log-space, θ_d = log ε_d, one coordinate per layer (R layers). Each iteration
asks the verifier one question — is N(x; exp θ) robust? — and then:

- ROBUST: commit ε (the anchor θ* of later shrinks; the result is the largest-norm robust ε seen),
  take weakest points of the box (the verifier's solutions and its PGD point, plus a jitted PGD of our own in
  the box started from the weakest of them), and expand along the step gradient
      g = n + λ · (‖n‖ / ‖r‖) · r
  where n = ∂ norm / ∂θ and r = ∂ (worst-case margin) / ∂θ (the RL gradient, see `gradients`):
  θ ← θ + step · g / ‖g‖∞, then step ← step · grow.
- NOT_ROBUST or UNKNOWN (never committed): λ ← λ · λ_decay, and shrink with per-layer weights
  w ∈ [floor, 1] (`sensitivity`): with a committed θ*, the growth since θ* is cut layer by layer,
      θ ← θ* + max(θ − θ*, 0) ⊙ (1 − w) + min(θ − θ*, 0),
  so a weight-1 layer returns to its committed value and a small-weight layer keeps most of its
  growth (fixed weights: shrink more far from the non-target object); without one yet,
  θ ← θ + log(1 − first_shrink · w). The next expansion step is the last step times `backoff`.

The norm (`norm`): "logvol" maximises Σ_d |l_d| log ε_d (n_d = |l_d| in θ; the default: every
layer's ε matters relative to its size, and ε_d = 0 is never optimal), or "linear" Σ_d |l_d| ε_d
(n_d = |l_d| ε_d). Both are reported. By default both gradients are preconditioned by the layer
sizes (per-pixel gradients, see `precondition`).

λ schedule (MaRVeL's public defaults): λ_0 = 0.99, ×0.75 on a failure or a plateau (a robust step
that raises the mean per-pixel ε by less than `plateau` relative to the committed one), stop when
λ < λ_min = 0.01 (converged, "lambda_min"). Also converged ("gain"): the best norm grew by less than
`gain_tol` (relative, `relative_gain`) over the last `gain_window` robust expansions. `max_queries`
verifier queries (default 100) and `time_budget` seconds are safety nets, not the stopping rule;
`Result.converged` says which one stopped the search. A converged search ends with a line search
along its best ε (`scale_up`): ε × (1 + δ), δ doubling after each ROBUST answer, until one is not,
then a bisection of that last step; the expansions follow the RL gradient and back off after every
failure, so a search could stop with the whole of ε still provable at a larger scale.

Start: the largest ε = eps_max · 2^−j (uniform over layers, j = 0..) in which a box PGD finds no
counterexample, times `init_fraction` (PGD calls are not verifier queries), or a given `eps0`. With
`start="uniform"` the search first finds, from there, the largest uniform ε the verifier proves
(a log bisection to a factor 1 + start_tol, `uniform_start`) and expands from it, so it ends at
least as large as that uniform ε on its norm (the expansions alone can end below it: they leave the
uniform direction after the first ROBUST answer and every later failure shrinks toward the anchor).

The result is always a verified one: the committed ε with the largest norm; zeros with
`verified=False` if no query was ever ROBUST.

References:
  Kabaha & Drachsler-Cohen, Maximal Robust Neural Network Specifications via Oracle-Guided
    Numerical Optimization, VMCAI 2023 (MaRVeL).
  Mour, Maximal Robust Layer-Neighborhoods in Multi-Label Neural Networks (Technion 2023).
  Tjeng, Xiao & Tedrake, ICLR 2019 (MIPVerify, the oracle).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from lnjax.models import layers as L
from lnjax.neighborhood import gradients as G
from lnjax.neighborhood.baseline import bisect
from lnjax.neighborhood.config import NORMS, OptimizerConfig
from lnjax.neighborhood.problem import (
    CountingOracle,
    Problem,
    Result,
    finish,
    linear_norm,
    log_volume,
    mean_width,
)
from lnjax.neighborhood.sensitivity import (
    fixed_weights,
    layer_sensitivity,
    sensitivity_weights,
)
from lnjax.types import VerifyFn
from lnjax.verify.verdict import Status, Verdict


class OptimizerState(NamedTuple):
    """The optimizer's state between queries (host numpy values; the update is pure).

    Attributes:
      theta: [R] log ε of the next candidate.
      best_theta: [R] log ε of the last verified-robust candidate (the anchor of shrinks; the
        result is tracked by `run`: the largest-norm robust ε); meaningful if has_best.
      has_best: whether any candidate was verified robust.
      step: log-space length of the next expansion.
      last_step: length of the last expansion (for the back-off after a failure).
      lam: λ, the weight of the RL gradient.
      iteration: queries answered so far.
      failures, plateaus: counts.
      done: stop (λ < λ_min).
    """

    theta: np.ndarray
    best_theta: np.ndarray
    has_best: bool
    step: float
    last_step: float
    lam: float
    iteration: int
    failures: int
    plateaus: int
    done: bool


class Optimizer(NamedTuple):
    """`make_optimizer`'s functions.

    init(eps0 [R]) -> OptimizerState.
    update(state, robust, rl_grad [R] (w.r.t. θ; ignored unless robust), sizes [R],
      shrink_weights [R]) -> OptimizerState (pure).
    run(key, verify, view, problem, *, eps0=None, progress=None) -> Result (the host loop).
    """

    init: Callable[..., OptimizerState]
    update: Callable[..., OptimizerState]
    run: Callable[..., Result]


def norm_gradient(eps: ArrayLike, sizes: ArrayLike, norm: str = "logvol") -> np.ndarray:
    """∂ norm / ∂θ (θ = log ε): "logvol" → |l_d|; "linear" → |l_d| ε_d. float64 [R]."""
    sizes = np.asarray(sizes, np.float64)
    if norm == "logvol":
        return sizes.copy()
    if norm == "linear":
        return sizes * np.asarray(eps, np.float64)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def step_gradient(n: ArrayLike, r: ArrayLike, lam: float) -> np.ndarray:
    """n + λ · (‖n‖ / ‖r‖) · r (just n when r = 0). float64 [R]."""
    n = np.asarray(n, np.float64)
    r = np.asarray(r, np.float64)
    rn = float(np.linalg.norm(r))
    if not math.isfinite(rn) or rn == 0.0:
        return n
    return n + lam * (float(np.linalg.norm(n)) / rn) * r


SCALE_UP_KEY = 0x5CA1E  # fold_in(search key, ·): the scale-up's keys, apart from the start's and the loop's
UNIFORM_START_KEY = 0x0A1F0  # fold_in(search key, ·): the uniform start's keys


def relative_gain(before: ArrayLike, after: ArrayLike, sizes: ArrayLike, norm: str = "logvol") -> float:
    """The relative gain of the norm from ε `before` to ε `after` (both > 0 where sizes > 0).

    "logvol": exp(Δ log-volume / Σ|l_d|) − 1, the relative growth of the geometric-mean per-pixel ε
    (a log-volume has no natural zero, so its own ratio is meaningless); "linear": the ratio of
    Σ|l_d| ε_d minus 1. Negative when the norm shrank.
    """
    sizes = np.asarray(sizes, np.float64)
    if norm == "logvol":
        total = float(np.sum(sizes))
        return math.expm1((log_volume(after, sizes) - log_volume(before, sizes)) / max(total, 1.0))
    if norm == "linear":
        b = linear_norm(before, sizes)
        return linear_norm(after, sizes) / b - 1.0 if b > 0 else math.inf
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def make_optimizer(config: OptimizerConfig | None = None, **overrides: Any) -> Optimizer:
    """Builds the optimizer (see the module docstring for the algorithm).

    Args:
      config: the options (`OptimizerConfig`, whose fields document each one; default: its defaults).
      **overrides: `OptimizerConfig` fields replacing the config's (e.g. `max_queries=5`); checked by
        `OptimizerConfig` (ValueError naming the field).

    Returns:
      An `Optimizer` (init, update, run).
    """
    cfg = dataclasses.replace(config or OptimizerConfig(), **overrides)
    lo_t, hi_t = math.log(cfg.eps_min), math.log(cfg.eps_max)

    def init(eps0: ArrayLike) -> OptimizerState:
        theta = np.clip(np.log(np.maximum(np.asarray(eps0, np.float64), cfg.eps_min)), lo_t, hi_t)
        return OptimizerState(
            theta=theta,
            best_theta=np.full_like(theta, -np.inf),
            has_best=False,
            step=float(cfg.lr),
            last_step=float(cfg.lr),
            lam=float(cfg.lam),
            iteration=0,
            failures=0,
            plateaus=0,
            done=False,
        )

    def update(
        state: OptimizerState, robust: bool, rl_grad: ArrayLike, sizes: ArrayLike, shrink_weights: ArrayLike
    ) -> OptimizerState:
        theta = np.asarray(state.theta, np.float64)
        w = np.asarray(shrink_weights, np.float64)
        sizes = np.asarray(sizes, np.float64)
        lam_ = state.lam
        failures, plateaus = state.failures, state.plateaus
        if robust:
            eps = np.exp(theta)
            if state.has_best:
                before = mean_width(np.exp(state.best_theta), sizes)
                if mean_width(eps, sizes) - before < cfg.plateau * before:
                    lam_ *= cfg.lam_decay
                    plateaus += 1
            n, r = norm_gradient(eps, sizes, cfg.norm), np.asarray(rl_grad, np.float64)
            if cfg.precondition:
                n, r = n / np.maximum(sizes, 1), r / np.maximum(sizes, 1)
            g = step_gradient(n, r, lam_)
            top = float(np.max(np.abs(g)))
            u = g / top if top > 0 else np.zeros_like(g)
            new_theta = np.clip(theta + state.step * u, lo_t, hi_t)
            return state._replace(
                theta=new_theta,
                best_theta=theta,
                has_best=True,
                step=min(state.step * cfg.grow, cfg.max_step),
                last_step=state.step,
                lam=lam_,
                iteration=state.iteration + 1,
                plateaus=plateaus,
                done=lam_ < cfg.lam_min,
            )
        lam_ *= cfg.lam_decay
        failures += 1
        if state.has_best:
            delta = theta - state.best_theta
            new_theta = state.best_theta + np.maximum(delta, 0.0) * (1.0 - w) + np.minimum(delta, 0.0)
        else:
            new_theta = theta + np.log1p(-cfg.first_shrink * w)
        return state._replace(
            theta=np.clip(new_theta, lo_t, hi_t),
            step=max(state.last_step * cfg.backoff, 1e-3),
            last_step=state.last_step * cfg.backoff,
            lam=lam_,
            iteration=state.iteration + 1,
            failures=failures,
            done=lam_ < cfg.lam_min,
        )

    def start_eps(
        key: jax.Array, view: L.LayerView, problem: Problem, c: jax.Array, offset: jax.Array, k: int
    ) -> tuple[float, int]:
        """The largest eps_max · 2^−j with no PGD counterexample (a uniform box), and PGD calls made."""
        x = jnp.asarray(problem.x)
        e = cfg.eps_max
        calls = 0
        while e >= cfg.eps_min:
            lo, hi = jnp.clip(x - e, 0.0, 1.0), jnp.clip(x + e, 0.0, 1.0)
            res = G.pgd_in_box(
                jax.random.fold_in(key, calls),
                view,
                lo,
                hi,
                c,
                offset,
                x,
                k=k,
                steps=cfg.pgd_steps,
                restarts=cfg.pgd_restarts,
                step_size=cfg.pgd_step_size,
            )
            calls += 1
            if float(res.margin) > 0:
                return e, calls
            e /= 2
        return cfg.eps_min, calls

    def run(
        key: jax.Array,
        verify: VerifyFn,
        view: L.LayerView,
        problem: Problem,
        *,
        eps0: ArrayLike | None = None,
        progress: Callable[[OptimizerState], None] | None = None,
    ) -> Result:
        """Searches a maximal robust ε for `problem` with `verify` as the oracle.

        Args:
          key: a typed PRNG key.
          verify: `lnjax.verify.make_verifier(...)` (or any function with its signature).
          view: the network (gradients, PGD).
          problem: `problem.make_problem(x, layers, spec)`.
          eps0: the start ([R] or a scalar; default: from the PGD bracket).
          progress: called with the state after each query.

        Returns:
          `Result` (its eps is verified robust, or zeros with verified=False).
        """
        t_start = time.perf_counter()
        R = problem.num_layers
        sizes = np.asarray(problem.sizes, np.float64)
        c, offset, k = G.spec_arrays(problem.spec, view)
        x = jnp.asarray(problem.x)
        layers = jnp.asarray(problem.layers)
        oracle = CountingOracle(verify, problem)
        key_start, key_loop = jax.random.split(key)
        facts: dict = {}
        start_key, ceiling = None, cfg.eps_max  # the uniform start's key and bracket top (never asked)
        if eps0 is None:
            e0, calls = start_eps(key_start, view, problem, c, offset, k)
            facts["pgd_bracket"] = {"eps": e0, "pgd_calls": calls}
            eps0 = np.full(R, cfg.init_fraction * e0)
            if cfg.start == "uniform":
                start_key = jax.random.fold_in(key, UNIFORM_START_KEY)
                ceiling = min(2.0 * e0, cfg.eps_max)  # PGD broke the box at 2 e0 (e0 < eps_max)
        else:
            eps0 = np.broadcast_to(np.asarray(eps0, np.float64), (R,))
        if cfg.shrink == "fixed":
            weights = fixed_weights(R, near=cfg.fixed_near, power=cfg.fixed_power)
        else:
            sal = np.asarray(G.saliency(view, x, c, offset, k=k))
            sens = layer_sensitivity(sal, problem.layers, R, reduce=cfg.sensitivity_reduce)
            weights = sensitivity_weights(sens, orientation=cfg.orientation, floor=cfg.weight_floor)
            facts["layer_sensitivity"] = sens.tolist()
        facts["shrink_weights"] = weights.tolist()

        def weakest_gradient(
            qkey: jax.Array, verdict: Verdict, lo: np.ndarray, hi: np.ndarray, eps: np.ndarray, entry: dict
        ) -> np.ndarray:
            """∂ (worst-case margin) / ∂θ at a ROBUST box from its weakest points (the verifier's, plus a
            box PGD started from the weakest of them); noted in the query's trail `entry`."""
            points = list(verdict.weakest_points)
            x0 = points[0][0] if points else np.asarray(x)
            res = G.pgd_in_box(
                jax.random.fold_in(qkey, 1),
                view,
                jnp.asarray(lo),
                jnp.asarray(hi),
                c,
                offset,
                jnp.asarray(x0, jnp.float32).reshape(x.shape),
                k=k,
                steps=cfg.pgd_steps,
                restarts=cfg.pgd_restarts,
                step_size=cfg.pgd_step_size,
            )
            points.append((np.asarray(res.x), float(res.margin)))
            pts, ms = G.pad_points(points, x.shape)
            g_eps, _ = G.rl_gradient(
                view,
                x,
                layers,
                jnp.asarray(eps, jnp.float32),
                jnp.asarray(pts),
                jnp.asarray(ms),
                c,
                offset,
                jnp.float32(cfg.temperature),
                k=k,
            )
            rl = np.asarray(g_eps, np.float64) * eps  # chain rule: ∂/∂θ = ε ∂/∂ε
            entry["weakest_margin"] = float(np.min(ms))
            entry["rl_grad"] = [float(v) for v in rl]
            return rl

        state = init(eps0)
        best_eps, best_norm = np.zeros(R), -math.inf
        norm_of = log_volume if cfg.norm == "logvol" else linear_norm
        history: list[np.ndarray] = []  # the best ε after each robust expansion
        if start_key is not None:
            first = float(np.max(eps0))
            found, facts["uniform_start"] = uniform_start(start_key, oracle, first, ceiling, t_start)
            if found is not None:
                u, (qkey, verdict, lo, hi, entry) = found
                eps = np.full(R, u)
                best_eps, best_norm = eps.copy(), norm_of(eps, sizes)
                rl = weakest_gradient(qkey, verdict, lo, hi, eps, entry)
                history.append(best_eps.copy())
                state = update(init(eps), True, rl, sizes, weights)
                if progress is not None:
                    progress(state)
        reason = "max_queries"
        while True:
            if state.done:
                reason = "lambda_min"
                break
            if (
                cfg.gain_tol > 0
                and len(history) > cfg.gain_window
                and relative_gain(history[-1 - cfg.gain_window], history[-1], sizes, cfg.norm) < cfg.gain_tol
            ):
                reason = "gain"
                break
            capped = safety_net(oracle, t_start)
            if capped is not None:
                reason = capped
                break
            eps = np.exp(state.theta)
            qkey = jax.random.fold_in(key_loop, state.iteration)
            verdict, lo, hi = oracle(qkey, eps, lam=state.lam, step=state.step)
            robust = verdict.status is Status.ROBUST
            rl = np.zeros(R)
            if robust:
                value = norm_of(eps, sizes)
                if value > best_norm:
                    best_eps, best_norm = eps.copy(), value
                rl = weakest_gradient(qkey, verdict, lo, hi, eps, oracle.log.trail[-1])
                history.append(best_eps.copy())
            state = update(state, robust, rl, sizes, weights)
            if progress is not None:
                progress(state)
        if reason in ("lambda_min", "gain") and cfg.scale_up > 0 and best_norm > -math.inf:
            best_eps, facts["scale_up"] = scale_up(
                jax.random.fold_in(key, SCALE_UP_KEY), oracle, best_eps, sizes, t_start, state, progress
            )
        return finish(oracle, best_eps, best_norm > -math.inf, t_start, reason, setup=facts)

    def uniform_start(
        key: jax.Array, oracle: CountingOracle, first: float, ceiling: float, t_start: float
    ) -> tuple[tuple[float, tuple] | None, dict[str, Any]]:
        """The search's start with `start="uniform"`: the largest uniform ε the verifier proves, to a
        factor 1 + start_tol. Asks `first` (init_fraction × the PGD bracket), then × min(init_fraction,
        0.5) until ROBUST (not below eps_min), and bisects log ε between the last ROBUST and the first
        refused ε (`ceiling`, where PGD broke the box, if none was refused; never asked). Returns
        ((ε, (key, verdict, lo, hi, trail entry) of its ROBUST query), facts), or (None, facts)
        when nothing was proved down to eps_min or a cap stopped it. Trail: `start` = "uniform"."""
        R = oracle.problem.num_layers
        asked, proved = 0, None

        def ask(value: float) -> bool | None:
            nonlocal asked, proved
            if safety_net(oracle, t_start) is not None:
                return None
            qkey = jax.random.fold_in(key, asked)
            asked += 1
            verdict, lo, hi = oracle(qkey, np.full(R, value), start="uniform")
            if verdict.status is not Status.ROBUST:
                return False
            proved = (qkey, verdict, lo, hi, oracle.log.trail[-1])
            return True

        u, top, down = first, ceiling, min(cfg.init_fraction, 0.5)
        while True:
            ok = ask(u)
            if ok is None or (not ok and u * down < cfg.eps_min):
                return None, {"eps": None, "queries": asked}
            if ok:
                break
            u, top = u * down, u
        lo_t, _, _ = bisect(lambda t: ask(math.exp(t)), math.log(u), math.log(top), math.log1p(cfg.start_tol))
        assert proved is not None  # u was proved; every later ROBUST answer raised lo_t with it
        u = math.exp(lo_t)
        return (u, proved), {"eps": u, "queries": asked}

    def safety_net(oracle: CountingOracle, t_start: float) -> str | None:
        """ "max_queries" or "time_budget" when that cap stops the search before its next query."""
        if oracle.log.queries >= cfg.max_queries:
            return "max_queries"
        if cfg.time_budget is not None and time.perf_counter() - t_start >= cfg.time_budget:
            return "time_budget"
        return None

    def scale_up(
        key: jax.Array,
        oracle: CountingOracle,
        eps: np.ndarray,
        sizes: np.ndarray,
        t_start: float,
        state: OptimizerState,
        progress: Callable[[OptimizerState], None] | None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The converged search's last phase (`OptimizerConfig.scale_up`): ε × (1 + δ) (each layer
        capped at eps_max), δ doubling after each robust answer, until one is not, the query cap,
        the time budget, or every layer at eps_max; after a failed ask s · ε (uncapped), the
        bracket [1, s] is bisected in log space (`baseline.bisect`) down to 1 + scale_up, so a
        doubling that overshot (1.4 proved, 1.8 not) does not leave 1.55 unasked. Returns the
        largest ε proved and {factor: the growth of the geometric-mean per-pixel ε, queries,
        stopped: why it ended, unproved_scale: s with s · ε (the returned ε) asked and not proved,
        None if the last ask was capped or none failed — `certify_maximality` starts there}.
        Every committed ε is a ROBUST answer. Trail: `scale_up` is the ask's scale relative to the
        ε kept before it (the doubling) or to the ε at the failure (`bisect`)."""
        start, delta, asked, unproved = eps, cfg.scale_up, 0, None
        stopped = "not_proved"  # UNKNOWN or NOT_ROBUST

        def ask(trial: np.ndarray, **where: Any) -> bool | None:
            nonlocal asked, stopped
            capped = safety_net(oracle, t_start)
            if capped is not None:
                stopped = capped
                return None
            verdict, _, _ = oracle(jax.random.fold_in(key, asked), trial, lam=state.lam, step=0.0, **where)
            asked += 1
            if progress is not None:
                progress(state)
            return verdict.status is Status.ROBUST

        while True:
            trial = np.minimum(eps * (1.0 + delta), cfg.eps_max)
            if np.all(trial <= eps):
                stopped = "eps_max"
                break
            ok = ask(trial, scale_up=1.0 + delta)
            if ok is None:
                break
            if not ok:
                if np.all(eps * (1.0 + delta) <= cfg.eps_max):  # the box of (1 + δ) · ε exactly
                    unproved = 1.0 + delta
                break
            eps, delta = trial, 2.0 * delta
        if unproved is not None:
            base = eps
            lo, hi, _ = bisect(
                lambda t: ask(base * math.exp(t), scale_up=math.exp(t), bisect=True),
                0.0,
                math.log(unproved),
                math.log1p(cfg.scale_up),
            )
            eps, unproved = base * math.exp(lo), math.exp(hi - lo)  # exp(0) = 1: base itself
        factor = 1.0 + relative_gain(start, eps, sizes, "logvol")
        return eps, {"factor": factor, "queries": asked, "stopped": stopped, "unproved_scale": unproved}

    return Optimizer(init=init, update=update, run=run)
