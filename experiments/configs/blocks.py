"""Config blocks generated from the library's typed configs (their one source of defaults).

  verifier   `lnjax.verify.VerifierConfig` (verify, neighborhood)
  optimizer  `lnjax.neighborhood.OptimizerConfig` (neighborhood; `shrink` is the method's)
  fgsm, pgd, cw, optmargin   `lnjax.attacks.config.AttackSettings` (attack, boundary)

Presets override only the fields that differ from the library. Flags need a typed value, so a
library `None` appears as a number with the meaning "0: none" (`verifier.milp_max_unstable`,
`optimizer.time_budget`), and `verifier.stages` as a comma-separated string.
"""

from ml_collections import ConfigDict

from experiments.common import config_dict_from
from lnjax.attacks.config import AttackSettings
from lnjax.neighborhood.config import OptimizerConfig
from lnjax.verify.config import VerifierConfig


def verifier_block() -> ConfigDict:
    """The staged verifier's options (see `lnjax.verify.make_verifier`)."""
    lib = VerifierConfig()
    values = config_dict_from(lib).to_dict()
    del values["milp_options"]  # python-mip options: the library's defaults
    values["stages"] = ",".join(lib.stages)  # any of pgd, crown, alpha_crown, milp (comma-separated)
    values["milp_max_unstable"] = (
        lib.milp_max_unstable or 0
    )  # skip the MILP above this many unstable ReLUs (0: never)
    values["time_limit"] = float(lib.time_limit or 0.0)  # wall-clock seconds per query (hard)
    return ConfigDict(values)


def optimizer_block() -> ConfigDict:
    """The neighborhood optimizer's options (see `lnjax.neighborhood.make_optimizer`)."""
    lib = OptimizerConfig()
    values = config_dict_from(lib).to_dict()
    del values["shrink"]  # set by the method: optimizer_fixed | optimizer_sensitivity
    values["time_budget"] = float(lib.time_budget or 0.0)  # seconds per image and method (0: unlimited)
    return ConfigDict(values)


def attack_blocks() -> ConfigDict:
    """The fgsm, pgd, cw (OPTBRITTLE / OPTSTRONG) and optmargin blocks."""
    return config_dict_from(AttackSettings())
