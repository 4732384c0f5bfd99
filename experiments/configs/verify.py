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

The `verifier` block is generated from `lnjax.verify.VerifierConfig` (see `make_verifier` for each
option). Every field can be overridden on the command line, e.g. `--config.images=5 --config.box.eps=0.01`.

Items (images) run in this process (`workers = 1`) or on Ray actors (`--config.workers=N`, optionally
`--config.ray_address=auto` for a cluster; `pip install 'lnjax[cluster]'`): see experiments/parallel.py.
These two fields are not recorded in config.json, so a run may resume with another worker count.
"""

from ml_collections import ConfigDict

from experiments.configs import select_preset
from experiments.configs.blocks import verifier_block


def base() -> ConfigDict:
    c = ConfigDict()
    c.experiment = "verify"
    c.name = "verify"
    c.seed = 0
    c.train_workdir = "runs/quickstart"  # a finished `train` run (config.json, metrics.json, checkpoints/)
    c.data_dir = ""  # default: the training run's data.data_dir
    c.images = 20  # test images start .. start + images − 1
    c.start = 0
    c.workers = 1  # 1: this process; n > 1: n Ray actors; 0: one per GPU (else CPU) of the cluster
    c.ray_address = ""  # "": a local Ray for the run; "auto" | "host:port" | "ray://host:port": a cluster
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
    c.verifier = verifier_block()  # lnjax.verify.VerifierConfig's defaults (experiments/configs/blocks.py)
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
    return select_preset(PRESETS, "verify", preset)
