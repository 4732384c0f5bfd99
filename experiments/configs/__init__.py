"""ml_collections config files, one per experiment kind; the argument after ':' names a preset."""

from collections.abc import Callable, Mapping

from ml_collections import ConfigDict


def select_preset(presets: Mapping[str, Callable[[], ConfigDict]], kind: str, name: str) -> ConfigDict:
    """The config of preset `name` among an experiment kind's `presets`; an unknown name is a
    ValueError listing the known ones (the runner turns it into a usage error, exit 2)."""
    if name not in presets:
        raise ValueError(f"unknown {kind} preset {name!r}; expected one of {sorted(presets)}")
    return presets[name]()
