"""experiments.neighborhood end to end on a tiny trained model: records, figures, restart, bad input."""

import numpy as np
import pytest

from experiments import neighborhood as NE, panel as panel_experiment
from experiments.common import UsageError
from experiments.configs import neighborhood as configs, panel as panel_configs
from lnjax.io import read_json


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dmnist_run):
    """A root whose `train` is the conftest's tiny finished DOUBLE-MNIST run (read-only)."""
    root = tmp_path_factory.mktemp("nbh_exp")
    (root / "train").symlink_to(dmnist_run)
    return root


def tiny_config(root, **overrides):
    c = configs.get_config("quickstart")
    c.train_workdir = str(root / "train")
    c.images = 2
    c.only_correct = False  # a barely trained model misses most targets; search anyway
    c.methods = "optimizer_fixed,optimizer_sensitivity,baseline,uniform"
    c.layers.max_layers = 3
    c.verifier.stages = "pgd"  # (+ interval, always): no compilation of CROWN in a fast test
    c.verifier.time_limit = 5.0
    c.verifier.pgd.steps = 3
    c.verifier.pgd.restarts = 1
    c.optimizer.max_queries = 3
    c.optimizer.pgd_steps = 3
    c.optimizer.pgd_restarts = 1
    c.baseline.max_queries = 4
    c.certificate.restarts = 2
    c.certificate.steps = 3
    c.certificate.time_budget = 10.0
    for key, value in overrides.items():
        target = c
        *path, last = key.split(".")
        for p in path:
            target = target[p]
        target[last] = value
    return c


def test_runs_writes_records_and_resumes(trained, tmp_path, monkeypatch):
    work = tmp_path / "run"
    summary = NE.run(tiny_config(trained), str(work), progress=False)
    assert summary["images"] == 2
    files = sorted((work / "results").glob("img_*.json"))
    assert [f.name for f in files] == ["img_00000.json", "img_00001.json"]
    rec = read_json(files[0])
    # 3 rings (the last holding the far background) and the target digit's own layer
    assert len(rec["layer_sizes"]) == 4 and sum(rec["layer_sizes"]) == 64 * 64
    for method in ("optimizer_fixed", "optimizer_sensitivity", "baseline", "uniform"):
        m = rec["methods"][method]
        assert len(m["eps"]) == len(rec["layer_sizes"])
        assert m["queries"] == sum(m["by_status"].values()) == len(m["trail"])
        assert {"log_volume", "linear_norm", "time_s", "by_stage", "stop_reason"} <= set(m)
        # A verified ε is one the verifier answered ROBUST (the trail holds every query).
        robust = [q["eps"] for q in m["trail"] if q["status"] == "robust"]
        assert m["verified"] == bool(robust)
        if m["verified"]:
            assert any(np.allclose(m["eps"], e, rtol=1e-6) for e in robust)
            # The certificate brackets ε: proved at s_proved ≥ 1, attacked (if at all) above it.
            cert = m["certificate"]
            assert cert["s_proved"] is None or cert["s_proved"] >= 1.0, cert
            if cert["s_proved"] is not None and cert["s_attack"] is not None:
                assert cert["s_attack"] > cert["s_proved"] and cert["gap"] <= 1.0
        else:
            assert not any(m["eps"]) and m["certificate"] == {}
    assert len(set(rec["methods"]["uniform"]["eps"])) == 1  # one ε for every pixel
    assert rec["methods"]["optimizer_fixed"]["queries"] <= 3
    assert rec["methods"]["baseline"]["queries"] <= 4
    assert (work / "figures" / "img_00000_heatmap.png").is_file()
    assert (work / "figures" / "img_00000_eps.png").is_file()
    summary_file = read_json(work / "summary.json")
    assert summary_file["images"] == 2
    for method in ("optimizer_fixed", "baseline", "uniform"):
        got = summary_file[method]
        assert {"converged_share", "unknown_share", "median_gap", "certified"} <= set(got)
        layers = got["log10_eps_per_layer"]  # per layer over the verified searches, with intervals
        searched = [read_json(f)["methods"][method] for f in files]
        verified = [m for m in searched if m["verified"]]
        if verified:
            assert layers["searches"] == len(verified) and len(layers["mean"]) == 4
            for d, (mean, (lo, hi)) in enumerate(zip(layers["mean"], layers["ci"], strict=True)):
                logs = [np.log10(m["eps"][d]) for m in verified if m["eps"][d] > 0]
                assert layers["zero"][d] == len(verified) - len(logs)
                if logs:
                    assert mean == pytest.approx(np.mean(logs))
                if len(logs) >= 2:
                    assert lo <= mean <= hi
        else:
            assert layers is None
        assert got["certified"] <= got["verified"] <= got["searched"] == 2
        ups = [m["setup"]["scale_up"] for m in searched if "scale_up" in m.get("setup", {})]
        factors = [u["factor"] for u in ups if u["queries"] > 0]
        assert got["median_scale_up"] == (pytest.approx(np.median(factors)) if factors else None)

    # Half-finished run: drop one record; the restart redoes only that image.
    done = files[0].read_text()
    files[1].unlink()
    calls = []
    real = NE.run_method
    monkeypatch.setattr(NE, "run_method", lambda m, *a, **k: calls.append(m) or real(m, *a, **k))
    again = NE.run(tiny_config(trained), str(work), progress=False)
    assert again["images"] == 2 and files[1].is_file()
    assert calls == ["optimizer_fixed", "optimizer_sensitivity", "baseline", "uniform"]  # image 1 only
    assert files[0].read_text() == done

    # The panel experiment draws the searched image of both runs (here the same run twice).
    c = panel_configs.get_config("defenses")
    c.runs, c.output = f"tiny={work},same={work}", str(tmp_path / "panel.png")
    out = panel_experiment.run(c, str(tmp_path / "panel"), progress=False)
    assert out["image"] == 0 and set(out["cells"]) == {
        f"{r}/{m}" for r in ("tiny", "same") for m in ("fixed", "sensitivity")
    }
    assert (tmp_path / "panel.png").read_bytes() == (
        tmp_path / "panel" / "figures" / "neighborhood_panel.png"
    ).read_bytes()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"methods": "optimizer_fixed,bogus"}, "methods"),
        ({"layers.metric": "cosine"}, "layers.metric"),
        ({"optimizer.max_queries": 0}, "max_queries"),
        ({"baseline.scale": "cubic"}, "baseline.scale"),
        ({"certificate.rel_tol": 0.0}, "certificate.rel_tol"),
        ({"certificate.odi_steps": -1}, "certificate.odi_steps"),
        ({"certificate.targets": -1}, "certificate.targets"),
        ({"target": "middle"}, "target"),
    ],
)
def test_bad_config_is_a_usage_error_and_writes_nothing(trained, tmp_path, override, message):
    work = tmp_path / "bad"
    with pytest.raises(UsageError, match=message):
        NE.run(tiny_config(trained, **override), str(work), progress=False)
    assert not work.exists()


@pytest.mark.slow
def test_a_half_searched_image_resumes_from_its_finished_searches(trained, tmp_path, monkeypatch):
    """Items are (image, method) searches: a run stopped between the methods of an image keeps the
    finished search (results/partial/) and the restart runs only the missing one."""
    config = tiny_config(trained, images=1, methods="optimizer_fixed,baseline")
    reference = NE.run(config, str(tmp_path / "ref"), progress=False)
    real = NE.run_method

    def stop_at_baseline(method, *a, **k):
        if method == "baseline":
            raise KeyboardInterrupt
        return real(method, *a, **k)

    work = tmp_path / "run"
    monkeypatch.setattr(NE, "run_method", stop_at_baseline)
    with pytest.raises(KeyboardInterrupt):
        NE.run(config, str(work), progress=False)
    assert (work / "results" / "partial" / "img_00000_optimizer_fixed.json").is_file()
    assert not (work / "results" / "img_00000.json").is_file()

    calls = []
    monkeypatch.setattr(NE, "run_method", lambda m, *a, **k: calls.append(m) or real(m, *a, **k))
    again = NE.run(config, str(work), progress=False)
    assert calls == ["baseline"] and not list((work / "results" / "partial").glob("*.json"))
    ref = read_json(tmp_path / "ref" / "results" / "img_00000.json")
    got = read_json(work / "results" / "img_00000.json")
    assert ref["methods"]["optimizer_fixed"]["eps"] == got["methods"]["optimizer_fixed"]["eps"]
    assert again["images"] == reference["images"] == 1
