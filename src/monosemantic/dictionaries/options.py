"""Checks for architecture options, with one-line errors that name the arch and the option."""

from __future__ import annotations

import math

from ..errors import MonosemanticError


def check_int(arch: str, name: str, value, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high]; MonosemanticError otherwise."""
    in_range = (isinstance(value, int) and not isinstance(value, bool)
                and value >= low and (high is None or value <= high))
    if not in_range:
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise MonosemanticError(f"{arch} option {name}={value!r} is invalid; expected an integer {bound}")
    return value


def check_float(arch: str, name: str, value, low: float = 0.0, high: float = math.inf,
                low_open: bool = False) -> float:
    """``value`` as a finite float in [low, high] (or (low, high] with ``low_open``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" + ("" if high == math.inf else f" and <= {high}")
        raise MonosemanticError(f"{arch} option {name}={value!r} is invalid; expected a number {bound}")
    return float(value)


def check_bool(arch: str, name: str, value) -> bool:
    if not isinstance(value, bool):
        raise MonosemanticError(f"{arch} option {name}={value!r} is invalid; expected true or false")
    return value


def check_names(arch: str, given: dict, known: dict, required: tuple[str, ...]) -> None:
    """Unknown and missing option names, reported with the expected ones."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise MonosemanticError(
            f"unknown option(s) {', '.join(unknown)} for dictionary arch {arch!r}; "
            f"expected some of {', '.join(sorted(known))}; check the spelling")
    missing = [name for name in required if given.get(name) is None]
    if missing:
        raise MonosemanticError(
            f"dictionary arch {arch!r} needs option(s) {', '.join(missing)}; pass e.g. "
            + ", ".join(f"{name}=..." for name in missing))
