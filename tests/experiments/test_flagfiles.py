"""Every flag file names a preset whose config the experiment accepts and builds (no skips)."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import jax
import pytest
from ml_collections import ConfigDict

from experiments import attack, attack_curve, boundary, neighborhood, panel, run, train, verify, vnncomp
from lnjax import models, verify as V
from lnjax.attacks.config import ATTACKS

ROOT = Path(__file__).resolve().parents[2]
FLAGFILES = sorted((ROOT / "experiments" / "flagfiles").glob("*.flags"))
CONFIGS = sorted(p.stem for p in (ROOT / "experiments" / "configs").glob("*.py") if p.stem[0] != "_")


def read_flagfile(path: Path) -> dict[str, str]:
    """{--flag: value} of a flag file (one --flag=value per line)."""
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    assert all(line.startswith("--") and "=" in line for line in lines), path.name
    return dict(line.split("=", 1) for line in lines)


def load_preset(spec: str) -> ConfigDict:
    """`experiments/configs/X.py:PRESET` loaded as config_flags does (the file's get_config)."""
    file, _, preset = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location(f"_flagfile_{Path(file).stem}", ROOT / file)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(preset)


def test_every_preset_of_every_config_module_has_a_flag_file():
    named = {read_flagfile(f)["--config"] for f in FLAGFILES}
    for stem in CONFIGS:
        module = importlib.import_module(f"experiments.configs.{stem}")
        for preset in getattr(module, "PRESETS", {}):
            spec = f"experiments/configs/{stem}.py:{preset}"
            boundary_alias = f"experiments/configs/{stem}.py:boundary_{preset}"
            assert spec in named or boundary_alias in named, f"no flag file for {spec}"


def _tiny_view() -> Any:
    model = models.get_model("dmnist_tiny", 10)
    return models.layer_view(model, model.init_params(jax.random.key(0)))


@pytest.mark.parametrize("flagfile", FLAGFILES, ids=[f.stem for f in FLAGFILES])
def test_flag_file_parses_and_its_config_is_built(flagfile):
    flags = read_flagfile(flagfile)
    assert set(flags) == {"--config", "--workdir"}
    c = load_preset(flags["--config"])
    assert flags["--workdir"] == f"runs/{c.name}"
    assert c.experiment in run.EXPERIMENTS
    if c.experiment == "train":
        train.validate(c)
    elif c.experiment == "verify":
        options = verify.validate(c)
        assert isinstance(V.make_verifier(_tiny_view(), options), V.Verifier)
    elif c.experiment == "neighborhood":
        settings = neighborhood.validate(c)
        assert isinstance(V.make_verifier(_tiny_view(), settings.verifier), V.Verifier)
        for options in settings.optimizers.values():
            assert neighborhood.build_optimizer(options) is not None
    elif c.experiment == "attack":
        names, settings = attack.validate(c)
        assert all(callable(settings.make(n)) for n in names)
    elif c.experiment == "attack_curve":
        plan = attack_curve.validate(c)
        assert plan.steps_axis is not None and all(callable(s.make(plan.attack)) for s in plan.settings)
    elif c.experiment == "boundary":
        settings = boundary.validate(c)
        assert set(settings.attacks) <= set(ATTACKS) and settings.runs
        assert all(callable(settings.attack_settings.make(n)) for n in settings.attacks)
    elif c.experiment == "vnncomp":
        assert vnncomp.validate(c).stages
    else:
        assert c.experiment == "panel"
        assert panel.validate(c)
