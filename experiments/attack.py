"""The `attack` experiment: attack test images of a trained single-label model with several attacks.

workdir/config.json, metrics.json ({attack: success rate, mean RMS / L2 / L∞ distortion of the
successes, seconds, images/s}), figures/examples.png (originals and adversarials), log.txt.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from absl import logging
from ml_collections import ConfigDict
from tqdm import tqdm

from experiments.common import UsageError, check_workdir, open_workdir, require, to_dict
from experiments.configs.attack import ATTACKS
from experiments.train import load_split, load_trained, task_of
from lnjax import attacks as A, models
from lnjax.io import write_json_atomic


def parse_attacks(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    require(names, f"attacks = {text!r} names no attack; expected a comma-separated subset of {ATTACKS}")
    bad = [n for n in names if n not in ATTACKS]
    require(not bad, f"unknown attacks {bad}; expected a comma-separated subset of {ATTACKS}")
    return names


def validate(c: ConfigDict) -> tuple[str, ...]:
    names = parse_attacks(c.attacks)
    require(c.images >= 1 and c.start >= 0 and c.batch_size >= 1, "images ≥ 1, start ≥ 0 and batch_size ≥ 1")
    require(c.fgsm.eps >= 0 and c.pgd.eps >= 0 and c.optmargin.eps >= 0, "attack eps values must be ≥ 0")
    require(c.pgd.steps >= 1 and c.pgd.step_size > 0 and c.pgd.restarts >= 1, "pgd: steps ≥ 1, step_size > 0")
    for name in ("cw", "optmargin"):
        s = c[name]
        require(
            s.lr > 0 and s.steps >= 1 and s.binary_steps >= 1 and s.c0 > 0, f"{name}: lr, c0 > 0; steps ≥ 1"
        )
    require(c.optmargin.n >= 1, "optmargin.n must be ≥ 1")
    return names


def make_attack(name: str, c: ConfigDict):
    if name == "fgsm":
        return A.make_fgsm(eps=c.fgsm.eps)
    if name == "pgd":
        p = c.pgd
        return A.make_pgd(eps=p.eps, steps=p.steps, step_size=p.step_size, restarts=p.restarts)
    if name in ("optbrittle", "optstrong"):
        w = c.cw
        return A.make_cw_l2(
            confidence=w.strong_confidence if name == "optstrong" else 0.0,
            lr=w.lr, steps=w.steps, binary_steps=w.binary_steps, c0=w.c0, distance_scale=w.distance_scale,
        )  # fmt: skip
    o = c.optmargin
    return A.make_optmargin(
        eps=o.eps, n=o.n, lr=o.lr, steps=o.steps, binary_steps=o.binary_steps, c0=o.c0,
        distance_scale=o.distance_scale,
    )  # fmt: skip


def _examples_figure(x, adversarial: dict[str, np.ndarray], count: int):
    names = list(adversarial)
    fig, axes = plt.subplots(
        count, len(names) + 1, figsize=(1.4 * (len(names) + 1), 1.4 * count), squeeze=False
    )
    for i in range(count):
        for j, (title, img) in enumerate([("original", x[i])] + [(n, adversarial[n][i]) for n in names]):
            ax = axes[i, j]
            ax.imshow(np.squeeze(img), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def run(c: ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    names = validate(c)
    model, params, tc = load_trained(c.train_workdir)
    require(
        task_of(tc.data.dataset) == "single",
        "the attack experiment needs a single-label model (MNIST, CIFAR-10)",
    )
    if c.data_dir:
        tc.data.data_dir = c.data_dir
    test = load_split(tc, "test")
    require(
        c.start + c.images <= test.num_examples, f"start + images exceeds the {test.num_examples} test images"
    )
    resolved = to_dict(c)
    path = open_workdir(check_workdir(workdir, resolved), resolved)

    apply_fn = models.apply_fn(model)
    x_all = jnp.asarray(test.x[c.start : c.start + c.images])
    y_all = jnp.asarray(test.y[c.start : c.start + c.images])
    clean = jnp.argmax(apply_fn(params, x_all), -1) == y_all
    key = jax.random.key(c.seed)
    metrics: dict[str, Any] = {"images": c.images, "clean_accuracy": float(clean.mean())}
    examples: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        attack = make_attack(name, c)
        parts, t0 = [], time.perf_counter()
        for s in tqdm(range(0, c.images, c.batch_size), desc=name, disable=not progress):
            xb, yb = x_all[s : s + c.batch_size], y_all[s : s + c.batch_size]
            r = attack(jax.random.fold_in(jax.random.fold_in(key, i), s), apply_fn, params, xb, yb)
            parts.append(jax.device_get(r))
        seconds = time.perf_counter() - t0
        result = A.AttackResult(*(jnp.concatenate(p) for p in zip(*parts, strict=True)))
        # only inputs the model classifies correctly count (an attack cannot "succeed" on a miss)
        kept = A.AttackResult(result.x_adv, result.success & clean, result.margin)
        s = A.summarize(x_all, kept)
        s["success_rate_of_correct"] = float(jnp.sum(kept.success) / jnp.maximum(jnp.sum(clean), 1))
        s.update(seconds=seconds, images_per_s=c.images / seconds)
        metrics[name] = s
        examples[name] = np.asarray(result.x_adv[: c.examples])
        logging.info("%s: %s", name, s)
    write_json_atomic(path / "metrics.json", metrics)
    fig = _examples_figure(np.asarray(x_all[: c.examples]), examples, min(c.examples, c.images))
    fig.savefig(path / "figures" / "examples.png", dpi=100)
    plt.close(fig)
    summary = {
        name: {"success_rate": metrics[name]["success_rate"], "rms": metrics[name]["rms"]} for name in names
    }
    return {**summary, "workdir": str(Path(path))}


__all__ = ["UsageError", "run"]
