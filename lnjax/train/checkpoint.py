"""Orbax checkpoints of the train state (atomic: Orbax writes to a temporary directory and renames)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp


class Checkpointer:
    """Saves and restores {step, params, opt_state} under `directory`, keeping the newest few."""

    def __init__(self, directory: str, *, max_to_keep: int = 2):
        self._mngr = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def save(self, state) -> None:
        tree = {"step": state.step, "params": state.params, "opt_state": state.opt_state}
        self._mngr.save(int(jax.device_get(state.step)), args=ocp.args.StandardSave(tree))
        self._mngr.wait_until_finished()

    def restore(self, state):
        """Returns `state` with the newest checkpoint's values (structure and shardings from `state`)."""
        step = self._mngr.latest_step()
        if step is None:
            return state
        target = {"step": state.step, "params": state.params, "opt_state": state.opt_state}
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        tree = self._mngr.restore(step, args=ocp.args.StandardRestore(abstract))
        return state.replace(step=tree["step"], params=tree["params"], opt_state=tree["opt_state"])

    def close(self) -> None:
        self._mngr.close()


def restore_params(directory: str, params_like):
    """The params of the newest checkpoint in `directory` (e.g. a trained model for attacks/verify).

    Args:
      params_like: a params tree of the model (e.g. from `model.init_params`); the restored tree
        must have its structure and shapes.

    Raises:
      FileNotFoundError: no checkpoint in `directory`.
      ValueError: the checkpoint's params do not fit `params_like`.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no checkpoint directory {directory}; train the model first")
    mngr = ocp.CheckpointManager(os.path.abspath(directory))
    try:
        step = mngr.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {directory}; train the model first")
        tree = mngr.restore(step, args=ocp.args.StandardRestore())
    finally:
        mngr.close()
    params = jax.tree.map(jnp.asarray, tree["params"])
    want = jax.tree.map(lambda a: (a.shape, a.dtype), params_like)
    got = jax.tree.map(lambda a: (a.shape, a.dtype), params)
    if jax.tree.structure(params_like) != jax.tree.structure(params) or want != got:
        raise ValueError(f"the checkpoint in {directory} does not hold params of this model")
    return params
