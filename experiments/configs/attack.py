"""Attack presets: `--config=experiments/configs/attack.py:NAME`.

Attacks `images` test images of a finished `train` run (`train_workdir`) with each attack in
`attacks` (comma-separated: fgsm, pgd, optbrittle, optstrong, optmargin); the per-attack blocks
(`fgsm`, `pgd`, `cw`, `optmargin`) are generated from `lnjax/attacks/config.py` (the reference's
MNIST defaults, SPEC §3).
"""

from ml_collections import ConfigDict

from experiments.configs import select_preset
from experiments.configs.blocks import attack_blocks
from lnjax.attacks.config import ATTACKS

__all__ = ["ATTACKS", "PRESETS", "base", "get_config"]


def base() -> ConfigDict:
    c = ConfigDict()
    c.experiment = "attack"
    c.name = "attack"
    c.seed = 0
    c.train_workdir = "runs/mnist_normal"
    c.data_dir = ""  # default: the training run's data.data_dir
    c.images = 100
    c.start = 0
    c.batch_size = 50
    c.attacks = ",".join(ATTACKS)
    c.examples = 8  # example images saved to figures/
    c.update(attack_blocks())  # fgsm, pgd, cw (OPTBRITTLE / OPTSTRONG), optmargin
    return c


def mnist() -> ConfigDict:
    """The small MNIST CNN (runs/mnist_normal), 100 test images, every attack."""
    c = base()
    c.name = "attack_mnist"
    return c


def mnist_pgd() -> ConfigDict:
    """The same attacks on the PGD-trained MNIST CNN (runs/mnist_pgd)."""
    c = base()
    c.name = "attack_mnist_pgd"
    c.train_workdir = "runs/mnist_pgd"
    return c


PRESETS = {"mnist": mnist, "mnist_pgd": mnist_pgd}


def get_config(preset: str = "mnist") -> ConfigDict:
    return select_preset(PRESETS, "attack", preset)
