"""The `attack_curve` experiment: how strong must an attack be before its success rate stops rising?

  python -m experiments.run --flagfile=experiments/flagfiles/attack_curve_mnist_pgd.flags

Runs one attack (`attack`; default OPTBRITTLE, C&W-L2 at κ = 0) on the test images start ..
start + images − 1 of a finished single-label `train` run, once per point of `grid`: the full
product of `;`-separated axes `BLOCK.FIELD=v1,v2,...` over the attack's settings block (see
experiments/configs/attack_curve.py; e.g. `cw.steps=100,300,1000;cw.lr=0.01,0.1` is 6 points, the
first axis slowest). Every point attacks the same images with the same key (`seed`), so points differ
only by their settings. Each point is stored in points/NNN.json (NNN its index in the product) as
soon as it is done, so a restarted run computes only the missing points.

Per point: `settings` (its grid values), `total_steps` (the attack's optimiser steps per image:
steps × binary_steps for C&W and OPTMARGIN, steps × restarts for PGD, 1 for FGSM), `success_rate`
over the correctly classified images with its 95 % Wilson interval `success_ci`, `successes`,
`correct`, `rms` (mean RMS distortion of the successes) with its Student t interval `rms_ci`, and
`seconds` (wall time of the attack, its compilation included). Definitions as the boundary
experiment's Table 1 (`lnjax.boundary.analysis.attack_row`): a success is an image the model
classifies correctly and misclassifies at x_adv.

best: the point with the most successes (ties: the smaller total_steps, then the lower index).
plateau: with the steps axis `BLOCK.steps` (e.g. `cw.steps`) in the grid with ≥ 2 values, let p be the
point with the best point's settings except `BLOCK.steps` = the axis's second-largest value; plateau
is true iff best.successes − p.successes ≤ 1, i.e. stopping one step-budget short of the largest
already comes within one image of the best success anywhere in the grid (raising steps stopped
helping). None when the grid has no such axis (or it has one value).

Outputs in the workdir: points/NNN.json, curve.csv (one row per point), tables.md, figures/curve.png
(success rate with its interval against total_steps, one line per combination of the other axes),
metrics.json (the points, best, plateau and the point it was compared with, clean accuracy),
config.json, log.txt. The summary (last output line): {points, best, plateau, workdir}.

Logit margins (metrics `margins`, a line of tables.md), for reading a confidence axis (OPTSTRONG's
κ = `cw.strong_confidence`): over the correctly classified images, the clean margin
z_y − max_{j≠y} z_j at x, and the *reachable confidence*: −(the smallest margin an L∞ PGD over the
whole pixel box [0, 1]^d finds from x; `REACH_STEPS` sign steps of `REACH_STEP_SIZE`), a lower bound
on the largest κ by which any input at all puts a wrong class above y. Where it stays below κ, an
untargeted C&W at confidence κ (which needs z_y − max_{j≠y} z_j ≤ −κ close to x) hardly can succeed
either; `share_reaching` holds, per κ of the grid (or the configured `cw.strong_confidence`), the share
of images whose value is ≥ κ.

References:
  Carlini & Wagner, Towards Evaluating the Robustness of Neural Networks, IEEE S&P 2017.
  Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import math
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from absl import logging
from ml_collections import ConfigDict
from tqdm import tqdm

from experiments.common import (
    UsageError,
    check_workdir,
    dataclass_from,
    open_workdir,
    require,
    to_dict,
    unknown_keys,
)
from experiments.configs.attack_curve import base as base_config
from experiments.configs.blocks import attack_settings
from experiments.records import RecordStore
from experiments.report import csv_bytes, markdown, num, pct, write_report
from experiments.runs import load_single_label_run
from lnjax import models
from lnjax.attacks.config import ATTACKS, AttackSettings
from lnjax.attacks.gradient import make_pgd
from lnjax.boundary import analysis as BA
from lnjax.io import write_bytes_atomic, write_json_atomic
from lnjax.plots import Curve, rate_curves
from lnjax.specs import argmax_margin

# The settings block each attack is built from (`AttackSettings.make`) and the block's fields whose
# product is the attack's optimiser steps per image.
BLOCK_OF = {
    "fgsm": "fgsm",
    "pgd": "pgd",
    "optbrittle": "cw",
    "optstrong": "cw",
    "optmargin": "optmargin",
    "optmargin_ref": "optmargin",
}
BUDGET_FIELDS = {
    "fgsm": (),
    "pgd": ("steps", "restarts"),
    "cw": ("steps", "binary_steps"),
    "optmargin": ("steps", "binary_steps"),
}


# The reachable-confidence search (see the module docstring): PGD over the whole pixel box from x.
REACH_STEPS = 500
REACH_STEP_SIZE = 0.01


def margin_stats(values: np.ndarray, confidences: list[float]) -> dict[str, Any]:
    """median, 90th percentile and max of `values`, and per confidence κ the share of values ≥ κ."""
    v = np.asarray(values, np.float64)
    return {
        "median": float(np.median(v)),
        "p90": float(np.percentile(v, 90)),
        "max": float(np.max(v)),
        "share_reaching": {f"{k:g}": float(np.mean(v >= k)) for k in confidences},
    }


def logit_margins(
    key, apply_fn, params, x, y, *, batch_size: int, confidences: list[float]
) -> dict[str, Any]:
    """The clean margins and the reachable confidence of x, y (module docstring); x: the correctly
    classified images only (at least one)."""
    search = make_pgd(eps=1.0, steps=REACH_STEPS, step_size=REACH_STEP_SIZE, random_start=False)
    clean, reach = [], []
    for s, e in BA.batches(len(x), batch_size):
        xb, yb = jnp.asarray(x[s:e]), jnp.asarray(y[s:e])
        clean.append(np.asarray(jax.vmap(argmax_margin)(apply_fn(params, xb), yb)))
        reach.append(-np.asarray(search(jax.random.fold_in(key, s), apply_fn, params, xb, yb).margin))
    return {
        "images": len(x),
        "steps": REACH_STEPS,
        "step_size": REACH_STEP_SIZE,
        "clean": margin_stats(np.concatenate(clean), confidences),
        "reachable_confidence": margin_stats(np.concatenate(reach), confidences),
    }


class Axis(NamedTuple):
    """One grid axis: a dotted setting name (`cw.steps`) and its values (parsed, distinct)."""

    name: str
    values: tuple[Any, ...]


class Plan(NamedTuple):
    """The checked grid: the attack, its block, the axes, and per point (in product order) its grid
    values and its complete attack settings."""

    attack: str
    block: str
    axes: tuple[Axis, ...]
    points: tuple[dict[str, Any], ...]
    settings: tuple[AttackSettings, ...]

    @property
    def steps_axis(self) -> str | None:
        """`BLOCK.steps` if the grid varies it over ≥ 2 values, else None."""
        name = f"{self.block}.steps"
        return name if any(a.name == name and len(a.values) >= 2 for a in self.axes) else None

    def total_steps(self, index: int) -> int:
        """The attack's optimiser steps per image at point `index` (1 for FGSM)."""
        block = getattr(self.settings[index], self.block)
        return math.prod(int(getattr(block, f)) for f in BUDGET_FIELDS[self.block])


def _parse_value(item: str, text: str, kind: type) -> Any:
    """`text` as a value of `kind` (the block field's type); UsageError naming the grid item."""
    try:
        return {"true": True, "false": False}[text.lower()] if kind is bool else kind(text)
    except (KeyError, ValueError):
        raise UsageError(
            f"grid item {item!r}: {text!r} does not parse as {kind.__name__} (that setting's type)"
        ) from None


def parse_grid(text: str, c: ConfigDict, block: str) -> tuple[Axis, ...]:
    """The axes of `grid` (`NAME=v1,v2;NAME2=...`, names `block.FIELD`); UsageError naming a bad item."""
    items = [s.strip() for s in str(text).split(";") if s.strip()]
    fields = sorted(c[block].keys())
    require(bool(items), f"grid = {text!r} has no axis; expected e.g. '{block}.steps=100,1000'")
    axes: list[Axis] = []
    for item in items:
        name, sep, values = (s.strip() for s in item.partition("="))
        require(bool(sep), f"grid item {item!r} is not NAME=v1,v2,... (items are separated by ';')")
        prefix, _, field = name.partition(".")
        require(
            prefix == block and field in fields,
            f"grid item {item!r}: unknown setting {name!r}; attack {c.attack!r} takes "
            f"{block}.<one of {fields}>",
        )
        require(all(a.name != name for a in axes), f"grid names {name!r} twice")
        texts = [v.strip() for v in values.split(",")]
        require(all(texts), f"grid item {item!r} has an empty value")
        parsed = tuple(_parse_value(item, v, type(c[block][field])) for v in texts)
        require(len(set(parsed)) == len(parsed), f"grid item {item!r} repeats a value")
        axes.append(Axis(name, parsed))
    return tuple(axes)


def validate(c: ConfigDict) -> Plan:
    """The checked grid and the settings of every point; UsageError naming the first invalid value.
    Reads no files."""
    unknown = unknown_keys(c.to_dict(), base_config().to_dict())
    require(not unknown, f"unknown config options {unknown}; see experiments/configs/attack_curve.py")
    require(c.experiment == "attack_curve", f"experiment = {c.experiment!r}; this module runs 'attack_curve'")
    require(c.attack in ATTACKS, f"unknown attack {c.attack!r}; expected one of {ATTACKS}")
    require(c.images >= 1 and c.start >= 0 and c.batch_size >= 1, "images ≥ 1, start ≥ 0 and batch_size ≥ 1")
    base = attack_settings(c)
    block = BLOCK_OF[c.attack]
    axes = parse_grid(c.grid, c, block)
    cls = type(getattr(base, block))
    points, settings = [], []
    for values in itertools.product(*(a.values for a in axes)):
        point = {a.name: v for a, v in zip(axes, values, strict=True)}
        fields = {name.partition(".")[2]: v for name, v in point.items()}
        try:
            one = dataclass_from(ConfigDict({**c[block].to_dict(), **fields}), cls)
        except UsageError as e:
            raise UsageError(f"grid point {point}: {e}") from e
        points.append(point)
        settings.append(dataclasses.replace(base, **{block: one}))
    return Plan(c.attack, block, axes, tuple(points), tuple(settings))


def attack_images(key, apply_fn, params, x, y, attack, *, batch_size: int, desc: str, progress: bool):
    """(x_adv, success confirmed at x_adv by the model, seconds) of `attack` on x, y (batches of
    `batch_size`, the batch starting at row s keyed fold_in(key, s))."""
    over = lambda b: tqdm(b, desc=desc, disable=not progress, leave=False)  # noqa: E731
    return BA.attack_stage(key, apply_fn, params, x, y, attack, batch_size=batch_size, over=over)


def best_index(records: list[dict[str, Any]]) -> int:
    """The point with the most successes (ties: fewer total steps, then the lower index)."""
    return min(range(len(records)), key=lambda i: (-records[i]["successes"], records[i]["total_steps"], i))


def plateau_of(plan: Plan, records: list[dict[str, Any]], best: int) -> tuple[bool | None, int | None]:
    """(plateau, the index of the point compared with the best); see the module docstring."""
    name = plan.steps_axis
    if name is None:
        return None, None
    axis = next(a for a in plan.axes if a.name == name)
    target = {**plan.points[best], name: sorted(axis.values)[-2]}
    other = plan.points.index(target)
    return records[best]["successes"] - records[other]["successes"] <= 1, other


def _label(point: dict[str, Any], names: list[str]) -> str:
    return ", ".join(f"{n}={point[n]}" for n in names)


def _save_figure(fig, file: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(file, buf.getvalue())


def write_outputs(path: Path, c: ConfigDict, plan: Plan, metrics: dict[str, Any]) -> None:
    """curve.csv, tables.md and figures/curve.png from the metrics."""
    records, names = metrics["points"], [a.name for a in plan.axes]
    header = ["index", *names, "total_steps", "successes", "correct", "success_rate", "success_lo",
              "success_hi", "rms", "rms_lo", "rms_hi", "seconds"]  # fmt: skip
    rows = [
        [r["index"], *(plan.points[r["index"]][n] for n in names), r["total_steps"], r["successes"],
         r["correct"], r["success_rate"], *r["success_ci"], r["rms"], *r["rms_ci"], round(r["seconds"], 2)]
        for r in records
    ]  # fmt: skip
    table = markdown(
        [*names, "total steps", "success", "95 % CI", "successes", "RMS", "seconds"],
        [
            [*(str(plan.points[r["index"]][n]) for n in names), str(r["total_steps"]),
             pct(r["success_rate"], 1), f"{pct(r['success_ci'][0], 1)} – {pct(r['success_ci'][1], 1)}",
             f"{r['successes']} / {r['correct']}", num(r["rms"]), f"{r['seconds']:.1f}"]
            for r in records
        ],
    )  # fmt: skip
    best, plateau, other = metrics["best"], metrics["plateau"], metrics["plateau_against"]
    if plateau is None:
        verdict = f"plateau: not defined (the grid does not vary {plan.block}.steps over ≥ 2 values)"
    else:
        verdict = (
            f"plateau: **{'yes' if plateau else 'no'}** — {records[other]['successes']} successes at "
            f"{_label(plan.points[other], names)} vs the best {best['successes']} "
            f"({'within' if plateau else 'more than'} one image)"
        )
    lines = [
        f"# Attack curve: {plan.attack} on {c.train_workdir}",
        "",
        f"{c.images} test images from {c.start}, {metrics['correct']} classified correctly "
        f"(success rates are over those); the same key at every point.",
        "",
        table,
        "",
        f"best: {_label(plan.points[best['index']], names)} ({pct(best['success_rate'], 1)}, "
        f"{best['total_steps']} total steps); {verdict}.",
        "",
        margin_line(metrics["margins"]),
        "",
        "Figure: `figures/curve.png`.",
        "",
    ]
    write_report(path, "tables.md", lines, {"curve": csv_bytes(header, rows)})

    steps = plan.steps_axis
    others = [n for n in names if n != steps]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(_label(plan.points[r["index"]], others) or plan.attack, []).append(r)
    curves = {
        label: Curve(
            [r["total_steps"] for r in rs],
            [r["success_rate"] for r in rs],
            [r["success_ci"][0] for r in rs],
            [r["success_ci"][1] for r in rs],
        )
        for label, rs in groups.items()
    }
    fig = rate_curves(
        curves,
        xlabel="total optimiser steps per image",
        title=f"{plan.attack} on {c.train_workdir}\nsuccess over the {metrics['correct']} correctly "
        "classified images (95 % Wilson intervals)",
    )
    _save_figure(fig, path / "figures" / "curve.png")


def margin_line(m: dict[str, Any] | None) -> str:
    """tables.md's sentence on the logit margins."""
    if m is None:
        return "No image is classified correctly: no logit margins."
    clean, reach = m["clean"], m["reachable_confidence"]
    shares = ", ".join(f"≥ {k} on {pct(v, 1)}" for k, v in reach["share_reaching"].items())
    return (
        f"Logit margins z_y − max_(j≠y) z_j of the {m['images']} correctly classified images: clean median "
        f"{clean['median']:.2f} (90th percentile {clean['p90']:.2f}, max {clean['max']:.2f}); the confidence "
        f"a PGD over the whole pixel box reaches ({m['steps']} sign steps of {m['step_size']}): median "
        f"{reach['median']:.2f}, max {reach['max']:.2f}; κ (cw.strong_confidence) {shares} of them."
    )


def run(c: ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) the grid; returns {points, best, plateau, workdir} (see the module docstring).

    Everything is checked and built (config, grid, training run, data, attacks) before the workdir is
    touched, so bad input writes nothing.
    """
    plan = validate(c)
    model, params, _, x, y = load_single_label_run(
        c.train_workdir,
        data_dir=c.data_dir,
        start=c.start,
        images=c.images,
        who="the attack_curve experiment",
    )
    attacks = [s.make(plan.attack) for s in plan.settings]
    resolved = to_dict(c)
    path = check_workdir(workdir, resolved)
    open_workdir(path, resolved)

    apply_fn = models.apply_fn(model)
    pred = np.concatenate(
        [
            np.asarray(jnp.argmax(apply_fn(params, jnp.asarray(x[s:e])), -1))
            for s, e in BA.batches(len(x), int(c.batch_size))
        ]
    )
    benign = {"point": pred}
    key = jax.random.key(c.seed)  # the same for every point

    def compute(i: int) -> dict[str, Any]:
        x_adv, success, seconds = attack_images(
            key, apply_fn, params, x, y, attacks[i], batch_size=int(c.batch_size), desc=f"point {i}",
            progress=progress,
        )  # fmt: skip
        row = BA.attack_row(x, y, benign, {"x_adv": x_adv, "success": success, "attack_seconds": seconds})
        record = {"index": i, "settings": plan.points[i], "total_steps": plan.total_steps(i), **row}
        logging.info("point %d %s: %d / %d successes, %.1f s", i, plan.points[i], row["successes"],
                     row["correct"], seconds)  # fmt: skip
        return record

    ok = pred == y
    confidences = sorted({float(s.cw.strong_confidence) for s in plan.settings})
    margins = None  # no image classified correctly: nothing to measure
    if ok.any():
        margins = logit_margins(
            jax.random.fold_in(key, 1), apply_fn, params, x[ok], y[ok], batch_size=int(c.batch_size),
            confidences=confidences,
        )  # fmt: skip
    store: RecordStore[int] = RecordStore(path / "points", "{:03d}")
    records = store.resume(range(len(plan.points)), compute, desc="points", progress=progress)
    best = best_index(records)
    plateau, other = plateau_of(plan, records, best)
    metrics = {
        "name": c.name,
        "attack": plan.attack,
        "train_workdir": c.train_workdir,
        "images": c.images,
        "correct": int(np.sum(pred == y)),
        "clean_accuracy": float(np.mean(pred == y)),
        "grid": {a.name: list(a.values) for a in plan.axes},
        "steps_axis": plan.steps_axis,
        "points": records,
        "best": records[best],
        "plateau": plateau,
        "plateau_against": other,
        "margins": margins,
    }
    write_outputs(path, c, plan, metrics)
    write_json_atomic(path / "metrics.json", metrics)
    return {"points": records, "best": records[best], "plateau": plateau, "workdir": str(path)}


__all__ = ["BLOCK_OF", "Plan", "attack_images", "parse_grid", "plateau_of", "run", "validate"]
