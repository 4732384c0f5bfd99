"""Loading finished runs: the one place an experiment opens another experiment's workdir.

`train` leaves a workdir with config.json, metrics.json and checkpoints/; verify, neighborhood,
attack and boundary read it through `load_trained` (and the test data through `load_split` /
`load_double_mnist_run`), so no experiment imports a sibling.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from ml_collections import ConfigDict

from experiments.common import UsageError, require
from lnjax import data, models
from lnjax.io import read_json
from lnjax.train.checkpoint import CheckpointError, restore_params

NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which dataset a train run uses and where it lives (the `data` block of a train config).

    Attributes:
      dataset: one of `lnjax.data.DATASETS`.
      data_dir: the directory `make data` fills (offline npz files).
      tfds_data_dir: tensorflow-datasets' directory ("" = $TFDS_DATA_DIR or ~/tensorflow_datasets).
      train_limit, test_limit: use only the first this many examples (0 = all).
    """

    dataset: str = "double_mnist"
    data_dir: str = "data"
    tfds_data_dir: str = ""
    train_limit: int = 0
    test_limit: int = 0

    def __post_init__(self) -> None:
        if self.dataset not in data.DATASETS:
            raise ValueError(
                f"dataset = {self.dataset!r} is unknown; expected one of {sorted(data.DATASETS)}"
            )
        for name in ("train_limit", "test_limit"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} = {value!r} must be an integer ≥ 0 (0 = all examples)")


def task_of(dataset: str) -> str:
    """ "multilabel" for DOUBLE-MNIST (two digits per image), "single" otherwise."""
    return "multilabel" if dataset == "double_mnist" else "single"


def load_split(c: ConfigDict, split: str) -> data.Dataset:
    """The `split` of a train config's dataset (`c.data`), limited by its train/test limit.

    Raises:
      UsageError: the data files are missing, corrupt or of the wrong shape (one line naming the
        file, what was expected and how to rebuild it).
    """
    limit = c.data.train_limit if split == "train" else c.data.test_limit
    try:
        return data.load_dataset(
            c.data.dataset,
            split,
            c.data.data_dir,
            limit=limit or None,
            tfds_data_dir=c.data.tfds_data_dir or None,
        )
    except data.DataError as e:
        raise data_usage_error(e) from e


def data_usage_error(e: data.DataError) -> UsageError:
    """A data loading error as the one-line UsageError the runner prints."""
    text = " ".join(str(e).split())  # one line
    kind = "missing data" if isinstance(e, data.DataNotFoundError) else "bad data"
    return UsageError(f"{kind}: {text}")


def load_trained(workdir: str | Path) -> tuple[models.Sequential, Any, ConfigDict]:
    """(model, params, config) of a finished `train` run in `workdir`.

    A damaged newest checkpoint falls back to the newest intact one (a warning is logged).

    Raises:
      UsageError: no finished run there, its config.json is unreadable, or its checkpoints are
        missing, all damaged or of another model (one line saying how to rebuild them).
    """
    path = Path(workdir)
    if not (path / "metrics.json").is_file() or not (path / "config.json").is_file():
        raise UsageError(
            f"{path} holds no finished training run; train one first (python -m experiments.run ...)"
        )
    retrain = (
        f"rerun the training that made it (same config, --workdir={path}) to rebuild them, or train a new run"
    )
    try:
        c = ConfigDict(read_json(path / "config.json"))
        model = models.get_model(c.model, NUM_CLASSES)
    except (OSError, ValueError, KeyError, AttributeError) as e:
        raise UsageError(f"{path}/config.json is not a readable train config ({e}); {retrain}") from e
    params_like = model.init_params(jax.random.key(0))
    try:
        params = restore_params(str(path / "checkpoints"), params_like)
    except FileNotFoundError as e:
        raise UsageError(f"{path} has no checkpoints (the trained params are gone); {retrain}") from e
    except CheckpointError as e:
        raise UsageError(f"{' '.join(str(e).split())}; {retrain}") from e
    except ValueError as e:
        raise UsageError(f"{e} {c.model!r}; {retrain}") from e
    return model, params, c


class SingleLabelRun(NamedTuple):
    """A finished single-label training run and its test images start .. start + images − 1."""

    model: models.Sequential
    params: Any
    config: ConfigDict  # the training run's config (its data block points at `data_dir` if given)
    x: np.ndarray  # [images, H, W, C] float32 in [0, 1]
    y: np.ndarray  # [images] int32


def load_single_label_run(
    workdir: str | Path, *, data_dir: str, start: int, images: int, who: str
) -> SingleLabelRun:
    """The finished single-label (MNIST, CIFAR-10) run in `workdir` and `images` of its test images
    from `start`, read from `data_dir` or the run's own data dir.

    Raises:
      UsageError: no such run, not a single-label model (`who` names the experiment that needs one),
        missing data, too few test images.
    """
    model, params, tc = load_trained(workdir)
    require(
        task_of(tc.data.dataset) == "single",
        f"run {workdir} is a {tc.data.dataset} model; {who} needs a single-label model (MNIST, CIFAR-10)",
    )
    if data_dir:
        tc.data.data_dir = data_dir
    tc.data.test_limit = start + images
    test = load_split(tc, "test")
    require(
        test.num_examples >= start + images,
        f"start + images = {start + images} exceeds the {test.num_examples} test images of run {workdir}",
    )
    x = np.asarray(test.x[start : start + images], np.float32)
    y = np.asarray(test.y[start : start + images], np.int32)
    return SingleLabelRun(model, params, tc, x, y)


def load_double_mnist_run(c: ConfigDict, *, needs: str) -> tuple[models.Sequential, Any, int, data.Dataset]:
    """(model, params, k, test images start .. start + images − 1 and before) of the finished DOUBLE-MNIST
    training run `c.train_workdir`, test data from `c.data_dir` or the run's own data dir.

    Raises:
      UsageError: no such run, not a DOUBLE-MNIST run (`needs` says why it must be), missing data, too
        few test images.
    """
    model, params, tc = load_trained(c.train_workdir)
    require(
        tc.data.dataset == "double_mnist" and task_of(tc.data.dataset) == "multilabel",
        f"{c.train_workdir} was trained on {tc.data.dataset}; {needs}",
    )
    data_dir = c.data_dir or tc.data.data_dir
    try:
        test = data.load_dataset("double_mnist", "test", data_dir, limit=c.start + c.images)
    except data.DataError as e:
        raise data_usage_error(e) from e
    require(
        test.num_examples >= c.start + c.images,
        f"start + images = {c.start + c.images} but the test split has {test.num_examples} images",
    )
    return model, params, int(tc.k), test
