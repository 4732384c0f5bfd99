"""lnjax.neighborhood.certificate: proof and attack scales bracket known thresholds; UNKNOWN is never
a proof; an attack point counts only when the model confirms it in the box."""

import time

import jax
import numpy as np
import pytest

from lnjax import verify as V
from lnjax.neighborhood import certificate as C
from lnjax.neighborhood.problem import make_problem
from lnjax.verify.verdict import Status, Verdict

A = np.array([4.0, 2.0, 2.0, 0.2])  # robust iff Σ a_d ε_d < 1 − BAND; attacked iff Σ a_d ε_d ≥ 1
BAND = 0.3  # [1 − BAND, 1): UNKNOWN (neither proved nor attackable)
EPS0 = np.array([0.025, 0.05, 0.05, 0.0])  # A · EPS0 = 0.3; the last layer at ε = 0
TOL = 0.02


def problem():
    layers = np.repeat(np.arange(4), 16).reshape(8, 8)  # 16 pixels per layer
    return make_problem(np.full((8, 8), 0.5, np.float32), layers, V.TopK(0, 2))


def eps_of(lo, hi, layers):
    """The per-layer ε of a box around 0.5 (clipping caps it at 0.5)."""
    half = np.maximum(0.5 - np.asarray(lo), np.asarray(hi) - 0.5)[..., 0]
    return np.array([half[layers == d].max() for d in range(4)])


class FakeVerifier:
    def __init__(self, layers, band=BAND, delay=0.0):
        self.layers, self.band, self.delay, self.keys = layers, band, delay, []

    def __call__(self, key, lo, hi, spec):
        time.sleep(self.delay)
        self.keys.append(np.asarray(jax.random.key_data(key)).tobytes())
        s = float(A @ eps_of(lo, hi, self.layers))
        status = Status.ROBUST if s < 1 - self.band else Status.UNKNOWN if s < 1 else Status.NOT_ROBUST
        return Verdict(status=status)


def fake_falsifier(layers, offset=0.0):
    """The attack pushes every pixel to the box's upper face (exact for this model); the model's
    margin is 1 − Σ_d a_d max_{p ∈ l_d} |x_p − 0.5|. `offset` moves the attack's point out of the box."""

    def margin(x):
        dev = np.abs(np.asarray(x)[..., 0] - 0.5)
        return 1.0 - float(sum(A[d] * dev[layers == d].max() for d in range(4)))

    return C.Falsifier(attack=lambda key, lo, hi: np.asarray(hi) + offset, margin=margin)


def certify(verifier=None, falsifier=None, eps=EPS0, **kw):
    p = problem()
    verifier = verifier or FakeVerifier(p.layers)
    falsifier = falsifier or fake_falsifier(p.layers)
    return C.certify_maximality(jax.random.key(0), verifier, p, eps, falsifier, **{"rel_tol": TOL, **kw})


def check_brackets(cert):
    """The certificate's claims against the known thresholds of the fake verifier and model."""
    # Along the direction: proofs hold below (1 − BAND) / 0.3, attacks succeed from 1 / 0.3.
    assert A @ (cert.s_proved * EPS0) < 1 - BAND  # a proof, not an UNKNOWN
    assert cert.s_proved * (1 + TOL) >= (1 - BAND) / 0.3  # within the tolerance of the threshold
    assert A @ (cert.s_attack * EPS0) >= 1 and cert.s_attack <= (1 + TOL) / 0.3
    assert cert.gap == pytest.approx(cert.s_proved / cert.s_attack) and cert.gap <= 1
    assert A @ eps_of(cert.witness, cert.witness, np.repeat(np.arange(4), 16).reshape(8, 8)) >= 1
    assert cert.gap == pytest.approx(1 - BAND, rel=2.5 * TOL)
    # Per layer: ε_d proved up to EPS0_d + (1 − BAND − 0.3) / a_d, attacked from EPS0_d + 0.7 / a_d.
    for d in range(3):
        proof, attack = EPS0[d] + 0.4 / A[d], EPS0[d] + 0.7 / A[d]
        assert cert.eps_proved[d] < proof <= cert.eps_proved[d] * (1 + TOL)
        assert cert.eps_attacked[d] >= attack >= cert.eps_attacked[d] / (1 + TOL)
    # Layer 3 (ε = 0, a = 0.2): the whole pixel range adds only 0.1 — proved to the cap, never attacked.
    assert cert.eps_proved[3] == 1.0 and cert.eps_attacked[3] is None
    assert cert.layer_notes[3] == "proved up to eps_cap"


def test_brackets_the_known_thresholds():
    verifier = FakeVerifier(problem().layers)
    cert = certify(verifier)
    check_brackets(cert)
    assert cert.complete and cert.stop_reason == "done" and not cert.contradiction and cert.reason == ""
    assert cert.s_ceiling == pytest.approx(1 / 0.025)
    assert cert.queries == len(verifier.keys) == sum(t["kind"] == "verify" for t in cert.trail)
    assert cert.attack_calls == sum(t["kind"] == "attack" for t in cert.trail)
    assert cert.memo_hits >= 3  # each layer's start is the direction's s = 1 box
    assert len(set(verifier.keys)) == len(verifier.keys)  # one folded key per query
    rec = cert.to_json()
    assert rec["gap"] == cert.gap and rec["layer_gap"][3] is None
    assert rec["layer_gap"][0] == pytest.approx(cert.eps_proved[0] / cert.eps_attacked[0])
    again = certify(FakeVerifier(problem().layers))
    assert [t.get("scale", t.get("eps_d")) for t in again.trail] == [
        t.get("scale", t.get("eps_d")) for t in cert.trail
    ]


def test_unknown_is_never_a_proof(monkeypatch):
    # The deliberate bug: UNKNOWN (a time-out) counted as proved. The brackets' checks catch it.
    monkeypatch.setattr(C, "proved", lambda verdict: verdict.status is not Status.NOT_ROBUST)
    with pytest.raises(AssertionError):
        check_brackets(certify())


def test_eps_not_proved_reports_none_with_a_reason():
    eps = EPS0 * (0.7 / 0.3)  # A · eps = 0.7: UNKNOWN at s = 1
    cert = certify(eps=eps)
    assert cert.s_proved is None and cert.gap is None and cert.reason == "eps itself was not proved"
    assert A @ (cert.s_attack * eps) >= 1 and cert.s_attack <= (1 + TOL) / 0.7  # the attack still brackets
    assert all(cert.eps_proved[d] is None for d in range(3))
    assert cert.layer_notes[0] == "its final eps was not proved"


def test_a_proof_from_the_search_is_not_asked_again():
    # A clock-stopped verifier need not decide the same box twice: here it never proves anything
    # again (UNKNOWN everywhere), as branch-and-bound on a loaded machine may not.
    p = problem()
    never = lambda key, lo, hi, spec: Verdict(status=Status.UNKNOWN)  # noqa: E731
    cert = certify(verifier=never, proved=True)
    assert cert.s_proved == 1.0 and cert.reason == "" and cert.gap == pytest.approx(1 / cert.s_attack)
    assert A @ (cert.s_attack * EPS0) >= 1  # the attack side is unchanged
    assert all(t.get("scale") != 1.0 for t in cert.trail if t["kind"] == "verify")  # not asked
    assert cert.eps_proved[:3] == list(EPS0[:3])  # each layer's start is the proved ε
    # Without the search's proof the same verifier proves nothing (the test above would catch a
    # `proved` that is ignored), and a real verifier's answers are unchanged by it.
    assert certify(verifier=never).s_proved is None
    check_brackets(certify(FakeVerifier(p.layers), proved=True))


def test_the_search_s_unproved_scale_replaces_the_doubling():
    # The search proved eps and asked 1.02 · eps without a proof (its scale-up's last query): the
    # bracket [1, 1.02] is already within the tolerance TOL = 0.02 (log 1.02 is 1 ulp above
    # log1p(0.02): a bisection that compared exactly asked once more), so no query (the
    # doubling it replaces asks 2, then bisects). A `fails` that boundary ignored would ask again.
    eps = EPS0 * (0.69 / 0.3)  # A · eps = 0.69: proved; 1.02 · eps: 0.704, UNKNOWN
    verifier = FakeVerifier(problem().layers)
    cert = certify(verifier, eps=eps, proved=True, unproved_scale=1.02, per_layer=False)
    assert cert.queries == len(verifier.keys) == 0 and cert.s_proved == 1.0
    assert A @ (cert.s_attack * eps) >= 1 and cert.s_attack <= (1 + TOL) / 0.69  # attacks from 1.02
    assert min(t["scale"] for t in cert.trail if t["kind"] == "attack" and "check" not in t) >= 1.02
    wide = certify(FakeVerifier(problem().layers), proved=True, unproved_scale=2.4, per_layer=False)
    asked = [t["scale"] for t in wide.trail if t["kind"] == "verify"]
    assert asked and max(asked) < 2.4 and 4.0 not in asked  # doubles up to it, bisects below it
    assert wide.s_proved == pytest.approx(certify(per_layer=False).s_proved, rel=2 * TOL)
    assert A @ (wide.s_proved * EPS0) < 1 - BAND


def test_an_attack_point_outside_the_box_is_no_counterexample():
    p = problem()
    cert = certify(falsifier=fake_falsifier(p.layers, offset=0.01), per_layer=False)
    assert cert.s_attack is None and cert.attack_calls > 1 and cert.gap is None
    assert cert.s_proved is not None and A @ (cert.s_proved * EPS0) < 1 - BAND
    assert cert.layer_notes == ["not examined"] * 4


def test_a_counterexample_at_the_proved_scale_is_a_contradiction():
    p = problem()
    always = C.Falsifier(attack=lambda key, lo, hi: np.asarray(hi), margin=lambda x: -1.0)  # disagrees
    cert = certify(falsifier=always, per_layer=False)
    assert cert.contradiction and cert.to_json()["contradiction"] is True
    assert not certify(falsifier=fake_falsifier(p.layers), per_layer=False).contradiction


def test_time_budget_cuts_the_search_and_keeps_it_sound():
    verifier = FakeVerifier(problem().layers, delay=0.02)
    cert = certify(verifier, time_budget=0.07)
    assert cert.stop_reason == "time_budget" and not cert.complete
    assert 1 <= cert.queries <= 5
    if cert.s_proved is not None:
        assert A @ (cert.s_proved * EPS0) < 1 - BAND


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"rel_tol": 0.0}, "rel_tol"),
        ({"eps_cap": -1.0}, "eps_cap"),
        ({"zero_start": 2.0}, "zero_start"),
        ({"time_budget": 0.0}, "time_budget"),
        ({"eps": np.array([0.1, -0.1, 0.0, 0.0])}, "eps"),
        ({"eps": np.array([0.1, 0.1])}, "eps"),
        ({"unproved_scale": 1.0, "proved": True}, "unproved_scale"),
        ({"unproved_scale": 1.5}, "unproved_scale"),  # without the search's proof of eps
    ],
)
def test_bad_arguments_are_one_line(kwargs, name):
    with pytest.raises(ValueError) as e:
        certify(**kwargs)
    msg = str(e.value)
    assert msg.startswith(f"{name} = ") and "expected" in msg and "\n" not in msg


def test_boundary_doubles_halves_and_bisects():
    asked = []

    def below(t):
        def holds(v):
            asked.append(v)
            return v < t

        return holds

    b = C.boundary(below(5.0), start=1.0, ceiling=100.0, rel_tol=0.01)
    assert b.complete and b.holds < 5.0 <= b.fails <= b.holds * 1.01 and asked[:4] == [1.0, 2.0, 4.0, 8.0]
    assert C.boundary(below(500.0), start=1.0, ceiling=100.0, rel_tol=0.01) == (100.0, None, True)
    b = C.boundary(below(0.1), start=1.0, ceiling=100.0, rel_tol=0.01, floor=1e-3)
    assert b.holds < 0.1 <= b.fails <= b.holds * 1.01
    assert C.boundary(below(0.1), start=1.0, ceiling=100.0, rel_tol=0.01) == (None, 1.0, True)  # no floor
    asked.clear()
    b = C.boundary(below(0.5), start=1.0, ceiling=100.0, rel_tol=0.01, known=0.3)
    assert 0.3 not in asked and b.holds < 0.5 <= b.fails  # the known end is not asked
    asked.clear()
    b = C.boundary(below(5.0), start=1.0, ceiling=100.0, rel_tol=0.01, fails=3.0)
    assert asked[:2] == [1.0, 2.0] and max(asked) < 3.0 and b.fails == 3.0 and b.holds < 3.0


def tiny_view(classes: int = 3):
    """A 16-8-`classes` ReLU network on 4×4 inputs."""
    from lnjax import models

    model = models.Sequential(
        specs=(models.FlattenSpec(), models.DenseSpec(8), models.ReLUSpec(), models.DenseSpec(classes)),
        input_shape=(4, 4, 1),
    )
    return models.layer_view(model, model.init_params(jax.random.key(0)))


def test_make_falsifier_on_a_tiny_network():
    """The default falsifier (box PGD, 32 restarts): points in the box, margins from the model."""
    import jax.numpy as jnp

    from lnjax import models

    view = tiny_view()
    x = jnp.full((4, 4, 1), 0.5)
    target = int(jnp.argmax(models.apply_layers(view, x)))
    spec = V.Argmax(target)
    f = C.make_falsifier(view, spec, steps=3)  # 32 restarts (the default)
    lo, hi = np.zeros((4, 4, 1), np.float32), np.ones((4, 4, 1), np.float32)
    x_adv = f.attack(jax.random.key(1), lo, hi)
    assert x_adv.shape == (4, 4, 1) and np.all(x_adv >= lo) and np.all(x_adv <= hi)
    m = float(spec.margin(models.apply_layers(view, jnp.asarray(x_adv))))
    assert f.margin(x_adv) == pytest.approx(m, abs=1e-5)
    assert f.margin(x_adv) <= f.margin(np.asarray(x))  # the attack does not end above its start
    with pytest.raises(ValueError, match="restarts = 0"):
        C.make_falsifier(view, spec, restarts=0)
    with pytest.raises(ValueError, match="odi_steps = -1"):
        C.make_falsifier(view, spec, odi_steps=-1)


def test_make_falsifier_passes_its_odi_steps():
    """The falsifier's random starts are output-diversified (default 2 steps) or uniform (0): its
    point is the box PGD's with the same key and ODI setting, and the two settings differ."""
    import jax.numpy as jnp

    from lnjax import models
    from lnjax.attacks import view_box_pgd
    from lnjax.neighborhood import gradients as G

    view = tiny_view()
    spec = V.Argmax(int(jnp.argmax(models.apply_layers(view, jnp.full((4, 4, 1), 0.5)))))
    c, offset, k = G.spec_arrays(spec, view)
    lo, hi = jnp.zeros((4, 4, 1)), jnp.ones((4, 4, 1))
    key = jax.random.key(2)
    points = {}
    for odi in (0, 2):
        f = C.make_falsifier(view, spec, steps=1, restarts=4, step_size=1e-3, odi_steps=odi)
        ref = view_box_pgd(1, 4, 1e-3, odi)(key, view, lo, hi, c, offset, (lo + hi) / 2, k=k)
        points[odi] = f.attack(key, np.asarray(lo), np.asarray(hi))
        np.testing.assert_array_equal(points[odi], np.asarray(ref.x))
    assert not np.array_equal(points[0], points[2])
    default = C.make_falsifier(view, spec, steps=1, restarts=4, step_size=1e-3)
    np.testing.assert_array_equal(default.attack(key, np.asarray(lo), np.asarray(hi)), points[2])


def test_make_falsifier_adds_the_multi_targeted_attack():
    """With `targets`, the falsifier runs the untargeted box PGD (the key as given) and the
    multi-targeted one (fold_in(key, 1), target sets ranked at the box centre) and returns the point
    with the lower model margin; `targets=-1` is an error."""
    import jax.numpy as jnp

    from lnjax import models
    from lnjax.attacks import view_box_pgd
    from lnjax.attacks.pgd import target_sets, view_box_pgd_targeted
    from lnjax.neighborhood import gradients as G

    view = tiny_view(6)  # 5 rows, 2 of them must fall together to break the top-2 spec
    centre = jnp.full((4, 4, 1), 0.5)
    spec = V.TopK(int(jnp.argmax(models.apply_layers(view, centre))), 2)
    c, offset, k = G.spec_arrays(spec, view)
    lo, hi = jnp.full((4, 4, 1), 0.3), jnp.full((4, 4, 1), 0.7)
    rows = np.asarray(c) @ np.asarray(models.apply_layers(view, centre)) + np.asarray(offset)
    sets = jnp.asarray(target_sets(rows, k, 2))
    f = C.make_falsifier(view, spec, steps=2, restarts=3, step_size=0.05, odi_steps=0, targets=2)
    picked_targeted = 0
    for seed in range(6):
        key = jax.random.key(seed)
        plain = view_box_pgd(2, 3, 0.05, 0)(key, view, lo, hi, c, offset, centre, k=k).x
        other = view_box_pgd_targeted(2, 3, 0.05, 0)(
            jax.random.fold_in(key, 1), view, lo, hi, c, offset, centre, sets, k=k
        ).x
        x = f.attack(key, np.asarray(lo), np.asarray(hi))
        best = min((plain, other), key=lambda p: f.margin(np.asarray(p)))
        np.testing.assert_allclose(x, np.asarray(best), atol=1e-6)
        assert f.margin(x) <= f.margin(np.asarray(plain))
        picked_targeted += f.margin(np.asarray(other)) < f.margin(np.asarray(plain))
    assert picked_targeted > 0  # on this network the targeted point wins for some keys
    with pytest.raises(ValueError, match="targets = -1"):
        C.make_falsifier(view, spec, targets=-1)


@pytest.mark.slow
def test_real_network_certificate(tmp_path):
    """On dmnist_tiny with the real verifier: a proved ε, a PGD counterexample the model confirms."""
    import jax.numpy as jnp

    from lnjax import models
    from lnjax.neighborhood import layers as NL

    model = models.get_model("dmnist_tiny", 10)
    view = models.layer_view(model, model.init_params(jax.random.key(0)))
    rng = np.random.default_rng(0)
    x = (rng.random((64, 64, 1)) < 0.1).astype(np.float32) * rng.random((64, 64, 1)).astype(np.float32)
    mask = np.zeros((64, 64), bool)
    mask[20:30, 40:50] = True
    layers = NL.layer_map(mask, max_layers=3)
    z = np.asarray(models.apply_layers(view, jnp.asarray(x)))
    p = make_problem(x, layers, V.TopK(int(np.argmax(z)), 2))
    verify = V.make_verifier(view=view, stages=("pgd", "milp"), time_limit=5.0)
    falsifier = C.make_falsifier(view, p.spec, steps=20)
    eps = np.full(3, 1e-3)
    cert = C.certify_maximality(jax.random.key(1), verify, p, eps, falsifier, rel_tol=0.25, time_budget=300)
    assert cert.s_proved is not None and cert.s_proved >= 1 and not cert.contradiction
    assert cert.s_attack is not None and cert.gap is not None and cert.gap <= 1
    for d in range(3):  # ε itself was proved, so each layer's proof starts there; attacks lie above
        proved, attacked = cert.eps_proved[d], cert.eps_attacked[d]
        assert proved is not None and proved >= eps[d] and (attacked is None or attacked > proved)
    # The witness, re-checked independently: inside the s_attack box, and the model breaks the spec.
    lo, hi = NL.neighborhood_box(p.x, p.layers, np.minimum(cert.s_attack * eps, 1.0))
    w = cert.witness
    assert w is not None and np.all(w >= np.asarray(lo)) and np.all(w <= np.asarray(hi))
    assert float(p.spec.margin(models.apply_layers(view, jnp.asarray(w)))) <= 0
