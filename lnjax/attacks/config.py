"""Typed attack settings: the one source of the attack and boundary experiments' defaults.

Each dataclass holds one attack's hyperparameters with the reference's MNIST defaults (SPEC §3;
the C&W and OPTMARGIN values equal `make_cw_l2` / `make_optmargin`'s own defaults), checks them
once (a bad value raises `ValueError` with one line naming the field), and builds the attack with
`make()`. `AttackSettings` bundles the four blocks the experiments' ConfigDicts hold
(`fgsm`, `pgd`, `cw`, `optmargin`) and builds any attack of `ATTACKS` by name.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from lnjax.attacks import AttackResult, make_cw_l2, make_fgsm, make_optmargin, make_pgd
from lnjax.attacks.gradient import FGSM_LOSSES
from lnjax.checks import check_float, check_int
from lnjax.types import ApplyFn, Array, Params, PRNGKey

ATTACKS = ("fgsm", "pgd", "optbrittle", "optstrong", "optmargin", "optmargin_ref")

# The reference code's MNIST OPTMARGIN objective (He, Li & Song's `optmargin` attack, derived from
# Carlini's `l2_attack.py`): its ‖δ‖² is divided by 255² although its pixels are in [0, 1], so the
# classification term dominates and the examples land deep past the copies' boundaries.
# "optmargin" is the seed's own objective (‖δ‖² in [0, 1] units); "optmargin_ref" is the same attack
# with this weighting.
REFERENCE_DISTANCE_SCALE = 1 / 255**2

__all__ = [
    "ATTACKS",
    "REFERENCE_DISTANCE_SCALE",
    "AttackSettings",
    "CwConfig",
    "FgsmConfig",
    "OptMarginConfig",
    "PgdConfig",
]


class _Attack(Protocol):
    """What `make()` returns: `attack(key, apply_fn, params, x, y) -> AttackResult` (see lnjax.attacks)."""

    def __call__(
        self, key: PRNGKey, apply_fn: ApplyFn, params: Params, x: Array, y: Array
    ) -> AttackResult: ...


@dataclasses.dataclass(frozen=True)
class FgsmConfig:
    """FGSM (Goodfellow et al. 2015): one signed-gradient step of `eps` (L∞) on `loss`: "xent" (the
    cross-entropy, as the seed defines it) or "margin" (the logit margin)."""

    eps: float = 0.3
    loss: str = "xent"

    def __post_init__(self) -> None:
        check_float("fgsm.eps", self.eps, low=0)
        if self.loss not in FGSM_LOSSES:
            raise ValueError(f"fgsm.loss = {self.loss!r}; expected one of {FGSM_LOSSES}")

    def make(self) -> _Attack:
        return make_fgsm(eps=self.eps, loss=self.loss)


@dataclasses.dataclass(frozen=True)
class PgdConfig:
    """L∞ PGD (Madry et al. 2018) with a random start: `steps` steps of `step_size`, `restarts` starts."""

    eps: float = 0.3
    steps: int = 40
    step_size: float = 0.01
    restarts: int = 1

    def __post_init__(self) -> None:
        check_float("pgd.eps", self.eps, low=0)
        check_int("pgd.steps", self.steps, 1)
        check_float("pgd.step_size", self.step_size, low=0, low_open=True)
        check_int("pgd.restarts", self.restarts, 1)

    def make(self) -> _Attack:
        return make_pgd(eps=self.eps, steps=self.steps, step_size=self.step_size, restarts=self.restarts)


@dataclasses.dataclass(frozen=True)
class CwConfig:
    """C&W-L2 (Carlini & Wagner 2017): OPTBRITTLE (κ = 0) and OPTSTRONG (κ = `strong_confidence`).

    `distance_scale` 1: ‖δ‖² in [0, 1] pixel units.
    """

    lr: float = 1e-2
    steps: int = 1000
    binary_steps: int = 9
    c0: float = 1e-3
    strong_confidence: float = 20.0
    distance_scale: float = 1.0

    def __post_init__(self) -> None:
        check_float("cw.lr", self.lr, low=0, low_open=True)
        check_int("cw.steps", self.steps, 1)
        check_int("cw.binary_steps", self.binary_steps, 1)
        check_float("cw.c0", self.c0, low=0, low_open=True)
        check_float("cw.strong_confidence", self.strong_confidence, low=0)
        check_float("cw.distance_scale", self.distance_scale, low=0, low_open=True)

    def make(self, *, strong: bool) -> _Attack:
        return make_cw_l2(
            confidence=self.strong_confidence if strong else 0.0,
            lr=self.lr,
            steps=self.steps,
            binary_steps=self.binary_steps,
            c0=self.c0,
            distance_scale=self.distance_scale,
        )


@dataclasses.dataclass(frozen=True)
class OptMarginConfig:
    """OPTMARGIN (He, Li & Song 2018): C&W-L2 that also fools `n` noisy copies at RMS `eps`."""

    eps: float = 0.3
    n: int = 20
    lr: float = 0.2
    steps: int = 1000
    binary_steps: int = 4
    c0: float = 0.2
    distance_scale: float = 1.0

    def __post_init__(self) -> None:
        check_float("optmargin.eps", self.eps, low=0)
        check_int("optmargin.n", self.n, 1)
        check_float("optmargin.lr", self.lr, low=0, low_open=True)
        check_int("optmargin.steps", self.steps, 1)
        check_int("optmargin.binary_steps", self.binary_steps, 1)
        check_float("optmargin.c0", self.c0, low=0, low_open=True)
        check_float("optmargin.distance_scale", self.distance_scale, low=0, low_open=True)

    def make(self) -> _Attack:
        return make_optmargin(
            eps=self.eps,
            n=self.n,
            lr=self.lr,
            steps=self.steps,
            binary_steps=self.binary_steps,
            c0=self.c0,
            distance_scale=self.distance_scale,
        )


@dataclasses.dataclass(frozen=True)
class AttackSettings:
    """The settings of every attack in `ATTACKS` (OPTBRITTLE and OPTSTRONG share `cw`; "optmargin_ref"
    is `optmargin` with the reference code's distance weighting, `REFERENCE_DISTANCE_SCALE`)."""

    fgsm: FgsmConfig = dataclasses.field(default_factory=FgsmConfig)
    pgd: PgdConfig = dataclasses.field(default_factory=PgdConfig)
    cw: CwConfig = dataclasses.field(default_factory=CwConfig)
    optmargin: OptMarginConfig = dataclasses.field(default_factory=OptMarginConfig)

    def make(self, name: str) -> _Attack:
        """The attack `name` (one of ATTACKS) with these settings.

        References:
          see each config class (FGSM, PGD, C&W-L2, OPTMARGIN).
        """
        if name == "fgsm":
            return self.fgsm.make()
        if name == "pgd":
            return self.pgd.make()
        if name in ("optbrittle", "optstrong"):
            return self.cw.make(strong=name == "optstrong")
        if name == "optmargin":
            return self.optmargin.make()
        if name == "optmargin_ref":
            return dataclasses.replace(self.optmargin, distance_scale=REFERENCE_DISTANCE_SCALE).make()
        raise ValueError(f"unknown attack {name!r}; expected one of {ATTACKS}")
