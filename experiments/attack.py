"""The `attack` experiment: attack test images of a trained single-label model with several attacks.

  python -m experiments.run --flagfile=experiments/flagfiles/attack_mnist.flags

The attacks and their settings are `lnjax.attacks.config`'s (the `fgsm`, `pgd`, `cw`, `optmargin`
blocks of experiments/configs/attack.py are generated from it).

workdir/config.json, metrics.json ({attack: success rate, mean RMS / L2 / L∞ distortion of the
successes, seconds, images/s}), adversarial.npz (x, y and per attack NAME_x_adv and NAME_success:
confirmed by the model at x_adv, on correctly classified images only), figures/examples.png
(originals and adversarials), log.txt.
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

from experiments.common import check_workdir, open_workdir, require, to_dict, unknown_keys
from experiments.configs.attack import base as base_config
from experiments.configs.blocks import attack_settings
from experiments.runs import load_single_label_run
from lnjax import attacks as A, models
from lnjax.attacks.config import ATTACKS, AttackSettings
from lnjax.data import save_npz_deterministic
from lnjax.io import write_json_atomic
from lnjax.plots import boundary as plots


def parse_attacks(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in str(text).split(",") if s.strip())
    require(bool(names), f"attacks = {text!r} names no attack; expected a subset of {ATTACKS}")
    bad = [n for n in names if n not in ATTACKS]
    require(not bad, f"unknown attacks {bad}; expected a comma-separated subset of {ATTACKS}")
    return names


def validate(c: ConfigDict) -> tuple[tuple[str, ...], AttackSettings]:
    """(attack names, their checked settings); UsageError naming the first invalid value."""
    unknown = unknown_keys(c.to_dict(), base_config().to_dict())
    require(not unknown, f"unknown config options {unknown}; see experiments/configs/attack.py")
    require(c.experiment == "attack", f"experiment = {c.experiment!r}; this module runs 'attack'")
    names = parse_attacks(c.attacks)
    require(c.images >= 1 and c.start >= 0 and c.batch_size >= 1, "images ≥ 1, start ≥ 0 and batch_size ≥ 1")
    require(c.examples >= 0, f"examples = {c.examples} must be ≥ 0")
    return names, attack_settings(c)


def run(c: ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Attacks the configured test images; returns success rate and RMS per attack (metrics.json: more).

    Everything is checked and built (config, training run, data, attacks) before the workdir is
    touched, so bad input writes nothing.
    """
    names, settings = validate(c)
    model, params, _, x, y = load_single_label_run(
        c.train_workdir,
        data_dir=c.data_dir,
        start=c.start,
        images=c.images,
        who="the attack experiment",
    )
    resolved = to_dict(c)
    path = check_workdir(workdir, resolved)
    attacks = {name: settings.make(name) for name in names}
    open_workdir(path, resolved)

    apply_fn = models.apply_fn(model)
    x_all, y_all = jnp.asarray(x), jnp.asarray(y)
    clean = jnp.argmax(apply_fn(params, x_all), -1) == y_all
    key = jax.random.key(c.seed)
    metrics: dict[str, Any] = {"images": c.images, "clean_accuracy": float(clean.mean())}
    examples: dict[str, np.ndarray] = {}
    adversarial: dict[str, np.ndarray] = {}
    successes: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        attack = attacks[name]
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
        adversarial[name] = np.asarray(result.x_adv)
        successes[name] = np.asarray(kept.success)
        logging.info("%s: %s", name, s)
    write_json_atomic(path / "metrics.json", metrics)
    save_npz_deterministic(
        path / "adversarial.npz",
        {
            "x": x_all,
            "y": y_all,
            **{f"{n}_x_adv": adversarial[n] for n in names},
            **{f"{n}_success": successes[n] for n in names},
        },
    )
    count = min(c.examples, c.images)
    fig = plots.example_grid(
        {"original": np.asarray(x_all[:count]), **{n: v[:count] for n, v in examples.items()}}
    )
    fig.savefig(path / "figures" / "examples.png", dpi=100)
    plt.close(fig)
    summary = {
        name: {"success_rate": metrics[name]["success_rate"], "rms": metrics[name]["rms"]} for name in names
    }
    return {**summary, "workdir": str(Path(path))}


__all__ = ["run", "validate"]
