"""experiments.runs: loading finished training runs (the shared conftest runs)."""

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
