"""lnjax.train.defenses: the training PGD stays in its ball and raises the loss; L0 rectangles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnjax import models
from lnjax.train import defenses

MODEL = models.mlp((6, 6, 1), (16,), 4)
PARAMS = MODEL.init_params(jax.random.key(0))
X = jax.random.uniform(jax.random.key(1), (8, 6, 6, 1))
Y = jax.random.randint(jax.random.key(2), (8,), 0, 4)


def per_example_loss(x):
    z = MODEL.apply({"params": PARAMS}, x)
    return -jax.nn.log_softmax(z)[jnp.arange(x.shape[0]), Y]


@jax.jit
def attack(key, x):
    loss = lambda xa: jnp.sum(per_example_loss(xa))
    return defenses.pgd_linf(key, loss, x, eps=0.1, steps=10, step_size=0.025, random_start=True)


def test_pgd_linf_stays_in_the_ball_and_raises_every_loss():
    x_adv = attack(jax.random.key(3), X)
    assert float(jnp.max(jnp.abs(x_adv - X))) <= 0.1 + 1e-6
    assert bool(jnp.all((x_adv >= 0) & (x_adv <= 1)))
    assert bool(jnp.all(per_example_loss(x_adv) > per_example_loss(X)))
    np.testing.assert_array_equal(x_adv, attack(jax.random.key(3), X))  # reproducible from the key
    assert not np.array_equal(x_adv, attack(jax.random.key(4), X))  # the start is random


def test_pgd_linf_without_random_start_is_deterministic_and_zero_steps_is_identity():
    loss = lambda xa: jnp.sum(per_example_loss(xa))
    kw = dict(eps=0.1, step_size=0.025, random_start=False)
    a = defenses.pgd_linf(jax.random.key(0), loss, X, steps=5, **kw)
    b = defenses.pgd_linf(jax.random.key(1), loss, X, steps=5, **kw)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(defenses.pgd_linf(jax.random.key(0), loss, X, steps=0, **kw), X)


@pytest.mark.parametrize("size", [(1, 1), (2, 4), (6, 6)])
def test_l0_rectangle_zeros_one_rectangle_of_a_drawn_size(size):
    x = jnp.ones((6, 6, 1))
    for seed in range(5):
        out = np.asarray(defenses.l0_rectangle(jax.random.key(seed), x, min_size=size[0], max_size=size[1]))
        zero = out[..., 0] == 0
        rows, cols = np.nonzero(zero)
        h, w = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert zero.sum() == h * w  # one solid rectangle
        assert size[0] <= h <= size[1] and size[0] <= w <= size[1]
        assert np.all(out[~zero] == 1)
