"""Verification presets: `--config=experiments/configs/verify.py:NAME` (NAME one of PRESETS).

Verifies boxes around DOUBLE-MNIST test images of a finished `train` run (`train_workdir`): for the
target digit, is it still among the top k (k of the training run) everywhere in the box?

Box shapes (`box.shape`):
  uniform   ε = box.eps on every pixel (an L∞ ball clipped to [0, 1]).
  layers    a layer-neighborhood (SPEC §2): layer d = pixels at distance d from the non-target
            digit (its ink or bounding box, `box.object`; metric `box.metric`; at most
            `box.max_layers` layers, the last one holding everything farther), with
            ε_d = box.eps · (1 + box.growth · d), or the explicit list `box.eps_layers`
            ("e0,e1,..."; the last value repeats for farther layers).

Every field can be overridden on the command line, e.g. `--config.images=5 --config.box.eps=0.01`.
"""

from ml_collections import ConfigDict


def base() -> ConfigDict:
    c = ConfigDict()
    c.experiment = "verify"
    c.name = "verify"
    c.seed = 0
    c.train_workdir = "runs/quickstart"  # a finished `train` run (config.json, metrics.json, checkpoints/)
    c.data_dir = ""  # default: the training run's data.data_dir
    c.images = 20  # test images start .. start + images − 1
    c.start = 0
    c.target = "left"  # which digit must stay in the top k: left | right | both (one query each)
    c.only_correct = True  # skip targets the model already misses at the image itself
    c.spec = "topk"  # topk (k of the training run) | threshold (z_t > 0, i.e. sigmoid > 0.5)
    c.box = ConfigDict(
        {
            "shape": "layers",  # uniform | layers
            "eps": 0.01,  # uniform: ε; layers: ε_0 (on the non-target digit)
            "growth": 0.5,  # layers: ε_d = eps · (1 + growth · d)
            "eps_layers": "",  # layers: explicit "ε_0,ε_1,..." (overrides eps and growth)
            "object": "ink",  # layers: ink | box (the non-target digit's ink or its bounding box)
            "metric": "chebyshev",  # layers: chebyshev | euclidean | manhattan
            "max_layers": 8,  # layers: at most this many layers
        }
    )
    c.verifier = ConfigDict(
        {
            "stages": "pgd,crown,alpha_crown,milp",  # any of pgd, crown, alpha_crown, milp (comma-separated)
            "time_limit": 60.0,  # wall-clock seconds per query (hard)
            "milp_mode": "sign",  # sign (stop at the first proof / counterexample) | optimise
            "atol": 1e-4,  # ROBUST needs a proven margin > atol + rtol · max(1, |z|∞)
            "rtol": 1e-4,
            "pgd_steps": 40,
            "pgd_restarts": 4,
            "pgd_step_size": 0.5,  # as a fraction of each pixel's box width
            "pgd_quick_steps": 10,  # a quick PGD before the bounds (0: the full PGD goes first)
            "alpha_steps": 20,
            "alpha_lr": 0.1,
            "alpha_intermediate": True,  # α-CROWN also on the unstable intermediate neurons (after PGD)
            "alpha_intermediate_steps": 5,
            "alpha_intermediate_lr": 0.3,
            "lp_tighten": False,
            "milp_max_unstable": 0,  # skip the MILP (UNKNOWN) above this many unstable ReLUs (0: never)
        }
    )
    return c


def quickstart() -> ConfigDict:
    """The quickstart CNN (runs/quickstart), 20 images, left digit, ε growing away from the right digit."""
    c = base()
    c.name = "verify_quickstart"
    return c


def stable() -> ConfigDict:
    """The same queries on the ReLU-stable model (runs/dmnist_stable)."""
    c = base()
    c.name = "verify_stable"
    c.train_workdir = "runs/dmnist_stable"
    return c


def uniform() -> ConfigDict:
    """An L∞ ball of ε = 0.01 around each image of the quickstart CNN, both digits."""
    c = base()
    c.name = "verify_uniform"
    c.target = "both"
    c.box.shape = "uniform"
    return c


PRESETS = {f.__name__: f for f in (quickstart, stable, uniform)}


def get_config(preset: str = "quickstart") -> ConfigDict:
    if preset not in PRESETS:
        raise ValueError(f"unknown verify preset {preset!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[preset]()
