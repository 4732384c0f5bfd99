"""Attack presets: `--config=experiments/configs/attack.py:NAME`.

Attacks `images` test images of a finished `train` run (`train_workdir`) with each attack in
`attacks` (comma-separated: fgsm, pgd, optbrittle, optstrong, optmargin); per-attack settings below
(MNIST defaults of the reference, SPEC §3).
"""

from ml_collections import ConfigDict

ATTACKS = ("fgsm", "pgd", "optbrittle", "optstrong", "optmargin")


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
    c.fgsm = ConfigDict({"eps": 0.3})
    c.pgd = ConfigDict({"eps": 0.3, "steps": 40, "step_size": 0.01, "restarts": 1})
    # C&W-L2; OPTSTRONG is the same with a large confidence κ. distance_scale 1: ‖δ‖² in [0, 1] pixels.
    c.cw = ConfigDict(
        {
            "lr": 1e-2,
            "steps": 1000,
            "binary_steps": 9,
            "c0": 1e-3,
            "strong_confidence": 20.0,
            "distance_scale": 1.0,
        }
    )
    c.optmargin = ConfigDict(
        {"eps": 0.3, "n": 20, "lr": 0.2, "steps": 1000, "binary_steps": 4, "c0": 0.2, "distance_scale": 1.0}
    )
    return c


def mnist() -> ConfigDict:
    c = base()
    c.name = "attack_mnist"
    return c


def mnist_pgd() -> ConfigDict:
    c = base()
    c.name = "attack_mnist_pgd"
    c.train_workdir = "runs/mnist_pgd"
    return c


PRESETS = {"mnist": mnist, "mnist_pgd": mnist_pgd}


def get_config(preset: str = "mnist") -> ConfigDict:
    if preset not in PRESETS:
        raise ValueError(f"unknown attack preset {preset!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[preset]()
