"""experiments.attack_curve on the conftest's tiny MNIST run: the grid (full product, typed values),
end to end (rates within their intervals, outputs, the plateau rule), resume (only a missing point is
recomputed, to the same result), and bad input (one UsageError, nothing written)."""

import csv
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import attack_curve
from experiments.common import UsageError
from experiments.configs import attack_curve as curve_configs
from lnjax.attacks.config import ATTACKS
from lnjax.io import read_json


def tiny(run: Path | str, grid: str = "cw.steps=2,4;cw.binary_steps=1"):
    c = curve_configs.get_config("mnist")  # one batch of 4 images: one compilation per point
    c.train_workdir, c.images, c.batch_size, c.grid = str(run), 4, 4, grid
    c.cw.lr = 0.05
    return c


def test_grid_is_the_full_product_of_its_axes_with_typed_values():
    plan = attack_curve.validate(tiny("unused", "cw.steps=2, 4;cw.lr=0.1,1e-2;cw.binary_steps=3"))
    assert [a.name for a in plan.axes] == ["cw.steps", "cw.lr", "cw.binary_steps"]
    assert plan.points == (
        {"cw.steps": 2, "cw.lr": 0.1, "cw.binary_steps": 3},
        {"cw.steps": 2, "cw.lr": 0.01, "cw.binary_steps": 3},
        {"cw.steps": 4, "cw.lr": 0.1, "cw.binary_steps": 3},
        {"cw.steps": 4, "cw.lr": 0.01, "cw.binary_steps": 3},
    )
    assert all(type(p["cw.steps"]) is int and type(p["cw.lr"]) is float for p in plan.points)
    for i, (point, settings) in enumerate(zip(plan.points, plan.settings, strict=True)):
        assert (settings.cw.steps, settings.cw.lr, settings.cw.binary_steps) == tuple(point.values())
        assert settings.cw.c0 == curve_configs.base().cw.c0  # the rest is the block's
        assert plan.total_steps(i) == point["cw.steps"] * 3
    assert plan.steps_axis == "cw.steps"
    assert attack_curve.validate(tiny("unused", "cw.lr=0.1,0.2")).steps_axis is None
    assert set(attack_curve.BLOCK_OF) == set(ATTACKS)


def test_plateau_compares_the_best_with_the_second_largest_steps():
    plan = attack_curve.validate(tiny("unused", "cw.steps=1,2,3;cw.lr=0.1,0.2"))
    successes = [5, 1, 6, 2, 8, 3]  # lr 0.1 rises 5, 6, 8; lr 0.2 stays low
    records = [{"successes": s, "total_steps": plan.total_steps(i)} for i, s in enumerate(successes)]
    best = attack_curve.best_index(records)
    assert best == 4
    assert attack_curve.plateau_of(plan, records, best) == (False, 2)  # 8 − 6 > 1
    records[2]["successes"] = 7
    assert attack_curve.plateau_of(plan, records, best) == (True, 2)
    records[2]["successes"] = 8  # a tie: the cheaper point is the best, compared with itself
    assert attack_curve.best_index(records) == 2 and attack_curve.plateau_of(plan, records, 2) == (True, 2)


@pytest.mark.slow  # 10 s; the curve's planning and plateau logic stay fast above, bad input in test_bad_input
def test_attack_curve_end_to_end_and_resume(mnist_run, tmp_path, monkeypatch):
    workdir = tmp_path / "curve"
    calls = []  # (desc, key data) of every attack_images call
    real = attack_curve.attack_images

    def spy(key, *args, **kwargs):
        calls.append((kwargs["desc"], np.asarray(jax.random.key_data(key))))
        return real(key, *args, **kwargs)

    monkeypatch.setattr(attack_curve, "attack_images", spy)
    out = attack_curve.run(tiny(mnist_run), str(workdir), progress=False)
    assert [d for d, _ in calls] == ["point 0", "point 1"]
    np.testing.assert_array_equal(calls[0][1], calls[1][1])  # points differ only by their settings
    assert out["workdir"] == str(workdir)
    points = out["points"]
    assert [p["settings"] for p in points] == [
        {"cw.steps": 2, "cw.binary_steps": 1},
        {"cw.steps": 4, "cw.binary_steps": 1},
    ]
    for p in points:
        assert p["total_steps"] == p["settings"]["cw.steps"]
        assert 0 <= p["successes"] <= p["correct"] <= 4
        assert p["correct"] > 0, "the tiny run must get some test images right, else nothing is attacked"
        lo, hi = p["success_ci"]
        assert 0 <= lo <= p["success_rate"] <= hi <= 1
        assert p["success_rate"] == pytest.approx(p["successes"] / p["correct"])
        assert p["seconds"] > 0
    assert out["best"] in points
    assert out["plateau"] == (out["best"]["successes"] - points[0]["successes"] <= 1)
    metrics = read_json(workdir / "metrics.json")
    assert metrics["points"] == points and metrics["plateau_against"] == 0
    assert metrics["correct"] == points[0]["correct"]
    margins = metrics["margins"]
    assert margins["images"] == metrics["correct"]
    clean, reach = margins["clean"], margins["reachable_confidence"]
    assert clean["median"] > 0, "correctly classified images have a positive margin"
    # the search starts at x and keeps its best point: it reaches at least −(the clean margin)
    assert reach["max"] >= -clean["max"] and reach["median"] >= -clean["p90"]
    assert set(reach["share_reaching"]) == {"20"} and 0 <= reach["share_reaching"]["20"] <= 1
    assert "Logit margins" in (workdir / "tables.md").read_text()
    with open(workdir / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["cw.steps"]) for r in rows] == [2, 4]
    assert [int(r["successes"]) for r in rows] == [p["successes"] for p in points]
    assert "plateau" in (workdir / "tables.md").read_text()
    assert (workdir / "figures" / "curve.png").stat().st_size > 1000
    assert sorted(p.name for p in (workdir / "points").iterdir()) == ["000.json", "001.json"]

    # Resume: finished points are loaded, only the missing one is recomputed, to the same result.
    (workdir / "points" / "001.json").unlink()
    calls.clear()
    again = attack_curve.run(tiny(mnist_run), str(workdir), progress=False)
    assert [d for d, _ in calls] == ["point 1"]
    strip = lambda ps: [{k: v for k, v in p.items() if k != "seconds"} for p in ps]  # noqa: E731
    assert strip(again["points"]) == strip(points)
    assert again["points"][0] == points[0]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: setattr(c, "grid", "cw.stepz=1,2"), r"unknown setting 'cw.stepz'"),
        (lambda c: setattr(c, "grid", "pgd.steps=1,2"), r"unknown setting 'pgd.steps'.*cw\.<"),
        (lambda c: setattr(c, "grid", "cw.steps=2,x"), r"'cw.steps=2,x': 'x' does not parse as int"),
        (lambda c: setattr(c, "grid", "cw.steps=1.5"), r"'1.5' does not parse as int"),
        (lambda c: setattr(c, "grid", "cw.lr=0.1,fast"), r"'fast' does not parse as float"),
        (lambda c: setattr(c, "grid", "cw.steps=0,2"), r"grid point \{'cw.steps': 0\}: cw.steps = 0"),
        (lambda c: setattr(c, "grid", "cw.steps=2,2"), "repeats a value"),
        (lambda c: setattr(c, "grid", "cw.steps=2;cw.steps=4"), "names 'cw.steps' twice"),
        (lambda c: setattr(c, "grid", "cw.steps"), "is not NAME=v1,v2"),
        (lambda c: setattr(c, "grid", " ; "), "has no axis"),
        (lambda c: setattr(c, "attack", "deepfool"), "unknown attack 'deepfool'"),
        (lambda c: setattr(c, "images", 10_000), "exceeds"),
        (lambda c: setattr(c, "train_workdir", "/nonexistent/run"), "no finished training run"),
    ],
)
def test_bad_input_writes_nothing(mnist_run, tmp_path, change, message):
    c = tiny(mnist_run)
    with c.unlocked():
        change(c)
    with pytest.raises(UsageError, match=message):
        attack_curve.run(c, str(tmp_path / "curve"), progress=False)
    assert not (tmp_path / "curve").exists()


def test_reachable_confidence_is_the_exact_box_optimum_of_a_linear_model():
    """For logits W·x + b over x ∈ [0, 1]^d the smallest margin is min_t Σ_i min(0, (W_y − W_t)_i) +
    b_y − b_t (a corner of the box); the sign-step search from x reaches it exactly."""
    rng = np.random.default_rng(0)
    d, k = 12, 4
    w = rng.normal(size=(d, k)).astype(np.float32)
    b = rng.normal(size=k).astype(np.float32)
    x = rng.uniform(size=(6, d)).astype(np.float32)
    y = np.argmax(x @ w + b, 1).astype(np.int32)  # correctly classified by construction

    def apply_fn(params, xs):
        return xs.reshape(xs.shape[0], -1) @ params[0] + params[1]

    m = attack_curve.logit_margins(
        jax.random.key(0), apply_fn, (w, b), x, y, batch_size=4, confidences=[0.0, 1e9]
    )
    exact = [
        -min(np.minimum(0, w[:, yi] - w[:, t]).sum() + b[yi] - b[t] for t in range(k) if t != yi) for yi in y
    ]
    clean = [(x[i] @ w + b)[y[i]] - np.delete(x[i] @ w + b, y[i]).max() for i in range(len(y))]
    np.testing.assert_allclose(m["reachable_confidence"]["max"], max(exact), rtol=1e-5)
    np.testing.assert_allclose(m["reachable_confidence"]["median"], np.median(exact), rtol=1e-5)
    np.testing.assert_allclose(m["clean"]["median"], np.median(clean), rtol=1e-5)
    assert m["images"] == 6 and m["reachable_confidence"]["share_reaching"]["1e+09"] == 0.0
