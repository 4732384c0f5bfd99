"""Neighborhood presets: `--config=experiments/configs/neighborhood.py:NAME` (NAME one of PRESETS).

Maximal robust layer-neighborhoods (SPEC §2, seed 000) on DOUBLE-MNIST test images of a finished
`train` run (`train_workdir`): for the target digit, one ε per layer of pixels around the other
(non-target) digit, proven robust by the verifier for "the target stays among the top k".

`methods` (comma-separated, run in this order on every image):
  optimizer_fixed        the MaRVeL-style optimizer, fixed shrink weights
  optimizer_sensitivity  the same, sensitivity (saliency) shrink weights
  baseline               per-layer binary search with the same verifier
  uniform                one ε for every pixel (an L∞ ball), bisected with the same verifier

Every search's ε comes with a maximality certificate (`certificate`, lnjax.neighborhood.certificate):
the largest scale of ε the verifier proves, the smallest a strong attack breaks, and their ratio
(`gap`, 1 = shown maximal along ε's direction), optionally per layer.

Every field can be overridden on the command line, e.g. `--config.images=3 --config.layers.max_layers=8`.

Items (image × method) run in this process (`workers = 1`) or on Ray actors (`--config.workers=N`, optionally
`--config.ray_address=auto` for a cluster; `pip install 'lnjax[cluster]'`): see experiments/parallel.py.
These two fields are not recorded in config.json, so a run may resume with another worker count.
"""

from ml_collections import ConfigDict

from experiments.configs import select_preset
from experiments.configs.blocks import optimizer_block, verifier_block

METHODS = ("optimizer_fixed", "optimizer_sensitivity", "baseline", "uniform")


def base() -> ConfigDict:
    c = ConfigDict()
    c.experiment = "neighborhood"
    c.name = "neighborhood"
    c.seed = 0
    c.train_workdir = "runs/quickstart"  # a finished DOUBLE-MNIST `train` run
    c.data_dir = ""  # default: the training run's data.data_dir
    c.images = 10  # test images start .. start + images − 1
    c.start = 0
    c.workers = 1  # 1: this process; n > 1: n Ray actors; 0: one per GPU (else CPU) of the cluster
    c.ray_address = ""  # "": a local Ray for the run; "auto" | "host:port" | "ray://host:port": a cluster
    c.target = "left"  # which digit must stay in the top k (the other one is the non-target object)
    c.only_correct = True  # skip images whose target the model misses at the image itself
    c.spec = "topk"  # topk (k of the training run) | threshold (z_t > 0)
    c.methods = "optimizer_fixed,optimizer_sensitivity"
    c.figure_images = 1  # heatmap / ε-per-layer figures for the first this many images
    c.layers = ConfigDict(
        {
            "object": "ink",  # ink | box: the non-target digit's ink or its bounding box
            "metric": "chebyshev",  # chebyshev | euclidean | manhattan
            "max_layers": 16,  # at most this many layers; the last holds every farther pixel
            "target_layer": True,  # the target digit's own pixels: a layer of their own, after the rings
        }
    )
    # lnjax.neighborhood.OptimizerConfig's defaults: runs to convergence (MaRVeL's λ schedule, or the
    # gain over the last expansions), max_queries (100) and the time budget are safety nets.
    c.optimizer = optimizer_block()
    c.optimizer.time_budget = 1800.0  # seconds per image and method (0: unlimited; the library: unlimited)
    c.baseline = ConfigDict(
        {
            "scale": "log",  # log (relative tolerance) | linear (absolute tolerance)
            "eps_max": 1.0,
            "eps_min": 1e-5,
            "tol": 0.1,  # log: stop when hi / lo < 1 + tol; linear: when hi − lo < tol
            "max_queries": 0,  # 0: unlimited
            "time_budget": 0.0,  # seconds per image (0: unlimited)
        }
    )
    c.certificate = ConfigDict(
        {
            "enabled": True,  # bracket every verified ε between proofs and attacks
            "per_layer": False,  # also each layer's ε_d with the others fixed (R more brackets)
            "restarts": 32,  # the strong box PGD's starts
            "steps": 40,
            "odi_steps": 2,  # output-diversified random starts (0: uniform ones)
            "targets": 0,  # also the multi-targeted PGD on this many target row sets (0: untargeted only)
            "rel_tol": 0.1,  # relative width of the final brackets
            "time_budget": 600.0,  # seconds per search's certificate (0: unlimited)
        }
    )
    # The complete verifier (branch-and-bound, CBC on its leaves and the whole box) at 10 s per query.
    c.verifier = verifier_block()  # lnjax.verify.VerifierConfig's defaults, except:
    c.verifier.time_limit = 10.0  # wall-clock seconds per query (hard); a time-out is not robust
    return c


def _model(name: str, train_workdir: str, methods: str) -> ConfigDict:
    c = base()
    c.name = name
    c.train_workdir = train_workdir
    c.methods = methods
    return c


def quickstart() -> ConfigDict:
    """The quickstart CNN (runs/quickstart), both shrink methods."""
    return _model("neighborhood_quickstart", "runs/quickstart", "optimizer_fixed,optimizer_sensitivity")


def _published(c: ConfigDict) -> ConfigDict:
    """README's at-scale numbers (docs/results/neighborhood_defenses.json) were made with the
    optimizer's PGD start, before the uniform start became the library's default (`OptimizerConfig.
    start`), and with the certificate's attack from uniform random starts (before its ODI starts):
    the three defenses' presets keep both, so they reproduce those numbers.
    `--config.optimizer.start=uniform --config.certificate.odi_steps=2` (a new workdir) for the
    defaults."""
    c.optimizer.start = "pgd"
    c.certificate.odi_steps = 0
    return c


def none() -> ConfigDict:
    """The undefended DOUBLE-MNIST CNN (runs/dmnist_none), both shrink methods."""
    return _published(
        _model("neighborhood_none", "runs/dmnist_none", "optimizer_fixed,optimizer_sensitivity")
    )


def l0() -> ConfigDict:
    """The L0-defended CNN (random rectangles zeroed; runs/dmnist_l0), both shrink methods."""
    return _published(_model("neighborhood_l0", "runs/dmnist_l0", "optimizer_fixed,optimizer_sensitivity"))


def linf() -> ConfigDict:
    """The L∞ (PGD-trained) CNN (runs/dmnist_linf), both shrink methods."""
    return _published(
        _model("neighborhood_linf", "runs/dmnist_linf", "optimizer_fixed,optimizer_sensitivity")
    )


def baseline() -> ConfigDict:
    """The per-layer binary-search baseline next to the fixed-weight optimizer, undefended CNN."""
    return _model("neighborhood_baseline", "runs/dmnist_none", "optimizer_fixed,baseline")


def _at_scale(c: ConfigDict) -> ConfigDict:
    """The seed's scale for a GPU node or a cluster: 500 test images, one Ray actor per GPU (else
    per CPU) of a local Ray, or of a cluster with `--config.ray_address=auto`. Same name and
    workdir as the 2-core run, which it extends (finished images are kept)."""
    c.images = 500
    c.workers = 0
    return c


def none_500() -> ConfigDict:
    """`none` on 500 images, on every GPU (else CPU) Ray finds."""
    return _at_scale(none())


def l0_500() -> ConfigDict:
    """`l0` on 500 images, on every GPU (else CPU) Ray finds."""
    return _at_scale(l0())


def linf_500() -> ConfigDict:
    """`linf` on 500 images, on every GPU (else CPU) Ray finds."""
    return _at_scale(linf())


PRESETS = {f.__name__: f for f in (quickstart, none, l0, linf, baseline, none_500, l0_500, linf_500)}


def get_config(preset: str = "quickstart") -> ConfigDict:
    return select_preset(PRESETS, "neighborhood", preset)
