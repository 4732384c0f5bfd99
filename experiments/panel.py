"""The `panel` experiment: the seed's Figures 2–3 from finished neighborhood runs.

  python -m experiments.run --flagfile=experiments/flagfiles/panel.flags

Rows are runs (`runs`: comma-separated `name=workdir` of finished `neighborhood` runs, e.g. one per
defense), columns the shrink methods (fixed, sensitivity); each cell is log10 ε per pixel of one
test image (`image`, default the first one every run searched) on one colour scale.

workdir/config.json, figures/neighborhood_panel.png (and a copy at `output` if set), panel.json
(the image and, per cell, log-volume, queries, verified), log.txt. The summary is returned.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from ml_collections import ConfigDict

from experiments.common import check_workdir, open_workdir, require, to_dict, unknown_keys
from experiments.configs.panel import base as base_config
from experiments.queries import image_problem
from experiments.records import RecordStore
from experiments.runs import data_usage_error
from lnjax import data
from lnjax.io import read_json, write_bytes_atomic, write_json_atomic
from lnjax.plots import neighborhood as plots

COLUMNS = ("fixed", "sensitivity")


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


def make_panel(workdirs: dict[str, str], *, image: int | None = None, data_dir: str = "") -> tuple[Any, int]:
    """The panel figure for one image: rows = runs (e.g. defenses), columns = shrink methods.

    Args:
      workdirs: {row name: a finished neighborhood workdir} (e.g. {"none": "runs/neighborhood_none"}).
      image: the test image (default: the first one every run searched).
      data_dir: DOUBLE-MNIST data dir (default: each run's own).

    Returns:
      (Figure, the image index).

    Raises:
      UsageError: a workdir holds no neighborhood run, or no image was searched by every run.
    """
    runs = {name: load_searches(wd) for name, wd in workdirs.items()}
    if image is None:
        common = set.intersection(*(set(r) for _, r in runs.values()))
        require(bool(common), f"no image was searched by every run in {sorted(workdirs)}")
        image = min(common)
    assert image is not None
    cells = {}
    for name, (c, recs) in runs.items():
        if image not in recs:
            continue
        train_config = Path(c.train_workdir) / "config.json"
        require(train_config.is_file(), f"{train_config} is missing (the training run of {workdirs[name]})")
        tc = ConfigDict(read_json(train_config))
        try:
            test = data.load_dataset(
                "double_mnist", "test", data_dir or c.data_dir or tc.data.data_dir, limit=image + 1
            )
        except data.DataError as e:
            raise data_usage_error(e) from e
        problem, _, masks = image_problem(c, test, image, int(tc.k))
        for col in COLUMNS:
            m = recs[image]["methods"].get(f"optimizer_{col}")
            if m is None:
                continue
            cells[(name, col)] = {
                "x": problem.x,
                "layers": problem.layers,
                "eps": m["eps"],
                "target_mask": masks[0],
                "other_mask": masks[1],
                "note": f"log-vol {m['log_volume']:.0f}, {m['queries']} q"
                + ("" if m["verified"] else " (none)"),
            }
    fig = plots.panel(
        cells,
        rows=list(workdirs),
        cols=COLUMNS,
        title=f"log10 ε per pixel, image {image} (target outlined white, non-target black)",
    )
    return fig, image


def validate(c: ConfigDict) -> dict[str, str]:
    """The runs {row: workdir}; UsageError naming the first invalid value (reads and writes nothing)."""
    unknown = unknown_keys(c.to_dict(), base_config().to_dict())
    require(not unknown, f"unknown config options {unknown}; see experiments/configs/panel.py")
    require(c.experiment == "panel", f"experiment = {c.experiment!r}; this module runs 'panel'")
    require(c.image >= -1, f"image = {c.image} must be ≥ 0 (or -1: the first one every run searched)")
    require(c.dpi >= 10, f"dpi = {c.dpi} must be ≥ 10")
    return parse_runs(c.runs)


def run(c: ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Draws the panel; returns the image and, per cell, the search's log-volume and queries."""
    del progress  # one figure: nothing to show
    workdirs = validate(c)
    fig, image = make_panel(workdirs, image=None if c.image < 0 else int(c.image), data_dir=c.data_dir)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=int(c.dpi))
    plt.close(fig)
    output = Path(c.output) if c.output else None
    require(output is None or output.parent.is_dir(), f"output = {c.output!r}: its directory does not exist")
    resolved = to_dict(c)
    path = open_workdir(check_workdir(workdir, resolved), resolved)
    write_bytes_atomic(path / "figures" / "neighborhood_panel.png", buf.getvalue())
    if output is not None:
        write_bytes_atomic(output, buf.getvalue())
    cells = {}
    for name, wd in workdirs.items():
        _, recs = load_searches(wd)
        for col in COLUMNS:
            m = recs.get(image, {}).get("methods", {}).get(f"optimizer_{col}")
            if m is not None:
                cells[f"{name}/{col}"] = {k: m[k] for k in ("log_volume", "queries", "verified")}
    summary = {"image": image, "cells": cells}
    write_json_atomic(path / "panel.json", summary)
    return {**summary, "output": str(output) if output else None, "workdir": str(path)}
