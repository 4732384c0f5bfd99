"""Train configs: the ConfigDict blocks come from the typed library configs (one source of defaults)."""

import dataclasses

import pytest
from ml_collections import ConfigDict

from experiments.common import UsageError, config_dict_from, dataclass_from
from experiments.configs import train as train_configs
from experiments.runs import DataConfig
from experiments.train import EvalConfig, setup
from lnjax.train import DefenseConfig, TrainConfig

BLOCKS = {"data": DataConfig, "train": TrainConfig, "defense": DefenseConfig, "eval": EvalConfig}


def test_base_blocks_are_the_dataclass_defaults():
    c = train_configs.base()
    for block, cls in BLOCKS.items():
        assert c[block].to_dict() == dataclasses.asdict(cls()), block


@pytest.mark.parametrize("preset", sorted(train_configs.PRESETS))
def test_every_preset_builds_its_typed_configs(preset):
    s = setup(train_configs.get_config(preset))
    assert s.train.steps >= 1 and s.model.input_shape[-1] in (1, 3)


def test_dataclass_from_round_trips_and_names_bad_fields():
    t = TrainConfig(steps=7, learning_rate=0.5)
    assert dataclass_from(config_dict_from(t), TrainConfig) == t
    partial = ConfigDict({"steps": 3})
    assert dataclass_from(partial, TrainConfig) == TrainConfig(steps=3)
    with pytest.raises(UsageError, match=r"unknown config field\(s\) train.foo"):
        dataclass_from(ConfigDict({"foo": 1}), TrainConfig, where="train")
    with pytest.raises(UsageError, match=r"^train.learning_rate = inf; expected"):
        dataclass_from(ConfigDict({"learning_rate": float("inf")}), TrainConfig, where="train")
    with pytest.raises(TypeError, match="dataclass instance"):
        config_dict_from(TrainConfig)
