# A partial stub (py.typed says "partial": modules not stubbed here come from the package itself).
# ml_collections' own annotations make every `config.field` a union of str | int | float | ... | None,
# so each attribute access on a ConfigDict would be a pyright error; a ConfigDict is dynamically typed
# (its fields are whatever the preset put there), which `Any` states honestly.
from ml_collections.config_dict import (
    ConfigDict as ConfigDict,
    FieldReference as FieldReference,
    FrozenConfigDict as FrozenConfigDict,
)
