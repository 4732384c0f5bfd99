"""The `neighborhood` experiment: maximal robust layer-neighborhoods on DOUBLE-MNIST test images.

  python -m experiments.run --flagfile=experiments/flagfiles/neighborhood_none.flags

For each test image start .. start + images − 1 (the `target` digit must stay in the top k; the
other digit is the non-target object), the layers are the pixels at distance d = 0..max_layers − 1
from the non-target digit's ink (or bounding box), and each configured method searches a maximal
robust ε per layer with the staged verifier as the oracle (`lnjax.neighborhood`): the MaRVeL-style
optimizer with fixed or sensitivity shrink weights, and/or the per-layer binary-search baseline.

workdir/config.json, results/img_NNNNN.json (one per image, all methods, written atomically as soon
as the image is done, so a restarted run skips finished images): ε per layer, log-volume and
Σ|l_d|ε_d, verifier queries by verdict and deciding stage, time, the iteration trail;
figures/img_NNNNN_heatmap.png (log ε per pixel, digits outlined, one panel per method) and
figures/img_NNNNN_eps.png (ε against layer index) for the first `figure_images` images;
summary.json (medians per method); log.txt. The summary is returned (the runner prints it as JSON).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from ml_collections import ConfigDict
from tqdm import tqdm

from experiments.common import check_workdir, open_workdir, require, to_dict, unknown_keys
from experiments.configs.neighborhood import METHODS, base as base_config
from experiments.verify import (
    MILP_MODES,
    OBJECTS,
    SIDE_NAMES,
    SPECS,
    load_double_mnist_run,
    make_spec,
    make_verifier_from_config,
    object_mask,
    parse_stages,
)
from lnjax import data, models, verify as V
from lnjax.io import read_json, write_json_atomic
from lnjax.neighborhood import layers as NL
from lnjax.neighborhood.baseline import SCALES, binary_search
from lnjax.neighborhood.optimizer import NORMS, make_optimizer
from lnjax.neighborhood.problem import make_problem
from lnjax.neighborhood.sensitivity import ORIENTATIONS, REDUCTIONS
from lnjax.plots import neighborhood as plots

TARGETS = {"left": 0, "right": 1}


def parse_methods(text: str) -> tuple[str, ...]:
    methods = tuple(m.strip() for m in str(text).split(",") if m.strip())
    bad = [m for m in methods if m not in METHODS]
    require(methods and not bad, f"methods = {text!r}: expected a comma-separated subset of {METHODS}")
    require(len(set(methods)) == len(methods), f"methods = {text!r} names a method twice")
    return methods


def validate(c: ConfigDict) -> None:
    """Raises UsageError naming the first invalid value (before anything is loaded or written)."""
    unknown = unknown_keys(c.to_dict(), base_config().to_dict())
    require(not unknown, f"unknown config options {unknown}; see experiments/configs/neighborhood.py")
    require(c.experiment == "neighborhood", f"experiment = {c.experiment!r}; this module runs 'neighborhood'")
    require(bool(c.train_workdir), "train_workdir is empty; name a finished training run (runs/dmnist_none)")
    require(c.images >= 1, f"images = {c.images} must be ≥ 1")
    require(c.start >= 0, f"start = {c.start} must be ≥ 0")
    require(c.target in TARGETS, f"unknown target {c.target!r}; expected one of {sorted(TARGETS)}")
    require(c.spec in SPECS, f"unknown spec {c.spec!r}; expected one of {SPECS}")
    require(c.figure_images >= 0, f"figure_images = {c.figure_images} must be ≥ 0")
    parse_methods(c.methods)
    lay = c.layers
    require(lay.object in OBJECTS, f"unknown layers.object {lay.object!r}; expected one of {OBJECTS}")
    require(lay.metric in NL.METRICS, f"unknown layers.metric {lay.metric!r}; expected one of {NL.METRICS}")
    require(lay.max_layers >= 1, f"layers.max_layers = {lay.max_layers} must be ≥ 1")
    o = c.optimizer
    require(o.norm in NORMS, f"unknown optimizer.norm {o.norm!r}; expected one of {NORMS}")
    require(
        o.orientation in ORIENTATIONS,
        f"unknown optimizer.orientation {o.orientation!r}; expected one of {ORIENTATIONS}",
    )
    require(
        o.sensitivity_reduce in REDUCTIONS,
        f"unknown optimizer.sensitivity_reduce {o.sensitivity_reduce!r}; expected one of {REDUCTIONS}",
    )
    require(o.max_queries >= 1, f"optimizer.max_queries = {o.max_queries} must be ≥ 1")
    require(o.time_budget >= 0, f"optimizer.time_budget = {o.time_budget} must be ≥ 0 (0: unlimited)")
    require(0 < o.eps_min < o.eps_max <= 1, "optimizer.eps_min and eps_max need 0 < eps_min < eps_max ≤ 1")
    b = c.baseline
    require(b.scale in SCALES, f"unknown baseline.scale {b.scale!r}; expected one of {SCALES}")
    require(b.tol > 0, f"baseline.tol = {b.tol} must be > 0")
    require(0 < b.eps_min < b.eps_max <= 1, "baseline.eps_min and eps_max need 0 < eps_min < eps_max ≤ 1")
    require(b.max_queries >= 0 and b.time_budget >= 0, "baseline.max_queries and time_budget must be ≥ 0")
    v = c.verifier
    parse_stages(v.stages)
    require(v.time_limit > 0, f"verifier.time_limit = {v.time_limit} must be > 0 seconds")
    require(v.milp_mode in MILP_MODES, f"unknown verifier.milp_mode {v.milp_mode!r}; expected {MILP_MODES}")


def optimizer_from_config(o: ConfigDict, shrink: str):
    """`make_optimizer` from the `optimizer` block (shrink: "fixed" or "sensitivity")."""
    kwargs = {k: v for k, v in o.to_dict().items()}
    kwargs["time_budget"] = float(o.time_budget) or None
    return make_optimizer(shrink=shrink, **kwargs)


def run_method(method: str, c: ConfigDict, key, verify, view, problem, progress=None):
    """One search of `method` on `problem` -> `neighborhood.problem.Result`."""
    if method == "baseline":
        b = c.baseline
        return binary_search(
            key,
            verify,
            problem,
            scale=b.scale,
            eps_max=float(b.eps_max),
            eps_min=float(b.eps_min),
            tol=float(b.tol),
            max_queries=int(b.max_queries) or None,
            time_budget=float(b.time_budget) or None,
            progress=None if progress is None else (lambda d, eps: progress()),
        )
    opt = optimizer_from_config(c.optimizer, method.removeprefix("optimizer_"))
    return opt.run(key, verify, view, problem, progress=None if progress is None else (lambda s: progress()))


def _record_path(path: Path, index: int) -> Path:
    return path / "results" / f"img_{index:05d}.json"


def image_problem(c: ConfigDict, test, index: int, k: int):
    """(problem, facts, masks) of one image: the layers around the non-target digit, the spec."""
    side = TARGETS[c.target]
    digits = [int(d) for d in test.meta["digits"][index]]
    target, other = digits[side], digits[1 - side]
    other_mask = object_mask(test.meta, index, 1 - side, c.layers.object)
    target_mask = object_mask(test.meta, index, side, "ink")
    layers = NL.layer_map(other_mask, metric=c.layers.metric, max_layers=int(c.layers.max_layers))
    problem = make_problem(test.x[index], layers, make_spec(c.spec, target, k))
    facts = {
        "image": int(index),
        "digits": digits,
        "side": SIDE_NAMES[side],
        "target": target,
        "other": other,
        "layer_sizes": problem.sizes.tolist(),
    }
    return problem, facts, (target_mask, other_mask)


def summarize(records: list[dict[str, Any]], methods: tuple[str, ...]) -> dict[str, Any]:
    """Medians per method over the images that were searched."""
    out: dict[str, Any] = {"images": len(records), "skipped": sum("skipped" in r for r in records)}
    for m in methods:
        rs = [r["methods"][m] for r in records if m in r.get("methods", {})]
        if not rs:
            continue

        def med(key, rs=rs):
            return float(np.median([r[key] for r in rs]))

        out[m] = {
            "searched": len(rs),
            "verified": sum(r["verified"] for r in rs),
            "median_queries": med("queries"),
            "median_time_s": med("time_s"),
            "median_log_volume": med("log_volume"),
            "median_linear_norm": med("linear_norm"),
            "median_mean_eps": med("mean_eps"),
        }
    return out


def save_figures(path: Path, record: dict[str, Any], x: np.ndarray, layers, masks) -> None:
    eps = {m: np.asarray(r["eps"]) for m, r in record["methods"].items()}
    title = f"image {record['image']}: target {record['target']}, non-target {record['other']}"
    fig = plots.heatmaps(x, layers, eps, target_mask=masks[0], other_mask=masks[1], title=title)
    fig.savefig(path / "figures" / f"img_{record['image']:05d}_heatmap.png", dpi=110)
    fig2 = plots.eps_by_layer(eps, title=title)
    fig2.savefig(path / "figures" / f"img_{record['image']:05d}_eps.png", dpi=110)
    plots.close(fig, fig2)


def run(c: ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Searches the configured neighborhoods; returns the summary (also written to summary.json)."""
    validate(c)
    methods = parse_methods(c.methods)
    model, params, k, test = load_double_mnist_run(c, needs="neighborhoods need a DOUBLE-MNIST run")
    resolved = to_dict(c)
    path = open_workdir(check_workdir(workdir, resolved), resolved)
    (path / "results").mkdir(exist_ok=True)

    view = models.layer_view(model, params)
    worker = V.MilpWorker()
    verify = make_verifier_from_config(view, c.verifier, worker)
    root = jax.random.key(c.seed)
    records = []
    indices = range(c.start, c.start + c.images)
    try:
        if any(not _record_path(path, i).is_file() for i in indices):
            x0 = test.x[c.start]
            spec0 = make_spec(c.spec, int(test.meta["digits"][c.start][TARGETS[c.target]]), k)
            logging.info("verifier warm-up (compilation): %.1f s", verify.warm_up(x0, x0, spec0))
        for n, index in enumerate(tqdm(indices, desc="images", disable=not progress)):
            file = _record_path(path, index)
            if file.is_file():
                records.append(read_json(file))
                continue
            problem, facts, masks = image_problem(c, test, index, k)
            clean = float(problem.spec.margin(models.apply_layers(view, jnp.asarray(problem.x))))
            record: dict[str, Any] = {**facts, "clean_margin": clean, "methods": {}}
            if c.only_correct and clean <= 0:
                record["skipped"] = "the model misses the target at the image itself"
            else:
                for m_i, method in enumerate(methods):
                    bar = tqdm(
                        desc=f"image {index} {method}", unit="query", leave=False, disable=not progress
                    )
                    key = jax.random.fold_in(jax.random.fold_in(root, index), m_i)
                    res = run_method(method, c, key, verify, view, problem, progress=bar.update)
                    bar.close()
                    record["methods"][method] = res.to_json()
                    logging.info(
                        "image %d %s: %d queries, %.1f s, log-volume %.1f, %s",
                        index,
                        method,
                        res.queries,
                        res.time_s,
                        res.log_volume,
                        res.stop_reason,
                    )
            write_json_atomic(file, record)
            records.append(record)
            if n < c.figure_images and record["methods"]:
                save_figures(path, record, problem.x, problem.layers, masks)
    finally:
        worker.close()
    summary = summarize(records, methods)
    write_json_atomic(path / "summary.json", summary)
    return {**summary, "workdir": str(path)}


def make_panel(workdirs: dict[str, str], *, image: int | None = None, data_dir: str = ""):
    """The seed's Figures 2–3 for one image: rows = runs (e.g. defenses), columns = shrink methods.

    Args:
      workdirs: {row name: a finished neighborhood workdir} (e.g. {"none": "runs/neighborhood_none"}).
      image: the test image (default: the first one every run searched with a fixed-weight optimizer).
      data_dir: DOUBLE-MNIST data dir (default: each run's own).

    Returns:
      (Figure, the image index).
    """
    runs = {}
    for name, wd in workdirs.items():
        path = Path(wd)
        require((path / "config.json").is_file(), f"{wd} holds no neighborhood run (no config.json)")
        c = ConfigDict(read_json(path / "config.json"))
        recs = {
            int(f.stem.split("_")[1]): read_json(f) for f in sorted((path / "results").glob("img_*.json"))
        }
        runs[name] = (c, {i: r for i, r in recs.items() if r.get("methods")})
    if image is None:
        common = set.intersection(*(set(r) for _, r in runs.values()))
        require(bool(common), f"no image was searched by every run in {sorted(workdirs)}")
        image = min(common)
    cols = ("fixed", "sensitivity")
    cells = {}
    for name, (c, recs) in runs.items():
        if image not in recs:
            continue
        tc = ConfigDict(read_json(Path(c.train_workdir) / "config.json"))
        test = data.load_dataset(
            "double_mnist", "test", data_dir or c.data_dir or tc.data.data_dir, limit=image + 1
        )
        problem, _, masks = image_problem(c, test, image, int(tc.k))
        for col in cols:
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
        cols=cols,
        title=f"log10 ε per pixel, image {image} (target outlined white, non-target black)",
    )
    return fig, image
