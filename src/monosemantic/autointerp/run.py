"""Autointerp of saved feature folders, compared and checked against controls: what ``monosemantic explain`` runs.

Every folder (a dictionary's, a baseline's, a control's) is scored the same way: latents chosen
by the same rule and seed, the same explainer and judge, and the explanations written into the
folder. With more than one folder the results are tabulated side by side; folders that are
controls (by default, names starting ``untrained`` or ``random-model``) are what the judge must
score the trained dictionary above before any verdict is read from it (:func:`~.judge.judge_check`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import MonosemanticError
from ..features import FeatureData
from .compare import AutointerpComparison, compare_autointerp
from .judge import JudgeCheck, judge_check
from .pipeline import AutointerpResult, autointerp, write_autointerp
from .select import select_latents

CONTROL_PREFIXES = ("untrained", "random-model")


@dataclass(frozen=True)
class FolderAutointerp:
    folders: dict[str, Path]  # name -> feature folder, in the order given
    results: dict[str, AutointerpResult]  # name -> its explanations and scores
    comparison: AutointerpComparison | None  # the side-by-side table (None for one folder)
    judge: JudgeCheck | None  # the trained dictionary against the controls (None without controls)
    report: Path | None  # where the full results were written as JSON


def explain_folders(folders: Mapping[str, str | os.PathLike], latents: str | Sequence[int] = "random50",
                    explainer=None, scorer=None, *,
                    seed: int = 0, trained: str = "dictionary", controls: Sequence[str] | None = None,
                    report: str | os.PathLike | None = None, fallback: bool = True,
                    progress: bool = True) -> FolderAutointerp:
    """Explain and score ``latents`` (a spec, see :func:`select_latents`) of every feature folder in ``folders``.

    Explanations and scores go into each folder's explanations.json; ``report`` (a path) also
    gets ``{name: result}`` as JSON. ``controls`` defaults to the names starting with
    ``CONTROL_PREFIXES``; when there are any, the judge is checked on ``trained`` against them.
    Defaults: the offline explainer and simulator (see :func:`~.backends.backends` for an LLM).
    """
    if not folders:
        raise MonosemanticError("no feature folders to explain; pass {name: folder}, e.g. {'dictionary': "
                                "'runs/sae/features'}")
    folders = {str(name): Path(folder) for name, folder in folders.items()}
    if controls is None:
        controls = [name for name in folders if name != trained and name.startswith(CONTROL_PREFIXES)]
    results = {}
    for name, folder in folders.items():
        data = FeatureData.load(folder)
        result = autointerp(data, select_latents(data, latents, seed=seed), explainer, scorer, seed=seed,
                            fallback=fallback, name=name, progress=progress)
        write_autointerp(folder, result)
        results[name] = result
    comparison = compare_autointerp(results) if len(results) > 1 else None
    judge = judge_check(results, trained, list(controls)) if controls else None
    if report is not None:
        report = Path(report)
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps({name: r.to_dict() for name, r in results.items()}, indent=1))
    return FolderAutointerp(folders, results, comparison, judge, report)
