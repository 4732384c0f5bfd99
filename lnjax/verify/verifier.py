"""The staged verifier: cheapest stage first, stop at the first sound answer.

Stages (each optional, in this order):
  pgd          PGD on the spec margin inside the box; a point whose JAX margin is ≤ 0 → NOT_ROBUST.
               Run in two parts: a quick attack first (`pgd.quick_steps`, from the box centre: clear
               counterexamples cost ~10 gradient steps), the full one (`pgd.steps` × `pgd.restarts`,
               from the quick attack's best point) only when the bound stages fail, before the MILP.
  (interval)   always computed (the base of every other bound); rows proven → ROBUST.
  crown        CROWN bounds of every pre-activation and of the spec rows → ROBUST if proven.
  alpha_crown  α-CROWN (optimised slopes) on top of CROWN → ROBUST if proven, in two steps: first
               only the spec rows' slopes (over CROWN's intermediate bounds: 21 backward passes of
               M rows, ~0.1 s); then, after the full PGD and only if nothing is decided yet,
               `alpha_intermediate` (`bounds.intermediate`) also optimises the slopes of every
               unstable intermediate neuron's bound (on the quickstart CNN ~3 s with patch mode,
               and the difference between UNKNOWN and ROBUST on most of its hard boxes; on nets
               without patch mode, e.g. max-pooling or dense ones with thousands of unstable
               neurons, minutes — the cost prediction below then skips it).
  bab          branch-and-bound over ReLU phases (β-CROWN subdomains, `lnjax.verify.bab`) →
               ROBUST when every subdomain is proven (small ones closed by the MILP), NOT_ROBUST on a
               confirmed counterexample.
  milp         MIPVerify MILP over the tightest bounds, asked as a sign question (cutoff at the
               safety margin, stop at the first solution) or solved to optimality ("optimise"),
               in a worker process killed at the query's deadline.

The stages are `stages.Stage` objects over one query's `stages.QueryContext`, listed by
`stages.build_stages` from the config; `verify` is a loop over them. The whole query has one
wall-clock budget (`time_limit`); the JAX stages are checked against it between stages and the MILP
gets what is left (a hard limit, see `milp.MilpWorker`). A compiled JAX stage cannot be
interrupted, so before each bound stage its cost is predicted by the verifier's `cost.CostModel`
(from its last run in this verifier, only if that run did at least a quarter of this query's work);
a stage predicted to end after the deadline is not started and the query is UNKNOWN at once,
except α-CROWN's intermediate pass when branch-and-bound follows (`Stage.optional`): it is skipped
and branch-and-bound starts from the bounds so far.
Without a comparable run the stage runs, and every run replaces its stage's estimate. A time-out or
a stage not started is UNKNOWN, never ROBUST. See `verdict` for the trust rules.

Arguments are checked first (`inputs`: the view and options in `make_verifier`, the box and the
spec in each query): a bad one raises one TypeError/ValueError line, so no verdict comes from it.

References:
  Tjeng, Xiao & Tedrake, Evaluating Robustness of Neural Networks with Mixed Integer Programming,
    ICLR 2019 (MIPVerify; progressive bound tightening, the sign question).
  Zhang et al., NeurIPS 2018 (CROWN); Xu et al., ICLR 2021 (α-CROWN); Madry et al., ICLR 2018 (PGD).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lnjax import bounds as B
from lnjax.models import layers as L
from lnjax.specs import Spec
from lnjax.verify import bab as BB, milp as M
from lnjax.verify.config import STAGES, VerifierConfig, checked_time_limit, resolved_config
from lnjax.verify.cost import CostModel
from lnjax.verify.inputs import checked_box, checked_rows, checked_view
from lnjax.verify.stages import LazyNetwork, QueryContext, QueryKeys, build_stages, clip_point, jitted
from lnjax.verify.verdict import Status, Verdict

WARM_UP_QUERY_S = 5.0
"""The budget of `warm_up`'s one whole query (at most the config's `time_limit`): it is there to
compile the small eager ops around the stages, not to decide a hard box — with the config's budget
(or none) a warm-up on a box branch-and-bound cannot close would run a whole query (measured 77–87 s
in bab_batch_bench) or, without a time limit, until the memory cap."""


class Verifier(NamedTuple):
    """`make_verifier`'s functions; calling the tuple calls `verify`.

    verify(key, x_lower, x_upper, spec) -> Verdict: key a typed PRNG key; x_lower, x_upper:
      [*view.input_shape] finite float arrays in `input_domain` (default [0, 1]; overshoots up to
      `PIXEL_SLACK` × its width are clipped to it, anything else raises ValueError, as does an
      integer array; None: any finite box, used as given; float64 corners are rounded outward);
      spec a `lnjax.specs` TopK, Argmax, Threshold or Linear (else TypeError); `time_limit=`
      (keyword, seconds > 0) replaces the config's budget for this query only, so one warmed-up
      verifier (and its cost predictions) serves queries with different budgets. The first call
      of each jitted stage compiles it (CROWN on a 64×64 CNN: ~15 s on 2 cores), inside that
      query's budget.
    warm_up(x_lower, x_upper, spec) -> seconds: runs every configured stage once on a box (results
      discarded; also builds the MILP network and starts the worker), so that timed queries with the
      same spec type measure only themselves, then times CROWN and α-CROWN's intermediate pass once
      more to seed the cost predictions. A zero-width box compiles everything, but its timings
      (passes that bound no neuron) predict no box with unstable neurons: the first such queries
      run those stages and time them. Its one whole query gets at most `WARM_UP_QUERY_S` seconds.
    """

    verify: Callable[..., Verdict]
    warm_up: Callable[[jax.Array, jax.Array, Spec], float]

    def __call__(
        self,
        key: jax.Array,
        x_lower: jax.Array,
        x_upper: jax.Array,
        spec: Spec,
        *,
        time_limit: float | None = None,
    ) -> Verdict:
        return self.verify(key, x_lower, x_upper, spec, time_limit=time_limit)


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
    num_classes = int(math.prod(view.output_shapes[-1]))
    fns = jitted(cfg)
    costs = CostModel(cfg.bounds.intermediate_steps)
    milp_net = LazyNetwork(view)

    def the_worker() -> M.MilpWorker:
        return worker or M.shared_worker()

    stages = build_stages(cfg, fns, costs, milp_net, the_worker)
    names = {s.name for s in stages}

    def verify(
        key: jax.Array, x_lower: jax.Array, x_upper: jax.Array, spec: Spec, *, time_limit: float | None = None
    ) -> Verdict:
        t_start = time.monotonic()
        limit = cfg.time_limit if time_limit is None else checked_time_limit(time_limit)
        rows = checked_rows(spec, num_classes)
        lo, hi = checked_box(view, x_lower, x_upper, cfg.input_domain)
        keys = QueryKeys(*jax.random.split(key, 3))
        ctx = QueryContext(view, fns, cfg, t_start, lo, hi, rows, keys, limit)
        for stage in stages:
            if stage.after is not None and ctx.out_of_time(stage.after):
                return ctx.finish(Status.UNKNOWN, None)
            # Predicted to overrun: not started, and the query ends UNKNOWN (the later stages would
            # build on its bounds). None: no comparable run (or a stage never predicted): it runs.
            expected = stage.predict(ctx)
            if expected is not None:
                left = ctx.time_left()
                if expected > left:
                    what = "skipped" if stage.optional else "not started"
                    ctx.stats.notes.append(
                        f"{stage.name} {what}: predicted {expected:.1f} s, {left:.1f} s left"
                    )
                    if stage.optional:
                        continue
                    return ctx.finish(Status.UNKNOWN, None)
            verdict = stage.run(ctx)
            if verdict is not None:
                return verdict
        return ctx.finish(Status.UNKNOWN, None)

    def warm_up(x_lower: jax.Array, x_upper: jax.Array, spec: Spec) -> float:
        t0 = time.monotonic()
        rows = checked_rows(spec, num_classes)
        lo, hi = checked_box(view, x_lower, x_upper, cfg.input_domain)
        c, offset, k = jnp.asarray(rows.c), jnp.asarray(rows.offset), rows.k
        centre = (lo + hi) / 2
        out = [fns.logits(view, centre), fns.margin(view, centre, c, offset, k=k)]
        if "pgd" in names:
            # The same argument kinds as in `verify`: the full PGD starts from the quick one's point
            # (an output of a jitted function, which carries a sharding a host-made array lacks: a
            # different cache key), and `evaluate` clips and scores each attack's point.
            x0 = centre
            if "pgd_quick" in names:
                x0 = fns.pgd_quick(jax.random.key(0), view, lo, hi, c, offset, centre, k=k).x
                out.append(fns.margin(view, clip_point(x0, lo, hi), c, offset, k=k))
            x1 = fns.pgd(jax.random.key(0), view, lo, hi, c, offset, x0, k=k).x
            out.append(fns.margin(view, clip_point(x1, lo, hi), c, offset, k=k))
        best = base = fns.interval(view, lo, hi)
        if "crown" in names:
            best = fns.crown(view, lo, hi, best)
            out.append(fns.crown_spec(view, lo, hi, c, best))
        if "alpha_crown" in names:
            out.append(fns.alpha_spec(view, lo, hi, c, best))
        if "alpha_intermediate" in names:
            best = fns.alpha(view, lo, hi, best)
            out.append(fns.alpha_spec(view, lo, hi, c, best))
        if "bab" in names:
            BB.warm_up(cfg, view, best, lo, hi, c, offset, k)
            if cfg.bab.attack_every:  # bab's box PGD from a host-made point: one row for k = 1, the
                # query's rows for k > 1 (also after `row_plan`'s drop: it attacks the query itself)
                rc, ro = (c[:1], offset[:1]) if k == 1 else (c, offset)
                x_host = jnp.asarray(np.asarray(centre), jnp.float32)
                out.append(fns.pgd(jax.random.key(0), view, lo, hi, rc, ro, x_host, k=k).x)
            # its candidates come back as host arrays: `evaluate` clips and scores them as such
            out.append(fns.margin(view, clip_point(np.asarray(centre), lo, hi), c, offset, k=k))
        jax.block_until_ready((out, best))  # (compile-time runs never feed the cost predictions)
        if "milp" in names:
            milp_net.get()
        # One whole query: compiles the small eager ops around the stages (clipping, checks, key
        # splits; ~0.1 s each on CPU), which would otherwise land in the first timed query.
        warm_limit = WARM_UP_QUERY_S if cfg.time_limit is None else min(cfg.time_limit, WARM_UP_QUERY_S)
        verify(jax.random.key(0), x_lower, x_upper, spec, time_limit=warm_limit)
        # A second, timed run of the costly bound stages seeds their cost predictions (used only for
        # queries with at most 4x its work: see `cost`).
        units = CostModel.work("crown", B.unstable_counts(view, base))
        best = base
        seeded = {"crown": fns.crown, "alpha_intermediate": fns.alpha}
        for name in CostModel.SEEDED:
            if name in names:
                t1 = time.monotonic()
                best = jax.block_until_ready(seeded[name](view, lo, hi, best))
                costs.record(name, time.monotonic() - t1, units)
        if "milp" in names:
            the_worker().start()
        return time.monotonic() - t0

    return Verifier(verify=verify, warm_up=warm_up)


__all__ = ["STAGES", "Verifier", "VerifierConfig", "make_verifier"]
