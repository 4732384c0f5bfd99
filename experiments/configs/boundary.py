"""Decision-boundary presets: `--config=experiments/configs/boundary.py:NAME` (mnist, mnist_full,
cifar10; `boundary_mnist` etc. are accepted too).

Seed 003 / SPEC §3 on finished single-label `train` runs (`runs`: comma-separated `name=workdir`, a
bare workdir is named after its directory): `images` test images from `start` are attacked with each
attack in `attacks` (settings as in the attack experiment); the benign and attacked inputs are
classified by the point and the region classifier and get boundary distances along fixed random
directions; a detector per model and attack in `detector.attacks` learns benign vs adversarial from
the distances and purity. Every field can be overridden, e.g. `--config.images=20`.

Defaults and where they come from (SPEC §3, the reference's MNIST code):
  region     τ 0.3 (CIFAR-10 0.02), 100 samples.
  distances  784 directions and their negatives (CIFAR-10 1000, no negatives); the linear scan
             0.01 … 0.49 RMS (CIFAR-10 2/255 … 126/255); `mode` "bisect" (coarse step 0.1, then
             bisection to ≤ 0.01) is ours and the default, "linear" is the reference's.
  attacks    lnjax/attacks/config.py's settings, as in the attack experiment (`mnist`: fewer steps).
  detector   2000 Adam steps (`mnist`: 300) of 128 benign + 128 adversarial, lr 1e-3, dropout 0.5,
             top-3 purity, 80 % of the images for training (`mnist`: 50 %; the reference: 8000 of
             10,000), the rest held out.

CPU cost of `mnist`, measured on the trained models (2 cores, 50-image parts, 2026-12-04): boundary
distances 0.37 s per input (1568 directions × ~9,500 forward passes: 55 % of the run), OPTMARGIN
0.78 s/image (seed's objective) and 0.34 s (reference weighting), OPTBRITTLE / OPTSTRONG 0.35 s,
FGSM and region classification < 0.01 s: ≈ 3.8 s per image and model (6 input kinds), so 1,000
images × 2 models ≈ 2 h, the detectors (300 steps × 10) ≈ 6 min more.
`mnist_full` is the reference's scale (Madry's CNN, 10,000 images, 1000 attack steps, the linear
scan, 2000 detector steps): a GPU job.
"""

from ml_collections import ConfigDict

from experiments.configs import select_preset
from experiments.configs.blocks import attack_blocks

DETECTOR_ALL = "all"  # detector.attacks: every attack of `attacks`


def base() -> ConfigDict:
    c = ConfigDict()
    c.experiment = "boundary"
    c.name = "boundary"
    c.seed = 0
    c.runs = "normal=runs/mnist_normal,adv_tr=runs/mnist_pgd"  # finished single-label train runs
    c.data_dir = ""  # default: each training run's data.data_dir
    c.images = 100  # test images start .. start + images − 1
    c.start = 0
    c.workers = 1  # stages in this process (1) or on n Ray actors (n > 1; 0: one per GPU, else CPU)
    c.ray_address = ""  # "": a local Ray for the run; "auto" | "host:port" | "ray://host:port": a cluster
    c.batch_size = 50  # images per attack / region-classification call
    c.stage_images = 100  # images per stored stage part (resume unit); a multiple of the batch sizes
    # any of lnjax.attacks.config.ATTACKS; "optmargin" is the seed's objective (‖δ‖² in [0, 1] pixel
    # units), "optmargin_ref" the reference code's (‖δ‖² / 255²: c dominates, the examples land deep
    # past the copies' boundaries). FGSM steps on the cross-entropy (fgsm.loss "margin": the margin).
    c.attacks = "fgsm,optbrittle,optmargin,optmargin_ref,optstrong"
    c.figure_images = 20  # images drawn per panel of figure 4
    c.update(attack_blocks())  # fgsm, pgd, cw, optmargin: lnjax/attacks/config.py
    c.region = ConfigDict({"tau": 0.3, "samples": 100, "batch_size": 10})  # batch: images per call
    c.distances = ConfigDict(
        {
            "mode": "bisect",  # bisect | linear (the reference's scan)
            "directions": 784,
            "antipodal": True,  # also the negatives of the directions
            "max_distance": 0.49,
            "step": 0.01,  # linear scan
            "coarse_step": 0.1,  # bisect: coarse scan, then bisection to ≤ tol
            "tol": 0.01,
            "batch_size": 4,  # images per jitted call (memory: batch × directions inputs at once)
            "chunk": 0,  # > 0: evaluate the directions in chunks of this size (less memory)
        }
    )
    c.detector = ConfigDict(
        {
            "attacks": DETECTOR_ALL,  # comma-separated subset of `attacks`, or "all"
            "train_share": 0.8,  # the first share of the images trains, the rest is held out
            "steps": 2000,
            "half_batch": 128,
            "learning_rate": 1e-3,
            "dropout": 0.5,
            "purity_k": 3,
            "miss_distance": 1.0,  # a direction without a boundary (the pixel range's maximum)
            "shift": 0.0,  # distances enter as (d − shift) / scale
            "scale": 1.0,
        }
    )
    return c


def mnist() -> ConfigDict:
    """CPU scale: the small MNIST CNN, normal and PGD-trained, 1,000 test images (the detector trained
    on the first 500, rated on the other 500), fewer attack and detector steps than the reference
    (see the estimate above); C&W at the reference's 1000 steps."""
    c = base()
    c.name = "boundary_mnist"
    c.images = 1000
    # C&W at the reference's 1000 steps: attack_curve_mnist_pgd measured OPTBRITTLE on the PGD-trained
    # model at 68/100 with 300 steps, 96/100 with 1000, 97/100 with 3000 (then flat).
    c.optmargin.steps = 200
    c.detector.steps = 300
    c.detector.train_share = 0.5
    return c


def mnist_full() -> ConfigDict:
    """The reference's scale: Madry's MNIST CNN (normal and PGD-trained), 10,000 test images, the linear
    scan, the detector trained on 8,000 (GPU)."""
    c = base()
    c.name = "boundary_mnist_full"
    c.runs = "normal=runs/mnist_madry_normal,adv_tr=runs/mnist_madry_pgd"
    c.images = 10_000
    c.batch_size = 100
    c.distances.mode = "linear"
    c.distances.batch_size = 2
    c.distances.chunk = 784
    return c


def cifar10() -> ConfigDict:
    """CIFAR-10 through tensorflow-datasets (the reference's CIFAR-10 settings): τ 0.02, 1000 directions
    scanned 2/255 … 126/255, OPTMARGIN at RMS 8/255 (lr 1e-2, c0 1), FGSM at 8/255; 200 images, the
    detector trained on the first 100 (4000 steps of 150 + 150, distances normalised as (d·255 − 16) /
    127.5). A GPU job (the VGG-style net costs ~40 MFLOP per forward pass)."""
    c = base()
    c.name = "boundary_cifar10"
    c.runs = "normal=runs/cifar10_normal,adv_tr=runs/cifar10_pgd"
    c.images = 200
    c.fgsm.eps = 8 / 255
    c.pgd.eps, c.pgd.steps, c.pgd.step_size = 8 / 255, 7, 2 / 255
    c.cw.lr = 1e-2
    c.optmargin.eps, c.optmargin.lr, c.optmargin.c0 = 8 / 255, 1e-2, 1.0
    c.attacks = "fgsm,optbrittle,optmargin,optstrong"  # the 1/255² quirk is the reference's MNIST code only
    c.region.tau = 0.02
    c.distances.directions = 1000
    c.distances.antipodal = False
    c.distances.step = 2 / 255
    c.distances.max_distance = 126 / 255
    c.distances.batch_size = 1
    c.distances.chunk = 250
    c.detector.train_share = 0.5
    c.detector.steps = 4000
    c.detector.half_batch = 150
    c.detector.shift = 16 / 255
    c.detector.scale = 0.5
    return c


PRESETS = {"mnist": mnist, "mnist_full": mnist_full, "cifar10": cifar10}


def get_config(preset: str = "mnist") -> ConfigDict:
    return select_preset(PRESETS, "boundary", preset.removeprefix("boundary_"))
