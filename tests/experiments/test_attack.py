"""experiments.attack end to end on a tiny MNIST model, and its bad inputs."""

import pytest

from experiments import attack as attack_experiment, train as train_experiment
from experiments.common import UsageError
from experiments.configs import attack as attack_configs, train as train_configs
from lnjax.io import read_json
from tests.fakes import tiny_double_mnist_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("atk")
    data_dir = tiny_double_mnist_dir(root / "data", n_train=16, n_test=8)
    c = train_configs.get_config("mnist_normal")
    c.data.data_dir = str(data_dir)
    c.train.steps, c.train.batch_size, c.eval.batch_size = 30, 16, 10
    c.eval.robust_n, c.eval.robust_steps = 4, 2
    train_experiment.run(c, str(root / "train"), progress=False)
    return root / "train"


def tiny(trained, attacks="fgsm,pgd,optbrittle,optstrong,optmargin"):
    c = attack_configs.get_config("mnist")
    c.train_workdir, c.images, c.batch_size, c.examples, c.attacks = str(trained), 6, 4, 2, attacks
    c.pgd.steps, c.cw.steps, c.cw.binary_steps, c.cw.strong_confidence = 5, 20, 2, 0.5
    c.optmargin.steps, c.optmargin.binary_steps, c.optmargin.n = 20, 2, 3
    return c


@pytest.mark.parametrize(
    "names", ["fgsm,optmargin", pytest.param(",".join(attack_configs.ATTACKS), marks=pytest.mark.slow)]
)
def test_attack_experiment_end_to_end(trained, tmp_path, names):
    out = attack_experiment.run(tiny(trained, names), str(tmp_path / "a"), progress=False)
    metrics = read_json(tmp_path / "a" / "metrics.json")
    for name in names.split(","):
        assert 0 <= metrics[name]["success_rate"] <= 1 and metrics[name]["images_per_s"] > 0
        assert out[name]["success_rate"] == metrics[name]["success_rate"]
    assert (tmp_path / "a" / "figures" / "examples.png").is_file()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: setattr(c, "attacks", "fgsm,deepfool"), "unknown attacks"),
        (lambda c: setattr(c.fgsm, "eps", -0.1), "must be ≥ 0"),
        (lambda c: setattr(c, "train_workdir", "/nonexistent/run"), "no finished training run"),
        (lambda c: setattr(c, "images", 10_000), "exceeds"),
    ],
)
def test_bad_input_writes_nothing(trained, tmp_path, change, message):
    c = tiny(trained)
    change(c)
    with pytest.raises(UsageError, match=message):
        attack_experiment.run(c, str(tmp_path / "a"), progress=False)
    assert not (tmp_path / "a").exists()
