"""experiments.verify end to end on a tiny trained model (fake MNIST → fake DOUBLE-MNIST), plus bad input."""

import numpy as np
import pytest

from experiments import verify as VE
from experiments.common import UsageError
from experiments.configs import verify as verify_configs
from experiments.runs import load_trained
from experiments.train import run as train_run
from lnjax import data, models, verify as V
from lnjax.io import read_json
from tests.conftest import tiny_train_config

# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir, dmnist_run):
    """A root with `data` (the conftest's fake data dir) and `train` (its tiny finished DOUBLE-MNIST run)."""
    root = tmp_path_factory.mktemp("verify_exp")
    (root / "data").symlink_to(data_dir)
    (root / "train").symlink_to(dmnist_run)
    return root


def clean_margins(root, n: int, side: int = 0) -> np.ndarray:
    """The top-2 margins of the target digit `side` at test images 0..n-1 (> 0: the model gets it)."""
    model, params, _ = load_trained(root / "train")
    test = data.load_dataset("double_mnist", "test", root / "data", limit=n)
    view = models.layer_view(model, params)
    assert test.meta is not None
    return np.array(
        [
            float(V.TopK(int(test.meta["digits"][i][side]), 2).margin(models.apply_layers(view, test.x[i])))
            for i in range(n)
        ]
    )


def tiny_config(root, **overrides):
    c = verify_configs.get_config("quickstart")
    c.train_workdir = str(root / "train")
    c.images = 2
    c.only_correct = False  # a barely trained model misses most targets; verify them anyway
    c.box.eps = 0.002
    c.box.growth = 1.0
    c.box.max_layers = 4
    c.verifier.time_limit = 10.0
    c.verifier.pgd.steps = 5
    c.verifier.pgd.restarts = 1
    for key, value in overrides.items():
        node = c
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    return c


# ----------------------------------------------------------------------------------------------- tests


@pytest.mark.slow  # ~20 s: end to end; the fast suite keeps the MILP / uniform-box / bad-input runs
def test_end_to_end_then_resume(trained, monkeypatch):
    c = tiny_config(trained, target="both")
    workdir = trained / "v1"
    summary = VE.run(c, str(workdir), progress=False)
    records = [read_json(workdir / "verdicts" / f"img_{i:05d}.json") for i in range(2)]
    queries = [q for r in records for q in r["queries"]]
    assert len(queries) == 4 and summary["queries"] == 4 and summary["images"] == 2
    test = data.load_dataset("double_mnist", "test", trained / "data")
    for i, r in enumerate(records):
        assert r["image"] == i and r["digits"] == test.meta["digits"][i].tolist()
        assert [q["side"] for q in r["queries"]] == ["left", "right"]
        for side, q in enumerate(r["queries"]):
            assert q["target"] == r["digits"][side] and q["other"] == r["digits"][1 - side]
            assert q["status"] in ("robust", "not_robust", "unknown")
            # The ε profile grows away from the other digit; the layers cover the image.
            assert len(q["eps"]) == len(q["layer_sizes"]) <= 4 and sum(q["layer_sizes"]) == 64 * 64
            assert q["eps"] == pytest.approx([0.002 * (1 + d) for d in range(len(q["eps"]))])
            assert q["seconds"] <= c.verifier.time_limit + 1.0  # compiled by the warm-up
            assert q["stats"]["notes"] == [] or q["status"] == "unknown"
            if q["status"] == "robust":
                assert q["proven_bound"] >= q["stats"]["safety"]
                assert q["decided_by"] in ("interval", "crown", "alpha_crown", "milp")
            elif q["status"] == "not_robust":
                assert q["has_counterexample"] and q["best_objective"] <= 0
                assert q["decided_by"] in ("pgd", "milp")
            else:
                assert q["decided_by"] is None
    counts = {s: sum(q["status"] == s for q in queries) for s in ("robust", "not_robust", "unknown")}
    assert {s: summary[s] for s in counts} == counts
    assert read_json(workdir / "summary.json")["queries"] == 4
    assert read_json(workdir / "config.json")["train_workdir"] == c.train_workdir

    # A restart with the same config redoes nothing; a half-finished run redoes only what is missing.
    calls = []
    original = VE.verify_image
    monkeypatch.setattr(VE, "verify_image", lambda *a, **k: calls.append(a[5]) or original(*a, **k))
    again = VE.run(c, str(workdir), progress=False)
    assert calls == [] and {k: again[k] for k in counts} == counts
    (workdir / "verdicts" / "img_00001.json").unlink()
    VE.run(c, str(workdir), progress=False)
    assert calls == [1]
    assert read_json(workdir / "verdicts" / "img_00001.json")["digits"] == records[1]["digits"]
    # More images extend the run (each image's record stands alone): only the new one is verified.
    calls.clear()
    more = VE.run(tiny_config(trained, target="both", images=3), str(workdir), progress=False)
    assert calls == [2] and more["images"] == 3 and read_json(workdir / "config.json")["images"] == 3
    # Any other difference in the same workdir is refused, naming the field.
    with pytest.raises(UsageError, match="different config .*target"):
        VE.run(tiny_config(trained, target="left", images=3), str(workdir), progress=False)


def test_milp_decides_without_pgd(trained):
    """Zero-width boxes, no PGD stage: at an image the model gets wrong the MILP is reached and finds the
    counterexample (an LP: no binaries); at one it gets right, interval bounds prove it."""
    margins = clean_margins(trained, 32)
    wrong, right = int(np.argmax(margins < -1e-3)), int(np.argmax(margins > 1e-3))
    assert margins[wrong] < -1e-3 and margins[right] > 1e-3, margins  # the tiny run has both
    for index, expected in ((wrong, "milp"), (right, "interval")):
        c = tiny_config(trained, target="left", images=1, start=index, **{"box.eps": 0.0})
        c.verifier.stages = "crown,alpha_crown,milp"
        summary = VE.run(c, str(trained / f"v_milp_{index}"), progress=False)
        (q,) = read_json(trained / f"v_milp_{index}" / "verdicts" / f"img_{index:05d}.json")["queries"]
        assert q["eps"] == [0.0] * len(q["eps"]) and q["decided_by"] == expected
        assert q["clean_margin"] == pytest.approx(margins[index], abs=1e-5)
        if expected == "milp":
            assert q["status"] == "not_robust" and q["has_counterexample"] and q["best_objective"] <= 0
            assert q["stats"]["milp_status"] == "optimal" and q["binaries"] == 0
            assert summary["milp_queries"] == 1 and summary["decided_by"] == {"milp": 1}
        else:
            assert q["status"] == "robust" and q["stats"]["milp_status"] is None
            assert summary["milp_queries"] == 0 and summary["decided_by"] == {"interval": 1}


def test_uniform_box_and_skipping(trained):
    c = tiny_config(
        trained,
        **{"box.shape": "uniform", "box.eps": 0.0, "only_correct": True, "start": 1, "target": "both"},
    )
    c.verifier.stages = "interval"
    summary = VE.run(c, str(trained / "v2"), progress=False)
    queries = [
        q for i in (1, 2) for q in read_json(trained / "v2" / "verdicts" / f"img_{i:05d}.json")["queries"]
    ]
    assert len(queries) == 4 and not (trained / "v2" / "verdicts" / "img_00000.json").exists()
    for q in queries:
        if q["clean_margin"] > 1e-3:  # a zero-width box around a correct image: interval bounds are exact
            assert q["status"] == "robust" and q["decided_by"] == "interval" and q["eps"] == [0.0]
        elif q["clean_margin"] <= 0:
            assert q["status"] == "skipped"
    assert summary["skipped"] == sum(q["clean_margin"] <= 0 for q in queries)
    assert summary["queries"] == 4 - summary["skipped"]


@pytest.mark.slow
def test_all_stages_within_budget(trained):
    """The quickstart CNN (thousands of unstable ReLUs untrained), every stage: each query answers
    within its budget after the warm-up, up to the JAX stage running when the budget ran out."""
    small = trained.parent / "train_small"
    train_run(
        tiny_train_config("quickstart", trained / "data", model="dmnist_small"), str(small), progress=False
    )
    c = tiny_config(trained, target="both", train_workdir=str(small))
    c.verifier.time_limit = 4.0
    summary = VE.run(c, str(trained / "v3"), progress=False)
    queries = [
        q for i in (0, 1) for q in read_json(trained / "v3" / "verdicts" / f"img_{i:05d}.json")["queries"]
    ]
    assert summary["queries"] == 4
    for q in queries:
        # The MILP is killed at the deadline; a JAX stage is not interruptible, so a query may overrun
        # by the stage that was running when the budget ran out (and is then UNKNOWN unless it proved).
        times = q["stats"]["time_s"]
        last_stage = max((v for k, v in times.items() if k != "total"), default=0.0)
        assert q["seconds"] <= c.verifier.time_limit + last_stage + 1.0
        if q["seconds"] > c.verifier.time_limit + 1.0:
            assert q["status"] != "not_robust" or q["decided_by"] == "pgd"
        assert q["status"] in ("robust", "not_robust", "unknown")
        if q["status"] == "unknown":
            assert q["decided_by"] is None and not q["has_counterexample"]


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"box.eps": -0.01}, "box.eps"),
        ({"box.eps_layers": "0.01,-0.02"}, "eps_layers"),
        ({"box.eps_layers": "0.01,abc"}, "comma-separated"),
        ({"box.metric": "cosine"}, "box.metric"),
        ({"target": "middle"}, "target"),
        ({"verifier.stages": "pgd,lp"}, "stages"),
        ({"verifier.milp.mode": "exact"}, "milp.mode"),
        ({"images": 0}, "images"),
        ({"images": 50}, "test split has 32"),
    ],
)
def test_bad_input_is_a_usage_error_and_writes_nothing(trained, overrides, match):
    workdir = trained / "bad"
    with pytest.raises(UsageError, match=match):
        VE.run(tiny_config(trained, **overrides), str(workdir), progress=False)
    assert not workdir.exists()


def test_unknown_option_and_missing_training_run(trained, tmp_path):
    c = tiny_config(trained)
    c.unlock()
    c.box.radius = 0.1
    with pytest.raises(UsageError, match=r"unknown config options \['box.radius'\]"):
        VE.run(c, str(tmp_path / "w"), progress=False)
    with pytest.raises(UsageError, match="no finished training run"):
        VE.run(
            tiny_config(trained, train_workdir=str(tmp_path / "nothing")), str(tmp_path / "w"), progress=False
        )
    assert not (tmp_path / "w").exists()


def test_a_verifier_block_read_back_from_config_json_is_the_same_config():
    """config.json stores the (low, high) input domain as a JSON list; the block read back from it
    gives the same `VerifierConfig` (the library itself asks for a tuple)."""
    import json

    from ml_collections import ConfigDict

    from experiments.configs import neighborhood as NC
    from experiments.configs.blocks import verifier_config

    block = NC.get_config("none").verifier
    back = ConfigDict(json.loads(json.dumps(block.to_dict())))
    assert isinstance(back.input_domain, list)
    assert verifier_config(back) == verifier_config(block)
