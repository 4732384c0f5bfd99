"""`OptimizerConfig`: every option of `make_optimizer`, typed, with today's defaults, checked once.

Each field is documented on the class. Field names equal the experiments'
`optimizer` ConfigDict keys, which are generated from this class (`optimizer_block` in
`experiments/configs/blocks.py`; `shrink` is not a key there: each method sets it). A bad value
raises `ValueError` with one line naming the field, the value and what was expected.
"""

from __future__ import annotations

import dataclasses

from lnjax.checks import check_bool, check_choice, check_float, check_int
from lnjax.neighborhood.sensitivity import ORIENTATIONS, REDUCTIONS, SHRINKS

NORMS = ("logvol", "linear")
STARTS = ("pgd", "uniform")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """The neighborhood optimizer's options (`make_optimizer`; the algorithm is in its module).

    Attributes:
      norm: "logvol" (Σ|l_d| log ε_d, default) or "linear" (Σ|l_d| ε_d), the norm maximised.
      precondition: divide n and r by the layer sizes |l_d| before combining them (per-pixel
        gradients): the log-volume's n becomes uniform, so a balanced ε (r_d ∝ |l_d|, the optimum
        of the linearised problem) expands as a whole instead of only its largest layer.
      lr: the first expansion's length in log ε (0.5: ×1.65 on the layer that moves most).
      grow: step multiplier after each robust expansion; backoff: after a failure; max_step: cap.
      lam, lam_decay, lam_min: the λ schedule (MaRVeL: 0.99, 0.75, 0.01); λ < lam_min is
        convergence (stop reason "lambda_min").
      gain_tol, gain_window: convergence by gain (stop reason "gain"): stop when the best norm's
        relative gain over the last `gain_window` robust expansions is below `gain_tol` (the
        relative growth of the geometric-mean ε for "logvol", of Σ|l_d| ε_d for "linear";
        `optimizer.relative_gain`). gain_tol = 0 turns it off.
      plateau: a robust step raising the mean per-pixel ε by less than this fraction is a plateau.
      scale_up: at convergence (λ schedule or gain), a line search along the best ε itself: ε ×
        (1 + δ) with δ = scale_up, δ doubled after each robust answer, until the first one that is
        not (one query when nothing is gained), then a bisection of the last step down to a
        factor 1 + scale_up; 0 turns it off. The expansions follow the RL
        gradient and back off on every failure, so a search can converge with its whole ε still
        provable at a larger scale (measured on the L∞ CNN: 1.3–2 × in 6 of 10 searches).
      shrink: "fixed" or "sensitivity" weights (`sensitivity`).
      fixed_near, fixed_power: the fixed profile (weight of layer 0; shape).
      orientation: sensitivity weights' orientation: "insensitive" (the seed's) or "sensitive".
      sensitivity_reduce: saliency per layer: "mean", "sum" or "max".
      weight_floor: the smallest sensitivity weight.
      first_shrink: without a committed ε, a failure multiplies ε_d by (1 − first_shrink · w_d).
      eps_max, eps_min: ε is kept in [eps_min, eps_max] (eps_max also starts the PGD bracket).
      init_fraction: the start is this fraction of the largest PGD-clean uniform ε.
      start: "pgd": the expansions start at that ε; "uniform" (default): from the largest uniform ε
        the verifier proves (asked from there down by × min(init_fraction, 0.5), then bisected in
        log ε to a factor 1 + start_tol, ~10 queries), committed before the first expansion, so the
        result's norm is at least that of the uniform ε found (`optimizer.uniform_start`). Only
        without a given eps0.
      start_tol: the uniform start's bisection tolerance (ratio − 1; 0.01: 8 bisections of a
        4× bracket, ~1 % below the verifier's uniform limit at most).
      max_queries: verifier queries per search (≥ 1): a safety net; the search normally stops by
        convergence (λ schedule or gain) well before the default 100.
      time_budget: wall-clock seconds per search (None: unlimited); checked before each query.
      pgd_steps, pgd_restarts, pgd_step_size: the jitted box PGD (start bracket, weakest points).
      temperature: softmax temperature of the weakest points' weights.

    """

    norm: str = "logvol"
    precondition: bool = True
    lr: float = 0.5
    grow: float = 1.5
    backoff: float = 0.5
    max_step: float = 2.0
    lam: float = 0.99
    lam_decay: float = 0.75
    lam_min: float = 0.01
    gain_tol: float = 1e-3
    gain_window: int = 5
    plateau: float = 1e-3
    scale_up: float = 0.1
    shrink: str = "fixed"
    fixed_near: float = 0.25
    fixed_power: float = 1.0
    orientation: str = "insensitive"
    sensitivity_reduce: str = "mean"
    weight_floor: float = 0.25
    first_shrink: float = 0.75
    eps_max: float = 1.0
    eps_min: float = 1e-6
    init_fraction: float = 0.25
    start: str = "uniform"
    start_tol: float = 0.01
    max_queries: int = 100
    time_budget: float | None = None
    pgd_steps: int = 20
    pgd_restarts: int = 2
    pgd_step_size: float = 0.25
    temperature: float = 1.0

    def __post_init__(self) -> None:
        w = "optimizer."
        check_choice(w + "norm", self.norm, NORMS)
        check_bool(w + "precondition", self.precondition)
        check_float(w + "lr", self.lr, low=0.0, low_open=True)
        check_float(w + "grow", self.grow, low=1.0)
        check_float(w + "backoff", self.backoff, low=0.0, high=1.0, low_open=True)
        check_float(w + "max_step", self.max_step, low=0.0, low_open=True)
        check_float(w + "lam", self.lam, low=0.0, low_open=True)
        check_float(w + "lam_decay", self.lam_decay, low=0.0, high=1.0, low_open=True, high_open=True)
        check_float(w + "lam_min", self.lam_min, low=0.0, low_open=True)
        check_float(w + "gain_tol", self.gain_tol, low=0.0)
        check_int(w + "gain_window", self.gain_window, 1)
        check_float(w + "plateau", self.plateau, low=0.0)
        check_float(w + "scale_up", self.scale_up, low=0.0)
        check_choice(w + "shrink", self.shrink, SHRINKS)
        check_float(w + "fixed_near", self.fixed_near, low=0.0, high=1.0, low_open=True)
        check_float(w + "fixed_power", self.fixed_power, low=0.0, low_open=True)
        check_choice(w + "orientation", self.orientation, ORIENTATIONS)
        check_choice(w + "sensitivity_reduce", self.sensitivity_reduce, REDUCTIONS)
        check_float(w + "weight_floor", self.weight_floor, low=0.0, high=1.0, low_open=True)
        check_float(w + "first_shrink", self.first_shrink, low=0.0, high=1.0, low_open=True, high_open=True)
        check_float(w + "eps_max", self.eps_max, low=0.0, low_open=True)
        check_float(w + "eps_min", self.eps_min, low=0.0, high=self.eps_max, low_open=True, high_open=True)
        check_float(w + "init_fraction", self.init_fraction, low=0.0, high=1.0, low_open=True)
        check_choice(w + "start", self.start, STARTS)
        check_float(w + "start_tol", self.start_tol, low=0.0, low_open=True)
        check_int(w + "max_queries", self.max_queries, 1)
        if self.time_budget is not None:
            check_float(w + "time_budget", self.time_budget, low=0.0, low_open=True)
        check_int(w + "pgd_steps", self.pgd_steps, 1)
        check_int(w + "pgd_restarts", self.pgd_restarts, 1)
        check_float(w + "pgd_step_size", self.pgd_step_size, low=0.0, low_open=True)
        check_float(w + "temperature", self.temperature, low=0.0, low_open=True)
