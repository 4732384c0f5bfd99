"""Panel presets: `--config=experiments/configs/panel.py:NAME` (NAME one of PRESETS).

The seed's Figures 2–3 from finished `neighborhood` runs: one row per run (e.g. per defense), one
column per shrink method (fixed, sensitivity), log10 ε per pixel of one test image with the target
digit outlined white and the non-target digit black. The figure goes to the workdir
(figures/neighborhood_panel.png) and, if `output` is set, to that path too. README's
docs/neighborhood_panel.png is made by
  python -m experiments.run --flagfile=experiments/flagfiles/panel.flags
"""

from ml_collections import ConfigDict


def base() -> ConfigDict:
    c = ConfigDict()
    c.experiment = "panel"
    c.name = "panel"
    c.runs = "none=runs/neighborhood_none,l0=runs/neighborhood_l0,linf=runs/neighborhood_linf"  # row=workdir
    c.image = -1  # the test image (-1: the first one every run searched)
    c.data_dir = ""  # DOUBLE-MNIST data dir (default: each run's own)
    c.output = ""  # also write the figure here (e.g. docs/neighborhood_panel.png)
    c.dpi = 110
    return c


def defenses() -> ConfigDict:
    """The undefended, L0- and L∞-defended CNNs (neighborhood_none / _l0 / _linf), into docs/."""
    c = base()
    c.name = "panel_defenses"
    c.output = "docs/neighborhood_panel.png"
    return c


PRESETS = {f.__name__: f for f in (defenses,)}


def get_config(preset: str = "defenses") -> ConfigDict:
    if preset not in PRESETS:
        raise ValueError(f"unknown panel preset {preset!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[preset]()
