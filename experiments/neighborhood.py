"""The `neighborhood` experiment: maximal robust layer-neighborhoods on DOUBLE-MNIST test images.

  python -m experiments.run --flagfile=experiments/flagfiles/neighborhood_none.flags

For each test image start .. start + images − 1 (the `target` digit must stay in the top k; the
other digit is the non-target object), the layers are the pixels at distance d = 0..max_layers − 1
from the non-target digit's ink (or bounding box), and each configured method searches a maximal
robust ε per layer with the staged verifier as the oracle (`lnjax.neighborhood`): the MaRVeL-style
optimizer with fixed or sensitivity shrink weights, and/or the per-layer binary-search baseline.

The work items are (image, method) searches, run in this process (`workers = 1`) or on Ray actors
(`experiments.parallel`); each search's key is fold_in(fold_in(seed key, image), method index), so
the records do not depend on which worker ran them or in which order.

workdir/config.json, results/partial/img_NNNNN_METHOD.json (one per finished search, written
atomically at once; removed when its image's record is written), results/img_NNNNN.json (one per
image, all methods, written as soon as its searches are done, so a restarted run skips finished
images and searches; `.error.json` beside a search that failed on a Ray worker): ε per layer, log-volume and
Σ|l_d|ε_d, verifier queries by verdict and deciding stage, time, the iteration trail;
figures/img_NNNNN_heatmap.png (log ε per pixel, digits outlined, one panel per method) and
figures/img_NNNNN_eps.png (ε against layer index) for the first `figure_images` images;
summary.json (medians per method); log.txt. The summary is returned (the runner prints it as JSON).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from ml_collections import ConfigDict
from tqdm import tqdm

from experiments import parallel
from experiments.common import check_workdir, open_workdir, require, results_config
from experiments.configs.blocks import optimizer_config, verifier_config
from experiments.configs.neighborhood import METHODS, base as base_config
from experiments.neighborhood_stats import certificate_medians, per_layer_log10, status_share
from experiments.queries import (
    OBJECTS,
    TARGETS,
    check_queries,
    image_problem,
    warm_up,
)
from experiments.records import RecordStore
from experiments.runs import load_double_mnist_run
from lnjax import data, models, verify as V
from lnjax.io import write_json_atomic
from lnjax.neighborhood import layers as NL
from lnjax.neighborhood.baseline import SCALES, binary_search, uniform_search
from lnjax.neighborhood.certificate import Falsifier, certify_maximality, make_falsifier
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
    cert = c.certificate
    require(cert.restarts >= 1 and cert.steps >= 1, "certificate.restarts and steps must be ≥ 1")
    require(cert.odi_steps >= 0, f"certificate.odi_steps = {cert.odi_steps} must be ≥ 0 (0: uniform starts)")
    require(cert.targets >= 0, f"certificate.targets = {cert.targets} must be ≥ 0 (0: untargeted PGD only)")
    require(cert.rel_tol > 0, f"certificate.rel_tol = {cert.rel_tol} must be > 0")
    require(cert.time_budget >= 0, f"certificate.time_budget = {cert.time_budget} must be ≥ 0 (0: unlimited)")
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
    if method in ("baseline", "uniform"):  # the same bisection settings (`c.baseline`)
        b = c.baseline
        bisection = dict(
            scale=b.scale,
            eps_max=float(b.eps_max),
            eps_min=float(b.eps_min),
            tol=float(b.tol),
            max_queries=int(b.max_queries) or None,
            time_budget=float(b.time_budget) or None,
        )
        if method == "uniform":
            return uniform_search(key, verify, problem, **bisection)
        tick_layer = None if progress is None else (lambda d, eps: progress())
        return binary_search(key, verify, problem, progress=tick_layer, **bisection)
    tick = None if progress is None else (lambda s: progress())
    return optimizers[method].run(key, verify, view, problem, progress=tick)


def median_scale_up(searches: list[dict[str, Any]]) -> float | None:
    """The median factor of the optimizer's scale-up phase (`OptimizerConfig.scale_up`) over the
    searches that asked at least one scale-up query (converged ones); None when none did (the
    baselines, capped searches)."""
    ups = [s["setup"]["scale_up"] for s in searches if "scale_up" in s.get("setup", {})]
    factors = [u["factor"] for u in ups if u["queries"] > 0]
    return float(np.median(factors)) if factors else None


def summarize(records: list[dict[str, Any]], methods: tuple[str, ...]) -> dict[str, Any]:
    """Medians per method over the images that were searched (a median over the finite values: an
    unverified search's log-volume is −inf, null in the JSON; None when there is none)."""
    out: dict[str, Any] = {"images": len(records), "skipped": sum("skipped" in r for r in records)}
    for m in methods:
        rs = [r["methods"][m] for r in records if m in r.get("methods", {})]
        if not rs:
            continue

        def med(key, rs=rs):
            values = [float(r[key]) for r in rs if r.get(key) is not None and math.isfinite(r[key])]
            return float(np.median(values)) if values else None

        out[m] = {
            "searched": len(rs),
            "verified": sum(r["verified"] for r in rs),
            "converged": sum(bool(r.get("converged")) for r in rs),
            "converged_share": sum(bool(r.get("converged")) for r in rs) / len(rs),
            "unknown_share": status_share(rs, "unknown"),
            "median_zero_pixels": med("zero_pixels"),
            **certificate_medians(rs),
            "certified": sum(r.get("certificate", {}).get("gap") is not None for r in rs),
            "median_queries": med("queries"),
            "median_scale_up": median_scale_up(rs),
            "median_time_s": med("time_s"),
            "median_log_volume": med("log_volume"),
            "median_linear_norm": med("linear_norm"),
            "median_mean_eps": med("mean_eps"),
            "log10_eps_per_layer": per_layer_log10(rs),
        }
    return out


def certify(
    c: ConfigDict, key: jax.Array, verify: Any, problem: Problem, res: Result, falsifier: Falsifier
) -> dict[str, Any]:
    """The maximality certificate of a search's ε (`certify_maximality`), as JSON; {} when the
    search verified nothing (there is no ε to bracket)."""
    if not res.verified:
        return {}
    cert = c.certificate
    out = certify_maximality(
        key,
        verify,
        problem,
        res.eps,
        falsifier,
        rel_tol=float(cert.rel_tol),
        per_layer=bool(cert.per_layer),
        time_budget=float(cert.time_budget) or None,
        proved=res.verified,  # the search's ROBUST verdict on res.eps (always, past the check above)
        unproved_scale=res.unproved_scale,  # its scale-up's last ask
    )
    return out.to_json()


def save_figures(path: Path, record: dict[str, Any], x: np.ndarray, layers, masks) -> None:
    eps = {m: np.asarray(r["eps"]) for m, r in record["methods"].items()}
    title = f"image {record['image']}: target {record['target']}, non-target {record['other']}"
    fig = plots.heatmaps(x, layers, eps, target_mask=masks[0], other_mask=masks[1], title=title)
    fig.savefig(path / "figures" / f"img_{record['image']:05d}_heatmap.png", dpi=110)
    fig2 = plots.eps_by_layer(eps, title=title)
    fig2.savefig(path / "figures" / f"img_{record['image']:05d}_eps.png", dpi=110)
    plots.close(fig, fig2)


NEEDS = "neighborhoods need a DOUBLE-MNIST run"
SKIPPED = "the model misses the target at the image itself"


def search_item(
    c: ConfigDict,
    methods: tuple[str, ...],
    optimizers: dict[str, Optimizer],
    verify: Any,
    view: models.LayerView,
    test: data.Dataset,
    k: int,
    root: jax.Array,
    item: tuple[int, str],
    *,
    progress: bool,
) -> dict[str, Any]:
    """The record of one work item (image, method): the clean margin and the method's search, or
    why the image is skipped. The search's key is fold_in(fold_in(root, image), method index)."""
    index, method = item
    problem, _, _ = image_problem(c, test, index, k)
    clean = float(problem.spec.margin(models.apply_layers(view, jnp.asarray(problem.x))))
    if c.only_correct and clean <= 0:
        return {"clean_margin": clean, "skipped": SKIPPED}
    bar = tqdm(desc=f"image {index} {method}", unit="query", leave=False, disable=not progress)
    key = jax.random.fold_in(jax.random.fold_in(root, index), methods.index(method))
    res = run_method(method, c, optimizers, key, verify, view, problem, progress=bar.update)
    bar.close()
    search = res.to_json()
    if c.certificate.enabled:
        # the strong box PGD (`gradients.pgd_in_box`: jitted once per input shape, spec rows as arrays)
        cert = c.certificate
        falsifier = make_falsifier(
            view,
            problem.spec,
            steps=int(cert.steps),
            restarts=int(cert.restarts),
            odi_steps=int(cert.odi_steps),
            targets=int(cert.targets),
        )
        cert_key = jax.random.fold_in(jax.random.fold_in(root, index), len(METHODS) + methods.index(method))
        search["certificate"] = certify(c, cert_key, verify, problem, res, falsifier)
    logging.info(
        "image %d %s: %d queries, %.1f s, log-volume %.1f, %s, gap %s",
        index, method, res.queries, res.time_s, res.log_volume, res.stop_reason,
        search.get("certificate", {}).get("gap"),
    )  # fmt: skip
    return {"clean_margin": clean, "search": search}


def image_record(
    c: ConfigDict,
    test: data.Dataset,
    index: int,
    k: int,
    searches: dict[str, dict[str, Any]],
    *,
    figures: Path | None,  # the workdir: figures/img_NNNNN_*.png are saved there
) -> dict[str, Any]:
    """The record of one image from its searches ({method: `search_item` record}, in method order)."""
    problem, facts, masks = image_problem(c, test, index, k)
    first = next(iter(searches.values()))
    record: dict[str, Any] = {**facts, "clean_margin": first["clean_margin"], "methods": {}}
    if any("skipped" in s for s in searches.values()):
        record["skipped"] = SKIPPED
        return record
    record["methods"] = {m: s["search"] for m, s in searches.items()}
    if figures is not None:
        save_figures(figures, record, problem.x, problem.layers, masks)
    return record


@dataclasses.dataclass(frozen=True)
class ImageSearches:
    """A Ray actor's setup (picklable: the config as plain values, `ConfigDict.to_dict()`): loads the
    run, builds the optimizers and the verifier, warms it up once, and returns an `ItemWorker` whose
    `compute((image, method))` is the search's record."""

    config: dict[str, Any]

    def __call__(self) -> parallel.ItemWorker:
        c = ConfigDict(self.config)
        settings = validate(c)
        model, params, k, test = load_double_mnist_run(c, needs=NEEDS)
        view = models.layer_view(model, params)
        optimizers = {m: build_optimizer(o) for m, o in settings.optimizers.items()}
        worker = V.MilpWorker()
        verify = V.make_verifier(view, settings.verifier, worker=worker)
        warm_up(verify, test, c.start, TARGETS[c.target], c.spec, k)
        root = jax.random.key(c.seed)

        def compute(item: Sequence[Any]) -> dict[str, Any]:
            index, method = item
            return search_item(
                c, settings.methods, optimizers, verify, view, test, k, root, (index, method), progress=False
            )

        return parallel.ItemWorker(compute, worker.close)


def run(c: ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Searches the configured neighborhoods; returns the summary (also written to summary.json).

    Everything is checked and built (config, training run, data, verifier, optimizers) before the
    workdir is touched, so bad input writes nothing. With `workers` ≠ 1 the searches run on Ray
    actors (`experiments.parallel`); the records are the same.
    """
    settings = validate(c)
    cluster = parallel.settings_of(c)
    methods = settings.methods
    model, params, k, test = load_double_mnist_run(c, needs=NEEDS)
    resolved = results_config(c)
    path = check_workdir(workdir, resolved, growable=("images",))  # each image's record stands alone
    view = models.layer_view(model, params)
    optimizers = {m: build_optimizer(o) for m, o in settings.optimizers.items()}
    worker = V.MilpWorker()
    try:
        verify = V.make_verifier(view, settings.verifier, worker=worker)
        open_workdir(path, resolved)
        images: RecordStore[int] = RecordStore(path / "results", "img_{:05d}")
        searches: RecordStore[tuple[int, str]] = RecordStore(path / "results" / "partial", "img_{:05d}_{}")
        indices = range(c.start, c.start + c.images)
        items = [(i, m) for i in images.missing(indices) for m in methods]
        if not cluster.in_process:
            outcome = parallel.run_items(
                searches, items, ImageSearches(c.to_dict()), cluster, desc="searches", progress=progress
            )
        else:
            if searches.missing(items):
                warm_up(verify, test, c.start, TARGETS[c.target], c.spec, k)
            root = jax.random.key(c.seed)

            def compute(item: tuple[int, str]) -> dict[str, Any]:
                return search_item(
                    c, methods, optimizers, verify, view, test, k, root, item, progress=progress
                )

            done = searches.resume(items, compute, desc="searches", progress=progress)
            outcome = parallel.Outcome(dict(zip(items, done, strict=True)), {})
    finally:
        worker.close()
    for i in images.missing(indices):
        found = {m: outcome.records[(i, m)] for m in methods if (i, m) in outcome.records}
        if len(found) == len(methods):
            figures = path if i - c.start < c.figure_images else None
            images.save(i, image_record(c, test, i, k, found, figures=figures))
            for m in methods:
                searches.path((i, m)).unlink()
    records = [images.load(i) for i in indices if images.done(i)]
    summary = {**summarize(records, methods), "errors": len(outcome.errors)}
    write_json_atomic(path / "summary.json", summary)
    return {**summary, "workdir": str(path)}
