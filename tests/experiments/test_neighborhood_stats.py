"""experiments.neighborhood_stats: the defenses report and each claim's rule, on synthetic records
(each rule must hold where the intervals show it and must not where they do not)."""

import math

import numpy as np
import pytest

from experiments import neighborhood_stats as S
from lnjax.stats import mean_interval

RINGS = 6  # distance rings 0..5, then the far layer 6 and the target layer 7
SIZES = [60, 90, 110, 130, 150, 170, 3200, 186]


def search(eps, *, verified=True, converged=True, gap=0.9, unknown=1, queries=10):
    return {
        "eps": [float(e) for e in eps],
        "verified": verified,
        "converged": converged,
        "certificate": {"gap": gap, "s_proved": 1.0, "s_attack": 1.0 / gap} if verified else {},
        "queries": queries,
        "by_status": {"robust": queries - unknown, "unknown": unknown},
        "log_volume": 0.0,
    }


def ring_eps(rng, slope, *, base=-3.0, noise=0.05, far=-6.0, target=0.0):
    """ε per layer: log10 ε_d = base + slope·d (+ noise) on the rings; the far and target layers set
    to values that would flip a slope if they were counted."""
    d = np.arange(RINGS)
    logs = base + slope * d + rng.normal(0, noise, RINGS)
    return list(10.0**logs) + [10.0**far, 10.0**target]


def run_records(rng, n, make, **kwargs):
    """{image: record}: `make(rng) -> {method: eps}` per image."""
    out = {}
    for i in range(n):
        methods = {m: search(e, **kwargs) for m, e in make(rng).items()}
        out[i] = {"image": i, "layer_sizes": SIZES, "methods": methods}
    return out


def both(eps):
    return {"optimizer_fixed": eps, "optimizer_sensitivity": eps}


def verdicts(rep):
    return {(r["key"], r["scope"]): r["verdict"] for r in rep["claims"]}


def test_roles_and_slope():
    assert S.layer_roles(8, target_layer=True) == S.Roles(rings=6, far=6, target=7)
    assert S.layer_roles(7, target_layer=False) == S.Roles(rings=6, far=6, target=None)
    with pytest.raises(ValueError):
        S.layer_roles(1, target_layer=True)
    eps = [10.0 ** (-3 + 0.5 * d) for d in range(4)] + [1.0]
    assert S.ring_slope(eps, [1] * 5, 4) == pytest.approx(0.5)
    # rings at ε = 0 or without pixels are left out; fewer than 2 left: no slope
    assert S.ring_slope([1e-3, 0.0, 1e-1, 5.0], [1, 1, 1, 1], 3) == pytest.approx(1.0)
    assert S.ring_slope([1e-3, 1e-2, 1e-1], [1, 0, 1], 3) == pytest.approx(1.0)
    assert S.ring_slope([1e-3, 0.0, 0.0], [1, 1, 1], 3) is None
    # norms: Σ|l|ε always; the log-volume only without a pixel at ε = 0 (an empty layer's 0 is no pixel)
    assert S.norms([0.1, 0.2], [10, 5]) == (pytest.approx(10 * math.log(0.1) + 5 * math.log(0.2)), 2.0)
    assert S.norms([0.1, 0.0], [10, 5])[0] is None and S.norms([0.1, 0.0], [10, 0])[0] is not None


def test_distance_claim_holds_fails_or_is_not_shown():
    rng = np.random.default_rng(0)
    signs = iter([0.2, -0.2] * 6)  # as many images rising as falling
    runs = {
        "up": run_records(rng, 12, lambda r: both(ring_eps(r, 0.2))),
        "down": run_records(rng, 12, lambda r: both(ring_eps(r, -0.2, far=3.0, target=-9.0))),
        "flat": run_records(rng, 12, lambda r: both(ring_eps(r, next(signs)))),
    }
    rep = S.report(runs, {name: True for name in runs})
    v = verdicts(rep)
    assert v[("distance", "up / fixed")] == v[("distance", "up / sensitivity")] == "holds"
    # far layer 1e-6 and target 1 would make "up" steeper or "down" flatter if counted: they are not
    assert v[("distance", "down / fixed")] == "does not hold"
    assert v[("distance", "flat / fixed")] == "not shown"
    s = rep["defenses"]["up"]["optimizer_fixed"]["ring_slope"]
    assert s["n"] == 12 and s["mean"] == pytest.approx(0.2, abs=0.03) and s["ci"][0] > 0
    # the interval is the t interval of the per-image slopes
    slopes = [S.ring_slope(r["methods"]["optimizer_fixed"]["eps"], SIZES, RINGS) for r in runs["up"].values()]
    assert None not in slopes
    assert s["ci"] == pytest.approx(mean_interval([float(v) for v in slopes if v is not None]).as_list())


def test_distance_claim_leaves_out_unverified_and_short_images():
    rng = np.random.default_rng(1)
    runs = {"a": run_records(rng, 4, lambda r: both(ring_eps(r, 0.2)))}
    runs["a"][0]["methods"]["optimizer_fixed"]["verified"] = False
    runs["a"][1]["methods"]["optimizer_fixed"]["eps"][1:RINGS] = [0.0] * (RINGS - 1)  # one positive ring
    rep = S.report(runs, {"a": True})
    assert rep["defenses"]["a"]["optimizer_fixed"]["ring_slope"]["n"] == 2
    assert rep["defenses"]["a"]["optimizer_sensitivity"]["ring_slope"]["n"] == 4
    assert rep["claims"][0]["verdict"] == "holds"
    # one slope left: no interval, nothing shown
    runs["a"][2]["methods"]["optimizer_fixed"]["verified"] = False
    row = S.report(runs, {"a": True})["claims"][0]
    assert row["measures"]["ring_slope"]["ci"] == [None, None] and row["verdict"] == "not shown"


def test_defended_claim_holds_fails_or_is_not_shown():
    rng = np.random.default_rng(2)
    n = 15
    base = [ring_eps(rng, 0.1) for _ in range(n)]

    def scaled(factor, noise=0.05):
        it = iter(base)
        return lambda r: both(list(np.asarray(next(it)) * factor * np.exp(r.normal(0, noise, len(SIZES)))))

    runs = {
        "none": run_records(rng, n, scaled(1.0, 0.0)),
        "linf": run_records(rng, n, scaled(2.0)),  # larger on both measures
        "l0": run_records(rng, n, scaled(0.5)),  # smaller
        "noise": run_records(rng, n, scaled(1.0, 0.5)),  # no shift either way
    }
    rep = S.report(runs, {name: True for name in runs})
    v = verdicts(rep)
    assert v[("defended", "linf − none / fixed")] == v[("defended", "linf − none / sensitivity")] == "holds"
    assert v[("defended", "l0 − none / fixed")] == "does not hold"
    assert v[("defended", "noise − none / fixed")] == "not shown"
    assert ("defended", "none − none / fixed") not in v
    row = next(r for r in rep["claims"] if r["scope"] == "linf − none / fixed")
    lv, lin = row["measures"]["log_volume"], row["measures"]["linear_norm"]
    assert lv["n"] == lin["n"] == n and lv["left_out"] == 0
    assert lv["mean"] == pytest.approx(sum(SIZES) * math.log(2.0), rel=0.05)
    # paired over the images both verified; a pixel at ε = 0 leaves the pair out of the log-volume only
    runs["linf"][0]["methods"]["optimizer_fixed"]["verified"] = False
    runs["linf"][1]["methods"]["optimizer_fixed"]["eps"][0] = 0.0
    row = next(
        r for r in S.report(runs, {k: True for k in runs})["claims"] if r["scope"] == "linf − none / fixed"
    )
    assert row["measures"]["linear_norm"]["n"] == n - 1
    assert row["measures"]["log_volume"]["n"] == n - 2 and row["measures"]["log_volume"]["left_out"] == 1


def test_defended_claim_fails_when_either_measure_is_smaller():
    """Larger log-volume but a smaller linear norm (ε spread thin over more pixels): does not hold."""
    rng = np.random.default_rng(3)
    n = 10
    small = [1e-3] * RINGS + [0.5, 1e-3]  # the far layer (most pixels) large
    wide = [1e-2] * RINGS + [0.3, 1e-2]
    runs = {
        "none": run_records(rng, n, lambda r: both(list(np.asarray(small) * np.exp(r.normal(0, 0.01, 8))))),
        "l0": run_records(rng, n, lambda r: both(list(np.asarray(wide) * np.exp(r.normal(0, 0.01, 8))))),
    }
    row = next(r for r in S.report(runs, {"none": True, "l0": True})["claims"] if r["key"] == "defended")
    assert row["measures"]["log_volume"]["ci"][0] > 0 > row["measures"]["linear_norm"]["ci"][1]
    assert row["verdict"] == "does not hold"


def test_shrink_claim_says_which_is_larger():
    rng = np.random.default_rng(4)

    def pair(factor, noise=0.05):
        def make(r):
            fixed = np.asarray(ring_eps(r, 0.1))
            sens = fixed * factor * np.exp(r.normal(0, noise, len(SIZES)))
            return {"optimizer_fixed": list(fixed), "optimizer_sensitivity": list(sens)}

        return make

    runs = {
        "a": run_records(rng, 12, pair(1.5)),
        "b": run_records(rng, 12, pair(0.7)),
        "c": run_records(rng, 12, pair(1.0, 0.5)),
    }
    v = verdicts(S.report(runs, {k: True for k in runs}))
    assert v[("shrink", "a: sensitivity − fixed")] == "sensitivity larger"
    assert v[("shrink", "b: sensitivity − fixed")] == "fixed larger"
    assert v[("shrink", "c: sensitivity − fixed")] == "no difference shown"
    # only one shrink method searched: no shrink row
    one = {
        "a": {
            i: {**r, "methods": {"optimizer_fixed": r["methods"]["optimizer_fixed"]}}
            for i, r in runs["a"].items()
        }
    }
    assert not [r for r in S.report(one, {"a": True})["claims"] if r["key"] == "shrink"]


def test_summary_fields_over_the_common_images():
    rng = np.random.default_rng(5)
    runs = {
        "none": run_records(rng, 6, lambda r: both(ring_eps(r, 0.1)), converged=False, unknown=5),
        "l0": run_records(rng, 4, lambda r: both(ring_eps(r, 0.1)), gap=0.5),
    }
    runs["none"][2]["methods"]["optimizer_fixed"] = search(
        [0.0] * len(SIZES), verified=False, converged=False, unknown=5
    )
    rep = S.report(runs, {"none": True, "l0": True})
    assert rep["images"] == 4  # images 0..3: searched by both runs
    s = rep["defenses"]["none"]["optimizer_fixed"]
    assert (s["images"], s["verified"], s["converged_share"], s["unknown_share"]) == (4, 3, 0.0, 0.5)
    assert s["median_gap"] == 0.9 and rep["defenses"]["l0"]["optimizer_fixed"]["median_gap"] == 0.5
    assert (s["median_s_proved"], s["median_s_attack"]) == (1.0, 1.0 / 0.9)  # over the verified ones
    assert s["layers"] == {"rings": RINGS, "far": RINGS, "target": RINGS + 1}
    per_layer = s["log10_eps_per_layer"]
    assert per_layer["searches"] == 3 and len(per_layer["mean"]) == len(SIZES)
    assert per_layer == S.per_layer_log10([runs["none"][i]["methods"]["optimizer_fixed"] for i in range(4)])
