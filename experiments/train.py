"""The `train` experiment: train a model with a defense, evaluate it, leave a usable workdir.

workdir/config.json, checkpoints/ (Orbax; a killed run resumes from the newest intact one),
history.jsonl (each logged training metric appended as it is logged, so it survives a kill),
history.json (all of it, rewritten at the end of each run), metrics.json (test metrics, clean and
under PGD), figures/training.png, log.txt.

`init_from` (a workdir of a finished `train` run of the same model on the same dataset) fine-tunes:
the run starts from those params with a fresh optimiser and schedule.

Failures: invalid values, missing or damaged data and damaged checkpoints are one UsageError line
(exit 2) and, before training starts, leave no trace; a diverging run (non-finite loss) stops with
a UsageError (exit 2) keeping its last finite checkpoint; Ctrl-C checkpoints the last finished step
and raises `Interrupted` (the runner exits with 130 and says how to resume).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Any

import jax
import matplotlib.pyplot as plt
from absl import logging
from ml_collections import ConfigDict

from experiments.common import (
    Interrupted,
    UsageError,
    check_workdir,
    dataclass_from,
    open_workdir,
    require,
    to_dict,
)
from experiments.runs import NUM_CLASSES, DataConfig, load_split, load_trained, task_of
from lnjax import models, plots
from lnjax.io import append_jsonl, read_json, read_jsonl, write_json_atomic
from lnjax.train import DefenseConfig, TrainConfig, evaluate, train
from lnjax.train.checkpoint import CheckpointError
from lnjax.train.loop import TrainingDiverged, TrainingInterrupted

INPUT_SHAPES = {"double_mnist": (64, 64, 1), "mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
__all__ = ["EvalConfig", "Setup", "run", "setup"]


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Test evaluation after training (the `eval` block of a train config).

    Attributes:
      batch_size: examples per evaluation batch.
      robust_eps: L∞ radius of the PGD robustness check on the first `robust_n` test examples
        (0 = skipped).
      robust_steps, robust_step_size: that PGD's steps and step (random start).
      robust_n: how many test examples it attacks (0 = the whole test split).
    """

    batch_size: int = 500
    robust_eps: float = 0.0
    robust_steps: int = 20
    robust_step_size: float = 0.01
    robust_n: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size = {self.batch_size!r} must be an integer ≥ 1")
        if not math.isfinite(self.robust_eps) or not 0 <= self.robust_eps <= 1:
            raise ValueError(f"robust_eps = {self.robust_eps} must be in [0, 1]")
        if self.robust_eps > 0:
            if (
                self.robust_steps < 1
                or not math.isfinite(self.robust_step_size)
                or self.robust_step_size <= 0
            ):
                raise ValueError(
                    f"robust_steps = {self.robust_steps} must be ≥ 1 and robust_step_size = "
                    f"{self.robust_step_size} a finite number > 0"
                )
            if self.robust_n < 0:
                raise ValueError(f"robust_n = {self.robust_n} must be ≥ 0 (0 = the whole test split)")

    def pgd(self) -> DefenseConfig | None:
        """The robustness check's attack (None when robust_eps is 0)."""
        if self.robust_eps <= 0:
            return None
        return DefenseConfig(
            name="linf", eps=self.robust_eps, steps=self.robust_steps, step_size=self.robust_step_size
        )


@dataclasses.dataclass(frozen=True)
class Setup:
    """A validated train config as typed library objects (built before the workdir is touched)."""

    data: DataConfig
    train: TrainConfig
    defense: DefenseConfig
    eval: EvalConfig
    model: models.Sequential
    task: str


def setup(c: ConfigDict) -> Setup:
    """Validates `c` and builds its typed configs and model.

    Raises:
      UsageError: the first invalid value, what is expected (one line).
    """
    data_config = dataclass_from(c.data, DataConfig, where="data")
    train_config = dataclass_from(c.train, TrainConfig, where="train")
    defense = dataclass_from(c.defense, DefenseConfig, where="defense")
    eval_config = dataclass_from(c.eval, EvalConfig, where="eval")
    require(
        data_config.dataset in INPUT_SHAPES,
        f"unknown dataset {data_config.dataset!r}; expected one of {sorted(INPUT_SHAPES)}",
    )
    require(c.model in models.MODELS, f"unknown model {c.model!r}; expected one of {sorted(models.MODELS)}")
    model = models.get_model(c.model, NUM_CLASSES)
    shape = INPUT_SHAPES[data_config.dataset]
    require(
        tuple(model.input_shape) == shape,
        f"model {c.model!r} takes inputs of shape {tuple(model.input_shape)} but {data_config.dataset} "
        f"images are {shape}; pick a model for that dataset",
    )
    require(1 <= c.k <= NUM_CLASSES, f"k = {c.k} must be between 1 and the class count {NUM_CLASSES}")
    n_dev = jax.local_device_count()
    require(
        train_config.batch_size % n_dev == 0,
        f"train.batch_size = {train_config.batch_size} must be divisible by the {n_dev} local devices",
    )
    if defense.name == "l0":
        side = min(shape[:2])
        require(defense.l0_max <= side, f"defense.l0_max = {defense.l0_max} must be ≤ the image side {side}")
    require(isinstance(c.init_from, str), f"init_from = {c.init_from!r} must be a workdir path (a string)")
    return Setup(data_config, train_config, defense, eval_config, model, task_of(data_config.dataset))


def _init_params(c: ConfigDict) -> Any:
    """The params of the finished run at `c.init_from` (fine-tuning: a workdir of a finished `train` run
    of the same model on the same dataset), checked to be of `c.model` on `c.data.dataset`."""
    _, params, parent = load_trained(c.init_from)
    for field, want, got in (
        ("model", c.model, parent.get("model")),
        ("dataset", c.data.dataset, parent.get("data", {}).get("dataset")),
    ):
        require(
            got == want,
            f"init_from = {c.init_from} holds a run with {field} {got!r}; this run trains {field} {want!r}",
        )
    return params


def validate(c: ConfigDict) -> None:
    """Raises UsageError naming the first invalid value and what is expected."""
    setup(c)


def _history(path: Path) -> list[dict[str, Any]]:
    """Every logged step of the run, once (the newest record of a step wins: a resumed run recomputes
    the steps after its checkpoint), in step order. Reads history.jsonl (and a history.json written
    before history.jsonl existed)."""
    by_step: dict[int, dict[str, Any]] = {}
    if (path / "history.json").is_file() and not (path / "history.jsonl").is_file():
        by_step.update((m["step"], m) for m in read_json(path / "history.json"))
    by_step.update((m["step"], m) for m in read_jsonl(path / "history.jsonl"))
    return [by_step[s] for s in sorted(by_step)]


def _log_metrics(path: Path, m: dict[str, Any]) -> None:
    append_jsonl(path / "history.jsonl", m)
    logging.info("train %s", m)


def run(
    c: ConfigDict, workdir: str, *, progress: bool = True, stop_after: int | None = None
) -> dict[str, Any]:
    """Trains and evaluates; returns the summary the runner prints (test metrics + workdir).

    Raises:
      UsageError: invalid config, missing or damaged data, damaged checkpoints, or divergence.
      Interrupted: Ctrl-C (the last finished step is checkpointed; rerunning resumes).
    """
    s = setup(c)
    init_params = _init_params(c) if c.init_from else None
    train_ds, test_ds = load_split(c, "train"), load_split(c, "test")
    require(
        train_ds.num_examples >= s.train.batch_size,
        f"{train_ds.num_examples} training examples are fewer than one batch of {s.train.batch_size}",
    )
    resolved = to_dict(c)
    path = open_workdir(check_workdir(workdir, resolved), resolved)

    if (path / "metrics.json").is_file() and not any((path / "checkpoints").glob("[0-9]*")):
        logging.warning("%s is a finished run without checkpoints: training it again from scratch", path)
    key = jax.random.key(c.seed)
    train_key, eval_key = jax.random.split(key)
    t0 = time.perf_counter()
    try:
        params, history = train(
            key=train_key,
            model=s.model,
            task=s.task,
            x=train_ds.x,
            y=train_ds.y,
            config=s.train,
            defense=s.defense,
            checkpoint_dir=str(path / "checkpoints"),
            stop_after=stop_after,
            progress=progress,
            on_log=lambda m: _log_metrics(path, m),
            init_params=init_params,
        )
    except CheckpointError as e:
        raise UsageError(
            f"{' '.join(str(e).split())}; delete {path / 'checkpoints'} to train from scratch"
        ) from e
    except TrainingDiverged as e:
        raise UsageError(
            f"{e} (in {path / 'checkpoints'}); lower train.learning_rate (or change the defense) and "
            f"pass a new --workdir"
        ) from e
    except TrainingInterrupted as e:
        saved = f"step {e.checkpoint_step} is checkpointed" if e.checkpoint_step else "no checkpoint yet"
        raise Interrupted(
            f"training interrupted after step {e.step}; {saved} in {path / 'checkpoints'}; "
            "rerun the same command to resume"
        ) from e
    train_seconds = time.perf_counter() - t0
    all_history = _history(path)
    if history:
        write_json_atomic(path / "history.json", all_history)
    if stop_after is not None and stop_after < s.train.steps:
        return {"stopped_at": stop_after, "workdir": str(path)}

    t0 = time.perf_counter()
    evaluate_on = functools.partial(
        evaluate,
        key=eval_key,
        model=s.model,
        params=params,
        task=s.task,
        k=c.k,
        batch_size=s.eval.batch_size,
        progress=progress,
    )
    test = evaluate_on(x=test_ds.x, y=test_ds.y)
    pgd = s.eval.pgd()
    if pgd is not None:
        n = s.eval.robust_n or test_ds.num_examples
        robust = evaluate_on(x=test_ds.x[:n], y=test_ds.y[:n], pgd=pgd)
        test.update(
            robust=robust["robust"],
            robust_eps=robust["robust_eps"],
            robust_n=robust["n"],
            robust_steps=s.eval.robust_steps,
        )
    eval_seconds = time.perf_counter() - t0
    train_stats = {
        "steps": s.train.steps,
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
        fig = plots.training_curves(all_history, title=c.name)
        fig.savefig(path / "figures" / "training.png", dpi=120)
        plt.close(fig)
    summary: dict[str, Any] = {k: v for k, v in test.items() if isinstance(v, float)}
    if s.task == "multilabel":
        summary = {f"top{c.k}_exact": test[f"top{c.k}_exact"], "per_label": test["per_label"], **summary}
    summary["workdir"] = str(path)
    return summary
