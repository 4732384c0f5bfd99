"""experiments.panel on synthetic neighborhood runs (records written directly, no search): the three
figures, report.json with the seed's claims, claims.md, and bad input that writes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from experiments import neighborhood_readme, panel
from experiments.common import UsageError, results_config
from experiments.configs import neighborhood as nbh_configs, panel as panel_configs
from experiments.queries import image_problem
from experiments.records import RecordStore
from lnjax import data
from lnjax.io import read_json, write_json_atomic

MAX_LAYERS = 4  # rings 0..2, the far layer 3, the target layer 4
PNG = b"\x89PNG"


def search(eps, verified=True):
    eps = [float(e) for e in eps]
    return {
        "eps": eps,
        "verified": verified,
        "log_volume": float(np.sum(np.log(np.maximum(eps, 1e-30)))) if verified else None,
        "converged": True,
        "queries": 8,
        "by_status": {"robust": 6, "not_robust": 1, "unknown": 1},
        "certificate": {"gap": 0.9} if verified else {},
    }


def make_run(
    root: Path, name: str, data_dir: Path, *, scale: float, images=range(6), skip=(), target_layer=True
) -> str:
    """A finished neighborhood workdir `root/name` whose searches are synthetic: log10 ε rising by 0.3
    per ring (× `scale`; the sensitivity shrink 1.5 × the fixed one); `skip`: skipped images."""
    train = root / "train"
    if not (train / "config.json").is_file():
        train.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            train / "config.json",
            {"experiment": "train", "data": {"dataset": "double_mnist", "data_dir": str(data_dir)}, "k": 2},
        )
    c = nbh_configs.get_config("none")
    c.name, c.train_workdir, c.start, c.images = name, str(train), min(images), len(images)
    c.layers.max_layers, c.layers.target_layer = MAX_LAYERS, target_layer
    work = root / name
    work.mkdir(parents=True)
    write_json_atomic(work / "config.json", results_config(c))
    test = data.load_dataset("double_mnist", "test", str(data_dir), limit=max(images) + 1)
    store: RecordStore[int] = RecordStore(work / "results", "img_{:05d}")
    rng = np.random.default_rng(len(name))
    for i in images:
        _, facts, _ = image_problem(c, test, i, 2)
        n = len(facts["layer_sizes"])
        if i in skip:
            store.save(i, {**facts, "clean_margin": -1.0, "methods": {}, "skipped": "missed"})
            continue
        eps = scale * 10.0 ** (-3.0 + 0.3 * np.arange(n) + rng.normal(0, 0.05, n))
        methods = {
            "optimizer_fixed": search(eps),
            "optimizer_sensitivity": search(1.5 * eps * np.exp(rng.normal(0, 0.02, n))),
        }
        store.save(i, {**facts, "clean_margin": 1.0, "methods": methods})
    return str(work)


@pytest.fixture
def runs(tmp_path, data_dir):
    root = tmp_path / "runs"
    return {
        "none": make_run(root, "neighborhood_none", data_dir, scale=1.0),
        "l0": make_run(root, "neighborhood_l0", data_dir, scale=1.2, skip=(0,)),
        "linf": make_run(root, "neighborhood_linf", data_dir, scale=3.0),
    }


def config(runs, **overrides):
    c = panel_configs.get_config("defenses")
    c.runs = ",".join(f"{k}={v}" for k, v in runs.items())
    c.output = ""
    for key, value in overrides.items():
        c[key] = value
    return c


def test_panel_writes_figures_report_and_claims(runs, tmp_path):
    (tmp_path / "docs").mkdir()
    work = tmp_path / "panel"
    out = panel.run(config(runs, output=str(tmp_path / "docs" / "panel.png")), str(work), progress=False)
    report = read_json(work / "report.json")
    assert {k: v for k, v in out.items() if k not in ("cells", "output", "workdir")} == report
    assert report["image"] == 1 and report["images"] == 5  # l0 skipped image 0: images 1..5
    assert report["runs"] == runs and report["order"] == ["none", "l0", "linf"]
    s = report["defenses"]["none"]["optimizer_fixed"]
    assert (s["images"], s["verified"], s["median_gap"], s["converged_share"], s["unknown_share"]) == (
        5, 5, 0.9, 1.0, 0.125,
    )  # fmt: skip
    assert s["layers"] == {"rings": MAX_LAYERS - 1, "far": MAX_LAYERS - 1, "target": MAX_LAYERS}
    per_layer = s["log10_eps_per_layer"]
    assert per_layer["searches"] == 5 and len(per_layer["mean"]) == MAX_LAYERS + 1
    assert per_layer["mean"][0] == pytest.approx(-3.0, abs=0.1)
    verdicts = {(r["key"], r["scope"]): r["verdict"] for r in report["claims"]}
    assert verdicts[("distance", "none / fixed")] == "holds"
    assert verdicts[("defended", "linf − none / fixed")] == "holds"
    assert verdicts[("defended", "l0 − none / sensitivity")] == "holds"
    assert verdicts[("shrink", "linf: sensitivity − fixed")] == "sensitivity larger"
    assert len(verdicts) == 6 + 4 + 3
    # the figures (and copies beside `output`), the reference image's cells, the tables
    for name in panel.FIGURES:
        png = (work / "figures" / name).read_bytes()
        assert png.startswith(PNG)
        copy = tmp_path / "docs" / ("panel.png" if name == "neighborhood_panel.png" else name)
        assert copy.read_bytes() == png
    assert read_json(work / "panel.json") == {"image": 1, "cells": out["cells"]}
    assert set(out["cells"]) == {f"{r}/{m}" for r in runs for m in ("fixed", "sensitivity")}
    claims_md = (work / "claims.md").read_text()
    assert claims_md == neighborhood_readme.readme_tables(report)
    assert "| linf − none / fixed |" in claims_md
    assert (work / "claims.csv").read_text().startswith("claim,where,measure,")


def test_panel_reference_image_and_a_run_without_a_target_layer(runs, tmp_path, data_dir):
    """`image` picks the heatmaps' image; the report still covers every common image; a run whose
    target digit shares the far layer has no target layer (and is drawn on its own layers)."""
    runs["lumped"] = make_run(tmp_path / "runs", "lumped", data_dir, scale=1.0, target_layer=False)
    out = panel.run(config(runs, image=4), str(tmp_path / "p"), progress=False)
    assert out["image"] == 4 and out["images"] == 5
    lumped = out["defenses"]["lumped"]["optimizer_fixed"]
    assert lumped["layers"] == {"rings": MAX_LAYERS - 1, "far": MAX_LAYERS - 1, "target": None}
    assert len(lumped["log10_eps_per_layer"]["mean"]) == MAX_LAYERS
    assert {"lumped/fixed", "none/sensitivity"} <= set(out["cells"])


@pytest.mark.parametrize("case", ["missing run", "not neighborhood", "no common image", "no train config"])
def test_bad_input_is_a_usage_error_and_writes_nothing(runs, tmp_path, data_dir, case):
    runs = dict(runs)
    root = tmp_path / "runs"
    if case == "missing run":
        runs["l0"] = str(root / "nowhere")
        message = "no neighborhood run"
    elif case == "not neighborhood":
        write_json_atomic(Path(runs["l0"]) / "config.json", {"experiment": "verify"})
        message = "not neighborhood"
    elif case == "no common image":
        runs["late"] = make_run(root, "late", data_dir, scale=1.0, images=range(6, 9))
        message = "no image was searched by every run"
    else:
        (root / "train" / "config.json").unlink()
        message = "is missing"
    work = tmp_path / "bad"
    with pytest.raises(UsageError, match=message):
        panel.run(config(runs), str(work), progress=False)
    assert not work.exists()
