"""Panel presets: `--config=experiments/configs/panel.py:NAME` (NAME one of PRESETS).

The seed's Figures 2–3 from finished `neighborhood` runs: one row per run (e.g. per defense), one
column per shrink method (fixed, sensitivity), log10 ε per pixel of one test image with the target
digit outlined white and the non-target digit black. The figure goes to the workdir
(figures/neighborhood_panel.png) and, if `output` is set, to that path too.

The defenses report over the images every run searched (experiments/neighborhood_stats.py): the
mean log10 ε per layer painted onto the same image's layers (figures/neighborhood_mean.png), the
mean log10 ε against distance with its 95 % interval (figures/eps_by_distance.png; both also written
beside `output` if set, under these names), report.json (per run and method: images, verified,
median_gap, converged_share, unknown_share, log10_eps_per_layer, ring_slope; the seed's claims, each
decided from 95 % intervals) and claims.md (what `python -m experiments.neighborhood_readme
report.json` prints). README's docs/neighborhood_{panel,mean}.png and docs/eps_by_distance.png are
made by
  python -m experiments.run --flagfile=experiments/flagfiles/panel.flags
"""

from ml_collections import ConfigDict

from experiments.configs import select_preset


def base() -> ConfigDict:
    c = ConfigDict()
    c.experiment = "panel"
    c.name = "panel"
    c.runs = "none=runs/neighborhood_none,l0=runs/neighborhood_l0,linf=runs/neighborhood_linf"  # row=workdir
    c.image = -1  # the test image (-1: the first one every run searched)
    c.data_dir = ""  # DOUBLE-MNIST data dir (default: each run's own)
    c.output = ""  # also write the panel here (e.g. docs/neighborhood_panel.png), the other two beside it
    c.dpi = 110
    return c


def defenses() -> ConfigDict:
    """The undefended, L0- and L∞-defended CNNs (neighborhood_none / _l0 / _linf); figures into docs/."""
    c = base()
    c.name = "panel_defenses"
    c.output = "docs/neighborhood_panel.png"
    return c


PRESETS = {f.__name__: f for f in (defenses,)}


def get_config(preset: str = "defenses") -> ConfigDict:
    return select_preset(PRESETS, "panel", preset)
