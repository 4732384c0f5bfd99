"""The host training loop: batches, jitted steps, checkpoints, evaluation, progress."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

from lnjax.checks import check_choice, check_float, check_int
from lnjax.models import Sequential
from lnjax.train.checkpoint import Checkpointer, params_fit
from lnjax.train.step import DefenseConfig, TrainState, make_eval_step, make_mesh, make_train_step
from lnjax.types import Params

SCHEDULES = ("cosine", "constant")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The host loop's hyperparameters (Adam with a learning-rate schedule).

    Attributes:
      batch_size: global batch (divisible by the local device count).
      steps: optimiser steps in total (a resumed run continues to this step).
      learning_rate: Adam's (peak) learning rate; finite and > 0.
      schedule: "cosine" (decay to 0 over `steps`) or "constant".
      checkpoint_every: save a checkpoint every this many steps (and at the end).
      log_every: log metrics every this many steps (and at the end).

    Raises:
      ValueError: (at construction) a value out of range, naming the field and what is expected.
    """

    batch_size: int = 128
    steps: int = 5000
    learning_rate: float = 2e-3
    schedule: str = "cosine"
    checkpoint_every: int = 500
    log_every: int = 50

    def __post_init__(self) -> None:
        for name in ("batch_size", "steps", "checkpoint_every", "log_every"):
            check_int(name, getattr(self, name), 1)
        check_float("learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_choice("schedule", self.schedule, SCHEDULES)


class TrainingDiverged(RuntimeError):
    """The training loss became non-finite; no checkpoint of the diverged state was written.

    Attributes:
      step: the step whose logged loss (or params, at a checkpoint) was non-finite.
      loss: that loss.
      checkpoint_step: the last (finite) checkpoint kept, or None.
    """

    def __init__(self, step: int, loss: float, checkpoint_step: int | None):
        kept = (
            f"the last good checkpoint (step {checkpoint_step}) is kept"
            if checkpoint_step
            else "no checkpoint"
        )
        super().__init__(f"training diverged at step {step} (loss {loss})" + (f"; {kept}" if kept else ""))
        self.step, self.loss, self.checkpoint_step = step, loss, checkpoint_step


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the last finished step was checkpointed (when a directory was given).

    Attributes:
      step: the last finished step.
      checkpoint_step: the step of the newest checkpoint (== step when the save worked), or None.
    """

    def __init__(self, step: int, checkpoint_step: int | None):
        super().__init__(f"training interrupted after step {step}")
        self.step, self.checkpoint_step = step, checkpoint_step


def make_schedule(config: TrainConfig) -> optax.Schedule:
    """The learning-rate schedule named by `config.schedule`."""
    if config.schedule == "constant":
        return optax.constant_schedule(config.learning_rate)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(config.learning_rate, config.steps)
    raise ValueError(f"unknown schedule {config.schedule!r}; expected one of {SCHEDULES}")


def _all_finite(tree: Any) -> bool:
    return all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(tree))


def epoch_batches(key: jax.Array, n: int, batch_size: int, epoch: int) -> np.ndarray:
    """Batch indices of one epoch: [n // batch_size, batch_size], a permutation from fold_in(key, epoch)."""
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))
    nb = n // batch_size
    return perm[: nb * batch_size].reshape(nb, batch_size)


def _shard(mesh, *arrays):
    data = NamedSharding(mesh, P("data"))
    return tuple(jax.device_put(a, data) for a in arrays)


def train(
    *,
    key: jax.Array,
    model: Sequential,
    task: str,
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    defense: DefenseConfig,
    checkpoint_dir: str | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    init_params: Params | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """Trains `model` and returns its params.

    Args:
      key: root key; init, data order and defense randomness are folded from it.
      x: [N, H, W, C] float32 in [0, 1]; y: [N, K] multi-hot or [N] int.
      checkpoint_dir: Orbax checkpoints every `config.checkpoint_every` steps and at the end;
        a run with an existing checkpoint resumes from it (the newest intact one) and reaches the
        same result as an uninterrupted one (batches and keys depend only on the step).
      stop_after: stop (after checkpointing) once this step is reached, as if killed (tests).
      on_log: called with each logged metric dict (step, loss, rs_loss, ibp_loss, examples_per_s) as it is
        logged, e.g. to append it to a file that survives a kill.
      init_params: the params to start from (fine-tuning a trained model: a fresh optimiser and
        schedule, step 0); None: `model.init_params` from the init key. A resumed run starts from its
        checkpoint either way.

    Returns:
      (params, history) with history a list of logged metric dicts.

    Raises:
      ValueError: `init_params` are not params of `model` (another structure, shape or dtype), or
        not finite.
      TrainingDiverged: a logged loss or the params at a checkpoint became non-finite; the last
        finite checkpoint is kept and nothing later is saved.
      TrainingInterrupted: Ctrl-C (KeyboardInterrupt, also from `on_log`); the last finished step is
        checkpointed first when `checkpoint_dir` is given.
      CheckpointError: `checkpoint_dir` holds checkpoints but none is intact.
    """
    mesh = make_mesh()
    n_dev = mesh.devices.size
    if config.batch_size % n_dev:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the {n_dev} devices")
    if x.shape[0] < config.batch_size:
        raise ValueError(f"{x.shape[0]} training examples are fewer than one batch of {config.batch_size}")
    init_key, data_key, step_key = jax.random.split(key, 3)
    tx = optax.adam(make_schedule(config))
    repl = NamedSharding(mesh, P())
    params = model.init_params(init_key)
    if init_params is not None:
        if not params_fit(init_params, params):
            raise ValueError("init_params are not params of this model (another structure, shape or dtype)")
        if not _all_finite(init_params):
            raise ValueError("init_params hold non-finite values")
        params = jax.tree.map(jnp.asarray, init_params)
    state = jax.device_put(TrainState.create(params=params, tx=tx), repl)
    ckpt = Checkpointer(checkpoint_dir) if checkpoint_dir else None
    try:
        if ckpt is not None and ckpt.latest_step() is not None:
            state = jax.device_put(ckpt.restore(state), repl)
            logging.info("resumed from step %d", int(state.step))
        step_fn = make_train_step(model=model, task=task, defense=defense, mesh=mesh)
        step_key = jax.device_put(step_key, repl)
        state, history = _loop(
            state, step_fn, step_key, data_key, x, y, config, mesh, ckpt, stop_after, progress, on_log
        )
    finally:
        if ckpt is not None:
            ckpt.close()
    return state.params, history


def _loop(
    state: TrainState,
    step_fn: Callable[..., tuple[TrainState, dict[str, jax.Array]]],
    step_key: jax.Array,
    data_key: jax.Array,
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    mesh: jax.sharding.Mesh,
    ckpt: Checkpointer | None,
    stop_after: int | None,
    progress: bool,
    on_log: Callable[[dict[str, Any]], None] | None,
) -> tuple[TrainState, list[dict[str, Any]]]:
    """The steps from `state.step` to the end (see `train`)."""
    n = x.shape[0]
    per_epoch = n // config.batch_size
    start = int(jax.device_get(state.step))
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    history: list[dict[str, Any]] = []
    batches, cur_epoch = np.zeros((0, config.batch_size), np.int64), -1
    saved = ckpt.latest_step() if ckpt is not None else None
    bar = tqdm(total=config.steps, initial=start, desc="train", disable=not progress, unit="step")
    t0, seen = time.perf_counter(), 0
    try:
        for s in range(start, end):
            epoch, i = divmod(s, per_epoch)
            if epoch != cur_epoch:
                batches, cur_epoch = epoch_batches(data_key, n, config.batch_size, epoch), epoch
            idx = batches[i]
            xb, yb = _shard(mesh, x[idx], y[idx])
            state, metrics = step_fn(state, step_key, xb, yb)
            seen += config.batch_size
            if (s + 1) % config.log_every == 0 or s + 1 == end:
                m = {k: float(v) for k, v in jax.device_get(metrics).items()}
                m["step"] = s + 1
                m["examples_per_s"] = seen / (time.perf_counter() - t0)
                history.append(m)
                bar.set_postfix(loss=f"{m['loss']:.4f}", ex_s=f"{m['examples_per_s']:.0f}")
                if on_log:
                    on_log(m)
                if not math.isfinite(m["loss"]):
                    raise TrainingDiverged(s + 1, m["loss"], saved)
            bar.update(1)
            if ckpt is not None and ((s + 1) % config.checkpoint_every == 0 or s + 1 == end):
                if not _all_finite(state.params):
                    raise TrainingDiverged(s + 1, float(jax.device_get(metrics["loss"])), saved)
                ckpt.save(state)
                saved = s + 1
    except KeyboardInterrupt as e:
        raise _interrupted(state, ckpt, saved) from e
    finally:
        bar.close()
    return state, history


def _interrupted(state: TrainState, ckpt: Checkpointer | None, saved: int | None) -> TrainingInterrupted:
    """Checkpoints the last finished step (unless saved already or not finite) after a Ctrl-C."""
    try:
        step = int(jax.device_get(state.step))
    except RuntimeError:  # Ctrl-C landed while the donated state was being replaced: keep what is saved
        return TrainingInterrupted(saved or 0, saved)
    if ckpt is not None and saved != step and step > 0 and _all_finite(state.params):
        ckpt.save(state)
        saved = step
        logging.info("interrupted: checkpointed step %d", step)
    return TrainingInterrupted(step, saved)


def evaluate(
    *,
    key: jax.Array,
    model: Sequential,
    params: Params,
    task: str,
    k: int,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 500,
    pgd: DefenseConfig | None = None,
    progress: bool = True,
) -> dict:
    """Test metrics as plain floats: loss, top-k exact-set accuracy (multi-label: "topk_exact", "per_label")
    or "accuracy", and with `pgd` "robust_<name>" under an L∞ PGD attack at pgd.eps.

    Every example is used: the last partial batch is padded and its padding weighted 0.
    """
    mesh = make_mesh()
    n_dev = mesh.devices.size
    batch_size = max(n_dev, batch_size - batch_size % n_dev)
    eval_fn = make_eval_step(model=model, task=task, k=k, mesh=mesh, pgd=pgd)
    totals: dict[str, float] = {}
    n = x.shape[0]
    for start in tqdm(range(0, n, batch_size), desc="eval", disable=not progress):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        w = np.ones(batch_size, np.float32)
        m = xb.shape[0]
        if m < batch_size:  # pad the last batch; padded rows get weight 0
            w[m:] = 0.0
            xb = np.concatenate([xb, np.repeat(xb[:1], batch_size - m, 0)])
            yb = np.concatenate([yb, np.repeat(yb[:1], batch_size - m, 0)])
        out = jax.device_get(eval_fn(params, jax.random.fold_in(key, start), *_shard(mesh, xb, yb, w)))
        for kk, v in out.items():
            totals[kk] = totals.get(kk, 0.0) + float(v)
    count = totals.pop("n")
    result = {"n": int(round(count)), "loss": totals["loss"] / count}
    if task == "multilabel":
        result[f"top{k}_exact"] = totals["correct"] / count
        result["per_label"] = totals["per_label"] / count
    else:
        result["accuracy"] = totals["correct"] / count
    if pgd is not None:
        result["robust"] = totals["robust"] / count
        result["robust_eps"] = pgd.eps
    return result
