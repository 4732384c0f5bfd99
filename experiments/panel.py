"""The `panel` experiment: the seed's Figures 2–3 and the defenses report from finished neighborhood runs.

  python -m experiments.run --flagfile=experiments/flagfiles/panel.flags

Rows are runs (`runs`: comma-separated `name=workdir` of finished `neighborhood` runs, e.g. one per
defense), columns the shrink methods (fixed, sensitivity). Everything is over the images every run
searched (not skipped); the reference image of the heatmaps is `image` (default the first of them).

workdir/config.json; figures/neighborhood_panel.png (each cell: log10 ε per pixel of the reference
image, one colour scale; a copy at `output` if set); figures/neighborhood_mean.png (each cell: the mean
log10 ε per layer over the verified searches, painted onto the reference image's layers);
figures/eps_by_distance.png (mean log10 ε against the distance layer with its 95 % t interval, one
line per run, the far and target layers as separate markers); both also beside `output` if set;
panel.json (the reference image and, per cell, log-volume, queries, verified); report.json (per run
and method: images, verified, median_gap, median_s_proved, median_s_attack, converged_share,
unknown_share, log10_eps_per_layer, ring_slope; the seed's claims, each decided from 95 % intervals
by the rule in its row: experiments/neighborhood_stats.py); claims.md and claims.csv (the same tables as
`python -m experiments.neighborhood_readme report.json`); log.txt. The report is returned.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from ml_collections import ConfigDict

from experiments import neighborhood_readme as readme, neighborhood_stats as stats
from experiments.common import check_workdir, open_workdir, require, to_dict, unknown_keys
from experiments.configs.panel import base as base_config
from experiments.queries import image_problem
from experiments.records import RecordStore
from experiments.report import write_report
from experiments.runs import data_usage_error
from lnjax import data
from lnjax.io import read_json, write_bytes_atomic, write_json_atomic
from lnjax.plots import neighborhood as plots

COLUMNS = ("fixed", "sensitivity")
FIGURES = ("neighborhood_panel.png", "neighborhood_mean.png", "eps_by_distance.png")


def parse_runs(text: str) -> dict[str, str]:
    """'none=runs/a,l0=runs/b' -> {row name: workdir}."""
    runs: dict[str, str] = {}
    for item in (s.strip() for s in str(text).split(",") if s.strip()):
        name, sep, workdir = item.partition("=")
        require(bool(sep and name.strip() and workdir.strip()), f"runs item {item!r}: expected name=workdir")
        require(name.strip() not in runs, f"runs names {name.strip()!r} twice")
        runs[name.strip()] = workdir.strip()
    require(
        bool(runs), f"runs = {text!r} names no neighborhood run; expected e.g. none=runs/neighborhood_none"
    )
    return runs


def load_searches(workdir: str) -> tuple[ConfigDict, dict[int, dict[str, Any]]]:
    """(config, {image: record}) of a neighborhood run: the images it searched (not skipped)."""
    path = Path(workdir)
    require((path / "config.json").is_file(), f"{workdir} holds no neighborhood run (no config.json)")
    c = ConfigDict(read_json(path / "config.json"))
    require(
        c.get("experiment") == "neighborhood", f"{workdir} is a {c.get('experiment')!r} run, not neighborhood"
    )
    store: RecordStore[int] = RecordStore(path / "results", "img_{:05d}")
    records = store.load_all(range(c.start, c.start + c.images))
    return c, {i: r for i, r in records.items() if r.get("methods")}


class Reference(NamedTuple):
    """One run's view of the reference image: its pixels, its layers and the digit masks."""

    x: np.ndarray  # [H, W, C] in [0, 1]
    layers: np.ndarray  # int [H, W]
    target_mask: np.ndarray  # bool [H, W]
    other_mask: np.ndarray  # bool [H, W]


def load_reference(c: ConfigDict, image: int, data_dir: str, where: str) -> Reference:
    """The reference image as the neighborhood run `c` (in `where`) layered it: its data, its layers."""
    train_config = Path(c.train_workdir) / "config.json"
    require(train_config.is_file(), f"{train_config} is missing (the training run of {where})")
    tc = ConfigDict(read_json(train_config))
    try:
        test = data.load_dataset(
            "double_mnist", "test", data_dir or c.data_dir or tc.data.data_dir, limit=image + 1
        )
    except data.DataError as e:
        raise data_usage_error(e) from e
    require(test.num_examples > image, f"image = {image} but the test split has {test.num_examples} images")
    problem, _, masks = image_problem(c, test, image, int(tc.k))
    return Reference(problem.x, problem.layers, masks[0], masks[1])


class Outputs(NamedTuple):
    """What `build` makes (nothing written yet)."""

    image: int  # the reference image
    figures: dict[str, Figure]  # {file name (FIGURES): figure}
    report: dict[str, Any]  # `neighborhood_stats.report` over the images every run searched
    cells: dict[str, Any]  # panel.json's cells: per run/column the reference image's search


def build(workdirs: dict[str, str], *, image: int | None = None, data_dir: str = "") -> Outputs:
    """The figures and the report of finished neighborhood runs (reads only).

    Args:
      workdirs: {row name: a finished neighborhood workdir} (e.g. {"none": "runs/neighborhood_none"}).
      image: the reference test image of the heatmaps (default: the first one every run searched).
      data_dir: DOUBLE-MNIST data dir (default: each run's own).

    Raises:
      UsageError: a workdir holds no neighborhood run, its training run or data is missing, or no
        image was searched by every run.
    """
    runs = {name: load_searches(wd) for name, wd in workdirs.items()}
    common = sorted(set.intersection(*(set(recs) for _, recs in runs.values())))
    require(bool(common), f"no image was searched by every run in {sorted(workdirs)}")
    image = common[0] if image is None else image
    refs = {name: load_reference(c, image, data_dir, workdirs[name]) for name, (c, _) in runs.items()}
    rep = stats.report(
        {name: {i: recs[i] for i in common} for name, (_, recs) in runs.items()},
        {name: bool(c.layers.get("target_layer", False)) for name, (c, _) in runs.items()},
    )
    single: dict[tuple[str, str], dict[str, Any]] = {}
    averaged: dict[tuple[str, str], dict[str, Any]] = {}
    curves: dict[tuple[str, str], dict[str, Any]] = {}
    cells: dict[str, Any] = {}
    for name, (_, recs) in runs.items():
        ref = refs[name]
        base = {
            "x": ref.x,
            "layers": ref.layers,
            "target_mask": ref.target_mask,
            "other_mask": ref.other_mask,
        }
        for col in COLUMNS:
            method = f"optimizer_{col}"
            m = recs.get(image, {}).get("methods", {}).get(method)
            if m is not None:
                note = f"log-vol {m['log_volume']:.0f}, {m['queries']} q" if m["verified"] else "(none)"
                single[(name, col)] = {**base, "eps": m["eps"], "note": note}
                cells[f"{name}/{col}"] = {k: m[k] for k in ("log_volume", "queries", "verified")}
            summary = rep["defenses"][name].get(method)
            per_layer = None if summary is None else summary["log10_eps_per_layer"]
            if per_layer is None:
                continue
            if len(per_layer["mean"]) == int(ref.layers.max()) + 1:  # else the reference is layered otherwise
                eps = [0.0 if v is None else 10.0**v for v in per_layer["mean"]]  # the geometric mean ε
                averaged[(name, col)] = {**base, "eps": eps, "note": f"{per_layer['searches']} verified"}
            if summary["layers"] is not None:
                curves[(name, col)] = {**summary["layers"], "mean": per_layer["mean"], "ci": per_layer["ci"]}
    rows, n = list(workdirs), rep["images"]
    outlines = "target outlined white, non-target black"
    figures = {
        "neighborhood_panel.png": plots.panel(
            single, rows=rows, cols=COLUMNS, title=f"log10 ε per pixel, image {image} ({outlines})"
        ),
        "neighborhood_mean.png": plots.panel(
            averaged,
            rows=rows,
            cols=COLUMNS,
            title=f"mean log10 ε per layer over {n} images, drawn on image {image}'s layers",
        ),
        "eps_by_distance.png": plots.eps_by_distance(
            curves,
            rows=rows,
            cols=COLUMNS,
            title=f"mean log10 ε per layer over {n} images (95 % t intervals)",
        ),
    }
    return Outputs(image, figures, rep, cells)


def validate(c: ConfigDict) -> dict[str, str]:
    """The runs {row: workdir}; UsageError naming the first invalid value (reads and writes nothing)."""
    unknown = unknown_keys(c.to_dict(), base_config().to_dict())
    require(not unknown, f"unknown config options {unknown}; see experiments/configs/panel.py")
    require(c.experiment == "panel", f"experiment = {c.experiment!r}; this module runs 'panel'")
    require(c.image >= -1, f"image = {c.image} must be ≥ 0 (or -1: the first one every run searched)")
    require(c.dpi >= 10, f"dpi = {c.dpi} must be ≥ 10")
    return parse_runs(c.runs)


def run(c: ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Draws the figures and checks the claims; returns the report (also report.json) with the
    reference image's cells (panel.json).

    Everything is read and drawn before the workdir is touched, so bad input writes nothing.
    """
    del progress  # three figures: nothing to show
    workdirs = validate(c)
    out = build(workdirs, image=None if c.image < 0 else int(c.image), data_dir=c.data_dir)
    pngs = {}
    for name, fig in out.figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=int(c.dpi))
        plt.close(fig)
        pngs[name] = buf.getvalue()
    output = Path(c.output) if c.output else None
    require(output is None or output.parent.is_dir(), f"output = {c.output!r}: its directory does not exist")
    resolved = to_dict(c)
    path = open_workdir(check_workdir(workdir, resolved), resolved)
    for name, png in pngs.items():
        write_bytes_atomic(path / "figures" / name, png)
    if output is not None:
        write_bytes_atomic(output, pngs["neighborhood_panel.png"])
        for name in FIGURES[1:]:
            write_bytes_atomic(output.parent / name, pngs[name])
    write_json_atomic(path / "panel.json", {"image": out.image, "cells": out.cells})
    report = {"name": c.name, "image": out.image, "runs": workdirs, **out.report}
    write_json_atomic(path / "report.json", report)
    write_report(path, "claims.md", [readme.readme_tables(report)], {"claims": readme.claims_csv(report)})
    return {**report, "cells": out.cells, "output": str(output) if output else None, "workdir": str(path)}
