"""The `train` experiment: train a model with a defense, evaluate it, leave a usable workdir.

workdir/config.json, checkpoints/ (Orbax; a killed run resumes), history.json (logged training
metrics), metrics.json (test metrics, clean and under PGD), figures/training.png, log.txt.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import matplotlib.pyplot as plt
from absl import logging
from ml_collections import ConfigDict

from experiments.common import check_workdir, open_workdir, require, to_dict
from experiments.runs import NUM_CLASSES, load_split, load_trained, task_of
from lnjax import models, plots
from lnjax.io import read_json, write_json_atomic
from lnjax.train import DEFENSES, DefenseConfig, TrainConfig, evaluate, train

INPUT_SHAPES = {"double_mnist": (64, 64, 1), "mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
SCHEDULES = ("cosine", "constant")
# Run loading moved to experiments.runs; re-exported here until the sibling experiments import it from there.
__all__ = ["NUM_CLASSES", "load_split", "load_trained", "run", "task_of", "validate"]


def validate(c: ConfigDict) -> None:
    """Raises UsageError naming the first invalid value and what is expected."""
    require(
        c.data.dataset in INPUT_SHAPES,
        f"unknown dataset {c.data.dataset!r}; expected one of {sorted(INPUT_SHAPES)}",
    )
    require(c.model in models.MODELS, f"unknown model {c.model!r}; expected one of {sorted(models.MODELS)}")
    model = models.get_model(c.model, NUM_CLASSES)
    require(
        tuple(model.input_shape) == INPUT_SHAPES[c.data.dataset],
        f"model {c.model!r} takes inputs of shape {tuple(model.input_shape)} but {c.data.dataset} images are "
        f"{INPUT_SHAPES[c.data.dataset]}; pick a model for that dataset",
    )
    require(1 <= c.k <= NUM_CLASSES, f"k = {c.k} must be between 1 and the class count {NUM_CLASSES}")
    t = c.train
    require(t.batch_size >= 1, f"train.batch_size = {t.batch_size} must be ≥ 1")
    n_dev = jax.local_device_count()
    require(
        t.batch_size % n_dev == 0,
        f"train.batch_size = {t.batch_size} must be divisible by the {n_dev} local devices",
    )
    require(t.steps >= 1, f"train.steps = {t.steps} must be ≥ 1")
    require(t.learning_rate > 0, f"train.learning_rate = {t.learning_rate} must be > 0")
    require(t.schedule in SCHEDULES, f"unknown train.schedule {t.schedule!r}; expected one of {SCHEDULES}")
    require(
        t.checkpoint_every >= 1 and t.log_every >= 1, "train.checkpoint_every and train.log_every must be ≥ 1"
    )
    d = c.defense
    require(d.name in DEFENSES, f"unknown defense {d.name!r}; expected one of {DEFENSES}")
    require(d.eps >= 0, f"defense.eps = {d.eps} must be ≥ 0 (an L∞ radius in pixel units of [0, 1])")
    require(d.eps <= 1, f"defense.eps = {d.eps} must be ≤ 1 (pixels are in [0, 1])")
    if d.name == "linf":
        require(d.eps > 0, "defense.eps must be > 0 for the linf defense")
        require(d.steps >= 1 and d.step_size > 0, "defense.steps must be ≥ 1 and defense.step_size > 0")
        require(0 < d.adv_share <= 1, f"defense.adv_share = {d.adv_share} must be in (0, 1]")
        require(d.eps_warmup >= 0, f"defense.eps_warmup = {d.eps_warmup} must be ≥ 0 (steps)")
    if d.name == "l0":
        side = min(INPUT_SHAPES[c.data.dataset][:2])
        require(
            1 <= d.l0_min <= d.l0_max <= side,
            f"defense.l0_min = {d.l0_min}, l0_max = {d.l0_max}: need 1 ≤ l0_min ≤ l0_max ≤ {side}",
        )
    require(d.rs_weight >= 0 and d.rs_eps >= 0, "defense.rs_weight and defense.rs_eps must be ≥ 0")
    e = c.eval
    require(e.batch_size >= 1, f"eval.batch_size = {e.batch_size} must be ≥ 1")
    require(0 <= e.robust_eps <= 1, f"eval.robust_eps = {e.robust_eps} must be in [0, 1]")
    if e.robust_eps > 0:
        require(
            e.robust_steps >= 1 and e.robust_step_size > 0, "eval.robust_steps ≥ 1 and robust_step_size > 0"
        )
        require(e.robust_n >= 0, f"eval.robust_n = {e.robust_n} must be ≥ 0 (0 = the whole test split)")
    require(c.data.train_limit >= 0 and c.data.test_limit >= 0, "data.train_limit and test_limit must be ≥ 0")


def defense_config(c: ConfigDict) -> DefenseConfig:
    return DefenseConfig(**c.defense.to_dict())


def train_config(c: ConfigDict) -> TrainConfig:
    return TrainConfig(**c.train.to_dict())


def _robust_pgd(c: ConfigDict) -> DefenseConfig:
    e = c.eval
    return DefenseConfig(
        name="linf", eps=e.robust_eps, steps=e.robust_steps, step_size=e.robust_step_size, random_start=True
    )


def run(
    c: ConfigDict, workdir: str, *, progress: bool = True, stop_after: int | None = None
) -> dict[str, Any]:
    """Trains and evaluates; returns the summary the runner prints (test metrics + workdir)."""
    validate(c)
    train_ds, test_ds = load_split(c, "train"), load_split(c, "test")
    require(
        train_ds.num_examples >= c.train.batch_size,
        f"{train_ds.num_examples} training examples are fewer than one batch of {c.train.batch_size}",
    )
    resolved = to_dict(c)
    path = open_workdir(check_workdir(workdir, resolved), resolved)

    model = models.get_model(c.model, NUM_CLASSES)
    task = task_of(c.data.dataset)
    key = jax.random.key(c.seed)
    train_key, eval_key = jax.random.split(key)
    t0 = time.perf_counter()
    params, history = train(
        key=train_key,
        model=model,
        task=task,
        x=train_ds.x,
        y=train_ds.y,
        config=train_config(c),
        defense=defense_config(c),
        checkpoint_dir=str(path / "checkpoints"),
        stop_after=stop_after,
        progress=progress,
        on_log=lambda m: logging.info("train %s", m),
    )
    train_seconds = time.perf_counter() - t0
    if history:  # a resumed run keeps the history of its earlier part
        old = read_json(path / "history.json") if (path / "history.json").exists() else []
        history = [m for m in old if m["step"] < history[0]["step"]] + history
        write_json_atomic(path / "history.json", history)
    if stop_after is not None and stop_after < c.train.steps:
        return {"stopped_at": stop_after, "workdir": str(path)}

    t0 = time.perf_counter()
    test = evaluate(
        key=eval_key,
        model=model,
        params=params,
        task=task,
        k=c.k,
        x=test_ds.x,
        y=test_ds.y,
        batch_size=c.eval.batch_size,
        progress=progress,
    )
    if c.eval.robust_eps > 0:
        n = c.eval.robust_n or test_ds.num_examples
        robust = evaluate(
            key=eval_key,
            model=model,
            params=params,
            task=task,
            k=c.k,
            x=test_ds.x[:n],
            y=test_ds.y[:n],
            batch_size=c.eval.batch_size,
            pgd=_robust_pgd(c),
            progress=progress,
        )
        test.update(
            robust=robust["robust"],
            robust_eps=robust["robust_eps"],
            robust_n=robust["n"],
            robust_steps=c.eval.robust_steps,
        )
    eval_seconds = time.perf_counter() - t0
    train_stats = {
        "steps": c.train.steps,
        "seconds_this_run": train_seconds,
        "examples_per_s": history[-1]["examples_per_s"] if history else None,
        "final_loss": history[-1]["loss"] if history else None,
        "devices": jax.local_device_count(),
        "platform": jax.default_backend(),
    }
    if not history and (path / "metrics.json").is_file():  # re-evaluated finished run: keep training stats
        train_stats = read_json(path / "metrics.json").get("train", train_stats)
    metrics = {"name": c.name, "test": test, "train": train_stats, "eval_seconds": eval_seconds}
    write_json_atomic(path / "metrics.json", metrics)
    if history:
        fig = plots.training_curves(history, title=c.name)
        fig.savefig(path / "figures" / "training.png", dpi=120)
        plt.close(fig)
    summary = {k: v for k, v in test.items() if isinstance(v, float)}
    if task == "multilabel":
        summary = {f"top{c.k}_exact": test[f"top{c.k}_exact"], "per_label": test["per_label"], **summary}
    summary["workdir"] = str(path)
    return summary
