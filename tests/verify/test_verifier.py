"""lnjax.verify.make_verifier: verdicts vs brute force, the bound chain, counterexamples, time-outs."""

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnjax import bounds as B, models
from lnjax.attacks import make_pgd_box
from lnjax.models import sequential as S
from lnjax.verify import (
    Argmax,
    BabOptions,
    BoundOptions,
    Linear,
    MilpStageOptions,
    MilpWorker,
    PgdOptions,
    Status,
    Threshold,
    TopK,
    Verifier,
    VerifierConfig,
    make_verifier,
    milp as M,
    stages as ST,
    verifier as VV,
)
from lnjax.verify.cost import CostModel
from lnjax.verify.inputs import checked_box
from lnjax.verify.reference import brute_force_min
from lnjax.verify.verdict import milp_proof


def not_minimal(t, classes=4):
    """VNN-LIB's single-conjunction form (ACAS Xu property 3): violated iff class t is minimal, i.e.
    z_t <= z_j for every j at once; holds iff some z_t - z_j > 0 (k = M: the largest row)."""
    c = np.stack([np.eye(classes)[t] - np.eye(classes)[j] for j in range(classes) if j != t])
    return Linear(c=c, offset=np.zeros(classes - 1), k=classes - 1)


SPECS = {
    "top2": lambda t: TopK(t, 2),
    "argmax": Argmax,
    "threshold": lambda t: Threshold(t, 0.05),
    "not_minimal": lambda t: not_minimal((t + 1) % 4),  # not the top class: its minimum is reachable
}


@pytest.fixture(scope="module")
def worker():
    w = MilpWorker()
    yield w
    w.close()


@functools.cache  # views are immutable: each (seed, hidden, k) is built once per session
def tiny_mlp(seed, hidden=(4, 3), k=4):
    model = models.mlp((3,), hidden, k)
    params = model.init_params(jax.random.key(seed))
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(seed + 7), p.shape), params)
    return models.layer_view(model, params)


def small_cnn(seed):
    model = S.Sequential(
        specs=(
            S.ConvSpec(4, (3, 3), (2, 2), "SAME"),
            S.ReLUSpec(),
            S.ConvSpec(6, (2, 2), (1, 1), "VALID"),
            S.ReLUSpec(),
            S.MaxPoolSpec((2, 2), (2, 2), "VALID"),
            S.FlattenSpec(),
            S.DenseSpec(5),
        ),
        input_shape=(8, 8, 1),
    )
    params = model.init_params(jax.random.key(seed))
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(seed + 99), p.shape), params)
    return models.layer_view(model, params)


def violates(spec, logits) -> bool:
    """The property fails at these logits, by its set definition (not via the margin)."""
    z = np.asarray(logits)
    if isinstance(spec, Linear):  # every row's constraint c_i · z + d_i <= 0 holds at once (k = M)
        assert spec.k == len(spec.offset)
        return bool(np.all(spec.c @ z + spec.offset <= 0))
    t = spec.target
    if isinstance(spec, TopK):
        return int(np.sum(np.delete(z, t) >= z[t])) >= spec.k
    if isinstance(spec, Argmax):
        return bool(np.any(np.delete(z, t) >= z[t]))
    return bool(z[t] <= spec.tau)


def check_verdict(view, spec, lo, hi, v, reference=None):
    """Invariants every verdict must satisfy; returns nothing."""
    for x, m in v.weakest_points:
        assert np.all(x >= lo) and np.all(x <= hi)
        assert m == pytest.approx(float(spec.margin(models.apply_layers(view, jnp.asarray(x)))), abs=1e-6)
    margins = [m for _, m in v.weakest_points]
    assert margins == sorted(margins)
    if v.status is Status.NOT_ROBUST:
        x = v.counterexample
        assert x is not None and np.all(x >= lo) and np.all(x <= hi)
        assert violates(spec, models.apply_layers(view, jnp.asarray(x)))
        assert v.stats.decided_by in ("pgd", "bab", "milp")
    else:
        assert v.counterexample is None
    if v.status is Status.ROBUST:
        assert v.proven_bound is not None and v.proven_bound >= v.stats.safety
        assert v.stats.decided_by in ("interval", "crown", "alpha_crown", "alpha_intermediate", "bab", "milp")
    if v.status is Status.UNKNOWN:
        assert v.stats.decided_by is None
    if reference is not None:
        if v.proven_bound is not None:
            assert v.proven_bound <= reference + 1e-5
        if v.best_objective is not None:
            assert v.best_objective >= reference - 1e-5
        if v.status is Status.ROBUST:
            assert reference > 0


CONFIGS = {
    "staged": dict(stages=("pgd", "crown", "alpha_crown", "milp")),
    "milp_only": dict(stages=("milp",)),
    "milp_only_highs": dict(stages=("milp",), milp=MilpStageOptions(solver=M.MilpOptions(solver="highs"))),
    "optimise": dict(stages=("crown", "milp"), milp=MilpStageOptions(mode="optimise")),
}


_REFERENCE: dict = {}


def reference_min(seed, view, lo, hi, name, spec):
    """Brute-force minimum (over the patterns the box allows), computed once per case and shared by
    the configurations."""
    key = (seed, lo.tobytes(), hi.tobytes(), name)
    if key not in _REFERENCE:
        _REFERENCE[key] = brute_force_min(view, lo, hi, spec.rows(4)).minimum
    return _REFERENCE[key]


@pytest.mark.parametrize(  # the MILP alone (CBC, HiGHS) and "optimise" (CBC's optimise mode, 12 s): CBC
    # stays in "staged", both modes and HiGHS in test_milp; slow here for the time budget
    "config",
    [
        pytest.param(c, marks=pytest.mark.slow) if c.startswith("milp_only") or c == "optimise" else c
        for c in sorted(CONFIGS)
    ],
)
def test_verdicts_agree_with_brute_force(config, worker):
    rng = np.random.default_rng(0)
    seen = set()
    for seed in range(2):
        view = tiny_mlp(seed)
        verify = make_verifier(view=view, time_limit=60, worker=worker, **CONFIGS[config])
        for eps in (0.02, 0.1, 0.3):
            x0 = rng.uniform(0.2, 0.8, 3).astype(np.float32)
            lo, hi = np.clip(x0 - eps, 0, 1), np.clip(x0 + eps, 0, 1)
            t = int(jnp.argmax(models.apply_layers(view, jnp.asarray(x0))))
            for name, make_spec in SPECS.items():
                spec = make_spec(t)
                ref = reference_min(seed, view, lo, hi, name, spec)
                v = verify(jax.random.key(seed), lo, hi, spec)
                check_verdict(view, spec, lo, hi, v, ref)
                # Complete on tiny nets: every clear case is decided, and decided right.
                if ref > 1e-3:
                    assert v.status is Status.ROBUST, (name, seed, eps, ref, v.stats)
                elif ref < -1e-3:
                    assert v.status is Status.NOT_ROBUST, (name, seed, eps, ref, v.stats)
                seen.add(v.status)
    assert seen == {Status.ROBUST, Status.NOT_ROBUST}


@jax.jit
def _bound_chain(view, lo, hi, c):
    ib = B.interval_bounds(view, lo, hi)
    cb = B.crown_bounds(view, lo, hi, base=ib)
    ab = B.alpha_crown_bounds(view, lo, hi, base=cb)
    return (
        ib,
        cb,
        ab,
        B.crown_spec_lower(view, lo, hi, c, bounds=cb),
        B.alpha_crown_spec_lower(view, lo, hi, c, bounds=ab),
    )


@pytest.mark.slow  # ~20 s, mostly compiling α-CROWN on the CNN; the fast suite keeps the chain on MLPs
def test_bound_chain_on_conv_net(worker):
    """interval ≤ CROWN ≤ α-CROWN ≤ MILP optimum ≤ best attack value, for the spec margin."""
    for seed in (1,):
        view = small_cnn(seed)
        x0 = jax.random.uniform(jax.random.key(seed), (8, 8, 1))
        t = int(jnp.argmax(models.apply_layers(view, x0)))
        for spec in (TopK(t, 2), Argmax(t)):
            rows = spec.rows(5)
            c = jnp.asarray(rows.c)
            lo, hi = B.clip_box(x0 - 0.03, x0 + 0.03)
            ib, cb, ab, crown_rows, alpha_rows = _bound_chain(view, lo, hi, c)
            chain = [M.interval_row_lower(rows, ib[-1]), np.asarray(crown_rows), np.asarray(alpha_rows)]
            lower = [float(np.sort(r + rows.offset)[rows.k - 1]) for r in chain]
            net = M.network_from_view(view)
            query = M.make_query(net, lo, hi, ab, rows, chain[2])
            r = worker.solve(net, query, M.MilpOptions(mode="optimise"), deadline=time.monotonic() + 60)
            assert r.status == "optimal"
            attack = make_pgd_box(steps=50, restarts=8)(
                jax.random.key(3),
                lambda x, spec=spec, view=view: spec.margin(models.apply_layers(view, x)),
                lo,
                hi,
            )
            values = [*lower, r.bound, r.objective, float(attack.margin)]
            assert all(a <= b + 1e-5 for a, b in zip(values, values[1:], strict=False)), values
            x_best = np.clip(r.solutions[0][0].reshape(lo.shape), lo, hi)
            assert float(spec.margin(models.apply_layers(view, jnp.asarray(x_best)))) == pytest.approx(
                r.objective, abs=1e-4
            )


def test_conv_net_verdicts_and_stats(worker):
    """Boxes built to be decided by each stage in turn, cheapest first."""
    view = small_cnn(3)
    verify = make_verifier(view=view, time_limit=60, worker=worker)
    x0 = jax.random.uniform(jax.random.key(4), (8, 8, 1))
    t = int(jnp.argmax(models.apply_layers(view, x0)))
    expected = {0.0005: "interval", 0.003: "crown", 0.005: "bab", 0.3: "pgd"}
    for eps, stage in expected.items():
        v = verify(jax.random.key(0), x0 - eps, x0 + eps, TopK(t, 2))
        lo, hi = B.clip_box(x0 - eps, x0 + eps)
        check_verdict(view, TopK(t, 2), np.asarray(lo), np.asarray(hi), v)
        assert v.stats.decided_by == stage, (eps, v.stats)
        assert v.status is (Status.NOT_ROBUST if stage == "pgd" else Status.ROBUST)
        assert v.stats.time_s["total"] >= sum(s for k, s in v.stats.time_s.items() if k != "total") - 1e-6
        assert v.to_json()["status"] == v.status.value
        if stage != "pgd":
            assert len(v.stats.unstable["interval"]) == 2  # two ReLU layers
        if stage == "bab":  # α-CROWN falls short; branch-and-bound (its root is a MILP leaf) decides
            assert v.stats.bab["domains"] >= 1 and v.stats.bab["open_at_end"] == 0
            assert set(v.stats.time_s) >= {"pgd", "interval", "crown", "alpha_crown", "bab"}


@pytest.mark.parametrize("limit", [None, 2.0, 600.0])
def test_warm_up_query_is_capped(monkeypatch, limit):
    """warm_up's one whole query compiles the eager ops around the stages; it gets at most
    WARM_UP_QUERY_S, so a hard warm-up box never runs a whole query (or, without a time limit, an
    unbounded one)."""
    budgets = []

    class Spy(ST.QueryContext):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            budgets.append(self.deadline - self.t_start)

    monkeypatch.setattr(VV, "QueryContext", Spy)
    verify = make_verifier(tiny_mlp(0), stages=("crown",), time_limit=limit)
    x0 = jnp.full((3,), 0.5)
    verify.warm_up(x0 - 0.1, x0 + 0.1, Argmax(0))
    # deadline − t_start: exact only up to the rounding of t_start + budget (t_start is a clock reading)
    assert budgets == [pytest.approx(min(limit or math.inf, VV.WARM_UP_QUERY_S), abs=1e-6)]
    verify(jax.random.key(0), x0 - 0.1, x0 + 0.1, Argmax(0))  # a real query keeps the config's budget
    assert budgets[1] == pytest.approx(math.inf if limit is None else limit, abs=1e-6)


@pytest.mark.slow  # ~13 s: two verifiers per worker kind
def test_quick_pgd_chunks_and_warm_up(worker):
    """Quick PGD on or off, any CROWN chunk size: the same verdicts; warm_up compiles without deciding."""
    view = small_cnn(3)
    x0 = jax.random.uniform(jax.random.key(4), (8, 8, 1))
    t = int(jnp.argmax(models.apply_layers(view, x0)))
    spec = TopK(t, 2)
    margins = []
    for quick, chunk in ((0, 1), (10, 32)):  # (10, 32): the defaults, compiled by the other tests too
        verify = make_verifier(
            view=view,
            stages=("pgd", "crown", "alpha_crown", "milp"),
            time_limit=60,
            worker=worker,
            pgd=PgdOptions(quick_steps=quick),
            bounds=BoundOptions(chunk=chunk),
        )
        assert verify.warm_up(x0 - 0.01, x0 + 0.01, spec) >= 0.0
        clear = verify(jax.random.key(0), x0 - 0.3, x0 + 0.3, spec)
        assert clear.status is Status.NOT_ROBUST and clear.stats.decided_by == "pgd"
        small = verify(jax.random.key(0), x0 - 0.0005, x0 + 0.0005, spec)
        assert small.status is Status.ROBUST and small.stats.decided_by == "interval"
        # Built to need the MILP: interval, CROWN and α-CROWN all fall short of a proof here.
        mid = verify(jax.random.key(0), x0 - 0.005, x0 + 0.005, spec)
        lo, hi = B.clip_box(x0 - 0.005, x0 + 0.005)
        check_verdict(view, spec, np.asarray(lo), np.asarray(hi), mid)
        assert mid.status is Status.ROBUST and mid.stats.decided_by == "milp", mid.stats
        assert mid.stats.margin_lower["crown"] < mid.stats.safety <= mid.proven_bound
        margins.append(mid.stats.margin_lower["crown"])
    assert np.ptp(margins) < 1e-4  # the chunk size does not change CROWN


@pytest.mark.slow  # wall-clock budgets on a 64×64 CNN: not in the fast suite
def test_timeout_is_unknown_and_within_budget(worker, monkeypatch):
    """The DOUBLE-MNIST CNN at init (zero biases: thousands of unstable ReLUs), MILP only."""
    model = models.get_model("dmnist_cnn")
    view = models.layer_view(model, model.init_params(jax.random.key(0)))
    x0 = jax.random.uniform(jax.random.key(1), (64, 64, 1)) * 0.5
    t = int(jnp.argmax(models.apply_layers(view, x0)))
    verify = make_verifier(view=view, stages=("milp",), time_limit=1.0, worker=worker)
    verify(jax.random.key(0), x0 - 0.02, x0 + 0.02, TopK(t, 2))  # compile
    budget = 2.5
    verify = make_verifier(view=view, stages=("milp",), time_limit=budget, worker=worker)
    t0 = time.monotonic()
    v = verify(jax.random.key(0), x0 - 0.02, x0 + 0.02, TopK(t, 2))
    elapsed = time.monotonic() - t0
    # CBC's own limit usually stops it first, with most of the budget used (not 60 % of it, as
    # before); on a loaded machine its root LP here can overrun the reserve, and the worker is killed ...
    assert v.status is Status.UNKNOWN and v.stats.milp_status in ("timeout", "no_solution"), v.stats
    assert v.proven_bound is None or v.proven_bound < v.stats.safety
    assert 0.6 * budget < elapsed < budget + 0.3, elapsed
    # ... also when told to run 5× past the budget (the worker caps it before the deadline) ...
    verify = make_verifier(
        view=view,
        stages=("milp",),
        time_limit=budget,
        milp=MilpStageOptions(time_fraction=5.0),
        worker=worker,
    )
    t0 = time.monotonic()
    v = verify(jax.random.key(0), x0 - 0.02, x0 + 0.02, TopK(t, 2))
    elapsed = time.monotonic() - t0
    assert v.status is Status.UNKNOWN and v.stats.milp_status in ("timeout", "no_solution"), v.stats
    assert elapsed < budget + 0.3, elapsed
    # ... and a backend that overruns anyway (here: asked to stop long after the deadline) is killed.
    monkeypatch.setattr(M.worker, "RESERVE_S", -1000.0)
    t0 = time.monotonic()
    v = verify(jax.random.key(0), x0 - 0.02, x0 + 0.02, TopK(t, 2))
    elapsed = time.monotonic() - t0
    assert v.status is Status.UNKNOWN and v.stats.milp_status == "timeout"
    assert elapsed < budget + 0.3, elapsed


def test_no_time_left_is_unknown_never_robust(worker):
    """A case built so that only the MILP proves it: with no budget the answer is UNKNOWN."""
    view = tiny_mlp(3, hidden=(6, 6))
    x0 = np.random.default_rng(3).uniform(0.2, 0.8, 3).astype(np.float32)
    spec = Argmax(int(jnp.argmax(models.apply_layers(view, jnp.asarray(x0)))))
    lo, hi = x0 - 0.1, x0 + 0.1
    full = make_verifier(view=view, stages=("crown", "milp"), time_limit=60, worker=worker)
    v = full(jax.random.key(0), lo, hi, spec)
    assert v.status is Status.ROBUST and v.stats.decided_by == "milp", v.stats
    assert v.stats.margin_lower["crown"] <= v.stats.safety and v.stats.binaries > 0
    starved = make_verifier(view=view, stages=("crown", "milp"), time_limit=1e-9, worker=worker)
    u = starved(jax.random.key(0), lo, hi, spec)
    assert u.status is Status.UNKNOWN and u.stats.decided_by is None
    # The clock is checked before each stage after the interval bounds: neither CROWN nor the MILP starts.
    assert u.stats.notes == ["time limit reached after interval"] and u.stats.milp_status is None
    # A per-query budget replaces the config's for that query only (the same verifier, no rebuild).
    u = full(jax.random.key(0), lo, hi, spec, time_limit=1e-9)
    assert u.status is Status.UNKNOWN and u.stats.notes == ["time limit reached after interval"]
    assert full(jax.random.key(0), lo, hi, spec).status is Status.ROBUST
    with pytest.raises(ValueError, match="time_limit = -1; expected a finite number > 0"):
        full(jax.random.key(0), lo, hi, spec, time_limit=-1)
    # Too many unstable ReLUs for the MILP (here: any): UNKNOWN without a solve.
    capped = make_verifier(
        view=view, stages=("crown", "milp"), milp=MilpStageOptions(max_unstable=0), worker=worker
    )
    u = capped(jax.random.key(0), lo, hi, spec)
    assert u.status is Status.UNKNOWN and u.stats.milp_status is None
    assert any("milp not started" in n for n in u.stats.notes)


def test_config_and_keyword_overrides_build_the_same_verifier(worker):
    view = tiny_mlp(1)
    x0 = np.full(3, 0.5, np.float32)
    spec = Argmax(int(jnp.argmax(models.apply_layers(view, jnp.asarray(x0)))))
    config = VerifierConfig(stages=("pgd", "crown", "milp"), time_limit=None, pgd=PgdOptions(restarts=2))
    by_config = make_verifier(view, config, worker=worker)
    by_keywords = make_verifier(
        view=view, stages=("pgd", "crown", "milp"), time_limit=None, pgd=PgdOptions(restarts=2)
    )
    assert isinstance(by_config, Verifier) and by_config.verify is by_config[0]
    for eps in (0.01, 0.2):
        a = by_config(jax.random.key(0), x0 - eps, x0 + eps, spec)
        b = by_keywords.verify(jax.random.key(0), x0 - eps, x0 + eps, spec)
        assert (a.status, a.proven_bound, a.best_objective) == (b.status, b.proven_bound, b.best_objective)


def test_argument_validation():
    view = tiny_mlp(0)
    with pytest.raises(ValueError, match="verifier.stages"):
        make_verifier(view=view, stages=("pgd", "lp"))
    with pytest.raises(ValueError, match="verifier.milp.mode"):
        make_verifier(view=view, milp=MilpStageOptions(mode="fast"))
    with pytest.raises(ValueError, match="verifier.pgd.restarts = 0"):
        make_verifier(view, VerifierConfig(), pgd=PgdOptions(restarts=0))
    with pytest.raises(TypeError, match="grouped"):  # the flat names of before: a pointer to the groups
        make_verifier(view, bab_batch=8)
    with pytest.raises(TypeError):
        make_verifier(view=view, no_such_option=1)
    verify = make_verifier(view=view, stages=("pgd",))
    with pytest.raises(ValueError, match="empty box"):
        verify(jax.random.key(0), jnp.full(3, 0.6), jnp.full(3, 0.4), Argmax(0))
    with pytest.raises(ValueError, match="smaller than the number of classes"):
        verify(jax.random.key(0), jnp.full(3, 0.4), jnp.full(3, 0.6), TopK(0, 4))


# ----------------------------------------------------------------- bad input (issue 15, item 6)


@pytest.fixture(scope="module")
def view0():
    """A tiny MLP (3 inputs, 4 classes) for the bad-input cases: they raise before any stage compiles."""
    return tiny_mlp(0)


class NeverSolve:
    """A MILP worker that fails the test if a query ever reaches it."""

    def solve(self, *args, **kwargs):
        raise AssertionError("a bad box reached the MILP")

    def start(self):
        raise AssertionError("a bad box reached the MILP worker")


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize(
    "options, fragment",
    [
        (lambda: dict(atol=-1), "verifier.atol = -1; expected a finite number ≥ 0"),
        (
            lambda: dict(pgd=PgdOptions(step_size=math.nan)),
            "verifier.pgd.step_size = nan; expected a finite number > 0",
        ),
        (
            lambda: dict(bounds=BoundOptions(alpha_lr=-1)),
            "verifier.bounds.alpha_lr = -1; expected a finite number > 0",
        ),
        (lambda: dict(time_limit=-5.0), "verifier.time_limit = -5.0; expected a finite number > 0"),
        (lambda: dict(stages="pgd,milp"), "verifier.stages = 'pgd,milp'; expected a tuple of names"),
        (lambda: dict(bab=dict(batch=8)), "verifier.bab = {'batch': 8}; expected a BabOptions"),
    ],
    ids=["atol", "pgd_step_size", "alpha_lr", "time_limit", "stages_string", "group_not_options"],
)
def test_bad_option_is_a_value_error_at_make_verifier(view0, options, fragment):
    with pytest.raises(ValueError) as e:
        make_verifier(view0, **options())
    assert fragment in one_line(e)


def test_wrong_objects_are_type_errors_at_make_verifier(view0):
    model = models.mlp((3,), (4, 3), 4)
    for view in (model, model.init_params(jax.random.key(0)), None):
        with pytest.raises(TypeError) as e:
            make_verifier(view)
        assert "expected a LayerView (lnjax.models.layer_view(model, params))" in one_line(e)
    with pytest.raises(TypeError) as e:
        make_verifier(view0, {"time_limit": 5.0})
    assert "config is a dict; expected a VerifierConfig" in one_line(e)
    with pytest.raises(TypeError) as e:
        make_verifier(view0, time_limt=5.0)
    assert "unknown verifier options ['time_limt']" in one_line(e)


def test_non_finite_network_is_refused(view0):
    """A diverged network's bounds are NaN, and NaN bounds can make the MILP read as ROBUST."""
    ops = list(view0.ops)
    i = next(i for i, op in enumerate(ops) if isinstance(op, models.layers.Dense))
    ops[i] = ops[i].replace(bias=ops[i].bias.at[1].set(jnp.nan))
    with pytest.raises(ValueError) as e:
        make_verifier(view0.replace(ops=tuple(ops)))
    assert f"view op {i} (Dense) has non-finite parameters" in one_line(e)


@pytest.mark.parametrize("spec", [0, "top2", None, (0, 2)])
def test_wrong_spec_is_a_type_error_at_verify(view0, spec):
    verify = make_verifier(view0, worker=NeverSolve())
    lo, hi = np.full(3, 0.4, np.float32), np.full(3, 0.6, np.float32)
    for call in (lambda: verify(jax.random.key(0), lo, hi, spec), lambda: verify.warm_up(lo, hi, spec)):
        with pytest.raises(TypeError) as e:
            call()
        assert "expected a TopK, Argmax, Threshold or Linear (lnjax.specs)" in one_line(e)


BAD_BOXES = {
    # name: (x_lower, x_upper, error type, message fragment)
    "uint8_image": (
        np.array([0, 128, 255], np.uint8),
        np.array([3, 131, 255], np.uint8),
        ValueError,
        "x_lower has dtype uint8; boxes are float images in [0, 1] (scale integer images by 1/255)",
    ),
    "int_list": (
        [0, 0, 0],
        [1, 1, 1],
        ValueError,
        "x_lower has dtype int64; boxes are float images in [0, 1]",
    ),
    "float_0_255": (
        np.array([0.0, 127.0, 254.0], np.float32),
        np.array([1.0, 128.0, 255.0], np.float32),
        ValueError,
        "x_lower spans [0, 254]; boxes are float images in [0, 1] (scale 0..255 images by 1/255",
    ),
    "float_minus1_1": (
        np.full(3, -1.0, np.float32),
        np.full(3, 1.0, np.float32),
        ValueError,
        "x_lower spans [-1, -1]; boxes are float images in [0, 1]",
    ),
    "wrong_shape": (
        np.zeros(4, np.float32),
        np.ones(4, np.float32),
        ValueError,
        "x_lower has shape (4,); expected",
    ),
    "none": (None, np.ones(3, np.float32), TypeError, "x_lower = None (NoneType); expected a float array"),
    "strings": (np.zeros(3), np.array(["a", "b", "c"]), TypeError, "expected a float array of shape (3,)"),
    "reversed": (
        np.full(3, 0.6),
        np.full(3, 0.4),
        ValueError,
        "empty box: x_lower > x_upper at 3 of 3 entries",
    ),
    "inf_upper": (np.zeros(3), np.array([1.0, np.inf, 1.0]), ValueError, "x_upper has 1 non-finite"),
}


@pytest.mark.parametrize("case", sorted(BAD_BOXES))
def test_bad_box_is_refused_by_verify_and_warm_up(view0, case):
    lower, upper, error, fragment = BAD_BOXES[case]
    verify = make_verifier(view0, worker=NeverSolve())
    for call in (
        lambda: verify(jax.random.key(0), lower, upper, Argmax(0)),
        lambda: verify.warm_up(lower, upper, Argmax(0)),
    ):
        with pytest.raises(error) as e:
            call()
        assert fragment in one_line(e)


NAN_BOXES = {
    "both": lambda lo, hi: (lo.at[1].set(jnp.nan), hi.at[1].set(jnp.nan)),
    "lower_only": lambda lo, hi: (lo.at[0].set(jnp.nan), hi),
    "upper_only": lambda lo, hi: (lo, hi.at[2].set(jnp.nan)),
    "all": lambda lo, hi: (jnp.full_like(lo, jnp.nan), jnp.full_like(hi, jnp.nan)),
}
NAN_STAGES = {
    "pgd_only": ("pgd",),
    "milp_only": ("milp",),
    "bounds_only": ("crown", "alpha_crown"),
    "interval_only": (),
    "all": ("pgd", "crown", "alpha_crown", "milp"),
}


@pytest.mark.parametrize("stages", sorted(NAN_STAGES))
@pytest.mark.parametrize("nan", sorted(NAN_BOXES))
def test_nan_box_never_yields_a_verdict(view0, stages, nan):
    """Before: ROBUST (the MILP over NaN bounds was infeasible). Now no stage, no worker, no verdict."""
    x0 = jnp.full(3, 0.5)
    lower, upper = NAN_BOXES[nan](x0 - 0.01, x0 + 0.01)
    verify = make_verifier(view0, stages=NAN_STAGES[stages], worker=NeverSolve())
    for call in (
        lambda: verify(jax.random.key(0), lower, upper, TopK(0, 2)),
        lambda: verify.warm_up(lower, upper, TopK(0, 2)),
    ):
        with pytest.raises(ValueError) as e:
            call()
        assert "non-finite (NaN or inf)" in one_line(e) and "a box must be finite" in str(e.value)


def test_small_overshoot_is_clipped_not_refused(view0):
    """An ε-box around pixels near 0 and 1 leaves [0, 1] a little: clipped, as before (interval only)."""
    verify = make_verifier(view0, stages=(), worker=NeverSolve())
    over = verify(jax.random.key(0), np.array([-0.2, 0.3, 0.8]), np.array([0.2, 0.5, 1.2]), Argmax(0))
    inside = verify(jax.random.key(0), np.array([0.0, 0.3, 0.8]), np.array([0.2, 0.5, 1.0]), Argmax(0))
    assert over.stats.margin_lower["interval"] == inside.stats.margin_lower["interval"]
    assert over.status is inside.status


# ------------------------------------------------- cost predictions after a degenerate warm-up (item 1)


def test_cost_prediction_needs_a_comparable_run():
    costs = CostModel(alpha_intermediate_steps=5)
    assert costs.predict("crown", 10) is None  # never timed: the stage runs
    costs.record("crown", 0.2, 1)  # a zero-width warm-up box: no neuron to bound
    assert costs.predict("crown", 500) is None  # too far to scale up: runs, and is timed
    assert costs.predict("crown", 5) is None  # just past 4x the run's work
    assert costs.predict("crown", 4) == pytest.approx(0.8)  # exactly 4x: still comparable
    assert costs.predict("alpha_intermediate", 500) is None  # nor from CROWN's incomparable run
    costs.record("crown", 0.5, 400)  # every run replaces the estimate
    assert costs.predict("crown", 500) == pytest.approx(0.625)
    assert costs.predict("crown", 100) == pytest.approx(0.125)
    assert costs.predict("alpha_intermediate", 500) == pytest.approx(0.625 * 6)  # CROWN × (steps + 1)
    costs.record("alpha_intermediate", 3.0, 500)
    assert costs.predict("alpha_intermediate", 500) == pytest.approx(3.0)
    costs.record("crown", 0.1, 1)  # the last run counts, even after a comparable one
    assert costs.predict("crown", 500) is None
    assert costs.work("alpha_crown", (7, 9)) == 1 and costs.work("crown", (7, 9)) == 10


# tiny_mlp(3, hidden=(6, 6)): interval margin −0.32, CROWN +0.11; 5 units of CROWN work (4 unstable ReLUs
# in the second layer + the logits).
CROWN_BOX = (np.array([0.55, 0.26, 0.46], np.float32), 0.15)


class FakeClock:
    """`time` for lnjax.verify.verifier and .stages: each `monotonic()` reading advances by `step` s."""

    def __init__(self):
        self.now, self.step = 0.0, 0.0

    def monotonic(self):
        self.now += self.step
        return self.now


def test_crown_still_runs_after_a_degenerate_warm_up(monkeypatch):
    """The verify experiment warms up on a zero-width box; its CROWN pass bounds no neuron, so its time
    per unit of work was ~500x a real query's and CROWN was never started again. A fake clock makes
    that warm-up pass look slow (1 s for 1 unit) and freezes during the queries (3 s budget)."""
    view = tiny_mlp(3, hidden=(6, 6))  # as in test_no_time_left_is_unknown_never_robust: compiled once
    x0, eps = CROWN_BOX
    spec = Argmax(int(jnp.argmax(models.apply_layers(view, jnp.asarray(x0)))))
    lo, hi = x0 - eps, x0 + eps
    plain = make_verifier(view, stages=("crown",), time_limit=60.0)(jax.random.key(0), lo, hi, spec)
    assert plain.status is Status.ROBUST and plain.stats.decided_by == "crown", plain.stats
    assert plain.stats.margin_lower["interval"] <= plain.stats.safety  # interval bounds fall short
    units = CostModel.work("crown", plain.stats.unstable["interval"])
    assert units > 4  # > the 3 s budget at 1 s per unit (the old rule), and > 4x the warm-up's 1 unit

    clock = FakeClock()
    monkeypatch.setattr(VV, "time", clock)
    monkeypatch.setattr(ST, "time", clock)
    verify = make_verifier(view, stages=("crown",), time_limit=3.0)
    clock.step = 1.0
    verify.warm_up(x0, x0, spec)
    clock.step = 0.0
    v = verify(jax.random.key(0), lo, hi, spec)
    assert v.status is Status.ROBUST and v.stats.decided_by == "crown", v.stats
    assert not v.stats.notes

    # A warm-up on a box like the query's is evidence: CROWN timed at 10 s there is not started
    # within 3 s, and the query is UNKNOWN, never ROBUST.
    slow = make_verifier(view, stages=("crown",), time_limit=3.0)
    clock.step = 10.0
    slow.warm_up(lo, hi, spec)
    clock.step = 0.0
    u = slow(jax.random.key(0), lo, hi, spec)
    assert u.status is Status.UNKNOWN and u.stats.decided_by is None
    assert u.proven_bound is not None and u.proven_bound <= u.stats.safety  # the interval bound only
    assert any(n.startswith("crown not started: predicted 10.0 s") for n in u.stats.notes), u.stats.notes

    # A stage not started ends the query: spec-only α-CROWN (never timed, so not predicted) does not
    # run on the interval bounds in its place.
    both = make_verifier(
        view, stages=("crown", "alpha_crown"), bounds=BoundOptions(intermediate=False), time_limit=3.0
    )
    clock.step = 10.0
    both.warm_up(lo, hi, spec)
    clock.step = 0.0
    u = both(jax.random.key(0), lo, hi, spec)
    assert u.status is Status.UNKNOWN and set(u.stats.margin_lower) == {"interval"}, u.stats


# ------------------------------------------------------------ the stage list (issue 15, item 1)


def stage_list(**options):
    cfg = VerifierConfig(**options)
    return ST.build_stages(cfg, ST.jitted(cfg), CostModel(5), ST.LazyNetwork(tiny_mlp(0)), NeverSolve)


@pytest.mark.parametrize(
    "options, expected",
    [
        # name, clock label before it (None: not checked)
        (
            dict(stages=("pgd", "crown")),
            [("pgd_quick", None), ("interval", None), ("crown", "interval"), ("pgd", "bounds")],
        ),
        (
            dict(stages=("crown", "pgd"), pgd=PgdOptions(quick_steps=0)),
            [("pgd", None), ("interval", None), ("crown", "interval")],
        ),
        (dict(stages=()), [("interval", None)]),
        (dict(stages=("interval",)), [("interval", None)]),
        (
            dict(stages=("alpha_crown", "milp")),
            [
                ("interval", None),
                ("alpha_crown", "interval"),
                ("alpha_intermediate", "alpha_crown"),
                ("milp", "bounds"),
            ],
        ),
        (
            dict(stages=("crown", "milp"), bounds=BoundOptions(intermediate=True)),
            [("interval", None), ("crown", "interval"), ("milp", "bounds")],
        ),
        (
            dict(),
            [
                ("pgd_quick", None),
                ("interval", None),
                ("crown", "interval"),
                ("alpha_crown", "crown"),
                ("pgd", "bounds"),
                ("alpha_intermediate", "pgd"),
                ("bab", "bounds"),
                ("milp", "bounds"),
            ],
        ),
        (
            dict(bounds=BoundOptions(intermediate=False), pgd=PgdOptions(quick_steps=0)),
            [
                ("pgd", None),
                ("interval", None),
                ("crown", "interval"),
                ("alpha_crown", "crown"),
                ("bab", "bounds"),
                ("milp", "bounds"),
            ],
        ),
    ],
    ids=["pgd_crown", "no_quick", "none", "interval_listed", "alpha_milp", "no_alpha", "default", "no_late"],
)
def test_stage_list_follows_the_config(options, expected):
    """Exactly the configured stages (+ interval), in the verifier's order, each with its clock check."""
    assert [(s.name, s.after) for s in stage_list(**options)] == expected


def test_only_bound_stages_are_predicted(view0):
    """PGD, interval and MILP are never predicted (never skipped for time); bound stages ask the model."""
    cfg = VerifierConfig()
    costs = CostModel(5)
    for name in CostModel.SEEDED:
        costs.record(name, 1.0, 1)
    stages = ST.build_stages(cfg, ST.jitted(cfg), costs, ST.LazyNetwork(view0), NeverSolve)
    ctx = ST.QueryContext(
        view0,
        ST.jitted(cfg),
        cfg,
        0.0,
        jnp.full(3, 0.4),
        jnp.full(3, 0.6),
        Argmax(0).rows(4),
        ST.QueryKeys(*jax.random.split(jax.random.key(0), 3)),
    )
    ctx.stats.unstable["interval"] = (3, 2)  # 3 units of CROWN work
    predicted = {s.name: s.predict(ctx) for s in stages}
    assert predicted == {
        "pgd_quick": None,
        "interval": None,
        "crown": pytest.approx(3.0),
        "alpha_crown": None,  # never timed
        "pgd": None,
        "alpha_intermediate": pytest.approx(3.0),
        "bab": None,
        "milp": None,
    }


def test_input_domain_none_verifies_the_box_as_given(view0):
    """An imported network's box (signed inputs) is verified exactly, never clipped to [0, 1]: the
    default refuses it, input_domain=None keeps it, and a clipped verification would differ."""
    lo, hi = np.full(3, -1.0, np.float32), np.full(3, -0.2, np.float32)
    with pytest.raises(ValueError, match="input_domain"):
        make_verifier(view0, worker=NeverSolve())(jax.random.key(0), lo, hi, Argmax(0))
    verify = make_verifier(view0, stages=("pgd",), input_domain=None, worker=NeverSolve())
    for label in range(int(view0.output_shapes[-1][0])):
        v = verify(jax.random.key(0), lo, hi, Argmax(label))
        for x, _ in v.weakest_points:  # every point scored lies in the box as given
            assert np.all(x >= lo) and np.all(x <= hi)
        if v.counterexample is not None:
            assert np.all(v.counterexample < 0)
    # a box partly inside [0, 1]: the default clips it, None does not
    lo2, hi2 = np.full(3, -0.3, np.float32), np.full(3, 0.2, np.float32)
    clipped = make_verifier(view0, stages=(), worker=NeverSolve())(jax.random.key(0), lo2, hi2, Argmax(0))
    exact = make_verifier(view0, stages=(), input_domain=None, worker=NeverSolve())(
        jax.random.key(0), lo2, hi2, Argmax(0)
    )
    assert exact.proven_bound is not None and clipped.proven_bound is not None
    assert exact.proven_bound < clipped.proven_bound  # the larger box has the looser bound


class ClaimsProof:
    """A MILP worker whose every answer claims a proof (optimal, objective above the cutoff) while
    returning `x` as its solution: an encoding that disagrees with the network."""

    def __init__(self, x):
        self.x = np.asarray(x, np.float64)
        self.calls = 0

    def solve(self, net, query, options, deadline=None):
        self.calls += 1
        return M.MilpResult(
            status="optimal", objective=1.0, bound=1.0, num_binaries=2, solutions=((self.x, 1.0),)
        )

    def start(self):
        pass


@pytest.mark.parametrize("stages", [("milp",), ("bab", "milp")], ids=["milp_stage", "bab_leaf"])
def test_a_milp_proof_the_model_contradicts_is_never_robust(view0, stages):
    """The JAX model is the referee: a MILP (whole box or a BaB leaf) that claims a proof but returns a
    point the model scores at margin <= 0 yields NOT_ROBUST with that point (before: ROBUST)."""
    lo, hi = np.zeros(3, np.float32), np.ones(3, np.float32)
    xs = np.random.default_rng(0).uniform(0, 1, (2000, 3)).astype(np.float32)
    labels = np.asarray(jnp.argmax(jax.vmap(lambda x: models.apply_layers(view0, x))(jnp.asarray(xs)), -1))
    spec = Argmax(int(np.bincount(labels).argmax()))
    x_bad = xs[labels != spec.target][0]  # another class wins here: a counterexample in the box
    fake = ClaimsProof(x_bad)
    # Every domain is a leaf at once; with 4 Adam steps at lr_alpha 0.1 the root's candidate point
    # is no counterexample on this net (with 2 steps, or at 0.01, it is, and BaB ends before any leaf
    # is solved).
    bab = BabOptions(leaf_unstable=1000, steps=4, lr_alpha=0.1)
    verify = make_verifier(view0, stages=stages, bab=bab, time_limit=30, worker=fake)
    v = verify(jax.random.key(0), lo, hi, spec)
    assert fake.calls >= 1
    assert v.status is Status.NOT_ROBUST, (v.status, v.stats.notes)
    margin = float(spec.margin(models.apply_layers(view0, jnp.asarray(v.counterexample, jnp.float32))))
    assert margin <= 0


def test_float64_corners_are_rounded_outward(view0):
    """0.1 and 0.7 are not float32 numbers: the nearest float32 of 0.1 lies above it and of 0.7 below,
    so a plain cast would shrink the box; the verifier's box contains the caller's, by one step."""
    lower, upper = np.array([0.1, 0.25, 0.1]), np.array([0.7, 0.5, 0.3])  # float64
    for domain in ((0.0, 1.0), None):
        lo, hi = checked_box(view0, lower, upper, domain)
        lo, hi = np.asarray(lo), np.asarray(hi)
        assert lo.dtype == np.float32 and hi.dtype == np.float32
        assert np.all(lo.astype(np.float64) <= lower) and np.all(hi.astype(np.float64) >= upper)
        assert np.all(np.nextafter(lo, np.float32(np.inf)).astype(np.float64) > lower)  # one step only
        assert np.all(np.nextafter(hi, np.float32(-np.inf)).astype(np.float64) < upper)
        assert lo[1] == 0.25 and hi[1] == 0.5  # exact entries stay


def test_milp_proof_reads_the_trust_rules():
    """`milp_proof` per status and mode; an optimise-mode bound counts only less the relative MIP gap
    (CBC reports its objective as the bound when it stops at the gap); an LP's bound is exact."""
    safety = 1e-4
    R = M.MilpResult
    assert milp_proof(R("infeasible"), "sign", safety) == (safety, True)
    assert milp_proof(R("infeasible"), "optimise", safety) == (None, False)  # unsound input bounds
    for status in ("feasible", "timeout", "no_solution", "error"):
        assert milp_proof(R(status, objective=5.0, bound=5.0, num_binaries=3), "optimise", safety)[1] is False
    bound, holds = milp_proof(R("optimal", objective=2.0, bound=2.0, num_binaries=3), "optimise", safety)
    assert holds and bound == pytest.approx(2.0 - M.MIP_REL_GAP * 2.0, rel=0, abs=1e-12)
    bound, holds = milp_proof(R("optimal", objective=-3.0, bound=-3.0, num_binaries=3), "optimise", safety)
    assert not holds and bound == pytest.approx(-3.0 - M.MIP_REL_GAP * 3.0, rel=0, abs=1e-12)
    edge = safety * (1 + M.MIP_REL_GAP / 2)  # above the margin, but not by the gap
    assert (
        milp_proof(R("optimal", objective=edge, bound=edge, num_binaries=3), "optimise", safety)[1] is False
    )
    assert milp_proof(R("optimal", objective=edge, bound=edge, num_binaries=0), "optimise", safety) == (
        edge,
        True,
    )
    bound, holds = milp_proof(R("optimal", objective=0.5, bound=0.4, num_binaries=3), "sign", safety)
    assert holds and bound == safety  # sign mode: the cutoff is what is proven
