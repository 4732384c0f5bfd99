"""lnjax.train: losses and metrics, defenses, the jitted step, resume, data parallelism."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from lnjax import models
from lnjax.train import (
    Checkpointer,
    DefenseConfig,
    TrainConfig,
    evaluate,
    l0_rectangle,
    losses,
    make_mesh,
    make_train_step,
    pgd_linf,
    restore_params,
    train,
)
from lnjax.train.step import TrainState
from tests.train import train_worker

ROOT = Path(__file__).resolve().parents[2]


def tiny_model(num_classes=10):
    return models.Sequential(
        specs=(
            models.ConvSpec(4, (3, 3), (2, 2)),
            models.ReLUSpec(),
            models.FlattenSpec(),
            models.DenseSpec(num_classes),
        ),
        input_shape=(8, 8, 1),
    )


def tiny_data(n=64, multilabel=True, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 1), dtype=np.float32)
    if multilabel:
        y = np.zeros((n, 10), np.float32)
        for i in range(n):
            y[i, rng.choice(10, 2, replace=False)] = 1
    else:
        y = rng.integers(0, 10, n).astype(np.int32)
    return x, y


# --------------------------------------------------------------------------------------------- metrics


def test_topk_exact_set_and_per_label():
    logits = jnp.array([[3.0, 2.0, -1.0, -2.0], [3.0, -1.0, 2.0, -2.0], [1.0, 2.0, 3.0, -2.0]])
    labels = jnp.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0]], jnp.float32)
    np.testing.assert_array_equal(losses.topk_exact_set(logits, labels, 2), [1, 0, 1])
    # per-label: sigmoid > 0.5 <=> logit > 0
    np.testing.assert_allclose(losses.per_label_accuracy(logits, labels), [1, 0.5, 0.75])


def test_single_label_accuracy_and_losses_are_per_example():
    logits = jnp.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    np.testing.assert_array_equal(losses.accuracy(logits, jnp.array([0, 1, 1])), [1, 1, 0])
    assert losses.softmax_ce(logits, jnp.array([0, 1, 1])).shape == (3,)
    assert losses.sigmoid_bce(logits, jnp.ones((3, 2))).shape == (3,)


# -------------------------------------------------------------------------------------------- defenses


@pytest.mark.parametrize("size", [(3, 3), (2, 5)])
def test_l0_rectangle_zeros_one_rectangle_of_allowed_size(size):
    x = jnp.ones((16, 16, 1))
    for seed in range(20):
        out = np.asarray(l0_rectangle(jax.random.key(seed), x, min_size=size[0], max_size=size[1]))[..., 0]
        rows, cols = np.nonzero(out == 0)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert size[0] <= h <= size[1] and size[0] <= w <= size[1]
        assert (out == 0).sum() == h * w  # one solid rectangle
        assert np.all(out[out != 0] == 1)  # the rest untouched


def test_pgd_stays_in_ball_and_box_and_increases_the_loss():
    model = tiny_model()
    params = model.init_params(jax.random.key(0))
    x, y = tiny_data(16)
    loss = lambda xa: losses.sigmoid_bce(model.apply({"params": params}, xa), y).sum()
    x_adv = pgd_linf(jax.random.key(1), loss, x, eps=0.1, steps=10, step_size=0.03, random_start=True)
    assert np.all(np.abs(x_adv - x) <= 0.1 + 1e-6)
    assert np.all((x_adv >= 0) & (x_adv <= 1))
    assert loss(x_adv) > loss(x)


# ---------------------------------------------------------------------------------------------- step


def test_train_step_compiles_once_and_learns():
    model = tiny_model()
    x, y = tiny_data(32)
    mesh = make_mesh()
    step = make_train_step(
        model=model, task="multilabel", defense=DefenseConfig(name="l0", l0_min=2, l0_max=3), mesh=mesh
    )
    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    state = jax.device_put(
        TrainState.create(params=model.init_params(jax.random.key(0)), tx=optax.adam(1e-2)), repl
    )
    key = jax.device_put(jax.random.key(1), repl)
    x, y = jax.device_put(x, data), jax.device_put(y, data)
    first = None
    for _ in range(30):
        state, m = step(state, key, x, y)
        first = float(m["loss"]) if first is None else first
    assert step._cache_size() == 1
    assert float(m["loss"]) < first


@pytest.mark.parametrize("task", ["multilabel", "single"])
def test_ibp_worst_case_loss_bounds_the_loss_in_the_box(task):
    """IBP's worst-case loss (Gowal et al. 2018) is ≥ the loss at every sampled point of each box and
    equals the clean loss at ε 0; with the bounds swapped (the deliberate bug: true labels at their
    upper bound) it falls below the sampled losses."""
    from lnjax.train.stability import ibp_logit_bounds, worst_case_logits

    model, (x, y) = tiny_model(), tiny_data(8, multilabel=task == "multilabel", seed=3)
    params = model.init_params(jax.random.key(5))
    view = models.layer_view(model, params)
    loss_fn = losses.LOSSES[task]
    eps = 0.1
    lo, hi = jax.vmap(lambda xi: ibp_logit_bounds(view, xi, eps))(jnp.asarray(x))
    worst = np.asarray(loss_fn(worst_case_logits(lo, hi, jnp.asarray(y), task), jnp.asarray(y)))
    swapped = np.asarray(loss_fn(worst_case_logits(hi, lo, jnp.asarray(y), task), jnp.asarray(y)))
    u = jax.random.uniform(jax.random.key(6), (256, *x.shape), minval=-eps, maxval=eps)
    points = jnp.clip(jnp.asarray(x)[None] + u, 0.0, 1.0)
    sampled = np.asarray(
        jax.jit(jax.vmap(lambda p: loss_fn(model.apply({"params": params}, p), jnp.asarray(y))))(points)
    )
    assert np.all(sampled <= worst[None] + 1e-5)
    assert np.all(swapped < sampled.max(axis=0))
    lo0, hi0 = jax.vmap(lambda xi: ibp_logit_bounds(view, xi, 0.0))(jnp.asarray(x))
    clean = loss_fn(model.apply({"params": params}, jnp.asarray(x)), jnp.asarray(y))
    np.testing.assert_allclose(
        loss_fn(worst_case_logits(lo0, hi0, jnp.asarray(y), task), jnp.asarray(y)), clean, rtol=1e-5
    )
    with pytest.raises(ValueError, match="task = 'multi' is unknown"):
        worst_case_logits(lo, hi, jnp.asarray(y), "multi")


def test_sabr_box_lies_in_the_ball_around_the_attack_point():
    """SABR's small box (Müller et al. 2023) stays inside the ε-ball, centred on the attack's point
    where it fits; without the shift (the deliberate bug) boxes around points near the ball's edge
    poke out of it."""
    from lnjax.train.stability import sabr_centre

    eps, radius = 0.1, 0.04
    x = jax.random.uniform(jax.random.key(7), (64, 8, 8, 1))
    x_adv = x + jax.random.uniform(jax.random.key(8), x.shape, minval=-eps, maxval=eps)
    centre = np.asarray(sabr_centre(x_adv, x, eps, radius))
    assert np.all(centre - radius >= np.asarray(x) - eps - 1e-6)
    assert np.all(centre + radius <= np.asarray(x) + eps + 1e-6)
    inside = np.abs(np.asarray(x_adv - x)) <= eps - radius
    np.testing.assert_array_equal(centre[inside], np.asarray(x_adv)[inside])
    assert np.any(np.abs(np.asarray(x_adv - x)) + radius > eps + 1e-3)  # the unshifted box would leave


def test_ibp_training_tightens_the_interval_bounds():
    """A few steps with the IBP term (ε ramped over them) shrink the worst-case loss at full ε far more
    than natural training does from the same start: the term reaches the parameters."""
    from lnjax.train.stability import ibp_logit_bounds, worst_case_logits

    model = tiny_model()
    x, y = tiny_data(32)
    mesh = make_mesh()
    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    xd, yd = jax.device_put(x, data), jax.device_put(y, data)

    def worst_loss(params):
        view = models.layer_view(model, params)
        lo, hi = jax.vmap(lambda xi: ibp_logit_bounds(view, xi, 0.1))(jnp.asarray(x))
        return float(
            losses.sigmoid_bce(worst_case_logits(lo, hi, jnp.asarray(y), "multilabel"), jnp.asarray(y)).mean()
        )

    def run(defense):
        step = make_train_step(model=model, task="multilabel", defense=defense, mesh=mesh)
        state = jax.device_put(
            TrainState.create(params=model.init_params(jax.random.key(0)), tx=optax.adam(1e-2)), repl
        )
        key = jax.device_put(jax.random.key(1), repl)
        for _ in range(40):
            state, m = step(state, key, xd, yd)
        return worst_loss(state.params), float(m["ibp_loss"])

    natural, ibp_metric_off = run(DefenseConfig())
    ibp, ibp_metric = run(DefenseConfig(ibp_weight=1.0, ibp_eps=0.1, eps_warmup=20))
    assert ibp_metric_off == 0.0
    assert ibp_metric == pytest.approx(ibp, rel=0.2)  # the logged term is the worst-case loss at full ε
    assert ibp < 0.8 * natural


@pytest.mark.parametrize("task", ["multilabel", "single"])
def test_resumed_run_equals_uninterrupted(tmp_path, task):
    model = tiny_model()
    x, y = tiny_data(64, multilabel=task == "multilabel")
    cfg = TrainConfig(batch_size=16, steps=10, learning_rate=1e-2, checkpoint_every=3, log_every=1)
    defense = DefenseConfig(name="linf" if task == "multilabel" else "none", eps=0.1, steps=2, step_size=0.05)
    kw = dict(
        key=jax.random.key(3), model=model, task=task, x=x, y=y, config=cfg, defense=defense, progress=False
    )
    full, _ = train(**kw)
    # "killed" after step 7: the last checkpoint is step 6 (and 7, written on stop)
    part, _ = train(**kw, checkpoint_dir=str(tmp_path / "ckpt"), stop_after=7)
    assert Checkpointer(str(tmp_path / "ckpt")).latest_step() == 7
    resumed, hist = train(**kw, checkpoint_dir=str(tmp_path / "ckpt"))
    assert hist[0]["step"] == 8  # continued, not restarted
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), full, resumed)
    # and the params can be read back for later experiments
    restored = restore_params(str(tmp_path / "ckpt"), model.init_params(jax.random.key(0)))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), resumed, restored)


def test_restore_params_errors(tmp_path):
    model = tiny_model()
    with pytest.raises(FileNotFoundError, match="train the model first"):
        restore_params(str(tmp_path / "none"), model.init_params(jax.random.key(0)))
    x, y = tiny_data(32)
    cfg = TrainConfig(batch_size=16, steps=2, checkpoint_every=1)
    train(
        key=jax.random.key(0),
        model=model,
        task="multilabel",
        x=x,
        y=y,
        config=cfg,
        defense=DefenseConfig(),
        checkpoint_dir=str(tmp_path / "c"),
        progress=False,
    )
    with pytest.raises(ValueError, match="does not hold params of this model"):
        restore_params(str(tmp_path / "c"), tiny_model(num_classes=3).init_params(jax.random.key(0)))


def test_train_rejects_bad_batch_settings():
    model = tiny_model()
    x, y = tiny_data(8)
    kw = dict(
        key=jax.random.key(0),
        model=model,
        task="multilabel",
        x=x,
        y=y,
        defense=DefenseConfig(),
        progress=False,
    )
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(config=TrainConfig(batch_size=16, steps=1), **kw)


def test_evaluate_counts_every_example_and_robust_is_at_most_clean():
    model = tiny_model()
    x, y = tiny_data(37)
    params = model.init_params(jax.random.key(0))
    pgd = DefenseConfig(name="linf", eps=0.2, steps=5, step_size=0.05)
    m = evaluate(
        key=jax.random.key(0),
        model=model,
        params=params,
        task="multilabel",
        k=2,
        x=x,
        y=y,
        batch_size=16,
        pgd=pgd,
        progress=False,
    )
    logits = model.apply({"params": params}, x)
    assert m["n"] == 37
    np.testing.assert_allclose(m["top2_exact"], float(losses.topk_exact_set(logits, y, 2).mean()), atol=1e-6)
    np.testing.assert_allclose(m["per_label"], float(losses.per_label_accuracy(logits, y).mean()), atol=1e-6)
    assert m["robust"] <= m["top2_exact"] and m["robust_eps"] == 0.2


# ------------------------------------------------------------------------------------- data parallel


def _run_worker(tmp_path, devices, defenses):
    """Params after training on `devices` forced host devices, in a subprocess (the device count is
    fixed when JAX starts)."""
    prefix = tmp_path / f"params_{devices}"
    flags = os.environ.get("XLA_FLAGS", "")  # the tests' own (conftest)
    env = {
        **os.environ,
        "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={devices}".strip(),
        "JAX_PLATFORMS": "cpu",
    }
    subprocess.run(
        [sys.executable, str(ROOT / "tests" / "train" / "train_worker.py"), str(prefix), *defenses],
        check=True,
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=600,
    )
    return {d: dict(np.load(f"{prefix}_{d}.npz")) for d in defenses}


@pytest.mark.parametrize(
    "defenses",
    [("linf",), pytest.param(("none", "l0"), marks=pytest.mark.slow)],  # linf: sharded PGD, the most involved
)
def test_four_devices_train_like_one(tmp_path, defenses):
    """The same global batches on this process's one device and on 4 forced host devices give the
    same params."""
    assert jax.device_count() == 1
    for defense in defenses:
        train_worker.main(str(tmp_path / f"params_1_{defense}.npz"), defense)
    one = {d: dict(np.load(tmp_path / f"params_1_{d}.npz")) for d in defenses}
    four = _run_worker(tmp_path, 4, defenses)
    for defense in defenses:
        a, b = one[defense], four[defense]
        assert int(a.pop("devices")) == 1 and int(b.pop("devices")) == 4
        assert set(a) == set(b)
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5, err_msg=f"{defense}: {name}")
