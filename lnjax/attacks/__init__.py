"""Attacks as pure, jitted, batched JAX functions: `make_*(**hyperparameters)` returns
`attack(key, apply_fn, params, x, y) -> AttackResult(x_adv, success, margin)`, jitted with apply_fn
static (one compilation per model function; new params of the same shapes do not recompile).

x: [B, H, W, C] in [0, 1]; y: [B] labels (the true class for untargeted attacks with the default
margin, the target class with `targeted_margin`, the target label of a multi-label spec with
`make_topk_margin` / `make_threshold_margin`; margins live in `lnjax.specs`).

Every PGD (these attacks, training's `pgd_linf`, the verifier's and the neighborhood optimizer's box
PGD) runs the one core in `attacks.pgd`.
"""

from lnjax.attacks.common import AttackResult, l2, linf, rms, summarize
from lnjax.attacks.cw import make_cw_l2, make_optmargin, orthogonal_noise
from lnjax.attacks.directions import random_directions
from lnjax.attacks.gradient import make_fgsm, make_pgd
from lnjax.attacks.pgd import (
    BoxAttackResult,
    best_of_starts,
    descend,
    make_pgd_box,
    odi_starts,
    target_sets,
    view_box_pgd,
    view_box_pgd_targeted,
    view_margin,
)
from lnjax.specs import argmax_margin, make_threshold_margin, make_topk_margin, targeted_margin

__all__ = [
    "AttackResult",
    "BoxAttackResult",
    "argmax_margin",
    "best_of_starts",
    "descend",
    "l2",
    "linf",
    "make_cw_l2",
    "make_fgsm",
    "make_optmargin",
    "make_pgd",
    "make_pgd_box",
    "make_threshold_margin",
    "make_topk_margin",
    "odi_starts",
    "orthogonal_noise",
    "random_directions",
    "rms",
    "summarize",
    "target_sets",
    "targeted_margin",
    "view_box_pgd",
    "view_box_pgd_targeted",
    "view_margin",
]
