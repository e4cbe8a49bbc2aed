"""What every evaluation result shares: a frozen dataclass that turns into plain JSON."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, ClassVar


def jsonable(value: Any) -> Any:
    """``value`` with tuples as lists and NaN/infinity as None, so ``json.dumps`` gives strict JSON."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # e.g. FVU of a constant target: undefined, and JSON has no NaN
    return value


class Result:
    """Mixin for result and config dataclasses: ``to_dict()`` is JSON-ready."""

    __dataclass_fields__: ClassVar[dict[str, Any]]  # declared only: every subclass is a dataclass

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is 0 (an undefined metric, not an error)."""
    return numerator / denominator if denominator != 0 else math.nan
