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

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from ml_collections import ConfigDict
from tqdm import tqdm

from experiments.common import check_workdir, open_workdir, require, to_dict
from experiments.configs.blocks import optimizer_config, verifier_config
from experiments.configs.neighborhood import METHODS, base as base_config
from experiments.queries import (
    OBJECTS,
    TARGETS,
    check_queries,
    image_problem,
    make_verifier,
    warm_up,
)
from experiments.records import RecordStore
from experiments.runs import load_double_mnist_run
from lnjax import data, models, verify as V
from lnjax.io import write_json_atomic
from lnjax.neighborhood import layers as NL
from lnjax.neighborhood.baseline import SCALES, binary_search
from lnjax.neighborhood.config import OptimizerConfig
from lnjax.neighborhood.optimizer import Optimizer, make_optimizer
from lnjax.neighborhood.problem import Problem, Result
from lnjax.plots import neighborhood as plots


def parse_methods(text: str) -> tuple[str, ...]:
    methods = tuple(m.strip() for m in str(text).split(",") if m.strip())
    bad = [m for m in methods if m not in METHODS]
    require(bool(methods) and not bad, f"methods = {text!r}: expected a comma-separated subset of {METHODS}")
    require(len(set(methods)) == len(methods), f"methods = {text!r} names a method twice")
    return methods


class Settings(NamedTuple):
    """The checked library options of a neighborhood config."""

    methods: tuple[str, ...]
    verifier: V.VerifierConfig
    optimizers: dict[str, OptimizerConfig]  # per optimizer method (its shrink weights)


def validate(c: ConfigDict) -> Settings:
    """The checked options; UsageError naming the first invalid value (reads and writes nothing)."""
    check_queries(c, base_config(), TARGETS)
    require(c.figure_images >= 0, f"figure_images = {c.figure_images} must be ≥ 0")
    methods = parse_methods(c.methods)
    lay = c.layers
    require(lay.object in OBJECTS, f"unknown layers.object {lay.object!r}; expected one of {OBJECTS}")
    require(lay.metric in NL.METRICS, f"unknown layers.metric {lay.metric!r}; expected one of {NL.METRICS}")
    require(lay.max_layers >= 1, f"layers.max_layers = {lay.max_layers} must be ≥ 1")
    b = c.baseline
    require(b.scale in SCALES, f"unknown baseline.scale {b.scale!r}; expected one of {SCALES}")
    require(b.tol > 0, f"baseline.tol = {b.tol} must be > 0")
    require(0 < b.eps_min < b.eps_max <= 1, "baseline.eps_min and eps_max need 0 < eps_min < eps_max ≤ 1")
    require(b.max_queries >= 0 and b.time_budget >= 0, "baseline.max_queries and time_budget must be ≥ 0")
    require(c.optimizer.time_budget >= 0, f"optimizer.time_budget = {c.optimizer.time_budget} must be ≥ 0")
    optimizer_config(c.optimizer)  # checked even when only the baseline runs
    shrinks = {m: m.removeprefix("optimizer_") for m in methods if m.startswith("optimizer_")}
    optimizers = {m: optimizer_config(c.optimizer, shrink) for m, shrink in shrinks.items()}
    return Settings(methods, verifier_config(c.verifier), optimizers)


def build_optimizer(config: OptimizerConfig) -> Optimizer:
    """`make_optimizer` with an `OptimizerConfig` (its fields are the keyword arguments)."""
    return make_optimizer(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})


def run_method(
    method: str,
    c: ConfigDict,
    optimizers: dict[str, Optimizer],
    key: jax.Array,
    verify: Any,
    view: models.LayerView,
    problem: Problem,
    progress: Any = None,
) -> Result:
    """One search of `method` on `problem` (`optimizers`: the built optimizer of each optimizer method)."""
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
    tick = None if progress is None else (lambda s: progress())
    return optimizers[method].run(key, verify, view, problem, progress=tick)


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


def search_image(
    c: ConfigDict,
    methods: tuple[str, ...],
    optimizers: dict[str, Optimizer],
    verify: Any,
    view: models.LayerView,
    test: data.Dataset,
    index: int,
    k: int,
    root: jax.Array,
    *,
    figures: Path | None,  # the workdir: figures/img_NNNNN_*.png are saved there
    progress: bool,
) -> dict[str, Any]:
    """The record of one image: every method's search (or why it was skipped); figures if asked."""
    problem, facts, masks = image_problem(c, test, index, k)
    clean = float(problem.spec.margin(models.apply_layers(view, jnp.asarray(problem.x))))
    record: dict[str, Any] = {**facts, "clean_margin": clean, "methods": {}}
    if c.only_correct and clean <= 0:
        record["skipped"] = "the model misses the target at the image itself"
        return record
    for m_i, method in enumerate(methods):
        bar = tqdm(desc=f"image {index} {method}", unit="query", leave=False, disable=not progress)
        key = jax.random.fold_in(jax.random.fold_in(root, index), m_i)
        res = run_method(method, c, optimizers, key, verify, view, problem, progress=bar.update)
        bar.close()
        record["methods"][method] = res.to_json()
        logging.info(
            "image %d %s: %d queries, %.1f s, log-volume %.1f, %s",
            index, method, res.queries, res.time_s, res.log_volume, res.stop_reason,
        )  # fmt: skip
    if figures is not None:
        save_figures(figures, record, problem.x, problem.layers, masks)
    return record


def run(c: ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Searches the configured neighborhoods; returns the summary (also written to summary.json).

    Everything is checked and built (config, training run, data, verifier, optimizers) before the
    workdir is touched, so bad input writes nothing.
    """
    settings = validate(c)
    methods = settings.methods
    model, params, k, test = load_double_mnist_run(c, needs="neighborhoods need a DOUBLE-MNIST run")
    resolved = to_dict(c)
    path = check_workdir(workdir, resolved)
    view = models.layer_view(model, params)
    optimizers = {m: build_optimizer(o) for m, o in settings.optimizers.items()}
    worker = V.MilpWorker()
    try:
        verify = make_verifier(view, settings.verifier, worker)
        open_workdir(path, resolved)
        store: RecordStore[int] = RecordStore(path / "results", "img_{:05d}")
        indices = range(c.start, c.start + c.images)
        if store.missing(indices):
            seconds = warm_up(verify, test, c.start, TARGETS[c.target], c.spec, k)
            logging.info("verifier warm-up (compilation): %.1f s", seconds)
        root = jax.random.key(c.seed)

        def compute(index: int) -> dict[str, Any]:
            figures = path if index - c.start < c.figure_images else None
            return search_image(
                c, methods, optimizers, verify, view, test, index, k, root, figures=figures, progress=progress
            )

        records = store.resume(indices, compute, desc="images", progress=progress)
    finally:
        worker.close()
    summary = summarize(records, methods)
    write_json_atomic(path / "summary.json", summary)
    return {**summary, "workdir": str(path)}
