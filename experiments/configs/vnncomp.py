"""VNN-COMP presets: `--config=experiments/configs/vnncomp.py:NAME` (NAME one of PRESETS).

Runs every instance of a competition-style `instances.csv` (rows: onnx path, vnnlib path, timeout in
seconds; paths relative to the CSV, no header) through `lnjax.vnncomp.run_instance`, e.g.

  python -m experiments.run --flagfile=experiments/flagfiles/vnncomp.flags \
      --config.instances=PATH/instances.csv --workdir=runs/my_benchmark

`stages` picks the verifier's stages (default: the library's `VerifierConfig().stages`); the time
limit of each query is the instance's timeout and the input domain is the VNN-LIB box as given.
"""

from ml_collections import ConfigDict

from experiments.configs import select_preset
from lnjax.verify.config import VerifierConfig


def base() -> ConfigDict:
    c = ConfigDict()
    c.experiment = "vnncomp"
    c.name = "vnncomp"
    c.instances = ""  # PATH/instances.csv (onnx, vnnlib, timeout seconds; paths relative to it)
    c.benchmark = ""  # the results CSV's benchmark column (default: the CSV's directory name)
    c.seed = 0
    c.stages = ",".join(VerifierConfig().stages)  # the staged verifier's stages, comma-separated
    return c


def mnist_mlp() -> ConfigDict:
    """The suite of benchmarks/vnncomp_bench.py (3 MNIST MLPs × 15 images × 2 ε; build it with
    `python benchmarks/vnncomp_bench.py --prepare_only`)."""
    c = base()
    c.name = "vnncomp_mnist_mlp"
    c.instances = "benchmarks/cache/vnncomp_suite/instances.csv"
    return c


PRESETS = {f.__name__: f for f in (mnist_mlp,)}


def get_config(preset: str = "mnist_mlp") -> ConfigDict:
    return select_preset(PRESETS, "vnncomp", preset)
