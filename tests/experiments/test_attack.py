"""experiments.attack end to end on the conftest's tiny MNIST run: real properties of the attacks
(in the ε-ball and the pixel box, successes flip the model, PGD finds at least FGSM's successes),
and bad input (one UsageError, nothing written)."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import attack as attack_experiment
from experiments.common import UsageError
from experiments.configs import attack as attack_configs
from experiments.runs import load_trained
from lnjax import models
from lnjax.data import load_npz
from lnjax.io import read_json


def tiny(run: Path, attacks: str = "fgsm,pgd,optbrittle,optstrong,optmargin"):
    c = attack_configs.get_config("mnist")  # one batch of 6 images: one compilation per attack
    c.train_workdir, c.images, c.batch_size, c.examples, c.attacks = str(run), 6, 6, 2, attacks
    c.pgd.steps, c.pgd.step_size, c.pgd.restarts = 10, 0.1, 2  # strong enough to contain FGSM's step
    c.cw.steps, c.cw.binary_steps, c.cw.strong_confidence = 20, 2, 0.5
    c.optmargin.steps, c.optmargin.binary_steps, c.optmargin.n = 20, 2, 3
    return c


@pytest.mark.parametrize(
    "names", ["fgsm,pgd", pytest.param(",".join(attack_configs.ATTACKS), marks=pytest.mark.slow)]
)
def test_attacks_stay_in_the_ball_flip_the_model_and_pgd_beats_fgsm(mnist_run, tmp_path, names):
    c = tiny(mnist_run, names)
    out = attack_experiment.run(c, str(tmp_path / "a"), progress=False)
    metrics = read_json(tmp_path / "a" / "metrics.json")
    adv = load_npz(tmp_path / "a" / "adversarial.npz")
    model, params, _ = load_trained(mnist_run)
    apply_fn = models.apply_fn(model)
    x, y = adv["x"], adv["y"]
    correct = np.asarray(jnp.argmax(apply_fn(params, jnp.asarray(x)), -1)) == y
    assert metrics["clean_accuracy"] == pytest.approx(correct.mean())
    assert correct.any(), "the tiny run must get some test images right, else nothing is attacked"
    for name in names.split(","):
        x_adv, success = adv[f"{name}_x_adv"], adv[f"{name}_success"]
        assert x_adv.shape == x.shape and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
        assert not success[~correct].any()  # a miss is never counted as a success
        # every counted success really flips the model
        pred = np.asarray(jnp.argmax(apply_fn(params, jnp.asarray(x_adv)), -1))
        assert np.all(pred[success] != y[success])
        assert metrics[name]["success_rate"] == pytest.approx(success.mean())
        assert out[name]["success_rate"] == metrics[name]["success_rate"]
        if name in ("fgsm", "pgd"):  # L∞ attacks: inside the ε-ball
            eps = c[name].eps
            assert np.abs(x_adv - x).max() <= eps + 1e-6
    if {"fgsm", "pgd"} <= set(names.split(",")):
        assert adv["pgd_success"].sum() >= adv["fgsm_success"].sum()
        assert adv["fgsm_success"].any(), "at ε 0.3 FGSM fools the barely trained model somewhere"
    assert (tmp_path / "a" / "figures" / "examples.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: setattr(c, "attacks", "fgsm,deepfool"), "unknown attacks"),
        (lambda c: setattr(c, "attacks", " , "), "names no attack"),
        (lambda c: setattr(c.fgsm, "eps", -0.1), r"fgsm.eps = -0.1; expected a finite number ≥ 0"),
        (lambda c: setattr(c.pgd, "step_size", float("nan")), r"pgd.step_size = nan"),
        (lambda c: setattr(c.cw, "binary_steps", 0), r"cw.binary_steps = 0; expected an integer ≥ 1"),
        (lambda c: setattr(c.optmargin, "n", 0), r"optmargin.n = 0"),
        (lambda c: setattr(c, "train_workdir", "/nonexistent/run"), "no finished training run"),
        (lambda c: setattr(c, "images", 10_000), "exceeds"),
        (lambda c: c.pgd.__setattr__("stepz", 3), "unknown config options"),
    ],
)
def test_bad_input_writes_nothing(mnist_run, tmp_path, change, message):
    c = tiny(mnist_run)
    with c.unlocked():
        change(c)
    with pytest.raises(UsageError, match=message):
        attack_experiment.run(c, str(tmp_path / "a"), progress=False)
    assert not (tmp_path / "a").exists()
