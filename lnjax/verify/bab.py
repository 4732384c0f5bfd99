"""Branch-and-bound over ReLU phases: the verifier's complete stage (β-CROWN style), CBC on small leaves.

After the bound stages the query's tightest intermediate bounds (`ctx.best`) are the root. A domain
is the box plus fixed phases of some ReLUs (`lnjax.bounds.beta_crown`); its bound is the k-th
smallest of its spec rows' α,β-CROWN lower bounds (+ offsets), the same order statistic as the
spec's margin. The loop:

1. pop size / 2 open domains with the lowest bounds (`domains.OpenDomains`: best-first on the
   bound), where size is the largest ladder size (`batch_sizes`, at most `bab.batch` / rows)
   predicted to end in time;
2. split each on the free unstable ReLU chosen when it was bounded (the BaBSR argmax, or filtered
   smart branching over the top `bab.fsb` BaBSR scores when > 0: `beta_crown.choose_branch`) into
   an active and an inactive child;
   bound all children in one jitted, vmapped call (warm-started from the parent's α and β; batches
   padded to one of a few fixed sizes, so it compiles a few times per network, not per call);
3. a child whose bound exceeds the safety margin is closed; a child's row bounds are never below its
   parent's (a subset of the parent's domain); the rest are pushed back;
4. counterexamples: the input that minimises each child's deciding linear bound is scored by the
   network on the query's own spec every batch (also when the run bounds fewer rows), and every
   `bab.attack_every` batches the box PGD starts from the weakest of them, then (if it found
   nothing, and while its time stays within `bab.attack_share` of the query's) the multi-targeted
   box PGD on the query's next `bab.attack_targets` sets of k rows (a counterexample anywhere in
   the box ends the query); the model confirms every one;
5. a domain with at most `bab.leaf_unstable` free unstable ReLUs left goes to the MILP (when the
   "milp" stage is on) with its clamped bounds, i.e. its phases fixed: a sound relaxation of the
   subdomain (a fixed neuron's own split row is not encoded, so the MILP may range over a superset:
   it can fail to close a robust leaf, never close a non-robust one); a leaf with no free ReLU left
   is an LP. The model scores every MILP point first: a counterexample ends the query.

ROBUST when every domain is closed; NOT_ROBUST on a confirmed counterexample; UNKNOWN at the
deadline (each batch is the largest padded size predicted to end in time: from the last batch of
that size, else the nearest timed size scaled linearly) or when the open
domains would exceed `bab.memory_mb` even without their warm starts (past the cap the domains with
the highest bounds drop their α and β first: `OpenDomains.fit`; then the query goes on to the next
stage, the whole-box MILP, with what is left of the budget). The proven lower bound of an
undecided query is the smallest bound of the open domains: it is recorded, with the weakest points
found, in the verdict.

Top-k (and argmax, threshold): only ReLUs are branched. For k > 1, `row_plan` first drops the k − 1
rows lowest at the weakest point seen when each is ≤ 0 there (for a top-2 query: the label of the
other object, above the target), and the rest is decided with k = 1, one row per run (sound for
any dropped rows: it asks for more than the query; 9× fewer rows per domain for DOUBLE-MNIST's
top-2). Otherwise each domain is bounded per spec row and its bound is the k-th smallest row bound,
which is sound (the k-th smallest is monotone in every row). It is weaker than branching on which k
rows are smallest: a domain whose k lowest rows can each be negative, but never together, closes
only by further ReLU splits or in the MILP leaf, which encodes the k-th smallest exactly with one
binary per row.

References:
  Wang et al., NeurIPS 2021 (β-CROWN; alpha-beta-CROWN's complete_verifier/batch_branch_and_bound.py
    for the batched best-first loop, read, not copied); Bunel et al., JMLR 2020 (BaBSR branching);
  Tjeng, Xiao & Tedrake, ICLR 2019 (MIPVerify: the MILP leaves);
  Gowal et al., arXiv:1910.09338, 2019 (MultiTargeted: the targeted attacks).
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

from lnjax.attacks.pgd import target_sets, view_box_pgd_targeted, view_margin
from lnjax.bounds import beta_crown as BC
from lnjax.specs import SpecRows, kth_lower
from lnjax.verify.domains import Domain, OpenDomains, split_children, warm_bytes
from lnjax.verify.verdict import Status, Verdict, milp_proof

UP_FACTOR = 2.0
"""A batch size not yet timed is predicted from a smaller timed one × size ratio × this."""


def batch_sizes(batch: int, rows: int = 1, count: int = 5) -> tuple[int, ...]:
    """The padded batch sizes for domains of `rows` spec rows: `count` sizes spaced geometrically from
    2 to b = batch / rows, each rounded down to even (children come in pairs; fewer if two round to
    the same). `batch` counts row-domains: a domain's cost and memory grow with its rows (a top-k
    query bounds all of them jointly), and 512 domains × 9 rows on the quickstart CNN took 37 s
    where 64 × 9 took 1.4 s.

    A call's time grows linearly with its padded size (the undefended 64×64 DOUBLE-MNIST CNN, top-2:
    30-40 ms per domain at sizes 2, 7 and 56), and the trees these queries grow are narrow (a few
    to a few dozen open domains per level), so padding is what a coarse ladder costs: with the old
    (2, 7, 56) a level of 8-20 domains paid for 56. The default five sizes, (2, 4, 10, 24, 56) for
    a top-2 query on the CNNs and (2, 8, 32, 128, 512) for one MLP row, made `bab_batch_bench`'s
    narrow proofs 1.6-1.8x faster in the bab stage than three ((2, 10, 56)); each size is one
    compilation (`warm_up`)."""
    b = max(2, batch // max(1, rows) // 2 * 2)
    if count < 2:  # `BabOptions` asks for ≥ 2; a direct call with fewer gets the one size
        return (b,)
    ratio = (b / 2) ** (1 / (count - 1))
    inner = {max(2, int(2 * ratio**i) // 2 * 2) for i in range(count - 1)}
    return tuple(sorted(inner | {b}))


BoundFn = Callable[..., tuple[BC.DomainBound, jax.Array]]


@functools.lru_cache(maxsize=8)
def bound_for(cfg: Any, k: int, k_query: int) -> BoundFn:
    """The jitted domain bound for a `VerifierConfig`'s bab options, the run's order statistic k and
    the query's (they differ after `row_plan`'s drop). Cached by the bound's own options
    (`jitted_bound`), so verifiers that differ elsewhere (a time limit, the stages) share one
    compiled bound per network: a benchmark's warm-up verifier compiles for its timed one."""
    return jitted_bound(
        cfg.bab.steps,
        cfg.bab.lr_alpha,
        cfg.bab.lr_beta,
        k,
        cfg.bab.refine_chunk,
        cfg.bab.fsb,
        k_query,
        cfg.bab.last_pass,
        cfg.bab.clip_rounds,
    )


@functools.lru_cache(maxsize=16)
def jitted_bound(
    steps: int,
    lr_alpha: float,
    lr_beta: float,
    k: int,
    refine_chunk: int,
    fsb: int = 0,
    k_query: int | None = None,
    last_pass: bool = True,
    clip_rounds: int = 0,
) -> BoundFn:
    """`bound(view, root, lo, hi, c, offset, splits[B], alphas[B], betas[B], c_query, offset_query) ->
    (DomainBound[B], margins [B])`: every domain's bound over the run's rows (c, offset, k) and the
    network's margin on the query's rows (c_query, offset_query, k_query; default k) at its candidate
    point, one call. The margin is the query's, so a candidate at margin ≤ 0 is a counterexample
    to the query whatever rows the run bounds. splits may come in any integer dtype and α, β in any
    float dtype (branch-and-bound sends int8 and float16); they are bounded as int32 and float32, and
    the optimised α, β come back in float16."""
    kq = k if k_query is None else k_query

    def one(view, root, lo, hi, c, offset, splits, alphas, betas, c_query, offset_query):
        res = BC.bound_domain(  # the host's compact dtypes (`batch_on_device`) widened in the call
            view,
            root,
            lo,
            hi,
            c,
            offset,
            splits.astype(jnp.int32),
            alphas.astype(jnp.float32),
            betas.astype(jnp.float32),
            k=k,
            steps=steps,
            lr_alpha=lr_alpha,
            lr_beta=lr_beta,
            refine_chunk=refine_chunk,
            fsb=fsb,
            last_pass=last_pass,
            clip_rounds=clip_rounds,
        )
        # α, β back in float16, as the host keeps them (`OpenDomains`): half the transfer, no host cast.
        res = res._replace(alphas=res.alphas.astype(jnp.float16), betas=res.betas.astype(jnp.float16))
        return res, view_margin(view, res.x_star, c_query, offset_query, kq)

    return jax.jit(jax.vmap(one, in_axes=(None, None, None, None, None, None, 0, 0, 0, None, None)))


def spec_rows_on_device(c: jax.Array, offset: jax.Array, rows: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """The spec rows a run works on, gathered on the host and sent over (an eager gather on the
    device would compile once per row count, inside the first query that branches)."""
    return jnp.asarray(np.asarray(c)[rows]), jnp.asarray(np.asarray(offset)[rows])


def batch_on_device(splits: np.ndarray, alphas: np.ndarray, betas: np.ndarray) -> tuple[jax.Array, ...]:
    """A padded host batch (splits int8, α and β float16, as open domains keep them; the root's α,
    CROWN's 0 / 1 slopes, is exact in float16 too) sent as it is:
    the jitted bound widens it (`jitted_bound`). Converting on the way (`jnp.asarray(a, float32)`
    of a float16 array converts on the host) cost 12–43 ms a batch on the 64×64 CNN, the transfer
    of the compact arrays ~4 ms. `warm_up` sends its batches through here too (the same argument
    kinds, so the same compiled bound)."""
    return jax.device_put(splits), jax.device_put(alphas), jax.device_put(betas)


def root_alphas(
    layout: BC.SplitLayout, best: Any, rows: np.ndarray, spec_alphas: dict[int, Any] | None = None
) -> np.ndarray:
    """The root domain's α for the spec rows `rows` ([len(rows), total] float32 on the host):
    α-CROWN's slopes of each row's best bound when the query has them (`QueryContext.spec_alphas`,
    {ReLU op: [M, ...]}), else CROWN's adaptive slopes over the root's bounds
    (`beta_crown.init_alphas`, eager ops that `warm_up` compiles).

    From CROWN's slopes the root's bound is far below α-CROWN's, which the domains are kept at
    (`Bab._absorb` takes the parent's rows as a floor), and with one Adam step per domain the
    children need many levels to catch up: on a DOUBLE-MNIST CNN query 4,000 subdomains in 10 s
    bounded −0.63 to −0.54 against the α-CROWN floor −0.537, and not one domain rose above it.
    alpha-beta-CROWN's branch-and-bound also starts from the root's optimised slopes."""
    if spec_alphas is None or any(j not in spec_alphas for j in layout.ops):
        return np.asarray(BC.init_alphas(layout, best, jnp.zeros(layout.total, jnp.int32), len(rows)))
    per_op = {j: np.asarray(spec_alphas[j], np.float32)[rows] for j in layout.ops}  # host: no eager op
    return BC.flatten(layout, per_op, (len(rows),))


def predicted_seconds(timed: dict[int, float], size: int) -> float:
    """Seconds of a batch of `size` given {size: seconds of its last batch}: its own last run, else
    the nearest timed size scaled linearly, × UP_FACTOR when scaling up (memory traffic grows faster
    than the work, and a compiled batch cannot be stopped at the deadline); 0 before any batch ran
    (the root is never predicted)."""
    if size in timed:
        return timed[size]
    if not timed:
        return 0.0
    near = min(timed, key=lambda s: abs(math.log(s / size)))
    return timed[near] * size / near * (UP_FACTOR if size > near else 1.0)


def domain_lower(row_lower: np.ndarray, offset: np.ndarray, k: int) -> np.ndarray:
    """The margin lower bound of each domain: k-th smallest of row bounds + offsets, a NaN row bound
    counted as −inf (`specs.kth_lower`). [B, M] -> [B]."""
    return kth_lower(np.asarray(row_lower, np.float64) + offset.astype(np.float64), k)


class Bab:
    """One query's branch-and-bound (see the module docstring); `run()` returns a verdict or None."""

    def __init__(
        self,
        ctx: Any,
        bound: BoundFn,
        leaf: Callable[..., Any] | None,
        seconds: dict[tuple[int, int], float] | None = None,
        rows: np.ndarray | None = None,
        budget: int | None = None,
        k: int | None = None,
    ):
        cfg = ctx.cfg
        self.budget = budget  # subdomains this run may bound (`bab.domain_budget` less earlier runs')
        self.ctx, self.bound, self.leaf = ctx, bound, leaf
        self.layout = BC.split_layout(ctx.view, ctx.best)
        every = np.arange(len(ctx.rows.offset))
        rows = every if rows is None else np.asarray(rows, int)
        k = int(ctx.k if k is None else k)
        if k != 1 and len(rows) != len(every):
            raise ValueError(f"a subset of the spec rows is a sound query only for k = 1, got k = {k}")
        # This run's rows: all of them (margin = k-th smallest), or a subset for k = 1 (each row is a
        # property of its own: the margin is their minimum; `row_plan` may have lowered k to 1).
        self.rows = rows
        self.spec = SpecRows(c=np.asarray(ctx.rows.c)[rows], offset=np.asarray(ctx.rows.offset)[rows], k=k)
        self.c, self.offset_dev = spec_rows_on_device(ctx.c, ctx.offset, rows)
        self.root_rows = np.asarray(ctx.row_lower, np.float64)[rows]
        self.m = len(rows)
        self.offset = np.asarray(self.spec.offset, np.float64)
        self.sizes = batch_sizes(cfg.bab.batch, self.m, cfg.bab.batch_ladder)
        self.memory = cfg.bab.memory_mb * 2**20
        self.open: OpenDomains | None = None  # made by the loop, from the root's α
        # Seconds of the last batch of each (rows, padded size), shared by the verifier's queries;
        # (0, k): the last multi-targeted attack call at order k (`targeted_due`).
        self.seconds: dict[tuple[int, int], float] = {} if seconds is None else seconds
        self.facts: dict[str, Any] = {
            "domains": 0,
            "batches": 0,
            "max_open": 0,
            "max_depth": 0,
            "leaves_milp": 0,
            "leaves_closed_milp": 0,
            "unresolved_leaves": 0,
            "cold_starts": 0,
            "pool_copies": 0,
        }
        self.unresolved: list[float] = []  # bounds of leaves nothing could close
        self.weakest: tuple[np.ndarray, float] | None = None

    # ------------------------------------------------------------------ bounding

    def _bound(
        self, splits: np.ndarray, pool: np.ndarray, store: OpenDomains
    ) -> tuple[BC.DomainBound, np.ndarray]:
        """Bounds a batch: phases [n, total] warm-started from `store`'s pool entries [n] (−1: the cold
        start), padded to a fixed size by repeating the first domain; numpy results."""
        n = len(splits)
        size = next((s for s in self.sizes if s >= n), self.sizes[-1])
        pad = np.zeros(size - n, np.int64)
        ctx = self.ctx
        t0 = time.monotonic()
        # One gather per array into the padded batch, in the dtypes the warm-up compiled for.
        alphas, betas = store.warm_starts(np.concatenate([pool, pool[pad]]))
        batch = batch_on_device(np.concatenate([splits, splits[pad]]).astype(np.int8), alphas, betas)
        res = self.bound(
            ctx.view, ctx.best, ctx.lo, ctx.hi, self.c, self.offset_dev, *batch, ctx.c, ctx.offset
        )
        res, margins = jax.tree.map(lambda v: np.asarray(v)[:n], res)
        self.seconds[(self.m, size)] = time.monotonic() - t0
        self.facts["domains"] += n
        self.facts["batches"] += 1
        return res, margins

    def _predicted(self, size: int) -> float:
        """Seconds of a batch of `size` from this verifier's batches with as many rows per domain."""
        return predicted_seconds({s: t for (m, s), t in self.seconds.items() if m == self.m}, size)

    def _batch_size(self, left: float) -> int | None:
        """The largest padded batch predicted to end before the deadline (None: not even the smallest)."""
        for size in reversed(self.sizes):
            if self._predicted(size) <= left:
                return size
        return None

    # ------------------------------------------------------------------ the loop

    def run(self) -> Outcome:
        ctx = self.ctx
        if self.layout.total == 0:
            return Outcome(None, False, None, False)  # no ReLU to branch on: nothing to gain
        t0 = time.monotonic()
        try:
            return self._loop()
        finally:
            ctx.lap("bab", t0)
            self.facts["open_at_end"] = 0 if self.open is None else len(self.open)
            if self.open is not None:  # warm starts dropped for the memory cap, pool copies
                self.facts["cold_starts"] = self.open.dropped
                self.facts["pool_copies"] = self.open.compactions

    def _loop(self) -> Outcome:
        ctx, cfg = self.ctx, self.ctx.cfg
        total = self.layout.total
        if self._batch_size(ctx.time_left()) is None:
            ctx.stats.notes.append(
                f"bab not started: predicted {self._predicted(self.sizes[0]):.1f} s per batch"
            )
            return Outcome(None, False, None, False)
        root_splits = np.zeros((1, total), np.int8)
        alphas = root_alphas(self.layout, ctx.best, self.rows, ctx.spec_alphas)
        cold = (alphas.astype(np.float16), np.zeros(alphas.shape, np.float16))
        self.open = store = OpenDomains(
            total, self.m, cold, warm_limit=int(self.memory // warm_bytes(total, self.m))
        )
        res, margins = self._bound(root_splits, np.asarray([-1]), store)
        zero = np.zeros(1, int)
        verdict = self._absorb(root_splits, res, margins, self.root_rows[None], zero, zero)
        if verdict is not None:
            return Outcome(verdict, False, None, False)
        while len(store):
            if not store.fit(self.memory):
                ctx.stats.notes.append(
                    f"bab stopped: {len(store)} open domains exceed the verifier.bab.memory_mb cap "
                    f"({cfg.bab.memory_mb:g} MB) even without their warm starts"
                )
                return self._give_up(timed_out=False)
            if self.budget is not None and self.facts["domains"] >= self.budget:
                ctx.stats.notes.append(f"bab stopped: domain budget ({self.budget}) used")
                return self._give_up(timed_out=True)
            # The largest batch that still fits in the budget (a compiled batch cannot be stopped).
            size = self._batch_size(ctx.time_left())
            if size is None or ctx.out_of_time("bab"):
                if not any("time limit" in n for n in ctx.stats.notes):
                    ctx.stats.notes.append("time limit reached in bab")
                return self._give_up(timed_out=True)
            popped = store.pop(max(1, size // 2))
            branch, free, depth, rebounds = store.meta_of(popped)
            # Leaves (few or no free ReLUs) one by one (`_leaf`); the rest are split.
            bounded = np.ones(len(popped), bool)
            few = free <= (cfg.bab.leaf_unstable if self.leaf is not None else 0)
            for j in np.flatnonzero(few):
                outcome = self._leaf(store.domain(int(popped[j])))
                if isinstance(outcome, Verdict):
                    store.release(popped)
                    return Outcome(outcome, False, None, False)
                bounded[j] = outcome
            parents = popped[bounded]
            if len(parents) == 0:
                store.release(popped)
                continue
            # A leaf is bounded again as it is (its α, β one more step on), the rest are split.
            split = free[bounded] > 0
            kids, of = split_children(store.splits[parents], branch[bounded], split)
            pool = store.pool_of(parents)[of]
            parent_rows = store.row_lower[parents][of]
            kid_depth = np.where(split, depth[bounded] + 1, depth[bounded])[of]
            kid_re = np.where(split, 0, rebounds[bounded] + 1)[of]
            res, margins = self._bound(kids, pool, store)  # reads the parents' warm starts
            store.release(popped)
            verdict = self._absorb(kids, res, margins, parent_rows, kid_depth, kid_re)
            if verdict is None and cfg.bab.attack_every and self.facts["batches"] % cfg.bab.attack_every == 0:
                verdict = self._attack()
            if verdict is not None:
                return Outcome(verdict, False, None, False)
        if self.unresolved:
            return self._give_up(timed_out=True)
        return Outcome(None, True, ctx.safety, False)

    def _absorb(
        self,
        splits: np.ndarray,
        res: BC.DomainBound,
        margins: np.ndarray,
        parent_rows: np.ndarray,
        depth: np.ndarray,
        rebounds: np.ndarray,
    ) -> Verdict | None:
        """Closes proven children, checks their candidate points, queues the rest."""
        ctx = self.ctx
        rows = np.maximum(np.asarray(res.row_lower, np.float64), parent_rows)
        lower = domain_lower(rows, self.offset, self.spec.k)
        i = int(np.argmin(margins))
        if self.weakest is None or margins[i] < self.weakest[1]:
            self.weakest = (np.asarray(res.x_star[i]), float(margins[i]))
        if margins[i] <= 0:
            x, m = ctx.evaluate(res.x_star[i])
            if m <= 0:
                return ctx.finish(Status.NOT_ROBUST, "bab", x)
        keep = ~(lower > ctx.safety)  # the rest are closed (a NaN bound, should one come, stays open)
        store = self.open
        assert store is not None
        store.push(
            lower[keep],
            splits[keep],
            rows[keep],
            np.asarray(res.branch)[keep],
            np.asarray(res.free)[keep],
            depth[keep],
            rebounds[keep],
            np.asarray(res.alphas)[keep],
            np.asarray(res.betas)[keep],
        )
        if keep.any():
            self.facts["max_depth"] = max(self.facts["max_depth"], int(depth[keep].max()))
        self.facts["max_open"] = max(self.facts["max_open"], len(store))
        return None

    def _leaf(self, d: Domain) -> Verdict | bool:
        """A domain with few free ReLUs: True if it is to be bounded (split, or bounded again unsplit),
        False if it is done (closed by the MILP, or recorded unresolved), or a NOT_ROBUST verdict.
        It goes to the MILP (if on); one with none left is bounded again unsplit when the MILP is
        off, at most `bab.leaf_rebounds` times (its α and β keep ascending: with one Adam step per
        bound a leaf would otherwise keep its parent's optimisation), then recorded as unresolved,
        as is one the MILP left open."""
        cfg = self.ctx.cfg
        to_milp = self.leaf is not None and d.free <= cfg.bab.leaf_unstable
        if to_milp:
            outcome = self._solve_leaf(d)
            if outcome is True:
                return False
            if isinstance(outcome, Verdict):
                return outcome
        if d.free == 0 and not to_milp and d.rebounds < cfg.bab.leaf_rebounds:
            return True
        if d.free == 0:
            self.unresolved.append(domain_lower(d.row_lower[None], self.offset, self.spec.k)[0])
            self.facts["unresolved_leaves"] += 1
            return False
        return True

    def _solve_leaf(self, d: Domain) -> bool | Verdict | None:
        """The leaf's MILP (sign question) with its clamped bounds: True if it closes the domain,
        a NOT_ROBUST verdict on a confirmed counterexample, None if undecided."""
        ctx, cfg = self.ctx, self.ctx.cfg
        seconds = min(cfg.bab.leaf_seconds, 0.5 * ctx.time_left())
        if seconds <= 0.05:
            return None
        assert self.leaf is not None
        self.facts["leaves_milp"] += 1
        bounds = BC.domain_bounds(self.layout, jax.tree.map(np.asarray, ctx.best), d.splits)
        result = self.leaf(ctx, bounds, self.spec, d.row_lower, seconds)
        _, proven = milp_proof(result, "sign", ctx.safety)
        xc = ctx.first_counterexample(result.solutions)  # also under a claimed proof
        if xc is not None:
            return ctx.finish(Status.NOT_ROBUST, "bab", xc)
        if proven:
            self.facts["leaves_closed_milp"] += 1
            return True
        return None

    def _attack(self) -> Verdict | None:
        """The box PGD from the weakest candidate point so far."""
        ctx = self.ctx
        if self.weakest is None:
            return None
        t0 = time.monotonic()
        key = jax.random.fold_in(ctx.keys.refine, self.facts["batches"])
        x0 = jnp.asarray(self.weakest[0], jnp.float32)
        # After `row_plan`'s drop the run's rows ask for more than the query: attack the query itself
        # (a point where the kept row is ≤ 0 but the dropped ones are not is no counterexample).
        c, offset, k = (
            (self.c, self.offset_dev, self.spec.k) if self.spec.k == ctx.k else (ctx.c, ctx.offset, ctx.k)
        )
        res = ctx.fns.pgd(key, ctx.view, ctx.lo, ctx.hi, c, offset, x0, k=k)
        x, m = ctx.evaluate(res.x)
        t1 = ctx.lap("bab_attack", t0)
        spent = ctx.stats.time_s.get("bab_targeted", 0.0)
        cost = self.seconds.get((0, ctx.k))  # the verifier's last targeted call at this k
        if (
            m > 0
            and ctx.cfg.bab.attack_targets
            and targeted_due(spent, cost, t1 - ctx.t_start, ctx.cfg.bab.attack_share)
        ):
            x, m = min((x, m), self._targeted(jax.random.fold_in(key, 1), x0), key=lambda p: p[1])
            self.seconds[(0, ctx.k)] = ctx.lap("bab_targeted", t1) - t1
        self.facts["attacks"] = self.facts.get("attacks", 0) + 1
        if m < self.weakest[1]:
            self.weakest = (np.asarray(x), m)
        if m <= 0:
            return ctx.finish(Status.NOT_ROBUST, "bab", x)
        return None

    def _targeted(self, key: jax.Array, x0: jax.Array) -> tuple[np.ndarray, float]:
        """The multi-targeted box PGD from x0 on the query's next `bab.attack_targets` row sets (the
        query's spec, whatever rows this run bounds; sets ranked once per query at the first x0, and
        tried in turn over all its runs); the model's margin at its best point."""
        ctx, g = self.ctx, self.ctx.cfg.bab.attack_targets
        if ctx.targets is None:
            ctx.targets = target_sets(rows_at(ctx, x0), ctx.k)
        pick = (ctx.targets_tried + np.arange(g)) % len(ctx.targets)
        ctx.targets_tried += g
        res = targeted_for(ctx.cfg)(
            key, ctx.view, ctx.lo, ctx.hi, ctx.c, ctx.offset, x0, jnp.asarray(ctx.targets[pick]), k=ctx.k
        )
        return ctx.evaluate(res.x)

    def _give_up(self, *, timed_out: bool) -> Outcome:
        """Undecided: the smallest open (or unresolved) bound is still a proven bound on these rows."""
        opened = ([] if self.open is None else self.open.bounds()) + self.unresolved
        if self.weakest is not None:
            self.ctx.evaluate(self.weakest[0])
        return Outcome(None, False, float(min(opened)) if opened else None, timed_out)


class Outcome(NamedTuple):
    """How one `Bab` run ended.

    Attributes:
      verdict: NOT_ROBUST (a confirmed counterexample), else None.
      proven: every domain closed: the run's rows are proven.
      bound: a proven lower bound of the run's margin (the safety margin when proven; None: none).
      stop: stop the query (time out, or unresolved leaves); False after the memory cap, when not
        started, or with nothing to branch (the next stage, the whole-box MILP, gets the rest of the
        budget).
    """

    verdict: Verdict | None
    proven: bool
    bound: float | None
    stop: bool


class RowPlan(NamedTuple):
    """Which spec rows branch-and-bound works on (`row_plan`).

    Attributes:
      kept: the rows the query is decided on (all of them, or all but the k − 1 dropped ones).
      k: the order statistic over the kept rows (the spec's, or 1 after the drop).
    """

    kept: np.ndarray
    k: int


def rows_at(ctx: Any, x: Any) -> np.ndarray:
    """[M] each spec row's value (c·z + offset) at the input x, in float64."""
    values = np.asarray(ctx.fns.logits(ctx.view, jnp.asarray(x))) @ np.asarray(ctx.rows.c, np.float64).T
    return values + np.asarray(ctx.rows.offset, np.float64)


def row_values(ctx: Any) -> np.ndarray:
    """[M] each spec row's value (c·z + offset) at the weakest point seen (the box centre if none)."""
    return rows_at(ctx, min(ctx.points, key=lambda p: p[1])[0] if ctx.points else (ctx.lo + ctx.hi) / 2)


def row_plan(ctx: Any) -> RowPlan:
    """For k > 1: drop the k − 1 rows that are lowest at the weakest point seen, if each is ≤ 0 there,
    and decide the rest with k = 1 (their minimum), one row per run.

    The margin is the k-th smallest row (+ offset), > 0 iff fewer than k rows are ≤ 0. Dropping any
    k − 1 rows and asking that none of the others be ≤ 0 is sound for every choice of rows: it asks
    for more (the k-th smallest of all rows is ≥ the smallest of the others), so a proof of it is a
    proof of the query, and the undecided bound (the smallest kept row's) is a lower bound of the
    margin. It loses nothing where the dropped rows are ≤ 0; it cannot prove a box in which a
    dropped row turns positive while a kept one is ≤ 0 (branch-and-bound then ends undecided, the
    counterexamples it proposes are scored on the whole spec). The case it is made for: a top-2
    query whose other object holds the top label (DOUBLE-MNIST: "the target is in the top 2" is
    "the target beats every label but the other digit"). A run then bounds one row per domain
    instead of all M (9 for a top-2 of 10 labels).
    """
    every = np.arange(len(ctx.rows.offset))
    if ctx.k == 1:
        return RowPlan(every, 1)
    values = row_values(ctx)
    order = np.argsort(values, kind="stable")
    if values[order[ctx.k - 2]] > 0:  # fewer than k − 1 rows are ≤ 0 at the weakest point
        return RowPlan(every, ctx.k)
    return RowPlan(np.sort(order[ctx.k - 1 :]), 1)


def row_groups(ctx: Any, plan: RowPlan) -> list[np.ndarray]:
    """The rows branch-and-bound runs on, one run per group: for k = 1 each kept row not yet proven
    is a property of its own (its own α, β, branching and attack, as alpha-beta-CROWN does per target
    label), weakest first (the lowest value at the best attack point); for k > 1 all rows together."""
    rows = ctx.rows
    if plan.k != 1:
        return [plan.kept]
    lower = np.asarray(ctx.row_lower, np.float64) + np.asarray(rows.offset, np.float64)
    open_rows = plan.kept[~(lower[plan.kept] > ctx.safety)]  # a NaN bound is not a proof
    values = row_values(ctx)
    return [np.array([r]) for r in open_rows[np.argsort(values[open_rows], kind="stable")]]


def _merge(total: dict[str, Any], facts: dict[str, Any]) -> None:
    for key, v in facts.items():
        if key in ("max_open", "max_depth"):
            total[key] = max(total.get(key, 0), v)
        else:
            total[key] = total.get(key, 0) + v


def run(ctx: Any, leaf: Callable[..., Any] | None, seconds: dict[tuple[int, int], float]) -> Verdict | None:
    """The bab stage: `Bab` over each of `row_groups(ctx)` in turn; ROBUST when every group is
    proven, NOT_ROBUST on a counterexample, UNKNOWN at the deadline or when `bab.domain_budget`
    subdomains are bounded; None (the next stage runs) after the memory cap or with nothing to
    branch. An undecided query's proven margin bound: the minimum over rows of the proven ones'
    safety margin, the current group's open bound and the root bounds of the groups not reached."""
    facts: dict[str, Any] = {"rows": 0, "rows_proven": 0}
    lower = np.asarray(ctx.row_lower, np.float64) + np.asarray(ctx.rows.offset, np.float64)
    plan = row_plan(ctx)
    groups = row_groups(ctx, plan)
    facts["rows_dropped"] = len(lower) - len(plan.kept)
    try:
        if plan.k != ctx.k and ctx.cfg.bab.joint_domains:
            verdict = _joint_first(ctx, leaf, seconds, facts)
            if verdict is not None:
                return verdict
        for g in groups:
            budget = ctx.cfg.bab.domain_budget
            left = max(budget - facts.get("domains", 0), 0) if budget else None
            if left == 0:  # spent by the joint run: the same stop as inside a run
                ctx.stats.notes.append(f"bab stopped: domain budget ({budget}) used")
                return ctx.finish(Status.UNKNOWN, None)
            bab = Bab(ctx, bound_for(ctx.cfg, plan.k, ctx.k), leaf, seconds, rows=g, budget=left, k=plan.k)
            out = bab.run()
            _merge(facts, bab.facts)
            facts["rows"] += 1
            if out.verdict is not None:
                return out.verdict
            if not out.proven:
                facts["open_bound"] = out.bound  # the group it stopped in: its smallest open bound
                if out.bound is not None:
                    if plan.k == 1:
                        lower[g] = np.maximum(lower[g], out.bound)
                        bound = float(np.min(lower[plan.kept]))
                    else:
                        bound = out.bound
                    ctx.proven.append(bound)
                    ctx.stats.margin_lower["bab"] = bound
                return ctx.finish(Status.UNKNOWN, None) if out.stop else None
            facts["rows_proven"] += 1
            lower[g] = np.maximum(lower[g], ctx.safety)
    finally:
        if ctx.targets_tried:  # over all of the query's runs (`Bab._targeted`)
            facts["targets_tried"] = ctx.targets_tried
        ctx.stats.bab = facts
    return _proved(ctx)


def _proved(ctx: Any) -> Verdict:
    """ROBUST by branch-and-bound: every domain closed above the safety margin."""
    ctx.proven.append(ctx.safety)
    ctx.stats.margin_lower["bab"] = ctx.safety
    return ctx.finish(Status.ROBUST, "bab")


def _joint_first(
    ctx: Any, leaf: Any, seconds: dict[tuple[int, int], float], facts: dict[str, Any]
) -> Verdict | None:
    """Before `row_plan`'s one-row runs: a run over every row at the query's own k, capped at
    `bab.joint_domains` domains (and the query's domain budget). Its candidate points minimise the
    deciding row of each domain, whichever it is, where a one-row run only hunts on its row (a
    top-2 counterexample may break a row the plan would reach late). Returns its verdict (NOT_ROBUST,
    or ROBUST if it closes every domain), else None: the one-row runs go on with the time left."""
    budget, cap = ctx.cfg.bab.domain_budget, ctx.cfg.bab.joint_domains
    joint = Bab(
        ctx, bound_for(ctx.cfg, ctx.k, ctx.k), leaf, seconds, budget=min(cap, budget) if budget else cap
    )
    notes = len(ctx.stats.notes)
    out = joint.run()
    _merge(facts, joint.facts)
    facts["joint_domains"] = joint.facts["domains"]
    if out.verdict is not None:
        return out.verdict
    if out.proven:
        return _proved(ctx)
    del ctx.stats.notes[notes:]  # its stop is not the query's
    if out.bound is not None:
        ctx.proven.append(out.bound)
    return None


def targeted_due(spent: float, cost: float | None, elapsed: float, share: float) -> bool:
    """Does the multi-targeted attack run now? When its seconds in this query, with one more call
    (`cost`: the verifier's last call; None: never timed, so it runs and is timed), stay within
    `share` of the query's elapsed seconds. On a CNN one call (2 sets × 8 × 100 steps) costs as
    much as several bound batches, so it waits for queries branch-and-bound does not close fast; on
    an MLP it costs next to nothing and runs at every attack."""
    return cost is None or spent + cost <= share * elapsed


def targeted_for(cfg: Any) -> Callable[..., Any]:
    """Branch-and-bound's multi-targeted box PGD for a `VerifierConfig` (compiled once per
    hyperparameters, network architecture, spec size and k)."""
    return view_box_pgd_targeted(
        cfg.bab.attack_steps, cfg.bab.attack_restarts, cfg.pgd.step_size, cfg.pgd.odi_steps
    )


def warm_up(cfg: Any, view: Any, best: Any, lo: Any, hi: Any, c: Any, offset: Any, k: int) -> None:
    """Compiles the bound at every batch size for the rows a run takes (one row for k = 1, see
    `row_groups`; for k > 1 all rows and, for `row_plan`'s drop to k = 1, one row), the eager steps
    around it (`spec_rows_on_device`, `root_alphas`, `batch_on_device`: without them the first query
    that branches compiled ~85 small ops, 2–5 s on the 64×64 CNN) and the multi-targeted attack
    (results discarded)."""
    if cfg.bab.attack_every and cfg.bab.attack_targets:
        sets = jnp.asarray(np.zeros((cfg.bab.attack_targets, k), int))  # host-made, as `target_sets`'
        x0 = jnp.asarray(np.asarray(lo), jnp.float32)  # host-made, as `Bab._targeted`'s start
        jax.block_until_ready(targeted_for(cfg)(jax.random.key(0), view, lo, hi, c, offset, x0, sets, k=k))
    layout = BC.split_layout(view, best)
    every = np.arange(c.shape[0])
    for kk, rows in ((k, every), (1, every[:1])) if k > 1 else ((1, every[:1]),):
        bound = bound_for(cfg, kk, k)
        cc, oo = spec_rows_on_device(c, offset, rows)
        root_alphas(layout, best, rows)
        for size in batch_sizes(cfg.bab.batch, len(rows), cfg.bab.batch_ladder):
            alphas = np.zeros((size, len(rows), layout.total), np.float16)  # as `Bab._bound` sends them
            batch = batch_on_device(np.zeros((size, layout.total), np.int8), alphas, alphas)
            jax.block_until_ready(bound(view, best, lo, hi, cc, oo, *batch, c, offset))
