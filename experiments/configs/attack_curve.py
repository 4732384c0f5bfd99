"""Attack-strength curve presets: `--config=experiments/configs/attack_curve.py:NAME`.

Runs one attack (`attack`, any of `lnjax.attacks.config.ATTACKS`; default OPTBRITTLE, C&W-L2 at
κ = 0) on `images` test images of a finished `train` run once per point of `grid`, to see where its
success rate stops rising (issue 19). `grid` is `;`-separated axes `BLOCK.FIELD=v1,v2,...` over the
fields of the attack's settings block (`cw` for optbrittle / optstrong, `pgd`, `fgsm`, `optmargin`
for optmargin and optmargin_ref); every value is read with the field's type, the points are the full
product of the axes (first axis slowest), and every other setting is the block's (generated from
`lnjax/attacks/config.py`).

Cost (measured 2026-12-04 on the PGD-trained `mnist_small`, 2 CPU cores shared with a boundary run,
compilation included): C&W-L2 takes ~0.10 s per 50 Adam steps of a 50-image batch with its
abort-early (1000 × 9 steps on 100 images: 35 s; 3000 × 9: 103 s) and ~0.19 s without it (3000 × 9:
199 s), i.e. 5–10× less than the ~1 s first estimated. A point costs about
steps × binary_steps × (images / 50) × 0.1 s / 50. The default grid (2 learning rates × 100, 300,
1,000, 3,000 steps × 9) ran in 15 min on the 2 cores beside a boundary run (2026-12-04): success
96–97 of 100 from 1,000 steps on, flat to 3,000 (10,000 was dropped from the default: no gain left to
find, and ~15 min per point).
"""

from ml_collections import ConfigDict

from experiments.configs import select_preset
from experiments.configs.blocks import attack_blocks

__all__ = ["PRESETS", "base", "get_config"]


def base() -> ConfigDict:
    c = ConfigDict()
    c.experiment = "attack_curve"
    c.name = "attack_curve"
    c.seed = 0
    c.train_workdir = "runs/mnist_normal"
    c.data_dir = ""  # default: the training run's data.data_dir
    c.images = 100
    c.start = 0
    c.batch_size = 50
    c.attack = "optbrittle"  # one of lnjax.attacks.config.ATTACKS
    # `;`-separated axes NAME=v1,v2,... over the attack's block (the full product is run)
    c.grid = "cw.steps=100,300,1000,3000;cw.binary_steps=9;cw.lr=0.01,0.1"
    c.update(attack_blocks())  # fgsm, pgd, cw (OPTBRITTLE / OPTSTRONG), optmargin
    return c


def mnist_pgd() -> ConfigDict:
    """OPTBRITTLE on the PGD-trained MNIST CNN (runs/mnist_pgd), 100 test images: C&W steps 100 to
    3,000 at 9 binary-search steps, Adam learning rates 0.01 (the reference's) and 0.1."""
    c = base()
    c.name = "attack_curve_mnist_pgd"
    c.train_workdir = "runs/mnist_pgd"
    return c


def mnist() -> ConfigDict:
    """The same grid on the normally trained MNIST CNN (runs/mnist_normal)."""
    c = base()
    c.name = "attack_curve_mnist"
    return c


PRESETS = {"mnist_pgd": mnist_pgd, "mnist": mnist}


def get_config(preset: str = "mnist_pgd") -> ConfigDict:
    return select_preset(PRESETS, "attack_curve", preset)
