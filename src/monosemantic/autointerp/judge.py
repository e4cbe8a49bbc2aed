"""Can the judge tell learned features from controls? Checked before any verdict is read from it.

An interpretability judge earns trust only if it scores a trained dictionary above the same
dictionary untrained and above one trained on a randomly initialised model (Heap et al. 2025
found the latter look interpretable to common judges). :func:`judge_check` compares the
detection scores per latent: each dictionary's mean with a 95% interval over its latents
(Student t), and passes only when the trained dictionary's interval lies wholly above every
control's. When it fails, reports print that the judge cannot separate them and no verdict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import MonosemanticError
from ..evaluation.results import Result
from ..evaluation.seeds import Interval, interval
from .pipeline import AutointerpResult


@dataclass(frozen=True)
class JudgeCheck(Result):
    trained: str
    controls: tuple[str, ...]
    metric: str  # the per-latent score compared, e.g. "detection"
    intervals: dict  # name -> Interval of the mean over latents
    separates: bool  # the trained interval is above every control's
    message: str

    def __str__(self) -> str:
        return self.message


def judge_check(results: Mapping[str, AutointerpResult], trained: str, controls: Sequence[str], *,
                metric: str = "detection") -> JudgeCheck:
    """Whether the judge scores ``trained`` above every one of ``controls`` (intervals over latents)."""
    missing = [name for name in (trained, *controls) if name not in results]
    if missing or not controls:
        raise MonosemanticError(f"the judge check needs autointerp results for the trained dictionary and at least one "
                                f"control; missing: {missing or 'controls'}; have {sorted(results)}")
    if metric not in ("detection", "fuzzing", "detection_auroc", "fuzzing_auroc"):
        raise MonosemanticError(f"metric {metric!r} is unknown; expected detection, fuzzing or their _auroc")
    intervals: dict[str, Interval] = {name: interval([getattr(s, metric) for s in results[name].latents])
                                      for name in (trained, *controls)}
    beaten = [c for c in controls if not intervals[trained].separated_above(intervals[c])]
    if beaten:
        message = (f"The judge cannot separate {trained} from the control(s) {', '.join(beaten)} on {metric} "
                   f"({trained} {intervals[trained]}; " + "; ".join(f"{c} {intervals[c]}" for c in beaten)
                   + "), so no verdict on interpretability is drawn from it.")
    else:
        message = (f"The judge scores {trained} above every control on {metric} ({trained} {intervals[trained]}; "
                   + "; ".join(f"{c} {intervals[c]}" for c in controls) + ").")
    return JudgeCheck(trained, tuple(controls), metric, intervals, not beaten, message)
