"""Trains a tiny model for a few steps and saves its params (run in a subprocess by test_train.py).

  python tests/train_worker.py OUT_PREFIX DEFENSE [DEFENSE ...]   (writes OUT_PREFIX_DEFENSE.npz)

The device count comes from XLA_FLAGS=--xla_force_host_platform_device_count=N.
"""

import sys

import jax
import numpy as np

from lnjax import models
from lnjax.train import DefenseConfig, TrainConfig, train


def main(out: str, defense: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 1), dtype=np.float32)
    y = (rng.random((64, 10)) < 0.2).astype(np.float32)
    model = models.Sequential(
        specs=(
            models.ConvSpec(4, (3, 3), (2, 2)),
            models.ReLUSpec(),
            models.FlattenSpec(),
            models.DenseSpec(10),
        ),
        input_shape=(8, 8, 1),
    )
    params, history = train(
        key=jax.random.key(1),
        model=model,
        task="multilabel",
        x=x,
        y=y,
        config=TrainConfig(batch_size=16, steps=6, learning_rate=1e-2, log_every=2),
        defense=DefenseConfig(name=defense, l0_min=2, l0_max=4, eps=0.1, steps=3, step_size=0.05),
        progress=False,
    )
    flat = {
        "/".join(str(k.key) for k in path): np.asarray(v)
        for path, v in jax.tree_util.tree_leaves_with_path(params)
    }
    np.savez(out, devices=jax.device_count(), loss=history[-1]["loss"], **flat)


if __name__ == "__main__":
    for name in sys.argv[2:]:
        main(f"{sys.argv[1]}_{name}.npz", name)
