"""lnjax.attacks: balls and boxes, confirmed successes, OPTMARGIN copies, one compilation, reproducibility."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnjax import attacks, models, specs

MODEL = models.mlp((6, 6, 1), (32, 32), 5)
PARAMS = MODEL.init_params(jax.random.key(0))


def apply_fn(params, x):
    return MODEL.apply({"params": params}, x)


def batch(n=12, seed=0):
    x = jax.random.uniform(jax.random.key(seed), (n, 6, 6, 1))
    y = jnp.argmax(apply_fn(PARAMS, x), -1)  # attack the model's own predictions: all start correct
    return x, y


def margins_at(x, y, margin_fn=attacks.argmax_margin):
    return jax.vmap(margin_fn)(apply_fn(PARAMS, x), y)


def test_margins_match_the_verifier_specs():
    z = jax.random.normal(jax.random.key(1), (7, 10))
    for t in range(10):
        lab = jnp.full((7,), t)
        np.testing.assert_allclose(
            jax.vmap(attacks.argmax_margin)(z, lab), specs.Argmax(t).margin(z), rtol=1e-6
        )
        for k in (1, 2, 3):
            np.testing.assert_allclose(
                jax.vmap(attacks.make_topk_margin(k))(z, lab), specs.TopK(t, k).margin(z), rtol=1e-6
            )
        np.testing.assert_allclose(
            jax.vmap(attacks.make_threshold_margin(0.5))(z, lab), specs.Threshold(t, 0.5).margin(z), rtol=1e-6
        )


@pytest.mark.parametrize(
    "name, make, norm, eps",
    [
        ("fgsm", lambda: attacks.make_fgsm(eps=0.1), "linf", 0.1),
        ("pgd_linf", lambda: attacks.make_pgd(eps=0.1, steps=10, step_size=0.02, restarts=2), "linf", 0.1),
        ("pgd_l2", lambda: attacks.make_pgd(eps=0.5, steps=10, step_size=0.1, norm="l2"), "l2", 0.5),
    ],
)
def test_gradient_attacks_stay_in_ball_and_box_and_successes_are_real(name, make, norm, eps):
    x, y = batch()
    attack = make()
    r = attack(jax.random.key(2), apply_fn, PARAMS, x, y)
    dist = attacks.linf(r.x_adv - x) if norm == "linf" else attacks.l2(r.x_adv - x)
    assert np.all(dist <= eps + 1e-5), name
    assert np.all((r.x_adv >= 0) & (r.x_adv <= 1))
    m = margins_at(r.x_adv, y)
    np.testing.assert_allclose(r.margin, m, atol=1e-5)
    np.testing.assert_array_equal(r.success, m <= 0)
    assert r.success.any(), f"{name} never succeeded on a random net"


def test_pgd_is_stronger_than_fgsm_and_targeted_reaches_the_target():
    x, y = batch(16)
    fgsm = attacks.make_fgsm(eps=0.15)(jax.random.key(0), apply_fn, PARAMS, x, y)
    pgd = attacks.make_pgd(eps=0.15, steps=20, step_size=0.02, random_start=False)(
        jax.random.key(0), apply_fn, PARAMS, x, y
    )
    assert pgd.success.sum() >= fgsm.success.sum()
    target = (y + 1) % 5
    r = attacks.make_pgd(eps=0.5, steps=40, step_size=0.05, margin_fn=attacks.targeted_margin)(
        jax.random.key(0), apply_fn, PARAMS, x, target
    )
    pred = jnp.argmax(apply_fn(PARAMS, r.x_adv), -1)
    assert r.success.any() and np.all(
        np.asarray(pred)[np.asarray(r.success)] == np.asarray(target)[np.asarray(r.success)]
    )


def test_cw_finds_small_confirmed_adversarials_and_confidence_costs_distance():
    x, y = batch(8)
    brittle = attacks.make_cw_l2(steps=100, binary_steps=5, lr=0.05, c0=1.0)
    strong = attacks.make_cw_l2(steps=100, binary_steps=5, lr=0.05, c0=1.0, confidence=1.0)
    rb = brittle(jax.random.key(0), apply_fn, PARAMS, x, y)
    rs = strong(jax.random.key(0), apply_fn, PARAMS, x, y)
    assert rb.success.mean() >= 0.75
    assert np.all((rb.x_adv >= 0) & (rb.x_adv <= 1))
    np.testing.assert_array_equal(rb.success, margins_at(rb.x_adv, y) <= 0)
    both = np.asarray(rb.success & rs.success)
    assert both.any()
    assert np.all(np.asarray(margins_at(rs.x_adv, y))[both] <= -1.0 + 1e-3)  # κ is honoured
    assert np.mean(np.asarray(attacks.l2(rs.x_adv - x))[both]) > np.mean(
        np.asarray(attacks.l2(rb.x_adv - x))[both]
    )
    # failures return the input unchanged
    assert np.all(np.asarray(rb.x_adv)[~np.asarray(rb.success)] == np.asarray(x)[~np.asarray(rb.success)])


def test_optmargin_success_means_every_noisy_copy_is_misclassified():
    x, y = batch(6)
    n, eps = 5, 0.05
    attack = attacks.make_optmargin(eps=eps, n=n, lr=0.05, steps=100, binary_steps=4, c0=1.0)
    key = jax.random.key(3)
    r = attack(key, apply_fn, PARAMS, x, y)
    assert r.success.any()
    for i, k in enumerate(jax.random.split(key, x.shape[0])):
        noise = attacks.orthogonal_noise(k, x.shape[1:], n, eps)
        copies = jnp.clip(r.x_adv[i][None] + noise, 0, 1)
        m = margins_at(copies, jnp.full((n,), y[i]))
        assert bool(r.success[i]) == bool(jnp.all(m <= 0))


def test_chunked_batch_gives_the_same_attack():
    """Examples are independent: chunks (lax.map, with a remainder chunk) change speed only."""
    x, y = batch(7)
    chunked, whole = (
        attacks.make_optmargin(eps=0.05, n=4, lr=0.1, steps=10, binary_steps=2, c0=1.0, chunk=c)(
            jax.random.key(4), apply_fn, PARAMS, x, y
        )
        for c in (3, 100)  # 3 + 3 + 1 (full chunks and a remainder), one vmap
    )
    np.testing.assert_allclose(chunked.x_adv, whole.x_adv, atol=1e-5)
    np.testing.assert_array_equal(chunked.success, whole.success)
    assert whole.success.any()
    with pytest.raises(ValueError, match="chunk"):
        attacks.make_cw_l2(chunk=0)


def test_orthogonal_noise_is_orthogonal_with_the_given_rms():
    v = attacks.orthogonal_noise(jax.random.key(0), (6, 6, 1), 8, 0.3)
    assert v.shape == (8, 6, 6, 1) and np.all(v[-1] == 0)
    flat = np.asarray(v[:-1]).reshape(7, -1)
    np.testing.assert_allclose(np.sqrt((flat**2).mean(1)), 0.3, rtol=1e-5)
    gram = flat @ flat.T
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-4)


def test_attacks_compile_once_and_reproduce_from_the_key():
    attack = attacks.make_pgd(eps=0.1, steps=5, step_size=0.03)
    x1, y1 = batch(8, seed=1)
    x2, y2 = batch(8, seed=2)
    a = attack(jax.random.key(5), apply_fn, PARAMS, x1, y1)
    attack(jax.random.key(6), apply_fn, PARAMS, x2, y2)
    other_params = MODEL.init_params(jax.random.key(9))
    attack(jax.random.key(6), apply_fn, other_params, x2, y2)
    assert attack._cache_size() == 1
    b = attack(jax.random.key(5), apply_fn, PARAMS, x1, y1)
    np.testing.assert_array_equal(a.x_adv, b.x_adv)
    cw = attacks.make_optmargin(eps=0.05, n=3, steps=10, binary_steps=2)
    c1 = cw(jax.random.key(1), apply_fn, PARAMS, x1, y1)
    cw(jax.random.key(2), apply_fn, PARAMS, x2, y2)
    assert cw._cache_size() == 1
    np.testing.assert_array_equal(c1.x_adv, cw(jax.random.key(1), apply_fn, PARAMS, x1, y1).x_adv)


def test_summary_and_bad_hyperparameters():
    x, y = batch(4)
    r = attacks.make_fgsm(eps=0.3)(jax.random.key(0), apply_fn, PARAMS, x, y)
    s = attacks.summarize(x, r)
    assert s["n"] == 4 and 0 <= s["success_rate"] <= 1
    if s["success_rate"] > 0:
        assert s["linf"] <= 0.3 + 1e-6 and s["rms"] <= s["linf"]
    with pytest.raises(ValueError, match="norm"):
        attacks.make_pgd(eps=0.1, steps=1, step_size=0.1, norm="l1")
    with pytest.raises(ValueError):
        attacks.make_fgsm(eps=-0.1)
    with pytest.raises(ValueError):
        attacks.make_cw_l2(steps=0)


def test_fgsm_steps_on_the_cross_entropy_by_default_and_on_the_margin_when_asked():
    import optax

    x, y = batch()
    ce = lambda xi, yi: optax.softmax_cross_entropy_with_integer_labels(apply_fn(PARAMS, xi[None])[0], yi)
    mg = lambda xi, yi: attacks.argmax_margin(apply_fn(PARAMS, xi[None])[0], yi)
    up_ce = jnp.clip(x + 0.1 * jnp.sign(jax.vmap(jax.grad(ce))(x, y)), 0, 1)
    down_mg = jnp.clip(x - 0.1 * jnp.sign(jax.vmap(jax.grad(mg))(x, y)), 0, 1)
    assert not np.allclose(up_ce, down_mg)  # the two losses step differently here
    xent = attacks.make_fgsm(eps=0.1)(jax.random.key(0), apply_fn, PARAMS, x, y)
    margin = attacks.make_fgsm(eps=0.1, loss="margin")(jax.random.key(0), apply_fn, PARAMS, x, y)
    np.testing.assert_allclose(xent.x_adv, up_ce, atol=1e-6)
    np.testing.assert_allclose(margin.x_adv, down_mg, atol=1e-6)
    np.testing.assert_array_equal(xent.success, margins_at(xent.x_adv, y) <= 0)
    with pytest.raises(ValueError, match="loss"):
        attacks.make_fgsm(eps=0.1, loss="hinge")


def test_optmargin_presets_differ_only_in_the_distance_weighting(monkeypatch):
    from lnjax.attacks import config as C

    made = []
    monkeypatch.setattr(C, "make_optmargin", lambda **kw: made.append(kw))
    settings = C.AttackSettings()
    settings.make("optmargin")
    settings.make("optmargin_ref")
    seed, ref = made
    assert seed["distance_scale"] == 1.0 and ref["distance_scale"] == pytest.approx(1 / 255**2)
    assert {k: v for k, v in seed.items() if k != "distance_scale"} == {
        k: v for k, v in ref.items() if k != "distance_scale"
    }
