"""The train experiment on bad input: one line (UsageError -> exit 2) naming the problem and the fix, and
nothing written to the workdir."""

import shutil
from pathlib import Path

import pytest

from experiments import train as train_experiment
from experiments.common import UsageError
from tests.conftest import tiny_train_config
from tests.data.test_data_files import DAMAGES


def refused(c, workdir: Path, match: str) -> str:
    with pytest.raises(UsageError, match=match) as info:
        train_experiment.run(c, str(workdir), progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert not workdir.exists(), "a refused run must leave no trace"
    return message


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_double_mnist_data(data_dir, tmp_path, split, damage):
    own = Path(shutil.copytree(data_dir, tmp_path / "data"))
    DAMAGES[damage](own / f"double_mnist_{split}.npz")
    message = refused(tiny_train_config("quickstart", own), tmp_path / "run", "bad data")
    assert f"double_mnist_{split}.npz" in message and "python -m data_prep.double_mnist" in message


@pytest.mark.parametrize("damage", ["truncate", "zero_bytes", "partly_zeroed"])
def test_damaged_mnist_data(data_dir, tmp_path, damage):
    own = Path(shutil.copytree(data_dir, tmp_path / "data"))
    DAMAGES[damage](own / "mnist.npz")
    message = refused(tiny_train_config("mnist_normal", own), tmp_path / "run", "bad data")
    assert "mnist.npz" in message and "python -m data_prep.mnist" in message


@pytest.mark.parametrize(
    "override, match",
    [
        ({"train__learning_rate": float("inf")}, r"train.learning_rate = inf; expected a finite number > 0"),
        ({"train__learning_rate": float("nan")}, r"train.learning_rate = nan; expected a finite number > 0"),
        ({"train__learning_rate": -1.0}, r"train.learning_rate = -1.0; expected"),
        ({"train__steps": 0}, r"train.steps = 0; expected an integer ≥ 1"),
        ({"train__schedule": "exp"}, r"train.schedule = 'exp'; expected one of"),
        (
            {"defense__name": "linf", "defense__eps": float("nan")},
            r"defense.eps = nan must be a finite number",
        ),
        ({"defense__name": "linf", "defense__step_size": -1.0}, r"defense.step_size = -1.0 must be > 0"),
        ({"defense__name": "l0", "defense__l0_max": 80}, r"defense.l0_max = 80 must be ≤ the image side 64"),
        ({"eval__robust_eps": 0.1, "eval__robust_step_size": float("inf")}, r"eval.robust_steps = .* finite"),
        ({"eval__batch_size": 0}, r"eval.batch_size = 0 must be an integer ≥ 1"),
        ({"data__train_limit": -1}, r"data.train_limit = -1 must be an integer ≥ 0"),
        ({"model": "mnist_small"}, r"model 'mnist_small' takes inputs of shape \(28, 28, 1\)"),
        ({"train__batch_size": 1000}, r"64 training examples are fewer than one batch of 1000"),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(data_dir, tmp_path, override, match):
    refused(tiny_train_config("quickstart", data_dir, **override), tmp_path / "run", match)


def test_a_bad_init_from_is_refused_before_anything_is_written(data_dir, tmp_path, dmnist_run):
    nowhere = tmp_path / "no_such_run"
    message = refused(
        tiny_train_config("quickstart", data_dir, init_from=str(nowhere)), tmp_path / "a", "holds no finished"
    )
    assert str(nowhere) in message
    # a run of another model cannot start this one
    refused(
        tiny_train_config("quickstart", data_dir, init_from=str(dmnist_run), model="dmnist_small"),
        tmp_path / "b",
        r"holds a run with model 'dmnist_tiny'; this run trains model 'dmnist_small'",
    )
