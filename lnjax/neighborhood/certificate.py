"""How close a verified neighborhood is to maximal: proof and attack scales around its ε.

A search returns ε (one per layer) that the verifier proved. Whether ε is maximal is a separate
question, answered here from both sides:

- along ε's own direction: s_proved, the largest scale s ≥ 1 at which the verifier proves s · ε
  (doubling from 1, then bisection to a relative tolerance), and s_attack, the smallest scale at
  which a strong box attack finds a counterexample the model confirms (doubling from where the
  proofs stopped, then bisection). gap = s_proved / s_attack ≤ 1; 1 means ε is shown maximal along
  its direction (up to the tolerance): nothing larger is robust, and nothing larger was proved.
- per layer d, the others at their final ε: the largest ε_d proved and the smallest ε_d attacked,
  the slack of each coordinate.

Soundness: only ROBUST counts as proved (UNKNOWN and NOT_ROBUST do not); an attack counts only when
its point lies in the box and the model's own spec margin there is ≤ 0 (ties break top-k, as in the
verifier). So s_proved is a proof and s_attack a witness: the true robustness boundary along the
direction lies in [s_proved, s_attack]. Boxes are clipped to [0, 1], so scales grow until every
layer with ε_d > 0 reaches `eps_cap` (1: the whole pixel range) — beyond that nothing changes;
s_attack is None when no counterexample was found up to there.

Costs: verifier queries and attack calls are counted (a repeated box is answered from a memo, not
asked again); `time_budget` cuts the searches short (then `complete` is False and the brackets are
what was reached). Keys: each verifier query gets fold_in(fold_in(key, 0), i), each attack call
fold_in(fold_in(key, 1), j).

References:
  Kabaha & Drachsler-Cohen, Maximal Robust Neural Network Specifications via Oracle-Guided
    Numerical Optimization, VMCAI 2023 (MaRVeL: maximal robust specifications).
  Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018 (PGD).
  Gowal et al., An Alternative Surrogate Loss for PGD-based Adversarial Testing, arXiv:1910.09338,
    2019 (MultiTargeted: `make_falsifier(..., targets=)`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from lnjax.attacks.pgd import target_sets, view_box_pgd_targeted
from lnjax.checks import check_float, check_int
from lnjax.models import layers as L
from lnjax.neighborhood import gradients as G
from lnjax.neighborhood.baseline import bisect
from lnjax.neighborhood.layers import neighborhood_box
from lnjax.neighborhood.problem import Problem
from lnjax.specs import Spec
from lnjax.types import VerifyFn
from lnjax.verify.verdict import Status, Verdict


class Falsifier(NamedTuple):
    """A box attack and the model that judges its points.

    attack(key, lo, hi) -> x: a candidate counterexample [*input_shape] (need not be one);
    margin(x) -> float: the model's spec margin at x (≤ 0: the property fails there).
    """

    attack: Callable[[jax.Array, np.ndarray, np.ndarray], np.ndarray]
    margin: Callable[[np.ndarray], float]


def make_falsifier(
    view: L.LayerView,
    spec: Spec,
    *,
    steps: int = 40,
    restarts: int = 32,
    step_size: float = 0.25,
    odi_steps: int = 2,
    targets: int = 0,
) -> Falsifier:
    """The strong box PGD on a network (`attacks.pgd.make_pgd_box` via the optimizer's `pgd_in_box`,
    the spec margin as the optimizer computes it, `gradients.spec_arrays`), and optionally the
    multi-targeted one beside it.

    Args:
      view: the network.
      spec: the property (e.g. `TopK(target, 2)`).
      steps, restarts, step_size: the PGD (restarts: the box centre, then random starts).
      odi_steps: output-diversification steps of the random starts (`attacks.odi_starts`; Tashiro et
        al. 2020, as the verifier's PGD stage, `PgdOptions.odi_steps`); 0: uniform random starts.
      targets: also the multi-targeted box PGD (`attacks.pgd.view_box_pgd_targeted`, Gowal et al.
        2019) on this many target row sets, ranked at the box centre (`attacks.pgd.target_sets`), each
        with the same steps, restarts and starts; the attack returns whichever of the two points has
        the lower model margin (0: the untargeted PGD alone, with the key as given). For a top-k
        spec the untargeted margin (the k-th smallest row) stalls where k rows must fall together;
        a target set pushes them down as one.

    Returns:
      A `Falsifier` whose margin is the jitted model margin (`gradients.margin`), independent of
      the attack's own bookkeeping.
    """
    check_int("steps", steps, 1)
    check_int("restarts", restarts, 1)
    check_float("step_size", step_size, low=0.0, low_open=True)
    check_int("odi_steps", odi_steps, 0)
    check_int("targets", targets, 0)
    c, offset, k = G.spec_arrays(spec, view)
    c64, offset64 = np.asarray(c, np.float64), np.asarray(offset, np.float64)
    targeted = view_box_pgd_targeted(steps, restarts, step_size, odi_steps) if targets else None

    def margin(x: np.ndarray) -> float:
        return float(G.margin(view, jnp.asarray(x, jnp.float32), c, offset, k=k))

    def attack(key: jax.Array, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        lo_, hi_ = jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32)
        x0 = (lo_ + hi_) / 2
        res = G.pgd_in_box(
            key,
            view,
            lo_,
            hi_,
            c,
            offset,
            x0,
            k=k,
            steps=steps,
            restarts=restarts,
            step_size=step_size,
            odi_steps=odi_steps,
        )
        x = np.asarray(res.x)
        if targeted is None:
            return x
        rows = np.asarray(L.apply_layers(view, x0), np.float64).reshape(-1) @ c64.T + offset64
        sets = jnp.asarray(target_sets(rows, k, targets))
        other = np.asarray(targeted(jax.random.fold_in(key, 1), view, lo_, hi_, c, offset, x0, sets, k=k).x)
        return other if margin(other) < margin(x) else x

    return Falsifier(attack=attack, margin=margin)


class Bracket(NamedTuple):
    """Where a predicate (true at small scales) turns false.

    Attributes:
      holds: the largest value where it held (asked, or `known`); None if it held nowhere asked.
      fails: the smallest value where it failed; None if it held up to the ceiling.
      complete: the search ended by its own rule (not cut by the budget).
    """

    holds: float | None
    fails: float | None
    complete: bool


def boundary(
    holds: Callable[[float], bool | None],
    *,
    start: float,
    ceiling: float,
    rel_tol: float,
    floor: float | None = None,
    known: float | None = None,
    fails: float | None = None,
) -> Bracket:
    """Brackets the value where a monotone predicate turns false, on a log scale.

    Asks `start`; while it holds, doubles (capped at `ceiling`, and stopping at `fails`, a value
    known to fail, not asked); if it fails, the lower end is `known` (a value known to hold, not
    asked), else halves down to `floor` (None: not at all). Then `baseline.bisect` in log space
    until fails / holds ≤ 1 + rel_tol.

    Args:
      holds: value -> True / False, or None when out of budget.
      start: the first value asked (> 0, ≤ ceiling).
      ceiling: the largest value asked.
      rel_tol: the relative width of the final bracket (> 0).
      floor: the smallest value asked when halving (None: no halving).
      known: a value below `start` known to hold (e.g. proved), used instead of halving.
      fails: a value above `start` known to fail (e.g. a proof the caller tried and did not get),
        used instead of doubling past it.

    Returns:
      `Bracket`.
    """
    ok = holds(start)
    if ok is None:
        return Bracket(known, None, False)
    if ok:
        lo = start
        while lo < ceiling:
            s = min(2.0 * lo, ceiling)
            if fails is not None and s >= fails:
                hi = fails
                break
            ok = holds(s)
            if ok is None:
                return Bracket(lo, None, False)
            if not ok:
                hi = s
                break
            lo = s
        else:
            return Bracket(lo, None, True)
    else:
        hi, lo = start, known
        while lo is None:
            if floor is None or hi / 2 < floor:
                return Bracket(None, hi, True)
            ok = holds(hi / 2)
            if ok is None:
                return Bracket(None, hi, False)
            if ok:
                lo = hi / 2
            else:
                hi = hi / 2
    t_lo, t_hi, complete = bisect(
        lambda t: holds(math.exp(t)), math.log(lo), math.log(hi), math.log1p(rel_tol)
    )
    return Bracket(
        lo if t_lo == math.log(lo) else math.exp(t_lo),
        hi if t_hi == math.log(hi) else math.exp(t_hi),
        complete,
    )


def attack_bracket(
    survives: Callable[[float], bool | None],
    proof: Bracket,
    *,
    start: float,
    ceiling: float,
    rel_tol: float,
    floor: float,
) -> Bracket:
    """The attack's bracket after the proof's: from where the proofs stopped (`proof.fails`), with
    the proved value as the known lower end; halving from `start` down to `floor` when nothing
    was proved; no attack at all when the proofs reached the ceiling."""
    if proof.holds is not None and proof.fails is None:
        return Bracket(proof.holds, None, proof.complete)
    return boundary(
        survives,
        start=proof.fails if proof.fails is not None else start,
        ceiling=ceiling,
        rel_tol=rel_tol,
        floor=None if proof.holds is not None else floor,
        known=proof.holds,
    )


def proved(verdict: Verdict) -> bool:
    """A verdict is a proof only when ROBUST (UNKNOWN — a time-out, a solver error — never is)."""
    return verdict.status is Status.ROBUST


def confirmed(falsifier: Falsifier, x: ArrayLike, lo: np.ndarray, hi: np.ndarray) -> bool:
    """An attack point is a counterexample only if it is finite, lies in [lo, hi] and the model's
    margin there is ≤ 0."""
    x = np.asarray(x, np.float32).reshape(lo.shape)
    if not (np.all(np.isfinite(x)) and np.all(x >= lo) and np.all(x <= hi)):
        return False
    return falsifier.margin(x) <= 0.0


class Certificate(NamedTuple):
    """How maximal a verified ε is (module docstring).

    Attributes:
      eps: [R] the ε examined.
      s_proved: the largest scale s ≥ 1 with s · ε proved (None: ε itself was not; see `reason`).
      s_attack: the smallest scale with a confirmed counterexample (None: none up to `s_ceiling`).
      gap: s_proved / s_attack (≤ 1; 1 = shown maximal along ε's direction), None if either is.
      s_ceiling: the scale at which every layer with ε_d > 0 reaches eps_cap.
      reason: why s_proved is None ("" otherwise).
      eps_proved: [R] per layer, the largest ε_d proved with the others at ε (None: not even ε_d,
        or the layer was not examined).
      eps_attacked: [R] per layer, the smallest ε_d with a confirmed counterexample (None: none up
        to eps_cap, or not examined).
      layer_notes: [R] why a layer has no value ("" otherwise).
      witness: the confirmed counterexample at s_attack · ε ([*input_shape]; None without one).
      contradiction: an attack confirmed a counterexample at s_proved · ε (the verifier or the
        model disagree: the proof is not to be trusted).
      queries, attack_calls, memo_hits: verifier queries, attack calls, boxes answered from the memo.
      time_s: wall-clock seconds.
      stop_reason: "done" or "time_budget".
      complete: every search ended by its own rule.
      trail: one dict per verifier query or attack call (what, scale or ε_d, outcome, seconds).
    """

    eps: np.ndarray
    s_proved: float | None
    s_attack: float | None
    gap: float | None
    s_ceiling: float
    reason: str
    eps_proved: list[float | None]
    eps_attacked: list[float | None]
    layer_notes: list[str]
    witness: np.ndarray | None
    contradiction: bool
    queries: int
    attack_calls: int
    memo_hits: int
    time_s: float
    stop_reason: str
    complete: bool
    trail: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (also the per-layer gaps eps_proved / eps_attacked; without the witness)."""

        def ratio(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None or b == 0 else a / b

        return {
            "eps": [float(e) for e in self.eps],
            "s_proved": self.s_proved,
            "s_attack": self.s_attack,
            "gap": self.gap,
            "s_ceiling": self.s_ceiling,
            "reason": self.reason,
            "eps_proved": list(self.eps_proved),
            "eps_attacked": list(self.eps_attacked),
            "layer_gap": [ratio(p, a) for p, a in zip(self.eps_proved, self.eps_attacked, strict=True)],
            "layer_notes": list(self.layer_notes),
            "contradiction": self.contradiction,
            "queries": self.queries,
            "attack_calls": self.attack_calls,
            "memo_hits": self.memo_hits,
            "time_s": self.time_s,
            "stop_reason": self.stop_reason,
            "complete": self.complete,
            "trail": list(self.trail),
        }


class _Probe:
    """The certificate's two oracles over ε vectors, with counts, a verifier memo and the budget."""

    def __init__(
        self,
        key: jax.Array,
        verify: VerifyFn,
        problem: Problem,
        falsifier: Falsifier,
        time_budget: float | None,
    ):
        self.verify, self.problem, self.falsifier = verify, problem, falsifier
        self.key_verify, self.key_attack = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
        self.time_budget, self.t_start = time_budget, time.perf_counter()
        self.queries = self.attack_calls = self.memo_hits = 0
        self.memo: dict[bytes, bool] = {}
        self.trail: list[dict[str, Any]] = []
        self.out_of_time = False
        self.hits: dict[float, np.ndarray] = {}  # confirmed counterexamples along the direction

    def _box(self, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = neighborhood_box(self.problem.x, self.problem.layers, eps)
        return np.asarray(lo), np.asarray(hi)

    def _budget_left(self) -> bool:
        if self.time_budget is not None and time.perf_counter() - self.t_start >= self.time_budget:
            self.out_of_time = True
        return not self.out_of_time

    @staticmethod
    def _tag(eps: np.ndarray) -> bytes:
        return np.asarray(eps, np.float32).tobytes()

    def known_proved(self, eps: np.ndarray) -> None:
        """Records a proof the caller already holds (not a query, not a memo hit)."""
        self.memo[self._tag(eps)] = True

    def proves(self, eps: np.ndarray, **where: Any) -> bool | None:
        eps = np.asarray(eps, np.float32)
        tag = self._tag(eps)
        if tag in self.memo:
            self.memo_hits += 1
            return self.memo[tag]
        if not self._budget_left():
            return None
        lo, hi = self._box(eps)
        t0 = time.perf_counter()
        verdict = self.verify(jax.random.fold_in(self.key_verify, self.queries), lo, hi, self.problem.spec)
        self.queries += 1
        ok = proved(verdict)
        self.memo[tag] = ok
        status = Status(verdict.status).value
        self.trail.append({"kind": "verify", **where, "status": status, "seconds": time.perf_counter() - t0})
        return ok

    def survives(self, eps: np.ndarray, **where: Any) -> bool | None:
        """True when the attack finds no confirmed counterexample in the box of eps."""
        if not self._budget_left():
            return None
        lo, hi = self._box(np.asarray(eps, np.float32))
        t0 = time.perf_counter()
        x = self.falsifier.attack(jax.random.fold_in(self.key_attack, self.attack_calls), lo, hi)
        self.attack_calls += 1
        hit = confirmed(self.falsifier, x, lo, hi)
        if hit and "scale" in where:
            self.hits[where["scale"]] = np.asarray(x, np.float32).reshape(lo.shape)
        self.trail.append({"kind": "attack", **where, "hit": hit, "seconds": time.perf_counter() - t0})
        return not hit


def certify_maximality(
    key: jax.Array,
    verify: VerifyFn,
    problem: Problem,
    eps: ArrayLike,
    falsifier: Falsifier,
    *,
    rel_tol: float = 0.05,
    eps_cap: float = 1.0,
    per_layer: bool = True,
    zero_start: float = 1e-3,
    time_budget: float | None = None,
    proved: bool = False,
    unproved_scale: float | None = None,
) -> Certificate:
    """Proof and attack scales around a verified ε (module docstring).

    Args:
      key: a typed PRNG key (folded per verifier query and per attack call).
      verify: the oracle (`lnjax.verify.make_verifier`), as used by the search.
      problem: `problem.make_problem(x, layers, spec)`.
      eps: [R] the final ε per layer (≥ 0; e.g. `Result.eps`).
      falsifier: the attack and the model judging it (`make_falsifier`).
      rel_tol: the relative width of every final bracket (> 0).
      eps_cap: the largest ε any layer is taken to (> 0; 1 covers the pixel range).
      per_layer: also bracket each layer's ε_d with the others fixed (R more searches).
      zero_start: the first ε_d asked for a layer at ε_d = 0 (in (0, eps_cap]).
      time_budget: wall-clock seconds for everything (None: unlimited); checked before each call.
      proved: the caller holds a ROBUST verdict on exactly this ε (a search's `Result.verified`):
        scale 1 counts as proved without asking again. A verifier that stops on the clock (branch-
        and-bound, CBC) need not decide the same box twice, so without this a certificate could
        report "eps itself was not proved" for an ε its search proved.
      unproved_scale: a scale s > 1 at which the caller asked the verifier for s · ε and did not get
        a proof (the optimizer's scale-up ends with one: `Result.unproved_scale`).
        The proofs along the direction then bisect [1, s] instead of doubling from 1: on a verifier
        that runs to its clock on every unprovable box, each skipped ask is a full time limit. The
        attack bracket starts there too. Needs `proved`.

    Returns:
      `Certificate`.
    """
    check_float("rel_tol", rel_tol, low=0.0, low_open=True)
    check_float("eps_cap", eps_cap, low=0.0, low_open=True)
    check_float("zero_start", zero_start, low=0.0, high=eps_cap, low_open=True)
    if time_budget is not None:
        check_float("time_budget", time_budget, low=0.0, low_open=True)
    if unproved_scale is not None:
        check_float("unproved_scale", unproved_scale, low=1.0, low_open=True)
        if not proved:
            raise ValueError(
                f"unproved_scale = {unproved_scale} without proved; expected the search's proof of "
                "eps with it (the bracket it gives is [1, unproved_scale])"
            )
    eps = np.asarray(eps, np.float64)
    R = problem.num_layers
    if eps.shape != (R,) or not np.all(np.isfinite(eps)) or np.any(eps < 0):
        raise ValueError(f"eps = {eps.tolist()}; expected {R} finite values ≥ 0 (one per layer)")
    probe = _Probe(key, verify, problem, falsifier, time_budget)
    if proved:
        probe.known_proved(eps)  # the search's proof of s = 1
    complete = True

    # Along ε's direction.
    positive = (eps > 0) & (np.asarray(problem.sizes) > 0)
    s_ceiling = float(eps_cap / eps[positive].min()) if positive.any() else 1.0
    s_proved = s_attack = None
    reason = ""
    contradiction = False
    if not positive.any():
        reason = "eps is 0 on every pixel: no direction to scale"
    else:

        def along(s: float) -> np.ndarray:
            return np.minimum(s * eps, eps_cap)

        proof = boundary(
            lambda s: probe.proves(along(s), scale=s),
            start=1.0,
            ceiling=max(s_ceiling, 1.0),
            rel_tol=rel_tol,
            fails=unproved_scale,
        )
        complete &= proof.complete
        s_proved = proof.holds
        if s_proved is None:
            reason = "eps itself was not proved" if proof.complete else "out of time before eps was proved"
        else:
            spot = probe.survives(along(s_proved), scale=s_proved, check="at s_proved")
            contradiction = spot is False
        attack = attack_bracket(
            lambda s: probe.survives(along(s), scale=s),
            proof,
            start=1.0,
            ceiling=max(s_ceiling, 1.0),
            rel_tol=rel_tol,
            floor=2.0**-10,
        )
        complete &= attack.complete
        s_attack = attack.fails
    gap = None if s_proved is None or s_attack is None else s_proved / s_attack

    # Per layer, the others at their final ε.
    eps_proved: list[float | None] = [None] * R
    eps_attacked: list[float | None] = [None] * R
    notes = [""] * R if per_layer else ["not examined"] * R
    for d in range(R) if per_layer else ():
        if problem.sizes[d] == 0:
            notes[d] = "empty layer"
            continue

        def with_d(v: float, d: int = d) -> np.ndarray:
            out = eps.copy()
            out[d] = v
            return out

        start = float(min(eps[d], eps_cap)) if eps[d] > 0 else zero_start
        proof = boundary(
            lambda v, d=d: probe.proves(with_d(v), layer=d, eps_d=v),
            start=start,
            ceiling=eps_cap,
            rel_tol=rel_tol,
        )
        attack = attack_bracket(
            lambda v, d=d: probe.survives(with_d(v), layer=d, eps_d=v),
            proof,
            start=start,
            ceiling=eps_cap,
            rel_tol=rel_tol,
            floor=start / 1024,
        )
        complete &= proof.complete and attack.complete
        eps_proved[d], eps_attacked[d] = proof.holds, attack.fails
        if proof.holds is None:
            notes[d] = "its final eps was not proved" if proof.complete else "out of time"
        elif proof.fails is None:
            notes[d] = "proved up to eps_cap"
    return Certificate(
        eps=eps.astype(np.float32),
        s_proved=s_proved,
        s_attack=s_attack,
        gap=gap,
        s_ceiling=s_ceiling,
        reason=reason,
        eps_proved=eps_proved,
        eps_attacked=eps_attacked,
        layer_notes=notes,
        witness=None if s_attack is None else probe.hits.get(s_attack),
        contradiction=contradiction,
        queries=probe.queries,
        attack_calls=probe.attack_calls,
        memo_hits=probe.memo_hits,
        time_s=time.perf_counter() - probe.t_start,
        stop_reason="time_budget" if probe.out_of_time else "done",
        complete=bool(complete),
        trail=probe.trail,
    )
