"""lnjax.train.checkpoint: a damaged newest checkpoint falls back to the newest intact one."""

import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from absl import logging

from lnjax.train import Checkpointer, DefenseConfig, TrainConfig, restore_params, train
from lnjax.train.checkpoint import CheckpointError
from tests.train.test_train import tiny_data, tiny_model


def truncate_checkpoint(directory: Path, step: int) -> None:
    """Cuts every file of one saved step to half its size (a copy cut short, a full disk)."""
    for f in (directory / str(step)).rglob("*"):
        if f.is_file() and f.name != "commit_success.txt":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


KW = dict(
    key=jax.random.key(3),
    model=tiny_model(),
    task="multilabel",
    config=TrainConfig(batch_size=16, steps=4, learning_rate=1e-2, checkpoint_every=2, log_every=1),
    defense=DefenseConfig(),
    progress=False,
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Params after 2 and after 4 steps, and a checkpoint dir holding steps 2 and 4."""
    x, y = tiny_data(32)
    root = tmp_path_factory.mktemp("ckpt")
    at4, _ = train(**KW, x=x, y=y, checkpoint_dir=str(root / "c"))
    shutil.copytree(root / "c", root / "only2")
    shutil.rmtree(root / "only2" / "4")
    at2 = restore_params(str(root / "only2"), KW["model"].init_params(jax.random.key(0)))
    return x, y, at2, at4, root / "c"


def assert_same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_restore_params_falls_back_to_the_newest_intact_step(runs, tmp_path, monkeypatch):
    x, y, at2, at4, ckpt = runs
    like = KW["model"].init_params(jax.random.key(0))
    assert_same(restore_params(str(ckpt), like), at4)
    own = tmp_path / "c"
    shutil.copytree(ckpt, own)
    truncate_checkpoint(own, 4)
    warnings = []
    monkeypatch.setattr(logging, "warning", lambda msg, *a: warnings.append(msg % a))
    assert_same(restore_params(str(own), like), at2)
    assert any("step 4" in w and "damaged" in w for w in warnings)
    assert sorted(int(p.name) for p in own.iterdir() if p.name.isdigit()) == [2, 4]  # nothing deleted
    truncate_checkpoint(own, 2)
    with pytest.raises(CheckpointError, match=r"no intact checkpoint in .*step 4: .*step 2: "):
        restore_params(str(own), like)


def test_resuming_training_from_a_damaged_checkpoint_recomputes_it(runs, tmp_path):
    x, y, _, at4, ckpt = runs
    own = tmp_path / "c"
    shutil.copytree(ckpt, own)
    truncate_checkpoint(own, 4)
    # a finished run whose last checkpoint is damaged: resume from step 2, recompute 3..4, replace step 4
    params, history = train(**KW, x=x, y=y, checkpoint_dir=str(own))
    assert [m["step"] for m in history] == [3, 4]
    assert_same(params, at4)
    assert_same(restore_params(str(own), KW["model"].init_params(jax.random.key(0))), at4)
    assert Checkpointer(str(own)).latest_step() == 4
    truncate_checkpoint(own, 2)
    truncate_checkpoint(own, 4)
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        train(**KW, x=x, y=y, checkpoint_dir=str(own))
