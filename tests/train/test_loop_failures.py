"""The host loop when things go wrong: bad hyperparameters, divergence, Ctrl-C."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnjax.train import Checkpointer, DefenseConfig, TrainConfig, loop, restore_params, train
from lnjax.train.loop import TrainingDiverged, TrainingInterrupted
from tests.train.test_train import tiny_data, tiny_model


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"learning_rate": math.inf}, "learning_rate = inf; expected a finite number > 0"),
        ({"learning_rate": math.nan}, "learning_rate = nan; expected a finite number > 0"),
        ({"learning_rate": 0.0}, "learning_rate = 0.0; expected"),
        ({"learning_rate": -1e-3}, "learning_rate = -0.001; expected"),
        ({"steps": 0}, r"steps = 0; expected an integer ≥ 1"),
        ({"batch_size": 2.5}, r"batch_size = 2.5; expected an integer"),
        ({"log_every": 0}, "log_every"),
        ({"checkpoint_every": -1}, "checkpoint_every"),
        ({"schedule": "exp"}, "schedule = 'exp'; expected one of"),
    ],
)
def test_train_config_rejects_bad_values(fields, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**fields)


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"name": "pgd"}, "name = 'pgd' is unknown"),
        ({"eps": math.nan}, "eps = nan must be a finite number"),
        ({"eps": 1.5}, r"eps = 1.5 must be in \[0, 1\]"),
        ({"name": "linf", "eps": 0.0}, "eps = 0.0 must be > 0 for the linf defense"),
        ({"name": "linf", "steps": 0}, "steps = 0 must be ≥ 1"),
        ({"name": "linf", "step_size": -1.0}, "step_size = -1.0 must be > 0"),
        ({"name": "linf", "adv_share": 0.0}, "adv_share"),
        ({"name": "linf", "eps_warmup": -5}, "eps_warmup"),
        ({"name": "l0", "l0_min": 5, "l0_max": 4}, "l0_min = 5, l0_max = 4"),
        ({"rs_weight": -0.1}, "rs_weight"),
        ({"rs_eps": math.inf}, "rs_eps = inf must be a finite number"),
        ({"ibp_weight": -1.0}, "ibp_weight = -1.0 must be ≥ 0"),
        ({"ibp_eps": 1.5}, r"ibp_eps = 1.5 must be in \[0, 1\]"),
        ({"eps_warmup": -1}, "eps_warmup = -1 must be ≥ 0"),
        ({"ibp_at": "middle"}, "ibp_at = 'middle' is unknown"),
        ({"ibp_weight": 1.0, "ibp_at": "attack"}, "ibp_at = 'attack' needs the linf defense"),
        (
            {"name": "linf", "ibp_weight": 1.0, "ibp_at": "attack", "ibp_eps": 0.2},
            "ibp_eps = 0.2 must be ≤ eps",
        ),
    ],
)
def test_defense_config_rejects_bad_values(fields, match):
    with pytest.raises(ValueError, match=match):
        DefenseConfig(**fields)


def test_defaults_are_valid_and_other_defenses_ignore_linf_fields():
    TrainConfig()
    DefenseConfig()
    DefenseConfig(name="none", steps=0, step_size=0.0)  # unused by "none"
    DefenseConfig(name="l0", eps=0.0)


def _kw(tmp_path, **config):
    x, y = tiny_data(32)
    fields = dict(batch_size=16, steps=6, learning_rate=1e-2, checkpoint_every=2, log_every=1) | config
    return dict(
        key=jax.random.key(0),
        model=tiny_model(),
        task="multilabel",
        x=x,
        y=y,
        config=TrainConfig(**fields),
        defense=DefenseConfig(),
        checkpoint_dir=str(tmp_path / "c"),
        progress=False,
    )


def test_a_huge_learning_rate_diverges_with_an_error_not_a_nan_result(tmp_path):
    logged = []
    # so large that the first updates overflow the params to inf / nan
    with pytest.raises(TrainingDiverged, match="training diverged at step") as info:
        train(**_kw(tmp_path, learning_rate=1e38, schedule="constant"), on_log=logged.append)
    assert not math.isfinite(info.value.loss) and info.value.step == logged[-1]["step"]
    assert all(math.isfinite(m["loss"]) for m in logged[:-1])
    assert Checkpointer(str(tmp_path / "c")).latest_step() == info.value.checkpoint_step


def test_divergence_keeps_the_last_finite_checkpoint_and_saves_nothing_later(tmp_path, monkeypatch):
    real = loop.make_train_step

    def make_poisoned_step(**kw):
        step = real(**kw)

        def poisoned(state, key, x, y):  # params and loss turn nan from step 5 on
            state, metrics = step(state, key, x, y)
            if int(state.step) >= 5:
                state = state.replace(params=jax.tree.map(lambda p: p * np.nan, state.params))
                metrics = {**metrics, "loss": metrics["loss"] * np.nan}
            return state, metrics

        return poisoned

    monkeypatch.setattr(loop, "make_train_step", make_poisoned_step)
    with pytest.raises(
        TrainingDiverged, match=r"at step 5 \(loss nan\); the last good checkpoint \(step 4\)"
    ):
        train(**_kw(tmp_path))
    assert Checkpointer(str(tmp_path / "c")).latest_step() == 4
    params = restore_params(str(tmp_path / "c"), tiny_model().init_params(jax.random.key(0)))
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))
    # logged only at step 8: the checkpoint at step 6 sees the nan params and is not written
    with pytest.raises(TrainingDiverged, match="at step 6"):
        train(**_kw(tmp_path / "b", log_every=8, steps=8))
    assert Checkpointer(str(tmp_path / "b" / "c")).latest_step() == 4


def test_ctrl_c_checkpoints_the_last_step_and_a_rerun_resumes_to_the_same_result(tmp_path):
    full, _ = train(**{**_kw(tmp_path / "full"), "checkpoint_dir": None})

    def interrupt_at_3(m):
        if m["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted) as info:
        train(**_kw(tmp_path), on_log=interrupt_at_3)
    assert info.value.step == 3 and info.value.checkpoint_step == 3
    assert isinstance(info.value, KeyboardInterrupt)
    assert Checkpointer(str(tmp_path / "c")).latest_step() == 3  # step 3 is no checkpoint_every step
    resumed, history = train(**_kw(tmp_path))
    assert history[0]["step"] == 4
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), full, resumed)


def test_init_params_of_another_model_or_not_finite_are_refused(tmp_path):
    params = tiny_model().init_params(jax.random.key(1))
    wrong = jax.tree.map(lambda a: a[..., :1], params)
    with pytest.raises(ValueError, match="init_params are not params of this model"):
        train(**_kw(tmp_path), init_params=wrong)
    bad = jax.tree.map(lambda a: a.at[(0,) * a.ndim].set(jnp.nan), params)
    with pytest.raises(ValueError, match="init_params hold non-finite values"):
        train(**_kw(tmp_path), init_params=bad)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())
