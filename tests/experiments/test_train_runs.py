"""experiments.runs: loading finished training runs (the shared conftest runs)."""

import jax
import numpy as np

from experiments import runs
from lnjax import models
from lnjax.io import read_json


def test_load_trained_gives_the_model_and_params_of_each_run(dmnist_run, mnist_run):
    for workdir, dataset in ((dmnist_run, "double_mnist"), (mnist_run, "mnist")):
        model, params, c = runs.load_trained(workdir)
        assert c.data.dataset == dataset
        assert model.input_shape == models.get_model(c.model).input_shape
        split = runs.load_split(c, "test")
        logits = np.asarray(model.apply({"params": params}, split.x[:3]))
        assert logits.shape == (3, runs.NUM_CLASSES) and np.isfinite(logits).all()
        assert read_json(workdir / "metrics.json")["train"]["steps"] == c.train.steps


def test_init_from_fine_tunes_the_params_of_a_finished_run(dmnist_run, data_dir, tmp_path):
    from experiments import train as train_experiment
    from tests.conftest import tiny_train_config

    _, parent, _ = runs.load_trained(dmnist_run)
    # another seed (another fresh init) and a learning rate too small to move the params visibly
    c = tiny_train_config(
        "quickstart", data_dir, init_from=str(dmnist_run), seed=3, train__learning_rate=1e-9
    )
    train_experiment.run(c, str(tmp_path / "ft"), progress=False)
    _, child, saved = runs.load_trained(tmp_path / "ft")
    assert saved.init_from == str(dmnist_run)
    fresh = models.get_model(c.model).init_params(jax.random.key(3))
    for p, q in zip(jax.tree.leaves(parent), jax.tree.leaves(child), strict=True):
        np.testing.assert_allclose(np.asarray(q), np.asarray(p), atol=1e-6)
    # (and not where a fresh initialisation would have started)
    pairs = zip(jax.tree.leaves(fresh), jax.tree.leaves(parent), strict=True)
    moved = [np.abs(f - p).max() for f, p in pairs]
    assert max(moved) > 0.01
