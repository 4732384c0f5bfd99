"""Re-export of `lnjax.specs` (the one spec module) for the modules that still import it from here."""

from lnjax.specs import (
    Argmax,
    Spec,
    SpecRows,
    Threshold,
    TopK,
    kth_smallest,
    margin_from_rows,
    margin_lower_bound,
)

__all__ = [
    "Argmax",
    "Spec",
    "SpecRows",
    "Threshold",
    "TopK",
    "kth_smallest",
    "margin_from_rows",
    "margin_lower_bound",
]
