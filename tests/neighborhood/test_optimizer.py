"""The neighborhood optimizer and the binary-search baseline: verified results, budgets, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnjax import models, verify as V
from lnjax.neighborhood import gradients as G, layers as NL
from lnjax.neighborhood.baseline import binary_search, bisect, queries_per_layer, uniform_search
from lnjax.neighborhood.optimizer import make_optimizer, norm_gradient, relative_gain, step_gradient
from lnjax.neighborhood.problem import CONVERGED, log_volume, make_problem, zero_pixels
from lnjax.neighborhood.sensitivity import fixed_weights, layer_sensitivity, sensitivity_weights
from lnjax.verify.verdict import Status, Verdict

# --------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny():
    """A random dmnist_tiny network, an image, a layer map around a square object, a top-2 spec."""
    model = models.get_model("dmnist_tiny", 10)
    params = model.init_params(jax.random.key(0))
    view = models.layer_view(model, params)
    rng = np.random.default_rng(0)
    x = (rng.random((64, 64, 1)) < 0.1).astype(np.float32) * rng.random((64, 64, 1)).astype(np.float32)
    mask = np.zeros((64, 64), bool)
    mask[20:30, 40:50] = True
    layers = NL.layer_map(mask, max_layers=6)
    z = np.asarray(models.apply_layers(view, jnp.asarray(x)))
    spec = V.TopK(int(np.argmax(z)), 2)
    return view, make_problem(x, layers, spec)


class FakeOracle:
    """Robust iff Σ_d a_d ε_d < 1 − band; UNKNOWN in the band; NOT_ROBUST beyond. Records answers."""

    def __init__(self, a, band=0.3, problem=None):
        self.a, self.band, self.problem, self.answers = np.asarray(a), band, problem, []

    def eps_of(self, lo, hi):
        layers = self.problem.layers
        half = np.asarray(hi - lo)[..., 0] / 2  # the test image is 0.5 everywhere: no clipping
        return np.array([half[layers == d].max() for d in range(self.problem.num_layers)])

    def __call__(self, key, lo, hi, spec):
        eps = self.eps_of(lo, hi)
        s = float(self.a @ eps)
        status = Status.ROBUST if s < 1 - self.band else Status.UNKNOWN if s < 1 else Status.NOT_ROBUST
        self.answers.append((eps, status))
        return Verdict(status=status)


# ------------------------------------------------------------------------------------ pure pieces


def test_norms_and_step_gradient():
    sizes = np.array([10, 20, 30])
    eps = np.array([0.1, 0.2, 0.0])
    assert log_volume(eps, sizes) == pytest.approx(10 * np.log(0.1) + 20 * np.log(0.2) + 30 * np.log(1e-6))
    np.testing.assert_allclose(norm_gradient(eps, sizes, "logvol"), sizes)
    np.testing.assert_allclose(norm_gradient(eps, sizes, "linear"), sizes * eps)
    n, r = np.array([1.0, 1.0]), np.array([-3.0, 0.0])
    g = step_gradient(n, r, 0.5)
    np.testing.assert_allclose(g, n + 0.5 * np.sqrt(2) / 3 * r)
    np.testing.assert_allclose(step_gradient(n, np.zeros(2), 0.5), n)


def test_zero_layers_are_counted_not_floored():
    sizes, eps = np.array([10, 20, 30]), np.array([0.1, 0.2, 0.0])
    assert log_volume(eps, sizes, floor=None) == pytest.approx(10 * np.log(0.1) + 20 * np.log(0.2))
    assert zero_pixels(eps, sizes) == 30 and zero_pixels(np.ones(3), sizes) == 0
    assert log_volume(np.zeros(3), sizes, floor=None) == -np.inf  # an empty box never looks large


def test_relative_gain():
    sizes = np.array([1.0, 3.0])
    # log-volume: the growth of the geometric-mean ε; ×2 on every layer is a gain of 1.
    assert relative_gain([0.1, 0.1], [0.2, 0.2], sizes, "logvol") == pytest.approx(1.0)
    assert relative_gain([0.1, 0.1], [0.1, 0.1 * 2 ** (4 / 3)], sizes, "logvol") == pytest.approx(1.0)
    assert relative_gain([0.1, 0.2], [0.1, 0.2], sizes, "logvol") == 0.0
    assert relative_gain([0.1, 0.1], [0.2, 0.1], sizes, "linear") == pytest.approx(0.25)
    assert relative_gain([0.2, 0.2], [0.1, 0.1], sizes, "linear") == pytest.approx(-0.5)


def test_shrink_weights():
    w = fixed_weights(5, near=0.2)
    assert w[0] == pytest.approx(0.2) and w[-1] == pytest.approx(1.0) and np.all(np.diff(w) > 0)
    sens = layer_sensitivity(np.array([[1.0, 3.0], [0.0, 0.0]]), np.array([[0, 0], [1, 1]]), 2)
    np.testing.assert_allclose(sens, [2.0, 0.0])
    ins = sensitivity_weights(sens, orientation="insensitive", floor=0.25)
    sen = sensitivity_weights(sens, orientation="sensitive", floor=0.25)
    np.testing.assert_allclose(ins, [0.25, 1.0])  # shrink more where less sensitive (the seed's)
    np.testing.assert_allclose(sen, [1.0, 0.25])


def test_update_is_pure_and_follows_the_schedule():
    opt = make_optimizer(lr=0.5, lam=0.99, lam_decay=0.5, lam_min=0.13)
    s0 = opt.init(np.full(3, 0.01))
    sizes, w = np.array([1.0, 1.0, 1.0]), np.array([0.25, 0.5, 1.0])
    s1 = opt.update(s0, True, np.zeros(3), sizes, w)
    np.testing.assert_allclose(s0.theta, np.log(0.01))  # the input state is untouched
    np.testing.assert_allclose(s1.best_theta, s0.theta)
    np.testing.assert_allclose(s1.theta, s0.theta + 0.5)  # uniform norm gradient, step 0.5
    s2 = opt.update(s1, False, np.zeros(3), sizes, w)
    assert s2.lam == pytest.approx(0.99 * 0.5) and s2.failures == 1
    # Back to the committed ε on a weight-1 layer; 1 − w of the growth kept elsewhere.
    np.testing.assert_allclose(s2.theta - s1.best_theta, 0.5 * (1 - w))
    s3 = opt.update(s2, False, np.zeros(3), sizes, w)
    s4 = opt.update(s3, False, np.zeros(3), sizes, w)
    assert not s3.done and s4.done  # 0.99 · 0.5³ < 0.13 < 0.99 · 0.5²


# ----------------------------------------------------------------------------------- fake oracle


@pytest.mark.parametrize("shrink", ["fixed", "sensitivity"])
def test_never_returns_an_unverified_eps_with_unknown_answers(tiny, shrink):
    view, problem = tiny
    problem = problem._replace(x=np.full_like(problem.x, 0.5))
    oracle = FakeOracle(a=np.array([2.0, 4.0, 8.0, 4.0, 2.0, 1.0]), band=0.4, problem=problem)
    opt = make_optimizer(shrink=shrink, max_queries=12, pgd_steps=2, pgd_restarts=1, eps_max=0.5)
    res = opt.run(jax.random.key(1), oracle, view, problem, eps0=0.05)
    assert res.queries == len(oracle.answers) <= 12
    statuses = {s for _, s in oracle.answers}
    assert Status.UNKNOWN in statuses  # the band was hit at least once
    robust = [e for e, s in oracle.answers if s is Status.ROBUST]
    assert res.verified
    assert any(np.allclose(res.eps, e, rtol=1e-5) for e in robust)
    assert float(oracle.a @ res.eps) < 1 - 0.4
    assert res.log_volume == pytest.approx(max(log_volume(e, problem.sizes) for e in robust), abs=1e-2)


def test_runs_to_convergence_before_the_query_cap(tiny):
    view, problem = tiny
    problem = problem._replace(x=np.full_like(problem.x, 0.5))
    a = np.array([2.0, 4.0, 8.0, 4.0, 2.0, 1.0])
    oracle = FakeOracle(a=a, band=0.4, problem=problem)
    res = make_optimizer(pgd_steps=2, pgd_restarts=1, eps_max=0.5).run(
        jax.random.key(1), oracle, view, problem, eps0=0.05
    )
    assert res.stop_reason == "lambda_min" and res.converged and res.to_json()["converged"] is True
    assert res.queries < 100  # the cap (default 100) was not needed
    assert float(a @ res.eps) > 0.99 * (1 - 0.4)  # converged to the robust region's edge (0.6)
    capped = make_optimizer(pgd_steps=2, pgd_restarts=1, eps_max=0.5, max_queries=5).run(
        jax.random.key(1), FakeOracle(a=a, band=0.4, problem=problem), view, problem, eps0=0.05
    )
    assert capped.stop_reason == "max_queries" and not capped.converged
    assert capped.to_json()["converged"] is False


def test_stops_when_the_gain_is_small(tiny):
    view, problem = tiny
    problem = problem._replace(x=np.full_like(problem.x, 0.5))
    oracle = FakeOracle(a=np.array([2.0, 4.0, 8.0, 4.0, 2.0, 1.0]), band=0.0, problem=problem)
    tol, window = 0.05, 2
    opt = make_optimizer(
        pgd_steps=2, pgd_restarts=1, eps_max=0.5, gain_tol=tol, gain_window=window, scale_up=0
    )
    res = opt.run(jax.random.key(1), oracle, view, problem, eps0=0.05)
    assert res.stop_reason == "gain" and res.converged and "gain" in CONVERGED
    # Replay: the best ε after each robust answer; the search stopped at the first window whose
    # gain fell below tol, and not before.
    history, best = [], None
    for e, s in oracle.answers:
        if s is Status.ROBUST:
            if best is None or log_volume(e, problem.sizes) > log_volume(best, problem.sizes):
                best = e
            history.append(best)
    sizes = problem.sizes
    gains = [relative_gain(history[i - window], history[i], sizes) for i in range(window, len(history))]
    assert len(gains) >= 2 and gains[-1] < tol and all(g >= tol for g in gains[:-1])
    np.testing.assert_allclose(res.eps, history[-1], rtol=1e-5)


def test_nothing_robust_returns_zeros_unverified(tiny):
    view, problem = tiny
    problem = problem._replace(x=np.full_like(problem.x, 0.5))
    oracle = FakeOracle(a=np.full(6, 1e9), band=0.0, problem=problem)
    res = make_optimizer(max_queries=4, pgd_steps=2, pgd_restarts=1).run(
        jax.random.key(0), oracle, view, problem, eps0=0.1
    )
    assert not res.verified and np.all(res.eps == 0) and res.queries == 4
    base = binary_search(jax.random.key(0), oracle, problem, scale="log", tol=1.0, max_queries=5)
    assert not base.verified and np.all(base.eps == 0) and base.queries == 5


def test_baseline_finds_the_per_layer_maximum(tiny):
    view, problem = tiny
    problem = problem._replace(x=np.full_like(problem.x, 0.5))
    a = np.array([8.0, 4.0, 2.0, 2.0, 2.0, 2.0])
    oracle = FakeOracle(a=a, band=0.0, problem=problem)
    res = binary_search(jax.random.key(0), oracle, problem, scale="linear", eps_max=0.5, tol=1e-3)
    assert res.queries == 6 * queries_per_layer(scale="linear", eps_max=0.5, tol=1e-3)
    assert float(a @ res.eps) < 1
    assert res.eps[0] == pytest.approx(1 / 8, abs=1e-3)  # the first layer takes what it can alone
    assert float(a @ res.eps) > 1 - 2e-3 * a.sum()
    assert any(np.allclose(res.eps, e, atol=1e-6) for e, s in oracle.answers if s is Status.ROBUST)


def test_bisect_keeps_the_bracket_and_stops_when_asked():
    asked = []

    def holds(v):
        asked.append(v)
        return v < 0.3

    lo, hi, complete = bisect(holds, 0.0, 1.0, 0.01)
    assert complete and lo < 0.3 <= hi and hi - lo <= 0.01 and len(asked) == 7  # ⌈log2(100)⌉
    lo, hi, complete = bisect(lambda v: None if v < 0.3 else False, 0.0, 1.0, 0.01)
    assert not complete and (lo, hi) == (0.0, 0.5)


@pytest.mark.parametrize("scale", ["linear", "log"])
def test_uniform_baseline_finds_the_uniform_threshold(tiny, scale):
    _, problem = tiny
    problem = problem._replace(x=np.full_like(problem.x, 0.5))
    a = np.array([8.0, 4.0, 2.0, 2.0, 2.0, 2.0])  # robust iff Σ a_d ε < 1: ε < 1/20 when uniform
    oracle = FakeOracle(a=a, band=0.0, problem=problem)
    tol = 1e-3 if scale == "linear" else 0.01
    res = uniform_search(jax.random.key(0), oracle, problem, scale=scale, eps_max=0.5, eps_min=1e-4, tol=tol)
    assert res.verified and res.converged and res.stop_reason == "done"
    assert np.all(res.eps == res.eps[0]) and res.setup["uniform_eps"] == pytest.approx(float(res.eps[0]))
    assert float(a @ res.eps) < 1  # the reported ε was answered ROBUST
    if scale == "linear":
        assert res.eps[0] > 1 / 20 - 1e-3
    else:
        assert res.eps[0] * (1 + tol) > 1 / 20
    assert res.queries == queries_per_layer(scale=scale, eps_max=0.5, eps_min=1e-4, tol=tol)
    assert any(np.allclose(res.eps, e, atol=1e-6) for e, s in oracle.answers if s is Status.ROBUST)


def test_baseline_bad_arguments_are_one_line():
    _, problem = None, make_problem(np.zeros((4, 4)), np.zeros((4, 4), int), V.TopK(0, 2))
    for kwargs, name in [({"scale": "cubic"}, "scale"), ({"tol": 0.0}, "tol"), ({"eps_min": 2.0}, "eps_min")]:
        with pytest.raises(ValueError) as e:
            uniform_search(jax.random.key(0), None, problem, **kwargs)  # type: ignore[arg-type]
        assert (
            str(e.value).startswith(f"{name} = ") and "expected" in str(e.value) and "\n" not in str(e.value)
        )


# ---------------------------------------------------------------------------------- real verifier


def test_rl_gradient_matches_finite_differences(tiny):
    view, problem = tiny
    c, offset, k = G.spec_arrays(problem.spec, view)
    x = jnp.asarray(problem.x)
    eps = jnp.full((problem.num_layers,), 0.02, jnp.float32)
    lo, hi = NL.neighborhood_box(x, problem.layers, eps)
    res = G.pgd_in_box(jax.random.key(0), view, lo, hi, c, offset, x, k=k, steps=10, restarts=1)
    pts, ms = G.pad_points([(np.asarray(res.x), float(res.margin))], x.shape)
    g, w = G.rl_gradient(view, x, jnp.asarray(problem.layers), eps, pts, ms, c, offset, 1.0, k=k)
    np.testing.assert_allclose(np.asarray(w), [1, 0, 0, 0])
    s = np.clip((np.asarray(res.x) - problem.x) / 0.02, -1, 1)
    for d in (0, 3):
        h = 1e-3
        e2 = np.full(problem.num_layers, 0.02, np.float32)
        e2[d] += h
        x2 = np.clip(problem.x + s * np.asarray(NL.eps_per_pixel(problem.layers, e2))[..., None], 0, 1)
        fd = (float(G.margin(view, jnp.asarray(x2), c, offset, k=k)) - float(res.margin)) / h
        assert float(g[d]) == pytest.approx(fd, rel=0.05, abs=1e-2)


def test_final_eps_reverifies_robust_independently(tiny):
    view, problem = tiny
    # (no CROWN stage: its compilation alone costs ~15 s on 2 busy cores)
    verify = V.make_verifier(view=view, stages=("pgd", "milp"), time_limit=4.0)
    opt = make_optimizer(max_queries=5, pgd_steps=5, pgd_restarts=1, time_budget=60)
    res = opt.run(jax.random.key(0), verify, view, problem)
    assert res.verified and res.queries <= 5
    base = binary_search(
        jax.random.key(0), verify, problem, scale="log", eps_min=1e-3, tol=3.0, max_queries=8
    )
    assert base.verified and base.queries == 8
    fresh = V.make_verifier(view=view, stages=("milp",), time_limit=60.0)  # an independent proof
    for r in (res, base):
        lo, hi = NL.neighborhood_box(problem.x, problem.layers, r.eps)
        assert fresh(jax.random.key(7), lo, hi, problem.spec).status is Status.ROBUST
        rec = r.to_json()
        assert rec["queries"] == sum(rec["by_status"].values()) == len(rec["trail"])


def test_converged_search_ends_with_a_scale_up_line_search(tiny):
    """λ_min reached after the first failure (lam_min 0.9): the search then asks ε × (1 + δ), δ
    doubling after each ROBUST answer, then bisects the step that failed down to a factor 1.1; it
    keeps the last ROBUST one, and (1.1 at most) × that is not robust. Off (scale_up 0), the same
    search ends at its main loop's best."""
    view, problem = tiny
    problem = problem._replace(x=np.full_like(problem.x, 0.5))
    a = np.array([2.0, 4.0, 8.0, 4.0, 2.0, 1.0])
    kw = dict(pgd_steps=2, pgd_restarts=1, eps_max=0.5, lam_min=0.9, lr=2.0)
    oracle = FakeOracle(a=a, band=0.0, problem=problem)
    res = make_optimizer(**kw, scale_up=0.1).run(jax.random.key(1), oracle, view, problem, eps0=0.005)
    off = make_optimizer(**kw, scale_up=0.0).run(
        jax.random.key(1), FakeOracle(a=a, band=0.0, problem=problem), view, problem, eps0=0.005
    )
    trail = res.to_json()["trail"]
    main = [t for t in trail if "scale_up" not in t]
    assert res.stop_reason == off.stop_reason == "lambda_min"
    assert len(main) == off.queries  # the main loop is the same search
    best_main = np.asarray(off.eps)
    ups = [t for t in trail if "scale_up" in t]
    doubling = [t for t in ups if not t.get("bisect")]
    facts = res.to_json()["setup"]["scale_up"]
    assert facts["queries"] == len(ups) >= 2 and facts["factor"] > 1.0  # it gained, then stopped
    assert facts["stopped"] == "not_proved"
    assert [t["scale_up"] for t in doubling] == pytest.approx([1.1, 1.2, 1.4, 1.8, 2.6, 4.2][: len(doubling)])
    assert [t["status"] for t in doubling] == ["robust"] * (len(doubling) - 1) + ["not_robust"]
    np.testing.assert_allclose(res.eps, best_main * facts["factor"], rtol=1e-5)
    kept = [t for t in ups if t["status"] == "robust"][-1]
    np.testing.assert_allclose(res.eps, kept["eps"], rtol=1e-5)  # the last ROBUST one is kept
    assert float(a @ res.eps) < 1.0  # robust by the oracle
    # Maximal along ε up to the bisection's factor: (1 + 0.1) · ε is no longer robust, and the
    # last ask is exactly that box, for the certificate.
    assert 1.0 < facts["unproved_scale"] <= 1.1 * (1 + 1e-9)
    assert res.unproved_scale == facts["unproved_scale"] and off.unproved_scale is None
    assert float(a @ (res.eps * facts["unproved_scale"])) >= 1.0
    failed = [t for t in ups if t["status"] != "robust"]
    assert any(np.allclose(res.eps * facts["unproved_scale"], t["eps"], rtol=1e-5) for t in failed)
    # The doubling's last step (×1.4 after 1.1, 1.2, or longer) is wider than 1.1: it was bisected.
    bisected = ups[len(doubling) :]
    assert bisected and all(t["bisect"] and t["scale_up"] < doubling[-1]["scale_up"] for t in bisected)


def test_uniform_start_bisects_the_uniform_eps_and_commits_it(tiny):
    """start="uniform": from init_fraction × the PGD bracket e0 the search asks uniform ε down by
    ×0.25 until ROBUST, bisects log ε up to the last refused one to a factor 1 + start_tol, commits
    that ε (its norm bounds the result's from below) and expands from it with its weakest points."""
    view, problem = tiny
    x = np.full_like(problem.x, 0.5)
    z = np.asarray(models.apply_layers(view, jnp.asarray(x)))
    problem = problem._replace(x=x, spec=V.TopK(int(np.argmax(z)), 2))  # holds at x: a PGD bracket
    kw = dict(pgd_steps=2, pgd_restarts=1, eps_max=0.5, start="uniform", start_tol=0.05)
    probe = make_optimizer(**kw, max_queries=1).run(
        jax.random.key(3), FakeOracle(a=np.ones(6), band=0.0, problem=problem), view, problem
    )
    e0 = probe.setup["pgd_bracket"]["eps"]
    assert e0 > 1e-4  # the start's asks stay above eps_min
    base = np.array([2.0, 4.0, 8.0, 4.0, 2.0, 1.0])
    a = base / (0.1 * e0 * base.sum())  # robust iff a·ε < 1: the uniform threshold is 0.1 e0
    oracle = FakeOracle(a=a, band=0.0, problem=problem)
    res = make_optimizer(**kw).run(jax.random.key(3), oracle, view, problem)
    trail = res.to_json()["trail"]
    start = [t for t in trail if t.get("start") == "uniform"]
    assert trail[: len(start)] == start  # the start comes first
    asked = [t["eps"][0] for t in start]
    assert all(np.allclose(t["eps"], t["eps"][0]) for t in start)  # uniform boxes
    assert asked[:2] == pytest.approx([0.25 * e0, 0.0625 * e0])
    assert [t["status"] for t in start[:2]] == ["not_robust", "robust"]
    facts = res.setup["uniform_start"]
    u = facts["eps"]
    assert facts["queries"] == len(start) == 2 + 5  # ⌈log2(ln 4 / ln 1.05)⌉ = 5 bisections of [e0/16, e0/4]
    assert 0.1 * e0 / 1.05 <= u < 0.1 * e0  # within the tolerance below the threshold
    proved = [t for t in start if t["status"] == "robust"]
    assert max(t["eps"][0] for t in proved) == pytest.approx(u, rel=1e-6)
    # the RL gradient came from the committed ε's own query, and only robust queries carry one
    assert "rl_grad" in next(t for t in proved if t["eps"][0] == pytest.approx(u, rel=1e-6))
    assert all(t["status"] == "robust" for t in trail if "rl_grad" in t)
    assert res.verified and float(a @ res.eps) < 1.0
    assert res.log_volume >= log_volume(np.full(6, u), problem.sizes) - 1e-3
    # Capped right after the start: the result is the uniform ε itself, verified.
    capped = make_optimizer(**kw, max_queries=len(start)).run(
        jax.random.key(3), FakeOracle(a=a, band=0.0, problem=problem), view, problem
    )
    assert capped.verified and capped.stop_reason == "max_queries"
    np.testing.assert_allclose(capped.eps, np.full(6, u), rtol=1e-5)
    # The default start (pgd) asks no uniform start.
    plain = make_optimizer(**{**kw, "start": "pgd"}).run(
        jax.random.key(3), FakeOracle(a=a, band=0.0, problem=problem), view, problem
    )
    assert "uniform_start" not in plain.setup and not any("start" in t for t in plain.to_json()["trail"])
