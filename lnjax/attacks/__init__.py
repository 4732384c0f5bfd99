"""Attacks as pure, jitted, batched JAX functions: `make_*(**hyperparameters)` returns
`attack(key, apply_fn, params, x, y) -> AttackResult(x_adv, success, margin)`.

x: [B, H, W, C] in [0, 1]; y: [B] labels (the true class for untargeted attacks with the default
margin, the target class with `targeted_margin`, the target label of a multi-label spec with
`make_topk_margin` / `make_threshold_margin`).
"""

from lnjax.attacks.common import AttackResult, l2, linf, rms, summarize
from lnjax.attacks.cw import make_cw_l2, make_optmargin, orthogonal_noise
from lnjax.attacks.gradient import make_fgsm, make_pgd
from lnjax.attacks.margins import (
    argmax_margin,
    make_threshold_margin,
    make_topk_margin,
    targeted_margin,
)

__all__ = [
    "AttackResult",
    "argmax_margin",
    "l2",
    "linf",
    "make_cw_l2",
    "make_fgsm",
    "make_optmargin",
    "make_pgd",
    "make_threshold_margin",
    "make_topk_margin",
    "orthogonal_noise",
    "rms",
    "summarize",
    "targeted_margin",
]
