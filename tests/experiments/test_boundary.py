"""experiments.boundary end to end on a tiny fake-MNIST model (and mock CIFAR-10), resume, bad inputs."""

from pathlib import Path

import numpy as np
import pytest

from experiments import boundary as boundary_experiment, train as train_experiment
from experiments.common import UsageError
from experiments.configs import boundary as boundary_configs, train as train_configs
from lnjax import models
from lnjax.io import read_json


def _train(workdir, preset, model="", **data_fields):
    c = train_configs.get_config(preset)
    c.model = model or c.model
    for k, v in data_fields.items():
        c.data[k] = v
    c.train.steps, c.train.batch_size, c.train.checkpoint_every, c.train.log_every = 10, 6, 10, 5
    c.eval.batch_size, c.eval.robust_eps = 6, 0.0
    train_experiment.run(c, str(workdir), progress=False)
    return workdir


@pytest.fixture(scope="module")
def trained(mnist_run: Path) -> Path:
    """The conftest's finished MNIST run (read-only)."""
    return mnist_run


def tiny(runs, attacks="fgsm,optmargin", stage_images=3):
    c = boundary_configs.get_config("boundary_mnist")
    c.runs, c.images, c.batch_size, c.attacks, c.figure_images = runs, 6, 3, attacks, 2
    c.stage_images, c.region.batch_size = stage_images, 3  # two parts per stage
    c.cw.steps, c.cw.binary_steps = 10, 2
    c.optmargin.steps, c.optmargin.binary_steps, c.optmargin.n = 10, 2, 3
    c.region.samples = 8
    c.distances.directions, c.distances.batch_size = 20, 3
    c.detector.steps, c.detector.half_batch, c.detector.train_share = 10, 4, 0.5
    c.detector.dropout = 0.0  # no dropout RNG: a much faster compile (tests/test_boundary.py covers dropout)
    return c


@pytest.mark.slow  # ~12 s: end to end; the fast suite keeps the bad-input checks
def test_boundary_experiment_end_to_end_and_resume(trained, tmp_path, monkeypatch):
    runs = f"normal={trained},again={trained}"  # two runs, one architecture: compiled once
    workdir = tmp_path / "b"
    out = boundary_experiment.run(tiny(runs), str(workdir), progress=False)
    metrics = read_json(workdir / "metrics.json")
    assert set(metrics["table1"]) == {"normal", "again"}
    for m in ("normal", "again"):
        for a in ("fgsm", "optmargin"):
            row = metrics["table1"][m][a]
            assert row["success_rate"] is None or 0 <= row["success_rate"] <= 1
            summary = out["models"][m]["attacks"][a]
            assert summary["success"] == row["success_rate"]
            assert summary["region_acc"] == metrics["table2"][m][a]["region"]
            lo, hi = summary["region_acc_ci"]
            assert lo <= summary["region_acc"] <= hi and hi - lo > 0.1  # 6 images: a wide interval
            assert {"detector_fpr", "detector_fnr", "detector_fpr_ci", "purity_ci"} <= set(summary)
            assert [p.name for p in sorted((workdir / "stages" / m / a).iterdir())] == [
                "0000.npz",
                "0001.npz",
            ]
        for k in ("benign", "fgsm", "optmargin"):
            acc = metrics["table2"][m][k]
            assert 0 <= acc["region"] <= 1 and 0 <= acc["point"] <= 1
            assert metrics["distances"][m][k]["forward_passes_per_image"] > 0
    # the same model twice: identical benign results (same directions; region keys differ per run)
    assert metrics["table2"]["normal"]["benign"]["point"] == metrics["table2"]["again"]["benign"]["point"]
    for name in ("tables.md", "table1.csv", "table2.csv", "detector.csv", "distances.csv"):
        assert (workdir / name).is_file()
    for name in ("figure4_distances.png", "figure5_purity.png", "optmargin_examples.png"):
        assert (workdir / "figures" / name).stat().st_size > 1000
    tables = (workdir / "tables.md").read_text()
    assert "Table 1" in tables and "Table 2" in tables and "optmargin" in tables
    assert (workdir / "table1.csv").read_text().splitlines()[
        0
    ] == "model,attack,success_rate,rms,successes,correct"
    assert read_json(workdir / "summary.json") == out
    stage = np.load(workdir / "stages" / "normal" / "optmargin" / "0001.npz")
    assert stage["distance"].shape == (3, 40) and stage["x_adv"].shape == (3, 28, 28, 1)

    # Resume: finished parts are loaded, only a missing one is recomputed; the results are the same.
    (workdir / "stages" / "again" / "fgsm" / "0001.npz").unlink()
    calls = []
    real = boundary_experiment.attack_inputs
    monkeypatch.setattr(
        boundary_experiment, "attack_inputs", lambda *a, **k: calls.append(a[4]) or real(*a, **k)
    )
    again = boundary_experiment.run(tiny(runs), str(workdir), progress=False)
    assert calls == ["fgsm"]
    assert again == out

    # One part per stage computes what the two parts did (keys follow the row in the whole stage).
    whole = tmp_path / "whole"
    boundary_experiment.run(
        tiny("normal=" + str(trained), "fgsm", stage_images=6), str(whole), progress=False
    )
    for kind in ("benign", "fgsm"):
        one = np.load(whole / "stages" / "normal" / kind / "0000.npz")
        parts = [np.load(workdir / "stages" / "normal" / kind / f"000{p}.npz") for p in (0, 1)]
        for name in ("region_counts", "distance", "point", *(["x_adv"] if kind == "fgsm" else [])):
            np.testing.assert_array_equal(one[name], np.concatenate([p[name] for p in parts]))


def _cifar10_tiny(num_classes=10):
    """A very small CIFAR-10 net for this test (the zoo's cifar10_cnn compiles slowly on 2 cores)."""
    R = models.ReLUSpec()
    specs = (models.ConvSpec(4, (4, 4), (4, 4)), R, models.FlattenSpec(), models.DenseSpec(num_classes))
    return models.Sequential(specs=specs, input_shape=(32, 32, 3))


@pytest.mark.slow  # ~12 s on 2 busy cores: a second model, a second set of compilations
def test_cifar10_preset_runs_through_tfds(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds  # slow to import: only here

    monkeypatch.setitem(models.MODELS, "cifar10_tiny", _cifar10_tiny)
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        run = _train(tmp_path / "train", "cifar10_normal", model="cifar10_tiny", tfds_data_dir=str(tmp_path))
        c = boundary_configs.get_config("cifar10")
        c.runs, c.images, c.batch_size, c.attacks, c.figure_images = f"normal={run}", 4, 4, "fgsm", 1
        c.region.samples = 4
        c.distances.directions, c.distances.batch_size, c.distances.chunk = 40, 2, 16
        c.detector.attacks = "none"  # the detector's code is the same as on MNIST (tested above)
        out = boundary_experiment.run(c, str(tmp_path / "b"), progress=False)
    assert 0 <= out["models"]["normal"]["benign"]["point_acc"] <= 1
    metrics = read_json(tmp_path / "b" / "metrics.json")
    assert metrics["models"]["normal"]["dataset"] == "cifar10" and metrics["num_directions"] == 40
    assert np.load(tmp_path / "b" / "stages" / "normal" / "fgsm" / "0000.npz")["x_adv"].shape == (
        4,
        32,
        32,
        3,
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: setattr(c, "attacks", "fgsm,deepfool"), "unknown attacks"),
        (lambda c: setattr(c.region, "tau", -0.1), "region.tau"),
        (lambda c: setattr(c.distances, "mode", "golden"), "distances.mode"),
        (lambda c: setattr(c.detector, "attacks", "optstrong"), "detector.attacks"),
        (lambda c: setattr(c.detector, "train_share", 1.0), "train_share"),
        (lambda c: setattr(c, "runs", "a=/nonexistent/run"), "no finished training run"),
        (lambda c: setattr(c, "runs", "a=x,a=y"), "twice"),
        (lambda c: setattr(c, "images", 10_000), "exceeds"),
        (lambda c: setattr(c.distances, "directions", 785), "exceeds the 784 pixels"),
        (lambda c: setattr(c.distances, "directions", 10), "needs ≥ 36 directions"),
        (lambda c: c.region.__setattr__("sigma", 1.0), "unknown config options"),
        (lambda c: setattr(c, "stage_images", 4), "multiple of batch_size"),
        (lambda c: setattr(c.fgsm, "loss", "hinge"), "fgsm.loss"),
    ],
)
def test_bad_input_writes_nothing(trained, tmp_path, change, message):
    c = tiny(f"normal={trained}")
    change(c)
    with pytest.raises(UsageError, match=message):
        boundary_experiment.run(c, str(tmp_path / "b"), progress=False)
    assert not (tmp_path / "b").exists()
