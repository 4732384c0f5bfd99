"""Orbax checkpoints of the train state (atomic: Orbax writes to a temporary directory and renames).

Damaged checkpoints (a truncated or emptied file, e.g. a disk filled up or a copy was cut short):
restoring tries the newest step first and falls back to the newest intact older one (Orbax keeps
`max_to_keep` steps), logging a warning per damaged step; if none is intact it raises
`CheckpointError`, whose message names the directory and each step's failure.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging

_T = TypeVar("_T")


class CheckpointError(ValueError):
    """No intact checkpoint: every saved step failed to restore (the message lists why)."""


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:200] if lines else ''}"


def _restore_newest_intact(
    mngr: ocp.CheckpointManager, directory: str, restore: Callable[[int], _T]
) -> tuple[int, _T] | None:
    """(step, restore(step)) for the newest step that restores; None if no step is saved.

    Raises:
      CheckpointError: every step failed.
    """
    failures: list[str] = []
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            return step, restore(step)
        except Exception as e:  # noqa: BLE001 - Orbax/tensorstore raise ValueError, JSONDecodeError or a bare
            # Exception for a damaged file; any of them means "this step is unusable", try the next.
            failures.append(f"step {step}: {_first_line(e)}")
            logging.warning(
                "checkpoint step %d in %s is damaged (%s); trying an older one",
                step,
                directory,
                _first_line(e),
            )
    if failures:
        raise CheckpointError(f"no intact checkpoint in {directory} ({'; '.join(failures)})")
    return None


class Checkpointer:
    """Saves and restores {step, params, opt_state} under `directory`, keeping the newest few."""

    def __init__(self, directory: str, *, max_to_keep: int = 2):
        self._directory = os.path.abspath(directory)
        self._mngr = ocp.CheckpointManager(
            self._directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def save(self, state: Any) -> None:
        """Saves `state` as its step, replacing a checkpoint of that step (damaged: `restore` skipped it)."""
        step = int(jax.device_get(state.step))
        if step in self._mngr.all_steps():
            logging.warning(
                "replacing the checkpoint of step %d in %s (it failed to restore)", step, self._directory
            )
            self._mngr.delete(step)
        tree = {"step": state.step, "params": state.params, "opt_state": state.opt_state}
        self._mngr.save(step, args=ocp.args.StandardSave(tree))
        self._mngr.wait_until_finished()

    def restore(self, state: Any) -> Any:
        """Returns `state` with the newest intact checkpoint's values (structure and shardings from
        `state`); `state` itself if there is none.

        Damaged newer steps are left in place until `save` replaces them with recomputed ones.

        Raises:
          CheckpointError: checkpoints exist but none is intact.
        """
        target = {"step": state.step, "params": state.params, "opt_state": state.opt_state}
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        found = _restore_newest_intact(
            self._mngr,
            self._directory,
            lambda step: self._mngr.restore(step, args=ocp.args.StandardRestore(abstract)),
        )
        if found is None:
            return state
        tree = found[1]
        return state.replace(step=tree["step"], params=tree["params"], opt_state=tree["opt_state"])

    def close(self) -> None:
        self._mngr.close()


def restore_params(directory: str, params_like: Any) -> Any:
    """The params of the newest intact checkpoint in `directory` (e.g. a trained model for attacks/verify).

    A damaged newest checkpoint falls back to the newest intact older one (with a logged warning);
    nothing is deleted.

    Args:
      params_like: a params tree of the model (e.g. from `model.init_params`); the restored tree
        must have its structure and shapes.

    Raises:
      FileNotFoundError: no checkpoint in `directory`.
      CheckpointError: checkpoints exist but none is intact.
      ValueError: the checkpoint's params do not fit `params_like`.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no checkpoint directory {directory}; train the model first")
    mngr = ocp.CheckpointManager(os.path.abspath(directory))
    try:
        found = _restore_newest_intact(
            mngr, directory, lambda step: mngr.restore(step, args=ocp.args.StandardRestore())
        )
    finally:
        mngr.close()
    if found is None:
        raise FileNotFoundError(f"no checkpoint in {directory}; train the model first")
    params = jax.tree.map(jnp.asarray, found[1]["params"])
    if not params_fit(params, params_like):
        raise ValueError(f"the checkpoint in {directory} does not hold params of this model")
    return params


def params_fit(params: Any, params_like: Any) -> bool:
    """Whether `params` have the tree structure, shapes and dtypes of `params_like`."""
    if jax.tree.structure(params_like) != jax.tree.structure(params):
        return False
    shape = lambda a: (jnp.shape(a), jnp.result_type(a))  # noqa: E731
    return jax.tree.leaves(jax.tree.map(shape, params_like)) == jax.tree.leaves(jax.tree.map(shape, params))
