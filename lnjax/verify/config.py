"""`VerifierConfig`: every option of `make_verifier`, typed, with today's defaults, checked once.

Each field is documented on the class. Field names equal the experiments'
`verifier` ConfigDict keys (`experiments/configs/verify.py`), which are generated from this class.
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
class VerifierConfig:
    """The staged verifier's options (`make_verifier`; the stages are described in its module).

    Attributes:
      stages: a subset of ("pgd", "crown", "alpha_crown", "bab", "milp"), run cheapest first.
        Interval bounds are always computed; "interval" may be listed but changes nothing. "bab":
        branch-and-bound over ReLU phases (`bab`) after the bounds, with MILP leaves if "milp" is on.
      time_limit: wall-clock budget per query in seconds (None: unlimited).
      input_domain: (low, high) of every input value: boxes are clipped to it and corners far outside
        it refused (default (0, 1): our image models); None: the box is used exactly as given (an
        imported network with normalised or signed inputs: clipping would verify a smaller box).
      milp_mode: "sign" (cutoff, first solution) or "optimise" (to optimality or the time limit;
        returns every saved solution as a weakest point).
      atol, rtol: safety margin = atol + rtol · max(1, ‖z(centre)‖∞); ROBUST needs a proven
        margin bound above it.
      pgd_steps, pgd_restarts, pgd_step_size: the box PGD (`attacks.make_pgd_box`; the step is a
        fraction of the box width). A first step of half the box width found more counterexamples
        than a quarter on 80 held-out DOUBLE-MNIST boxes (quick PGD 30 vs 26, full 40 × 4: 41 vs
        40), never fewer at any scale; a whole width was no better.
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
      bab_batch: domains bounded per branch-and-bound call (the largest padded batch; also 2 and
        bab_batch / 8 are compiled).
      bab_steps, bab_lr_alpha, bab_lr_beta: Adam steps per batch and the learning rates of the
        slopes α and the split multipliers β (warm-started from the parent domain).
      bab_memory_mb: cap on the open domains' host memory (each holds α and β per spec row and
        ReLU); beyond it branch-and-bound stops and the query goes on to the whole-box MILP.
      bab_attack_every: a box PGD from the weakest candidate point every this many batches (0: never).
      bab_leaf_unstable: a domain with at most this many free unstable ReLUs goes to the MILP (if the
        "milp" stage is on), with at most `bab_leaf_seconds` (and half the time left) per leaf.
      bab_refine_chunk: each subdomain's later pre-activation bounds are re-computed by CROWN over
        its split layers (neurons per pass); 0: the root's bounds, clamped by the splits.
      bab_fsb: branching candidates (filtered smart branching: the top BaBSR scores, each child
        bounded once, the best worse child wins); 0: the BaBSR argmax.
    """

    stages: tuple[str, ...] = STAGES
    time_limit: float | None = 60.0
    input_domain: tuple[float, float] | None = (0.0, 1.0)
    milp_mode: str = "sign"
    atol: float = 1e-4
    rtol: float = 1e-4
    pgd_steps: int = 40
    pgd_restarts: int = 4
    pgd_step_size: float = 0.5
    pgd_quick_steps: int = 10
    pgd_quick_restarts: int = 1
    alpha_steps: int = 20
    alpha_lr: float = 0.1
    alpha_intermediate: bool = True
    alpha_intermediate_steps: int = 5
    alpha_intermediate_lr: float = 0.3
    bound_chunk: int = 32
    milp_max_unstable: int | None = None
    lp_tighten: bool = False
    milp_options: MilpOptions | None = None
    cbc_fraction: float = 0.6
    bab_batch: int = 512
    bab_steps: int = 4
    bab_lr_alpha: float = 0.1
    bab_lr_beta: float = 0.05
    bab_memory_mb: float = 2048.0
    bab_attack_every: int = 4
    bab_leaf_unstable: int = 8
    bab_leaf_seconds: float = 5.0
    bab_refine_chunk: int = 0
    bab_fsb: int = 0

    def __post_init__(self) -> None:
        w = "verifier."
        object.__setattr__(self, "stages", _checked_stages(w + "stages", self.stages))
        if self.time_limit is not None:
            check_float(w + "time_limit", self.time_limit, low=0.0, low_open=True)
        if self.input_domain is not None:
            d = self.input_domain
            ok = isinstance(d, tuple) and len(d) == 2 and all(isinstance(v, int | float) for v in d)
            if not ok or not (math.isfinite(d[0]) and math.isfinite(d[1]) and d[0] < d[1]):
                raise ValueError(
                    f"{w}input_domain = {d!r}; expected (low, high) with finite low < high, or None"
                )
        check_choice(w + "milp_mode", self.milp_mode, MILP_MODES)
        check_float(w + "atol", self.atol, low=0.0)
        check_float(w + "rtol", self.rtol, low=0.0)
        check_int(w + "pgd_steps", self.pgd_steps, 1)
        check_int(w + "pgd_restarts", self.pgd_restarts, 1)
        check_float(w + "pgd_step_size", self.pgd_step_size, low=0.0, low_open=True)
        check_int(w + "pgd_quick_steps", self.pgd_quick_steps, 0)
        check_int(w + "pgd_quick_restarts", self.pgd_quick_restarts, 1)
        check_int(w + "alpha_steps", self.alpha_steps, 1)
        check_float(w + "alpha_lr", self.alpha_lr, low=0.0, low_open=True)
        check_bool(w + "alpha_intermediate", self.alpha_intermediate)
        check_int(w + "alpha_intermediate_steps", self.alpha_intermediate_steps, 1)
        check_float(w + "alpha_intermediate_lr", self.alpha_intermediate_lr, low=0.0, low_open=True)
        check_int(w + "bound_chunk", self.bound_chunk, 1)
        if self.milp_max_unstable is not None:
            check_int(w + "milp_max_unstable", self.milp_max_unstable, 0)
        check_bool(w + "lp_tighten", self.lp_tighten)
        if self.milp_options is not None and not isinstance(self.milp_options, MilpOptions):
            raise ValueError(f"{w}milp_options = {self.milp_options!r}; expected a MilpOptions or None")
        check_float(w + "cbc_fraction", self.cbc_fraction, low=0.0, low_open=True)  # > 1: hard kill only
        check_int(w + "bab_batch", self.bab_batch, 2)
        check_int(w + "bab_steps", self.bab_steps, 0)
        check_float(w + "bab_lr_alpha", self.bab_lr_alpha, low=0.0, low_open=True)
        check_float(w + "bab_lr_beta", self.bab_lr_beta, low=0.0, low_open=True)
        check_float(w + "bab_memory_mb", self.bab_memory_mb, low=0.0, low_open=True)
        check_int(w + "bab_attack_every", self.bab_attack_every, 0)
        check_int(w + "bab_leaf_unstable", self.bab_leaf_unstable, 0)
        check_float(w + "bab_leaf_seconds", self.bab_leaf_seconds, low=0.0, low_open=True)
        check_int(w + "bab_refine_chunk", self.bab_refine_chunk, 0)
        check_int(w + "bab_fsb", self.bab_fsb, 0)


def resolved_config(config: object, overrides: Mapping[str, Any]) -> VerifierConfig:
    """`config` (None: the defaults) with `overrides` replacing its fields, checked once.

    Raises:
      TypeError: `config` is not a VerifierConfig, or an override is not one of its fields.
      ValueError: a bad field value (from `VerifierConfig`, naming the field).
    """
    if config is not None and not isinstance(config, VerifierConfig):
        raise TypeError(f"config is a {type(config).__name__}; expected a VerifierConfig or None")
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(VerifierConfig)})
    if unknown:
        raise TypeError(f"unknown verifier options {unknown}; expected fields of VerifierConfig")
    return dataclasses.replace(config or VerifierConfig(), **overrides)
