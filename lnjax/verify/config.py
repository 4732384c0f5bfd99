"""`VerifierConfig`: every option of `make_verifier`, typed, with today's defaults, checked once.

Each field's meaning is documented on `make_verifier`. Field names equal the experiments'
`verifier` ConfigDict keys (`experiments/configs/verify.py`), which are generated from this class.
A bad value raises `ValueError` with one line naming the field, the value and what was expected.

The `check_*` helpers are shared with the other library configs (`neighborhood.OptimizerConfig`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection

from lnjax.verify.milp import MilpOptions

STAGES = ("pgd", "crown", "alpha_crown", "milp")
MILP_MODES = ("sign", "optimise")


def check_int(where: str, value: object, minimum: int) -> None:
    """Raises ValueError unless `value` is an int (not a bool) ≥ minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where} = {value!r}; expected an integer ≥ {minimum}")


def check_float(
    where: str,
    value: object,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raises ValueError unless `value` is a finite real number in the interval (bounds as given)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        if math.isinf(high):
            wanted = f"{'>' if low_open else '≥'} {low:g}" if math.isfinite(low) else "finite"
        else:
            wanted = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{where} = {value!r}; expected a finite number {wanted}")


def check_choice(where: str, value: object, choices: Collection[str]) -> None:
    """Raises ValueError unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{where} = {value!r}; expected one of {tuple(choices)}")


def check_bool(where: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{where} = {value!r}; expected True or False")


@dataclasses.dataclass(frozen=True)
class VerifierConfig:
    """The staged verifier's options (see `make_verifier` for what each one does).

    Attributes:
      stages: a subset of ("pgd", "crown", "alpha_crown", "milp"); "interval" may be listed.
      time_limit: wall-clock seconds per query (None: unlimited).
      milp_mode: "sign" or "optimise".
      atol, rtol: the safety margin atol + rtol · max(1, ‖z(centre)‖∞).
      pgd_steps, pgd_restarts, pgd_step_size: the full box PGD (step as a fraction of the width).
      pgd_quick_steps, pgd_quick_restarts: the quick PGD before the bounds (0 steps: none).
      alpha_steps, alpha_lr: α-CROWN on the spec rows.
      alpha_intermediate, alpha_intermediate_steps, alpha_intermediate_lr: α-CROWN on every
        unstable intermediate neuron, after the full PGD.
      bound_chunk: neurons per CROWN backward pass.
      milp_max_unstable: skip the MILP above this many unstable ReLUs (None: always try).
      lp_tighten: per-neuron LP tightening in the MILP worker.
      milp_options: base `MilpOptions` (None: the defaults).
      cbc_fraction: CBC's own time limit as a fraction of the remaining budget.
    """

    stages: tuple[str, ...] = STAGES
    time_limit: float | None = 60.0
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

    def __post_init__(self) -> None:
        w = "verifier."
        if isinstance(self.stages, str) or not all(isinstance(s, str) for s in self.stages):
            raise ValueError(f"{w}stages = {self.stages!r}; expected a tuple of names from {STAGES}")
        unknown = sorted(set(self.stages) - {*STAGES, "interval"})
        if unknown:
            raise ValueError(f"{w}stages: unknown {unknown}; expected a subset of {STAGES}")
        object.__setattr__(self, "stages", tuple(self.stages))
        if self.time_limit is not None:
            check_float(w + "time_limit", self.time_limit, low=0.0, low_open=True)
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
