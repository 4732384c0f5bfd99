"""Damaged data files are named in one clear error (what was expected, how to rebuild), never a traceback
from deep inside numpy or zipfile; and `prepare_*` rewrites them."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from lnjax import data
from lnjax.data import npz


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def empty_archive(path: Path) -> None:
    npz.save_npz_deterministic(path, {})


def partly_zeroed(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 256] = bytes(256)
    path.write_bytes(bytes(raw))


def mnist_shaped(path: Path) -> None:
    """A file with 28×28 images where DOUBLE-MNIST's are 64×64 (everything else intact)."""
    contents = npz.load_npz(path)
    contents["images"] = contents["images"][:, :28, :28].copy()
    npz.save_npz_deterministic(path, contents)


DAMAGES = {f.__name__: f for f in (truncate, zero_bytes, empty_archive, partly_zeroed, mnist_shaped)}


@pytest.fixture
def own_data(data_dir, tmp_path):
    return Path(shutil.copytree(data_dir, tmp_path / "data"))


@pytest.mark.parametrize("split", data.SPLITS)
@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_double_mnist_file_is_one_clear_error(own_data, split, damage):
    path = own_data / f"double_mnist_{split}.npz"
    DAMAGES[damage](path)
    with pytest.raises(data.DataFileError) as info:
        data.load_dataset("double_mnist", split, own_data)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert "python -m data_prep.double_mnist" in message  # how to rebuild
    if damage in ("empty_archive", "mnist_shaped"):
        assert "images uint8 [N, 64, 64]" in message  # what was expected
    if damage == "mnist_shaped":
        assert re.search(r"images is uint8 \[\d+, 28, 28\]", message)  # what was found
    assert isinstance(info.value, ValueError) and isinstance(info.value, data.DataError)


def test_a_train_file_in_place_of_the_test_file_is_refused(own_data):
    shutil.copy(own_data / "double_mnist_train.npz", own_data / "double_mnist_test.npz")
    with pytest.raises(data.DataFileError, match="metadata says split 'train'"):
        data.load_dataset("double_mnist", "test", own_data)


def test_prepare_rewrites_a_damaged_double_mnist_file(own_data):
    good = (own_data / "double_mnist_test.npz").read_bytes()
    truncate(own_data / "double_mnist_test.npz")
    result = data.prepare_double_mnist(own_data, n_train=64, n_test=32, seed=0)
    assert result["train"].status == "already prepared" and result["test"].status == "prepared"
    assert (own_data / "double_mnist_test.npz").read_bytes() == good


@pytest.mark.parametrize("damage", ["truncate", "zero_bytes", "empty_archive", "partly_zeroed"])
def test_damaged_mnist_file_is_one_clear_error(own_data, damage):
    path = own_data / "mnist.npz"
    DAMAGES[damage](path)
    with pytest.raises(data.DataFileError) as info:
        data.load_dataset("mnist", "train", own_data)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "python -m data_prep.mnist" in message


def test_mnist_of_the_wrong_shape_is_named(own_data):
    path = own_data / "mnist.npz"
    contents = npz.load_npz(path)
    contents["x_test"] = np.zeros((5, 64, 64), np.uint8)
    npz.save_npz_deterministic(path, contents)
    with pytest.raises(
        data.DataFileError, match=r"x uint8 \(5, 64, 64\).*expected x_train uint8 \[N, 28, 28\]"
    ):
        data.load_dataset("mnist", "test", own_data)


def test_load_npz_names_the_file(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"x.npz is not a readable .npz file"):
        npz.load_npz(tmp_path / "x.npz")
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not an .npz archive"):
        npz.load_npz(tmp_path / "a.npy")
    with pytest.raises(FileNotFoundError):
        npz.load_npz(tmp_path / "missing.npz")
