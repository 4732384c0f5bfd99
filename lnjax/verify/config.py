"""`VerifierConfig`: every option of `make_verifier`, typed, with today's defaults, checked once:
the query-wide options and one frozen group per stage family (`PgdOptions`, `BoundOptions`,
`MilpStageOptions`, `BabOptions`).

Each field is documented on its class. The experiments' `verifier` ConfigDict block
(`experiments/configs/blocks.py`) is generated from these classes, with the same nesting
(`--config.verifier.bab.batch=1024`).
A bad value raises `ValueError` with one line naming the field, the value and what was expected.

Fields are checked with the shared `lnjax.checks` helpers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

from lnjax.checks import check_bool, check_choice, check_float, check_int
from lnjax.verify.milp import MilpOptions

STAGES = ("pgd", "crown", "alpha_crown", "bab", "milp")
MILP_MODES = ("sign", "optimise")


def _checked_stages(where: str, stages: object) -> tuple[str, ...]:
    """The stages as a tuple of names; ValueError for a string ("pgd,milp" is not a list of stages),
    a non-iterable or a name outside STAGES (+ "interval")."""
    wanted = f"expected a tuple of names from {STAGES}"
    if isinstance(stages, str) or not isinstance(stages, Iterable):
        raise ValueError(f"{where} = {stages!r}; {wanted}")
    names = tuple(stages)
    if not all(isinstance(s, str) for s in names):
        raise ValueError(f"{where} = {names!r}; {wanted}")
    unknown = sorted(set(names) - {*STAGES, "interval"})
    if unknown:
        raise ValueError(f"{where}: unknown {unknown}; expected a subset of {STAGES}")
    return names


@dataclasses.dataclass(frozen=True)
class PgdOptions:
    """The verifier's box PGD (`attacks.make_pgd_box`), the first and cheapest stage.

    Attributes:
      steps, restarts, step_size: the full PGD (the step is a fraction of the box width). A first
        step of half the box width found more counterexamples than a quarter on 80 held-out
        DOUBLE-MNIST boxes (quick PGD 30 vs 26, full 40 × 4: 41 vs 40), never fewer at any scale; a
        whole width was no better.
      quick_steps, quick_restarts: the quick PGD run before the bounds (0 steps: none; then the full
        PGD runs first, as its own stage before the bounds).
      odi_steps: output-diversification steps (`attacks.pgd.odi_starts`, Tashiro et al. 2020) for
        the random starts of the full PGD and of branch-and-bound's attacks (0: plain uniform
        starts). On bab_bench's 90 MLP instances, 8 starts × 100 steps broke 34 with 2 ODI steps
        against 30 without (BUILD.md).
    """

    steps: int = 40
    restarts: int = 4
    step_size: float = 0.5
    quick_steps: int = 10
    quick_restarts: int = 1
    odi_steps: int = 2

    def __post_init__(self) -> None:
        w = "verifier.pgd."
        check_int(w + "steps", self.steps, 1)
        check_int(w + "restarts", self.restarts, 1)
        check_float(w + "step_size", self.step_size, low=0.0, low_open=True)
        check_int(w + "quick_steps", self.quick_steps, 0)
        check_int(w + "quick_restarts", self.quick_restarts, 1)
        check_int(w + "odi_steps", self.odi_steps, 0)


@dataclasses.dataclass(frozen=True)
class BoundOptions:
    """The bound stages: CROWN, α-CROWN on the spec rows, α-CROWN on the intermediate neurons.

    Attributes:
      alpha_steps, alpha_lr: α-CROWN's Adam steps and learning rate (spec rows).
      intermediate: after the full PGD, α-CROWN also optimises the bounds of every unstable
        intermediate neuron (stats name "alpha_intermediate"; tighter bounds for the spec, the
        branch-and-bound root and the MILP). Its first cost prediction: CROWN's time × (steps + 1).
      intermediate_steps, intermediate_lr: Adam steps and learning rate of that pass (each step a
        backward pass of every unstable neuron's two rows). Measured on 10 held-out quickstart boxes
        (not the benchmark's): 5 steps at 0.3 reach a spec bound at least as high as 10 steps at 0.1
        on every box, in ~55 % of the time; 10 at 0.3 gains ~0.2 more for 2×.
      chunk: neurons per CROWN backward pass (`crown_bounds(chunk=...)`). Passes are padded to whole
        chunks, so small chunks suit verification-friendly nets with few unstable neurons
        (DOUBLE-MNIST CNN, ~100 unstable per layer: 32 → 0.12 s, 256 → 0.75 s) and cost nothing
        measurable with thousands.
    """

    alpha_steps: int = 20
    alpha_lr: float = 0.1
    intermediate: bool = True
    intermediate_steps: int = 5
    intermediate_lr: float = 0.3
    chunk: int = 32

    def __post_init__(self) -> None:
        w = "verifier.bounds."
        check_int(w + "alpha_steps", self.alpha_steps, 1)
        check_float(w + "alpha_lr", self.alpha_lr, low=0.0, low_open=True)
        check_bool(w + "intermediate", self.intermediate)
        check_int(w + "intermediate_steps", self.intermediate_steps, 1)
        check_float(w + "intermediate_lr", self.intermediate_lr, low=0.0, low_open=True)
        check_int(w + "chunk", self.chunk, 1)


@dataclasses.dataclass(frozen=True)
class MilpStageOptions:
    """The MILP stage (the whole box) and branch-and-bound's MILP leaves.

    Attributes:
      mode: "sign" (cutoff, first solution) or "optimise" (to optimality or the time limit; returns
        every saved solution as a weakest point).
      max_unstable: skip the MILP (UNKNOWN at once, with a note) when more ReLUs than this are still
        unstable after the bounds (each is a binary; CBC rarely settles more than a few hundred
        within seconds). None: always try.
      lp_tighten: per-neuron LP tightening in the MILP worker (off: it costs ~0.1 s per LP and adds
        little over CROWN).
      solver: base `milp.MilpOptions` (backend, threads, emphasis, slack, ...); mode, cutoff and the
        backend's time limit are set per query.
      time_fraction: the backend's own (soft) time limit as a fraction of what is left of the query's
        budget when the MILP starts; the worker also caps it to stop `milp.worker.RESERVE_S` before the
        deadline, whatever the network's transfer took, so the backend stops by itself before the
        hard kill and returns what it found (CBC stops within ~0.2 s of its limit).
    """

    mode: str = "sign"
    max_unstable: int | None = None
    lp_tighten: bool = False
    solver: MilpOptions | None = None
    time_fraction: float = 1.0

    def __post_init__(self) -> None:
        w = "verifier.milp."
        check_choice(w + "mode", self.mode, MILP_MODES)
        if self.max_unstable is not None:
            check_int(w + "max_unstable", self.max_unstable, 0)
        check_bool(w + "lp_tighten", self.lp_tighten)
        if self.solver is not None and not isinstance(self.solver, MilpOptions):
            raise ValueError(f"{w}solver = {self.solver!r}; expected a MilpOptions or None")
        check_float(w + "time_fraction", self.time_fraction, low=0.0, low_open=True)  # > 1: hard kill only

    def solver_seconds(self, remaining: float) -> float:
        """The backend's own time limit when `remaining` seconds are left (inf: no limit); the worker
        also caps it to end `milp.worker.RESERVE_S` before the deadline (`MilpOptions.stop_by`)."""
        if math.isinf(remaining):
            return 1e9
        return max(self.time_fraction * remaining, 0.01)


@dataclasses.dataclass(frozen=True)
class BabOptions:
    """Branch-and-bound over ReLU phases (`bab`, the "bab" stage).

    Attributes:
      batch: row-domains bounded per call (the largest padded batch is batch / rows per domain).
      batch_ladder: how many batch sizes are compiled, spaced geometrically from 2 to that largest
        (`bab.batch_sizes`): a call pads its domains up to the next size, so fewer sizes compile
        faster and waste more of each call on padding.
      steps, lr_alpha, lr_beta: Adam steps per domain and the learning rates of the slopes α and the
        split multipliers β (warm-started from the parent domain, so the steps add up along a
        branch). last_pass: evaluate the bound once more after the last step; without it the bound
        is the last step's own evaluation and its update goes to the children (one backward pass
        less per domain: `beta_crown.bound_domain`). 1 step without the last pass, not 2 with it
        (nor 4), measured on close UNKNOWN queries of the neighborhood runs (10 s each, variants
        interleaved per query, 2026-12-05): undefended CNN, 16 queries: 6 against 3 ROBUST, 2.3x
        the domains; L0, 16 queries: 14 against 12; L∞, 12 queries: 0 against 1, open bound
        higher on 5, lower on 7; 784-256x2 MLP (6 undecided bab_bench instances, 30 s): none
        decided either way, 1.5x the domains, open bounds −0.61 / −3.13 against −0.59 / −2.89.
        lr_alpha 0.01 since the root starts from α-CROWN's slopes (`bab.root_alphas`, 2026-12-06):
        near their optimum a sign step of 0.1 on every slope made most children worse than their
        parent; on four close `dmnist_linf_stable` queries (1.02 × a searched ε, 10 s) the open
        bounds after 10 s were −0.537 / −0.937 / −2.016 / −0.349 at 0.1, −0.456 / −0.662 / −1.689 /
        −0.261 at 0.02, −0.446 / −0.624 / −1.714 / −0.260 at 0.005, −0.436 / −0.626 / −1.705 /
        −0.254 at 0.01; lr_beta 0.01 instead of 0.05 no better (−0.436 / −0.656 / −1.758 / −0.253).
        On the 784-256x2 MLP it is the other way round: 0.1 ends higher on all 10 instances
        bab_bench leaves open at 30 s (image 0 ε 0.03: −0.139 against −0.266; RESULTS.md), so
        pass 0.1 for such MLPs.
      memory_mb: cap on the open domains' host memory (each holds its phases, and α and β per spec
        row and ReLU as its children's warm start); past it the domains with the highest bounds
        drop their α and β (they restart from the root's); when even the bare domains exceed it,
        branch-and-bound stops and the query goes on to the whole-box MILP. On the 64×64 CNNs a
        warm domain holds ~0.2 MB: at the old hard cap 60 s queries stopped at 19–32 s. The pool
        is cut to 3/4 of the room so that it is copied rarely (`OpenDomains.fit`): cut to all of
        it (before 2026-12-07), one query on the 784-256x2 MLP bounded 1.13 M domains in 300 s,
        copying the ~2 GB pool every few batches; 2.63 M in 120 s since.
      attack_every: a box PGD from the weakest candidate point every this many batches (0: never).
      attack_targets: with it, the multi-targeted box PGD (`attacks.pgd.view_box_pgd_targeted`) on
        this many of the query's target row sets in turn (`attacks.pgd.target_sets`, ranked at the
        first weakest point; 0: none), `attack_restarts` starts of `attack_steps` steps each. On
        bab_bench's 52 undecided MLP instances it found 2 counterexamples with 16 × 100 per set where
        the untargeted PGD with 144 × 100 found none; on verify_bench's quickstart image 10 at ε_0
        0.006 one pair of rows breaks (8 × 100: 1 seed in 4; 16 × 200: 3 in 4), the untargeted
        PGD stops at +1.9. It runs only when its time in the query, with one more call (the
        verifier's last), stays within `attack_share` of the query's elapsed time
        (`bab.targeted_due`): run every 4 batches it took ~45 % of the time of 16 close
        neighborhood queries on the undefended CNN (same trees, 6.1 s against 3.2 s to ROBUST).
      leaf_unstable: a domain with at most this many free unstable ReLUs goes to the MILP (if the
        "milp" stage is on), with at most `leaf_seconds` (and half the time left) per leaf.
      leaf_rebounds: a domain with no free unstable ReLU left is bounded again unsplit (the MILP
        off) up to this many times (`steps` more Adam steps each) before it counts as unresolved.
      refine_chunk: each subdomain's later pre-activation bounds are re-computed by CROWN over its
        split layers (neurons per pass); 0: the root's bounds, clamped by the splits.
      clip_rounds: domain clipping (`beta_crown.clip_domain`): each subdomain's input box is shrunk
        by the half-spaces its first-layer splits cut out of the input (this many passes), and the
        first layer's bounds recomputed over it; 0: off (the default: on the same four queries as
        lr_alpha's, one pass left the open bounds at −0.449 / −0.656 / −1.701 / −0.260 against
        −0.436 / −0.626 / −1.705 / −0.254 without, with 0.6–0.97× the domains).
      fsb: branching candidates (filtered smart branching: the top BaBSR scores, each child bounded
        once, the best worse child wins); 0: the BaBSR argmax.
      joint_domains: when `bab.row_plan` drops rows (k > 1), a first run over every row (the query's
        own k-th smallest) bounds at most this many domains before the one-row runs: its candidate
        points follow whichever row decides, where each one-row run hunts on its own row; 0: none.
      domain_budget: per query, stop branching (UNKNOWN, like a time-out) once this many subdomains
        have been bounded, counted over all of the query's spec-row runs (the last batch may take
        it up to one batch further); 0: no cap. With a time limit generous enough never to be
        reached, this makes branch-and-bound's verdicts independent of machine speed and load (a
        time-limited proof that ends at 9.5 s of 10 depends on what else the cores are doing).
    """

    batch: int = 512
    batch_ladder: int = 5
    steps: int = 1
    lr_alpha: float = 0.01
    lr_beta: float = 0.05
    memory_mb: float = 2048.0
    attack_every: int = 4
    attack_targets: int = 2
    attack_restarts: int = 8
    attack_steps: int = 100
    attack_share: float = 0.1
    leaf_unstable: int = 8
    leaf_seconds: float = 5.0
    leaf_rebounds: int = 8
    refine_chunk: int = 0
    clip_rounds: int = 0
    fsb: int = 0
    last_pass: bool = False
    joint_domains: int = 16
    domain_budget: int = 0

    def __post_init__(self) -> None:
        w = "verifier.bab."
        check_int(w + "batch", self.batch, 2)
        check_int(w + "batch_ladder", self.batch_ladder, 2)
        check_int(w + "steps", self.steps, 0)
        check_float(w + "lr_alpha", self.lr_alpha, low=0.0, low_open=True)
        check_float(w + "lr_beta", self.lr_beta, low=0.0, low_open=True)
        check_float(w + "memory_mb", self.memory_mb, low=0.0, low_open=True)
        check_int(w + "attack_every", self.attack_every, 0)
        check_int(w + "attack_targets", self.attack_targets, 0)
        check_int(w + "attack_restarts", self.attack_restarts, 1)
        check_int(w + "attack_steps", self.attack_steps, 1)
        check_float(w + "attack_share", self.attack_share, low=0.0, high=1.0)
        check_int(w + "leaf_unstable", self.leaf_unstable, 0)
        check_float(w + "leaf_seconds", self.leaf_seconds, low=0.0, low_open=True)
        check_int(w + "leaf_rebounds", self.leaf_rebounds, 0)
        check_int(w + "refine_chunk", self.refine_chunk, 0)
        check_int(w + "clip_rounds", self.clip_rounds, 0)
        check_int(w + "fsb", self.fsb, 0)
        check_bool(w + "last_pass", self.last_pass)
        check_int(w + "joint_domains", self.joint_domains, 0)
        check_int(w + "domain_budget", self.domain_budget, 0)


def checked_time_limit(value: object, where: str = "time_limit") -> float:
    """A per-query budget in seconds: a finite number > 0 (ValueError naming `where` otherwise)."""
    check_float(where, value, low=0.0, low_open=True)
    return float(value)  # pyright: ignore[reportArgumentType]


GROUPS = {"pgd": PgdOptions, "bounds": BoundOptions, "milp": MilpStageOptions, "bab": BabOptions}
"""The sub-configs of `VerifierConfig`, by field name."""


@dataclasses.dataclass(frozen=True)
class VerifierConfig:
    """The staged verifier's options (`make_verifier`; the stages are described in its module),
    the query-wide ones here and each stage's in its own frozen group.

    Attributes:
      stages: a subset of ("pgd", "crown", "alpha_crown", "bab", "milp"), run cheapest first.
        Interval bounds are always computed; "interval" may be listed but changes nothing. "bab":
        branch-and-bound over ReLU phases (`bab`) after the bounds, with MILP leaves if "milp" is on.
      time_limit: wall-clock budget per query in seconds (None: unlimited).
      input_domain: (low, high) of every input value: boxes are clipped to it and corners far outside
        it refused (default (0, 1): our image models); None: the box is used exactly as given (an
        imported network with normalised or signed inputs: clipping would verify a smaller box).
      atol, rtol: safety margin = atol + rtol · max(1, ‖z(centre)‖∞); ROBUST needs a proven
        margin bound above it.
      pgd: `PgdOptions`; bounds: `BoundOptions`; milp: `MilpStageOptions`; bab: `BabOptions`.

    A changed group option: `dataclasses.replace(cfg, bab=dataclasses.replace(cfg.bab, batch=64))`.
    """

    stages: tuple[str, ...] = STAGES
    time_limit: float | None = 60.0
    input_domain: tuple[float, float] | None = (0.0, 1.0)
    atol: float = 1e-4
    rtol: float = 1e-4
    pgd: PgdOptions = PgdOptions()
    bounds: BoundOptions = BoundOptions()
    milp: MilpStageOptions = MilpStageOptions()
    bab: BabOptions = BabOptions()

    def __post_init__(self) -> None:
        w = "verifier."
        object.__setattr__(self, "stages", _checked_stages(w + "stages", self.stages))
        if self.time_limit is not None:
            checked_time_limit(self.time_limit, w + "time_limit")
        if self.input_domain is not None:
            d = self.input_domain
            ok = isinstance(d, tuple) and len(d) == 2 and all(isinstance(v, int | float) for v in d)
            if not ok or not (math.isfinite(d[0]) and math.isfinite(d[1]) and d[0] < d[1]):
                raise ValueError(
                    f"{w}input_domain = {d!r}; expected (low, high) with finite low < high, or None"
                )
        check_float(w + "atol", self.atol, low=0.0)
        check_float(w + "rtol", self.rtol, low=0.0)
        for name, cls in GROUPS.items():
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"{w}{name} = {getattr(self, name)!r}; expected a {cls.__name__}")


def resolved_config(config: object, overrides: Mapping[str, Any]) -> VerifierConfig:
    """`config` (None: the defaults) with `overrides` replacing its fields, checked once.

    Raises:
      TypeError: `config` is not a VerifierConfig, or an override is not one of its fields.
      ValueError: a bad field value (from `VerifierConfig`, naming the field).
    """
    if config is not None and not isinstance(config, VerifierConfig):
        raise TypeError(f"config is a {type(config).__name__}; expected a VerifierConfig or None")
    fields = [f.name for f in dataclasses.fields(VerifierConfig)]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise TypeError(
            f"unknown verifier options {unknown}; expected fields of VerifierConfig {fields} (stage "
            f"options are grouped: e.g. bab=BabOptions(batch=64), pgd=PgdOptions(restarts=2))"
        )
    return dataclasses.replace(config or VerifierConfig(), **overrides)
