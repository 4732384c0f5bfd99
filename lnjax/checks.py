"""Validation helpers for the library's frozen config dataclasses: each raises one ValueError line
naming the field, the value and what was expected (the experiments print it and exit 2).

Imports nothing from lnjax, so every room may use it.
"""

from __future__ import annotations

import math
from collections.abc import Collection

__all__ = ["check_bool", "check_choice", "check_float", "check_int"]


def check_int(where: str, value: object, minimum: int) -> None:
    """Raises ValueError unless `value` is an int (not a bool) ≥ minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where} = {value!r}; expected an integer ≥ {minimum}")


def check_float(
    where: str,
    value: object,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raises ValueError unless `value` is a finite real number in the interval (bounds as given)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        if math.isinf(high):
            wanted = f"{'>' if low_open else '≥'} {low:g}" if math.isfinite(low) else "finite"
        else:
            wanted = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{where} = {value!r}; expected a finite number {wanted}")


def check_choice(where: str, value: object, choices: Collection[str]) -> None:
    """Raises ValueError unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{where} = {value!r}; expected one of {tuple(choices)}")


def check_bool(where: str, value: object) -> None:
    """Raises ValueError unless `value` is a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"{where} = {value!r}; expected True or False")
