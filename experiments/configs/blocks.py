"""Config blocks generated from the library's typed configs (their one source of defaults), and read
back into them (checked: a bad value is one UsageError line naming the field).

  verifier   `lnjax.verify.VerifierConfig` (verify, neighborhood)
  optimizer  `lnjax.neighborhood.OptimizerConfig` (neighborhood; `shrink` is the method's)
  fgsm, pgd, cw, optmargin   `lnjax.attacks.config.AttackSettings` (attack, boundary)

Presets override only the fields that differ from the library. Flags need a typed value, so a
library `None` appears as a number with the meaning "0: none" (`verifier.milp.max_unstable`,
`optimizer.time_budget`), and `verifier.stages` as a comma-separated string.
"""

from ml_collections import ConfigDict

from experiments.common import config_dict_from, dataclass_from
from lnjax.attacks.config import AttackSettings, CwConfig, FgsmConfig, OptMarginConfig, PgdConfig
from lnjax.neighborhood.config import OptimizerConfig
from lnjax.verify.config import GROUPS, VerifierConfig


def verifier_block() -> ConfigDict:
    """The staged verifier's options (see `lnjax.verify.make_verifier`), nested as `VerifierConfig`'s
    groups: `verifier.pgd.*`, `verifier.bounds.*`, `verifier.milp.*`, `verifier.bab.*`."""
    lib = VerifierConfig()
    values = config_dict_from(lib).to_dict()
    del values["milp"]["solver"]  # python-mip options: the library's defaults
    values["stages"] = ",".join(lib.stages)  # any of pgd, crown, alpha_crown, bab, milp (comma-separated)
    values["milp"]["max_unstable"] = lib.milp.max_unstable or 0  # skip the MILP above this many (0: never)
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


def verifier_config(block: ConfigDict) -> VerifierConfig:
    """A `verifier` block as a checked `VerifierConfig` (each group checked by its class)."""
    values = block.to_dict()
    groups = {name: values.pop(name, {}) for name in GROUPS}
    values["stages"] = tuple(s.strip() for s in str(block.stages).split(",") if s.strip())
    if isinstance(values.get("input_domain"), list):  # a run's config.json holds JSON lists, not tuples
        values["input_domain"] = tuple(values["input_domain"])
    if "milp" in block:
        groups["milp"]["max_unstable"] = int(block.milp.max_unstable) or None  # 0: never skip the MILP
    for name, cls in GROUPS.items():
        values[name] = dataclass_from(ConfigDict(groups[name]), cls)  # messages name verifier.<group>.<field>
    return dataclass_from(ConfigDict(values), VerifierConfig)


def optimizer_config(block: ConfigDict, shrink: str = "fixed") -> OptimizerConfig:
    """An `optimizer` block as a checked `OptimizerConfig` with these shrink weights."""
    values = {**block.to_dict(), "shrink": shrink, "time_budget": float(block.time_budget) or None}
    return dataclass_from(ConfigDict(values), OptimizerConfig)


def attack_settings(c: ConfigDict) -> AttackSettings:
    """The fgsm, pgd, cw and optmargin blocks of an attack or boundary config, checked."""
    return AttackSettings(
        fgsm=dataclass_from(c.fgsm, FgsmConfig),
        pgd=dataclass_from(c.pgd, PgdConfig),
        cw=dataclass_from(c.cw, CwConfig),
        optmargin=dataclass_from(c.optmargin, OptMarginConfig),
    )
