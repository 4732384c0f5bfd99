"""The `boundary` experiment: seed 003's decision-boundary analysis of adversarial examples.

  python -m experiments.run --flagfile=experiments/flagfiles/boundary_mnist.flags

For every finished single-label `train` run in `runs` (e.g. the normal and the PGD-trained MNIST
model) and test images start .. start + images − 1, one stage per input kind — "benign" (the test
images) and every attack of `attacks` (their adversarial examples) — computes:
  - the attack (FGSM, OPTBRITTLE, OPTMARGIN, OPTSTRONG; settings of the attack experiment);
  - point and region classification (`lnjax.boundary.make_region_classifier`);
  - boundary distances and adjacent classes along fixed random directions (the same directions for
    every model and input; `lnjax.boundary.make_boundary_distances`).
Each stage is computed in parts of `stage_images` images, each written to
stages/<model>/<kind>/<part>.npz as soon as it is done (atomically), so a restarted run redoes only
unfinished parts. The stages run in this process (`workers = 1`) or
on Ray actors (`experiments.parallel`; each loads the runs once); the detectors run here. Then, per
model and attack in `detector.attacks`, the boundary detector is trained on the first
`detector.train_share` of the images and evaluated on the rest (stages/<model>/detector_<attack>.json,
also cached).

Outputs in the workdir:
  tables.md      Table 1 (attack success rate, mean RMS distortion of the successes), Table 2 (region
                 vs point classification accuracy), the detector's false-positive / false-negative
                 rates, boundary statistics (directions with a boundary, median distance, purity,
                 forward passes per image)
  table1.csv, table2.csv, detector.csv, distances.csv   the same tables
  figures/figure4_distances.png   sorted boundary distances, benign vs each attack, per model
  figures/figure5_purity.png      mean adjacent-class purity per kind, per model
  figures/optmargin_examples.png  OPTMARGIN examples next to their originals
  metrics.json   everything above as JSON; config.json, log.txt.
Definitions: an attack's success rate is over the images the model classifies correctly (success =
misclassified at x_adv, for OPTMARGIN also all its noisy copies); its distortion is the mean RMS of
x_adv − x over those successes. Accuracies in Table 2 are over all images: the benign row classifies
the test images, an attack's row its x_adv (which is the image itself where a C&W-type attack found
nothing). The detector learns from correctly classified benign images and successful attacks only.

Randomness: everything derives from `seed`: the directions from fold_in(key, 0), the region samples
and the attacks of run i and input kind j from fold_in(fold_in(fold_in(key, 1 or 2), i), j), the
detectors from fold_in(…(key, 3)…), so a resumed stage is the stage an uninterrupted run would compute.

References:
  He, Li & Song, Decision Boundary Analysis of Adversarial Examples, ICLR 2018.
  Cao & Gong, Mitigating Evasion Attacks to Deep Neural Networks via Region-based Classification,
    ACSAC 2017.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
from pathlib import Path
from typing import Any, NamedTuple

import jax
import matplotlib.pyplot as plt
import numpy as np
from absl import logging
from ml_collections import ConfigDict
from tqdm import tqdm

from experiments import parallel
from experiments.common import check_workdir, open_workdir, require, results_config, unknown_keys
from experiments.configs.blocks import attack_settings
from experiments.configs.boundary import DETECTOR_ALL, base as base_config
from experiments.records import RecordStore
from experiments.report import csv_bytes, markdown, num, pct, with_ci, write_report
from experiments.runs import NUM_CLASSES, load_single_label_run
from lnjax import boundary as B, models
from lnjax.attacks.config import ATTACKS, AttackSettings
from lnjax.boundary import analysis as BA
from lnjax.io import write_bytes_atomic, write_json_atomic
from lnjax.plots import boundary as plots

BENIGN = "benign"
# The seed reports RMS distortion on each dataset's usual pixel scale: MNIST in [0, 1], CIFAR-10 in
# [0, 255] (its FGSM at 8/255 shows as 8.00); inputs here are always in [0, 1].
RMS_SCALE = {"cifar10": 255.0}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_DETECTOR_NONE = ("", "none")


class Run(NamedTuple):
    """A loaded training run: its model, params, test images and labels."""

    name: str
    workdir: str
    model: Any
    params: Any
    dataset: str
    x: np.ndarray
    y: np.ndarray


def parse_runs(text: str) -> dict[str, str]:
    """'normal=runs/a,adv=runs/b' (or bare workdirs, named after their directory) -> {name: workdir}."""
    runs: dict[str, str] = {}
    for item in (s.strip() for s in str(text).split(",")):
        if not item:
            continue
        name, sep, workdir = item.partition("=")
        if not sep:
            name, workdir = Path(item).name, item
        name, workdir = name.strip(), workdir.strip()
        require(
            bool(workdir) and bool(_NAME.match(name)),
            f"runs item {item!r}: expected name=workdir with a name of letters, digits, '_', '.', '-'",
        )
        require(name not in runs, f"runs names {name!r} twice; give each run its own name (name=workdir)")
        runs[name] = workdir
    require(bool(runs), f"runs = {text!r} names no training run; expected e.g. normal=runs/mnist_normal")
    return runs


def parse_detector_attacks(text: str, attacks: tuple[str, ...]) -> tuple[str, ...]:
    text = str(text).strip()
    if text == DETECTOR_ALL:
        return attacks
    if text in _DETECTOR_NONE:
        return ()
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [n for n in names if n not in attacks]
    require(
        not bad,
        f"detector.attacks names {bad}, which are not in attacks = {','.join(attacks)!r}; "
        f"use a subset of attacks, {DETECTOR_ALL!r} or 'none'",
    )
    return names


class Settings(NamedTuple):
    """The checked options of a boundary config."""

    attacks: tuple[str, ...]
    detector_attacks: tuple[str, ...]
    runs: dict[str, str]  # name -> train workdir
    attack_settings: AttackSettings


def parse_attacks(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in str(text).split(",") if s.strip())
    require(bool(names), f"attacks = {text!r} names no attack; expected a subset of {ATTACKS}")
    bad = [n for n in names if n not in ATTACKS]
    require(not bad, f"unknown attacks {bad}; expected a comma-separated subset of {ATTACKS}")
    require(len(set(names)) == len(names), f"attacks = {text!r} names an attack twice")
    return names


def validate(c: ConfigDict) -> Settings:
    """The checked options; UsageError naming the first invalid value. Reads no files."""
    unknown = unknown_keys(c.to_dict(), base_config().to_dict())
    require(not unknown, f"unknown config options {unknown}; see experiments/configs/boundary.py")
    require(c.experiment == "boundary", f"experiment = {c.experiment!r}; this module runs 'boundary'")
    attacks = parse_attacks(c.attacks)
    require(c.images >= 1 and c.start >= 0 and c.batch_size >= 1, "images ≥ 1, start ≥ 0 and batch_size ≥ 1")
    settings = attack_settings(c)
    runs = parse_runs(c.runs)
    require(c.stage_images >= 1, f"stage_images = {c.stage_images} must be ≥ 1")
    if c.stage_images < c.images:
        require(
            c.stage_images % c.batch_size == 0 and c.stage_images % c.region.batch_size == 0,
            f"stage_images = {c.stage_images} must be a multiple of batch_size = {c.batch_size} and "
            f"region.batch_size = {c.region.batch_size} (each part then computes what one whole stage would)",
        )
    require(c.figure_images >= 1, f"figure_images = {c.figure_images} must be ≥ 1")
    r = c.region
    require(0 <= r.tau <= 1, f"region.tau = {r.tau} must be in [0, 1] (an L∞ radius in pixel units)")
    require(r.samples >= 1 and r.batch_size >= 1, "region.samples and region.batch_size must be ≥ 1")
    d = c.distances
    require(d.mode in B.MODES, f"unknown distances.mode {d.mode!r}; expected one of {B.MODES}")
    require(d.directions >= 1, f"distances.directions = {d.directions} must be ≥ 1")
    require(
        0 < d.step <= d.max_distance,
        f"distances.step = {d.step} and max_distance = {d.max_distance}: need 0 < step ≤ max_distance",
    )
    require(d.coarse_step > 0 and d.tol > 0, "distances.coarse_step and distances.tol must be > 0")
    require(d.batch_size >= 1 and d.chunk >= 0, "distances.batch_size must be ≥ 1 and distances.chunk ≥ 0")
    detector_attacks = parse_detector_attacks(c.detector.attacks, attacks)
    t = c.detector
    if detector_attacks:
        require(
            0 < t.train_share < 1,
            f"detector.train_share = {t.train_share} must be in (0, 1) (a held-out part)",
        )
        require(c.images >= 2, "images must be ≥ 2 to train a detector and hold some images out")
        require(t.steps >= 1 and t.half_batch >= 1, "detector.steps and detector.half_batch must be ≥ 1")
        require(t.learning_rate > 0, f"detector.learning_rate = {t.learning_rate} must be > 0")
        require(0 <= t.dropout < 1, f"detector.dropout = {t.dropout} must be in [0, 1)")
        require(
            1 <= t.purity_k <= NUM_CLASSES, f"detector.purity_k = {t.purity_k} must be in 1..{NUM_CLASSES}"
        )
        require(t.scale > 0, f"detector.scale = {t.scale} must be > 0")
        n_dirs = d.directions * (2 if d.antipodal else 1)
        require(
            n_dirs >= B.MIN_DISTANCES,
            f"the detector needs ≥ {B.MIN_DISTANCES} directions, distances give {n_dirs}; "
            "raise distances.directions or set detector.attacks=none",
        )
    return Settings(attacks, detector_attacks, runs, settings)


def load_run(c: ConfigDict, name: str, workdir: str) -> Run:
    """The model, params and the test images start .. start + images − 1 of a finished train run."""
    r = load_single_label_run(
        workdir,
        data_dir=c.data_dir,
        start=c.start,
        images=c.images,
        who=f"the boundary experiment (run {name})",
    )
    return Run(name, workdir, r.model, r.params, r.config.data.dataset, r.x, r.y)


# ---------------------------------------------------------------------------------------------- stages


def classify_and_measure(
    c, key, run: Run, x: np.ndarray, region, distances, directions, *, offset: int, progress
):
    """Point and region predictions and boundary distances of the inputs x (rows offset.. of the
    stage): the arrays of one stage part."""
    return BA.measure_stage(
        key,
        models.apply_fn(run.model),
        run.params,
        x,
        region=region,
        distances=distances,
        directions=directions,
        region_batch=int(c.region.batch_size),
        distances_batch=int(c.distances.batch_size),
        over=lambda b: tqdm(b, desc=f"{run.name} distances", disable=not progress, leave=False),
        offset=offset,
    )


def attack_inputs(c, key, run: Run, attack, name: str, rows: slice, *, progress):
    """x_adv, the attack's success (confirmed at x_adv by the model) and its time, on the images `rows`."""
    over = lambda b: tqdm(b, desc=f"{run.name} {name}", disable=not progress, leave=False)  # noqa: E731
    apply_fn = models.apply_fn(run.model)
    x, y = run.x[rows], run.y[rows]
    return BA.attack_stage(
        key, apply_fn, run.params, x, y, attack, batch_size=int(c.batch_size), over=over, offset=rows.start
    )


def usable_rows(run: Run, benign: dict, stage: dict, kind: str) -> np.ndarray:
    """Correctly classified benign images; successful attacks on correctly classified images."""
    return BA.usable_rows(run.y, benign, stage, is_benign=kind == BENIGN)


def detector_record(
    c: ConfigDict, key: jax.Array, run: Run, benign: dict, stage: dict, num_classes: int
) -> dict:
    """The detector of one model and attack, trained and rated (`lnjax.boundary.analysis`)."""
    t = c.detector
    return BA.train_and_rate_detector(
        key,
        run.y,
        benign,
        stage,
        num_classes=num_classes,
        train_share=float(t.train_share),
        steps=int(t.steps),
        half_batch=int(t.half_batch),
        learning_rate=float(t.learning_rate),
        dropout=float(t.dropout),
        purity_k=int(t.purity_k),
        miss_distance=float(t.miss_distance),
        shift=float(t.shift),
        scale=float(t.scale),
    )


# ---------------------------------------------------------------------------------------------- tables


def _success_cell(row: dict[str, Any]) -> str:
    return with_ci(pct(row["success_rate"]), row.get("success_ci"))


def _rms_cell(row: dict[str, Any]) -> str:
    return with_ci(num(row["rms"]), row.get("rms_ci"), num)


def write_tables(path: Path, c: ConfigDict, metrics: dict[str, Any], attacks, detector_attacks) -> None:
    """tables.md (laid out like the seed's tables: a row per attack, columns per model) and one CSV per
    table (long format: a row per model and attack or input kind)."""
    models = list(metrics["models"])
    kinds = [BENIGN, *attacks]
    t1, t2, det, dist = (metrics[k] for k in ("table1", "table2", "detector", "distances"))

    md1 = markdown(
        ["examples", *[f"{m}: {h}" for m in models for h in ("success", "RMS")]],
        [[a, *[v for m in models for v in (_success_cell(t1[m][a]), _rms_cell(t1[m][a]))]] for a in attacks],
    )
    csv1 = csv_bytes(
        ["model", "attack", "success_rate", "rms", "successes", "correct"],
        [
            [m, a, *(t1[m][a][k] for k in ("success_rate", "rms", "successes", "correct"))]
            for m in models
            for a in attacks
        ],
    )
    md2 = markdown(
        ["examples", *[f"region: {m}" for m in models], *[f"point: {m}" for m in models]],
        [
            [
                k,
                *[
                    with_ci(pct(t2[m][k][w]), t2[m][k][f"{w}_ci"])
                    for w in ("region", "point")
                    for m in models
                ],
            ]
            for k in kinds
        ],
    )
    csv2 = csv_bytes(
        ["model", "examples", "region_accuracy", "point_accuracy"],
        [[m, k, t2[m][k]["region"], t2[m][k]["point"]] for m in models for k in kinds],
    )
    det_cells = lambda r: (
        with_ci(pct(r.get("false_positive"), 1), r.get("false_positive_ci"), lambda v: pct(v, 1)),
        with_ci(pct(r.get("false_negative"), 1), r.get("false_negative_ci"), lambda v: pct(v, 1)),
        f"{r.get('test_benign', 0)} / {r.get('test_adversarial', 0)}",
    )
    md3 = markdown(
        ["attack", *[f"{m}: {h}" for m in models for h in ("false pos.", "false neg.", "n benign / adv.")]],
        [[a, *[v for m in models for v in det_cells(det[m][a])]] for a in detector_attacks],
    )
    det_keys = ("false_positive", "false_negative", "test_benign", "test_adversarial", "train_benign",
                "train_adversarial")  # fmt: skip
    csv3 = csv_bytes(
        ["model", "attack", *det_keys],
        [[m, a, *(det[m][a].get(k) for k in det_keys)] for m in models for a in detector_attacks],
    )
    dist_keys = ("inputs", "hit_share", "median_distance", "purity_top1", "forward_passes_per_image")
    dist_cells = lambda r: (
        str(r["inputs"]),
        pct(r["hit_share"], 1),
        num(r["median_distance"]),
        num(r["purity_top1"], 2),
        num(r["forward_passes_per_image"], 0),
    )
    md4 = markdown(
        ["model", "examples", "inputs", "directions with a boundary", "median distance", "purity P_1",
         "forward passes / image"],
        [[m, k, *dist_cells(dist[m][k])] for m in models for k in kinds],
    )  # fmt: skip
    csv4 = csv_bytes(
        ["model", "examples", *dist_keys],
        [[m, k, *(dist[m][k][f] for f in dist_keys)] for m in models for k in kinds],
    )
    d = c.distances
    runs = ", ".join(f"{m} = {metrics['models'][m]['workdir']}" for m in models)
    md = [
        f"# Decision-boundary analysis: {c.name}",
        "",
        f"{c.images} test images from index {c.start}; models: {runs}.",
        "",
        "## Table 1: attack success rate and mean RMS distortion",
        "",
        "Success rate over the correctly classified images; RMS of x_adv − x over the successes "
        "(MNIST pixels in [0, 1], CIFAR-10 in [0, 255] as in the seed); 95 % intervals in brackets.",
        "",
        md1,
        "",
        f"## Table 2: region (τ = {c.region.tau:g}, {c.region.samples} samples) vs point classification",
        "",
        "Accuracy over all images; an attack's row classifies its adversarial examples.",
        "",
        md2,
        "",
    ]
    if detector_attacks:
        md += [
            "## Detector: false-positive and false-negative rates on the held-out images",
            "",
            f"Trained on the first {c.detector.train_share:.0%} of the images; correct benign images and "
            "successful attacks only.",
            "",
            md3,
            "",
        ]
    md += [
        f"## Boundary distances ({d.mode}, {metrics['num_directions']} directions, ≤ {d.max_distance:g} RMS)",
        "",
        "Correct benign images and successful attacks (forward passes: all inputs); purity P_1 over the "
        "inputs with a boundary hit.",
        "",
        md4,
        "",
        "Figures: `figures/figure4_distances.png`, `figures/figure5_purity.png`.",
        "",
    ]
    tables = {"table1": csv1, "table2": csv2, "detector": csv3, "distances": csv4}
    write_report(path, "tables.md", md, tables)


def _save_figure(fig, file: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(file, buf.getvalue())


def write_figures(path: Path, c, runs: dict[str, Run], stages, attacks, num_classes: int) -> None:
    kinds = [BENIGN, *attacks]
    panels, purity = {}, {}
    for m, run in runs.items():
        purity[m] = {}
        for k in kinds:
            s = stages[m][k]
            rows = np.flatnonzero(usable_rows(run, stages[m][BENIGN], s, k))
            shown = rows[: c.figure_images]
            panels[(m, k)] = (s["distance"][shown], s["adjacent"][shown].astype(np.int32))
            p = BA.purity_of(s, num_classes)[rows]
            purity[m][k] = p[np.isfinite(s["distance"][rows]).any(axis=1)]
    fig4 = plots.boundary_distances(
        panels,
        rows=list(runs),
        cols=kinds,
        max_distance=float(c.distances.max_distance),
        reference=float(c.region.tau) / math.sqrt(3.0),
        title="Boundary distances along random directions (dots: first input, coloured by adjacent class; "
        "line: median; dashed: RMS of a region sample)",
    )
    _save_figure(fig4, path / "figures" / "figure4_distances.png")
    fig5 = plots.purity_curves(purity, title="Adjacent-class purity (inputs with a boundary hit)")
    _save_figure(fig5, path / "figures" / "figure5_purity.png")
    write_examples(path, runs, stages, attacks)


def write_examples(path: Path, runs: dict[str, Run], stages, attacks, count: int = 6) -> None:
    """figures/optmargin_examples.png: the first `count` test images that every model classifies
    correctly and every OPTMARGIN variant fools, next to their adversarial examples (caption: the
    model's label and the RMS distortion) — the seed's "distortion visible, class still clear"."""
    shown = [a for a in attacks if a.startswith("optmargin")]
    if not shown:
        return
    ok = np.ones(len(next(iter(runs.values())).y), bool)
    for m, run in runs.items():
        ok &= usable_rows(run, stages[m][BENIGN], stages[m][BENIGN], BENIGN)
        for a in shown:
            ok &= stages[m][a]["success"]
    rows = np.flatnonzero(ok)[:count]
    if not len(rows):
        return
    first = next(iter(runs.values()))
    columns = {"original": first.x[rows]}
    captions = {"original": [f"label {v}" for v in first.y[rows]]}
    for m, run in runs.items():
        for a in shown:
            x_adv = stages[m][a]["x_adv"][rows]
            distortion = BA.rms(x_adv - run.x[rows]) * RMS_SCALE.get(run.dataset, 1.0)
            columns[f"{m}: {a}"] = x_adv
            captions[f"{m}: {a}"] = [
                f"→ {p}, RMS {d:.2f}" for p, d in zip(stages[m][a]["point"][rows], distortion, strict=True)
            ]
    fig = plots.example_grid(
        columns, captions=captions, title="OPTMARGIN examples (caption: the model's label, RMS distortion)"
    )
    _save_figure(fig, path / "figures" / "optmargin_examples.png")


# ------------------------------------------------------------------------------------------------- run


class Tools(NamedTuple):
    """What every stage shares: the region classifier, the boundary distances, the directions, the
    attacks (each jitted once, for every model)."""

    region: Any
    distances: Any
    directions: Any
    attacks: dict[str, Any]


def make_tools(c: ConfigDict, settings: Settings, shape: tuple[int, ...]) -> Tools:
    root = jax.random.key(c.seed)
    d = c.distances
    directions = B.random_directions(
        jax.random.fold_in(root, 0), shape, int(d.directions), antipodal=bool(d.antipodal)
    )
    region = B.make_region_classifier(tau=float(c.region.tau), samples=int(c.region.samples))
    distances = B.make_boundary_distances(
        mode=d.mode,
        max_distance=float(d.max_distance),
        step=float(d.step),
        coarse_step=float(d.coarse_step),
        tol=float(d.tol),
        chunk=int(d.chunk),
    )
    attacks = {a: settings.attack_settings.make(a) for a in settings.attacks}
    return Tools(region, distances, directions, attacks)


def load_runs(c: ConfigDict, settings: Settings) -> tuple[dict[str, Run], tuple[int, ...]]:
    """The loaded runs and their input shape; UsageError if they use different datasets or the
    directions outnumber the pixels."""
    runs = {name: load_run(c, name, wd) for name, wd in settings.runs.items()}
    datasets = {r.dataset for r in runs.values()}
    require(len(datasets) == 1, f"the runs use different datasets {sorted(datasets)}; compare models of one")
    shape = tuple(next(iter(runs.values())).x.shape[1:])
    pixels = math.prod(shape)
    require(
        c.distances.directions <= pixels,
        f"distances.directions = {c.distances.directions} exceeds the {pixels} pixels of an input "
        "(the directions are orthogonal)",
    )
    return runs, shape


Part = tuple[str, str, int]  # (model, input kind, part index): one stored stage part


def stage_parts(c: ConfigDict) -> list[slice]:
    """The image rows of each stored part of a stage (`stage_images` per part)."""
    size = int(c.stage_images)
    return [slice(s, min(s + size, int(c.images))) for s in range(0, int(c.images), size)]


def compute_stage(
    c: ConfigDict, runs: dict[str, Run], tools: Tools, item: Part, *, progress: bool
) -> dict[str, Any]:
    """The arrays of one stage part (model, input kind, part); keys from fold_in(seed, 1 | 2, model,
    kind), batches by their row in the whole stage (`lnjax.boundary.analysis`), so the parts together
    are the stage an unsplit run computes."""
    m, kind, part = item
    kinds = [BENIGN, *parse_attacks(c.attacks)]
    r, mi, ki = runs[m], list(runs).index(m), kinds.index(kind)
    rows = stage_parts(c)[part]
    root = jax.random.key(c.seed)
    keys = [jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(root, i), mi), ki) for i in (1, 2)]
    x, extra = r.x[rows], {}
    if kind != BENIGN:
        x, success, seconds = attack_inputs(c, keys[1], r, tools.attacks[kind], kind, rows, progress=progress)
        extra = {"x_adv": x, "success": success, "attack_seconds": np.float64(seconds)}
    measured = classify_and_measure(
        c,
        keys[0],
        r,
        x,
        tools.region,
        tools.distances,
        tools.directions,
        offset=rows.start,
        progress=progress,
    )
    arrays = {**measured, **extra}
    y = r.y[rows]
    logging.info(
        "%s %s part %d: point acc %.3f, region acc %.3f, %.0f forward passes / image, %.1f s distances%s",
        m, kind, part, np.mean(arrays["point"] == y), np.mean(arrays["region_label"] == y),
        arrays["forward_passes"].mean(), arrays["distances_seconds"],
        f", {seconds:.1f} s attack" if kind != BENIGN else "",
    )  # fmt: skip
    return arrays


def join_parts(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One stage from its parts: per-image arrays concatenated, times (scalars) summed."""
    return {
        k: np.sum([p[k] for p in parts])
        if np.ndim(parts[0][k]) == 0
        else np.concatenate([p[k] for p in parts])
        for k in parts[0]
    }


@dataclasses.dataclass(frozen=True)
class BoundaryStages:
    """A Ray actor's setup (picklable: the config as plain values): loads the runs and builds the
    shared tools once; `compute((model, kind, part))` is the stage part's arrays."""

    config: dict[str, Any]

    def __call__(self) -> parallel.ItemWorker:
        c = ConfigDict(self.config)
        settings = validate(c)
        runs, shape = load_runs(c, settings)
        tools = make_tools(c, settings, shape)

        def compute(item: Any) -> dict[str, Any]:
            m, kind, part = item
            return compute_stage(c, runs, tools, (m, kind, part), progress=False)

        return parallel.ItemWorker(compute)


def run(c: ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) the analysis; returns the summary (Tables 1, 2 and the detector's rates).

    Everything is checked and built (config, runs, data, attacks, directions) before the workdir is
    touched, so bad input writes nothing.
    """
    settings = validate(c)
    cluster = parallel.settings_of(c)
    attacks, detector_attacks = settings.attacks, settings.detector_attacks
    runs, shape = load_runs(c, settings)
    resolved = results_config(c)
    path = check_workdir(workdir, resolved)

    root = jax.random.key(c.seed)
    d = c.distances
    tools = make_tools(c, settings, shape)
    directions = tools.directions
    open_workdir(path, resolved)

    kinds = [BENIGN, *attacks]
    names = list(runs)
    stage_store: RecordStore[Part] = RecordStore(path / "stages", "{}/{}/{:04d}", kind="npz")
    n_parts = len(stage_parts(c))
    # part-major: a run stopped early holds the first parts of every stage (the same rows everywhere)
    items = [(m, kind, p) for p in range(n_parts) for m in names for kind in kinds]
    if cluster.in_process:
        done = stage_store.resume(
            items, lambda item: compute_stage(c, runs, tools, item, progress=progress), desc="stages"
        )
    else:
        outcome = parallel.run_items(
            stage_store, items, BoundaryStages(c.to_dict()), cluster, desc="stages", progress=progress
        )
        failed = {"/".join(map(str, item)): e for item, e in outcome.errors.items()}
        require(not failed, f"stages failed on Ray workers: {failed}; rerun to retry them")
        done = [outcome.records[item] for item in items]
    records = dict(zip(items, done, strict=True))
    stages: dict[str, dict[str, dict[str, np.ndarray]]] = {
        m: {kind: join_parts([records[(m, kind, p)] for p in range(n_parts)]) for kind in kinds}
        for m in names
    }

    num_classes = int(stages[names[0]][BENIGN]["region_counts"].shape[1])
    detector_store: RecordStore[tuple[str, str]] = RecordStore(path / "stages", "{}/detector_{}")

    def compute_detector(item: tuple[str, str]) -> dict[str, Any]:
        m, a = item
        mi = names.index(m)
        key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(root, 3), mi), kinds.index(a))
        record = detector_record(c, key, runs[m], stages[m][BENIGN], stages[m][a], num_classes)
        logging.info("%s detector %s: %s", m, a, record)
        return record

    pairs = [(m, a) for m in names for a in detector_attacks]
    detectors = dict(
        zip(pairs, detector_store.resume(pairs, compute_detector, desc="detectors"), strict=True)
    )

    metrics: dict[str, Any] = {
        "name": c.name,
        "images": c.images,
        "num_directions": int(directions.shape[0]),
        "rms_scale": {m: RMS_SCALE.get(r.dataset, 1.0) for m, r in runs.items()},
        "distance_mode": d.mode,
        "models": {m: {"workdir": r.workdir, "dataset": r.dataset} for m, r in runs.items()},
        "table1": {},
        "table2": {},
        "distances": {},
        "detector": {},
    }
    for m, r in runs.items():
        benign = stages[m][BENIGN]
        scale = RMS_SCALE.get(r.dataset, 1.0)
        metrics["table1"][m] = {
            a: BA.attack_row(r.x, r.y, benign, stages[m][a], pixel_scale=scale) for a in attacks
        }
        metrics["table2"][m] = {k: BA.accuracy_row(r.y, stages[m][k]) for k in kinds}
        metrics["distances"][m] = {
            k: BA.distance_row(stages[m][k], usable_rows(r, benign, stages[m][k], k), num_classes)
            for k in kinds
        }
        metrics["detector"][m] = {a: detectors[(m, a)] for a in detector_attacks}
    write_tables(path, c, metrics, attacks, detector_attacks)
    write_figures(path, c, runs, stages, attacks, num_classes)
    write_json_atomic(path / "metrics.json", metrics)
    summary = summary_of(metrics, attacks)
    write_json_atomic(path / "summary.json", summary)
    return summary


def _accuracy_and_purity(acc: dict[str, Any], dist: dict[str, Any]) -> dict[str, Any]:
    return {
        "region_acc": acc["region"],
        "region_acc_ci": acc["region_ci"],
        "point_acc": acc["point"],
        "point_acc_ci": acc["point_ci"],
        "purity": dist["purity"],
        "purity_ci": dist["purity_ci"],
    }


def summary_of(metrics: dict[str, Any], attacks: tuple[str, ...]) -> dict[str, Any]:
    """The run's claims in one small JSON (summary.json, the last output line): per model, the benign
    accuracies and per attack `success`, `rms`, `region_acc`, `point_acc`, `detector_fpr`,
    `detector_fnr` and the adjacent-class purity P_1..P_3, each with its 95 % interval (`*_ci`: Wilson
    for rates, Student t for means; [None, None] where nothing was measured)."""
    out: dict[str, Any] = {"name": metrics["name"], "images": metrics["images"], "models": {}}
    for m in metrics["models"]:
        t1, t2, det, dist = (metrics[k][m] for k in ("table1", "table2", "detector", "distances"))

        rows: dict[str, Any] = {}
        for a in attacks:
            row = {
                "success": t1[a]["success_rate"],
                "success_ci": t1[a]["success_ci"],
                "rms": t1[a]["rms"],
                "rms_ci": t1[a]["rms_ci"],
                **_accuracy_and_purity(t2[a], dist[a]),
            }
            if a in det:
                r = det[a]
                row.update(
                    detector_fpr=r.get("false_positive"),
                    detector_fpr_ci=r.get("false_positive_ci", [None, None]),
                    detector_fnr=r.get("false_negative"),
                    detector_fnr_ci=r.get("false_negative_ci", [None, None]),
                    detector_test=[r.get("test_benign", 0), r.get("test_adversarial", 0)],
                )
            rows[a] = row
        benign = _accuracy_and_purity(t2[BENIGN], dist[BENIGN])
        out["models"][m] = {"images": metrics["images"], "benign": benign, "attacks": rows}
    return out
