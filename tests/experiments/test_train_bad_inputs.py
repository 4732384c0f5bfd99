"""The train experiment on bad input: one line (UsageError -> exit 2) naming the problem and the fix, and
nothing written to the workdir."""

import shutil
from pathlib import Path

import pytest

from experiments import train as train_experiment
from experiments.common import UsageError
from tests.conftest import tiny_train_config
from tests.data.test_data_files import DAMAGES


def refused(c, workdir: Path, match: str) -> str:
    with pytest.raises(UsageError, match=match) as info:
        train_experiment.run(c, str(workdir), progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert not workdir.exists(), "a refused run must leave no trace"
    return message


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_double_mnist_data(data_dir, tmp_path, split, damage):
    own = Path(shutil.copytree(data_dir, tmp_path / "data"))
    DAMAGES[damage](own / f"double_mnist_{split}.npz")
    message = refused(tiny_train_config("quickstart", own), tmp_path / "run", "bad data")
    assert f"double_mnist_{split}.npz" in message and "python -m data_prep.double_mnist" in message


@pytest.mark.parametrize("damage", ["truncate", "zero_bytes", "partly_zeroed"])
def test_damaged_mnist_data(data_dir, tmp_path, damage):
    own = Path(shutil.copytree(data_dir, tmp_path / "data"))
    DAMAGES[damage](own / "mnist.npz")
    message = refused(tiny_train_config("mnist_normal", own), tmp_path / "run", "bad data")
    assert "mnist.npz" in message and "python -m data_prep.mnist" in message
