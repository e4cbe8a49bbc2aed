"""Comparing interpretability across dictionaries: the founding paper's SAE-versus-baselines table.

Cunningham et al. (2023) found sparse-autoencoder features more interpretable than the neuron
basis, PCA and ICA directions of the same site. :func:`compare_with_baselines` reruns that
comparison with this package's pipeline: it fits the baselines on the site's activations, analyses
every dictionary on the same windows, and scores the same number of latents of each with the same
explainer and scorer; :func:`compare_autointerp` tabulates any set of results.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import MonosemanticError
from ..evaluation.results import Result
from ..evaluation.suite import fit_baselines
from ..features import analyze_features
from .pipeline import AutointerpResult, autointerp, write_autointerp
from .select import select_latents


@dataclass(frozen=True)
class ComparisonRow(Result):
    name: str  # the dictionary's name, e.g. "sae", "neurons", "pca", "ica"
    n_latents: int  # latents explained
    detection: float  # mean detection balanced accuracy
    detection_sem: float  # its standard error over latents
    fuzzing: float  # mean fuzzing balanced accuracy
    fuzzing_sem: float  # its standard error over latents
    detection_auroc: float  # mean detection AUROC
    fuzzing_auroc: float  # mean fuzzing AUROC
    n_detection: int  # latents scored on detection
    n_fuzzing: int  # latents scored on fuzzing


@dataclass(frozen=True)
class AutointerpComparison(Result):
    rows: tuple[ComparisonRow, ...]  # one per dictionary, in the order given

    def table(self) -> str:
        """A Markdown table of mean scores (± standard error)."""
        lines = ["| dictionary | latents | detection | fuzzing | detection AUROC | fuzzing AUROC |",
                 "|---|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            lines.append(f"| {r.name} | {r.n_latents} | {_pm(r.detection, r.detection_sem)} | "
                         f"{_pm(r.fuzzing, r.fuzzing_sem)} | {_num(r.detection_auroc)} | {_num(r.fuzzing_auroc)} |")
        return "\n".join(lines)


def _num(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "-"


def _pm(mean: float, sem: float) -> str:
    return f"{mean:.3f} ± {sem:.3f}" if math.isfinite(sem) else _num(mean)


def _sem(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return math.nan
    mean = sum(finite) / len(finite)
    return math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1) / len(finite))


def compare_autointerp(results_by_name: Mapping[str, AutointerpResult]) -> AutointerpComparison:
    """One row of mean scores per result."""
    if not results_by_name:
        raise MonosemanticError("no autointerp results to compare; pass {name: autointerp(...)}")
    rows = []
    for name, result in results_by_name.items():
        rows.append(ComparisonRow(
            name=name, n_latents=len(result.latents), detection=result.detection,
            detection_sem=_sem([r.detection for r in result.latents]), fuzzing=result.fuzzing,
            fuzzing_sem=_sem([r.fuzzing for r in result.latents]), detection_auroc=result.detection_auroc,
            fuzzing_auroc=result.fuzzing_auroc, n_detection=result.n_detection, n_fuzzing=result.n_fuzzing))
    return AutointerpComparison(rows=tuple(rows))


def compare_with_baselines(lm, dictionary, windows_WS, *, name: str = "sae", baselines: Sequence[str] = ("identity",
                           "pca", "ica"), latents="random50", explainer=None, scorer=None, seed: int = 0,
                           fit_windows: int = 64, analyze_options: dict | None = None, progress: bool = True
                           ) -> tuple[dict[str, AutointerpResult], AutointerpComparison]:
    """Autointerp of ``dictionary`` and of baselines fitted at its input site, on the same windows.

    Baselines are fitted on ``fit_windows`` training-split corpus windows (``evaluation.fit_baselines``;
    PCA and ICA with as many components as the site is wide, at most the dictionary's size). Each
    dictionary is analysed with ``features.analyze_features(lm, d, windows_WS, **analyze_options)`` and
    ``latents`` (a selection spec, see :func:`select_latents`) are chosen per dictionary with the same seed.
    """
    site = dictionary.config.site_in
    if site is None:
        raise MonosemanticError("the dictionary's config does not name its input site; set config.site_in")
    n_components = min(lm.width(site), dictionary.config.d_sae)
    dictionaries = {name: dictionary, **fit_baselines(lm, site, list(baselines), n_components, n_windows=fit_windows,
                                                       context_length=windows_WS.shape[1], seed=seed)}
    results = {label: analyze_and_score(lm, candidate, windows_WS, latents, explainer=explainer, scorer=scorer,
                                        seed=seed, name=label, analyze_options=analyze_options, progress=progress)
               for label, candidate in dictionaries.items()}
    return results, compare_autointerp(results)


def analyze_and_score(lm, dictionary, windows_WS, latents="random50", *, explainer=None, scorer=None, seed: int = 0,
                      name: str = "dictionary", analyze_options: dict | None = None, folder=None,
                      progress: bool = True) -> AutointerpResult:
    """Analyse ``dictionary``'s features on ``windows_WS``, then explain and score ``latents`` of them.

    With ``folder``, the feature data is saved there and the explanations written beside it.
    """
    data = analyze_features(lm, dictionary, windows_WS, progress=progress, **(analyze_options or {}))
    if folder is not None:
        data.save(folder)
    result = autointerp(data, select_latents(data, latents, seed=seed), explainer, scorer, seed=seed, name=name,
                        progress=progress)
    if folder is not None:
        write_autointerp(folder, result)
    return result
