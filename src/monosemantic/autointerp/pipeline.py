"""The auto-interpretability pipeline: explain latents, score the explanations, store and compare them.

:func:`autointerp` runs, for each chosen latent of a :class:`~monosemantic.features.FeatureData`:
split its examples (:func:`~.tasks.split_examples`: the explainer never sees a scoring context),
explain, then score by detection and fuzzing. With ``fallback=True`` an LLM back-end that cannot
be reached is asked no more and the offline explainer/simulator stands in; an unusable reply
falls back for that latent only. Every explanation records where it came from.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from tqdm.auto import tqdm

from ..evaluation.results import Result
from ..features import write_explanations
from .client import LLMReplyError, LLMUnavailable
from .explainers import OfflineExplainer
from .scorers import OfflineSimulator
from .tasks import (
    TaskScore,
    detection_samples,
    fuzzing_samples,
    score_predictions,
    split_examples,
)

NOT_FIRING = "does not fire in the analysed text"


class Explanation(NamedTuple):
    text: str  # the explanation
    source: str  # the explainer that wrote it ("offline", "llm:MODEL")
    note: str  # why a fallback was used, or ""


class _Guarded:
    """Calls a back-end until it proves unreachable, then its fallback (if any)."""

    def __init__(self, primary, fallback):
        self.primary, self.fallback, self.down = primary, fallback, ""

    def call(self, method: str, *args):
        """(value, source, note) of ``primary.method(*args)``, or of the fallback's on an LLM failure."""
        note = self.down
        if not self.down:
            try:
                return getattr(self.primary, method)(*args), self.primary.source, ""
            except (LLMUnavailable, LLMReplyError) as e:
                if self.fallback is None:
                    raise
                note = str(e)
                if isinstance(e, LLMUnavailable):
                    self.down = note
        return getattr(self.fallback, method)(*args), self.fallback.source, note


def _fallbacks(explainer, scorer, fallback: bool) -> tuple[_Guarded, _Guarded]:
    explainer, scorer = explainer or OfflineExplainer(), scorer or OfflineSimulator()
    return (_Guarded(explainer, OfflineExplainer() if fallback else None),
            _Guarded(scorer, OfflineSimulator() if fallback else None))


def explain_latents(feature_data, latents: Sequence[int], explainer=None, *, fallback: bool = True,
                    n_explain: int | None = None, progress: bool = True) -> dict[int, Explanation]:
    """Explanations of ``latents`` from their explaining examples (see :func:`~.tasks.split_examples`)."""
    guard = _fallbacks(explainer, None, fallback)[0]
    out = {}
    for latent in tqdm(list(latents), desc="explaining", disable=not progress):
        explain_set, _ = split_examples(feature_data.top_examples(latent), feature_data.quantile_examples(latent),
                                        n_explain=n_explain)
        out[latent] = _explain(guard, feature_data, latent, explain_set)
    return out


def _explain(guard: _Guarded, data, latent: int, examples: list) -> Explanation:
    if not any(max(e.acts, default=0.0) > 0 for e in examples):
        return Explanation(NOT_FIRING, OfflineExplainer.source, "no activating example")
    n_fires = round(data.density(latent) * data.meta.get("n_tokens", 0))
    return Explanation(*guard.call("explain", examples, data.token_str, data.top_input_tokens(latent), n_fires))


@dataclass(frozen=True)
class LatentScore(Result):
    latent: int  # the latent's index
    explanation: str  # its explanation
    explanation_source: str  # who wrote it ("offline", "llm:MODEL")
    scorer_source: str  # who judged detection and fuzzing
    detection: float  # detection balanced accuracy (NaN/None: not scorable)
    detection_auroc: float  # detection AUROC of the scorer's confidences
    fuzzing: float  # fuzzing balanced accuracy
    fuzzing_auroc: float  # fuzzing AUROC
    n_detection: int  # contexts in the detection task
    n_fuzzing: int  # contexts in the fuzzing task
    note: str  # fallbacks used, or why a task could not be scored

    def scores(self) -> dict:
        return {"detection": self.detection, "detection_auroc": self.detection_auroc, "fuzzing": self.fuzzing,
                "fuzzing_auroc": self.fuzzing_auroc}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if isinstance(v, float) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _count(values: list[float]) -> int:
    return sum(1 for v in values if math.isfinite(v))


@dataclass(frozen=True)
class AutointerpResult(Result):
    name: str  # what was explained, e.g. "sae" or "neurons"
    meta: dict  # from the feature data: dictionary config, fingerprint, model, site
    settings: dict  # explainer, scorer, seed, n_explain, fallback
    latents: tuple[LatentScore, ...]  # one per latent, in the order asked
    detection: float  # mean detection balanced accuracy over the scored latents
    fuzzing: float  # mean fuzzing balanced accuracy over the scored latents
    detection_auroc: float  # mean detection AUROC
    fuzzing_auroc: float  # mean fuzzing AUROC
    n_detection: int  # latents with a detection score
    n_fuzzing: int  # latents with a fuzzing score

    def explanations(self) -> dict[int, str]:
        return {s.latent: s.explanation for s in self.latents}

    def scores(self) -> dict[int, dict]:
        return {s.latent: s.scores() for s in self.latents}

    def fallbacks(self) -> list[LatentScore]:
        """Latents explained by the offline fallback because the explainer asked for failed (see their notes)."""
        return [s for s in self.latents if s.note and s.explanation_source != self.settings["explainer"]]

    def table(self, limit: int | None = 20) -> str:
        """One line per latent (the first ``limit``), then the means."""
        lines = [f"{'latent':>7} {'detect':>6} {'fuzz':>6}  explanation"]
        for s in self.latents[:limit]:
            lines.append(f"{s.latent:>7} {_fmt(s.detection):>6} {_fmt(s.fuzzing):>6}  {s.explanation[:90]}")
        if limit is not None and len(self.latents) > limit:
            lines.append(f"    ... {len(self.latents) - limit} more")
        lines.append(f"{'mean':>7} {_fmt(self.detection):>6} {_fmt(self.fuzzing):>6}  ({self.n_detection} latents "
                     f"scored on detection, {self.n_fuzzing} on fuzzing)")
        return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "-"


def autointerp(feature_data, latents: Sequence[int], explainer=None, scorer=None, *, seed: int = 0,
               fallback: bool = True, n_explain: int | None = None, name: str = "dictionary",
               progress: bool = True) -> AutointerpResult:
    """Explain and score ``latents`` of ``feature_data`` (defaults: offline explainer and simulator)."""
    explain_guard, score_guard = _fallbacks(explainer, scorer, fallback)
    rows = []
    for latent in tqdm(list(latents), desc=f"autointerp {name}", disable=not progress):
        rows.append(_score_latent(feature_data, int(latent), explain_guard, score_guard, seed, n_explain))
    meta = {key: feature_data.meta.get(key) for key in ("dictionary", "fingerprint", "model", "site")}
    settings = {"explainer": explain_guard.primary.source, "scorer": score_guard.primary.source, "seed": seed,
                "n_explain": n_explain, "fallback": fallback}
    get = lambda field: [getattr(r, field) for r in rows]
    return AutointerpResult(
        name=name, meta=meta, settings=settings, latents=tuple(rows), detection=_mean(get("detection")),
        fuzzing=_mean(get("fuzzing")), detection_auroc=_mean(get("detection_auroc")),
        fuzzing_auroc=_mean(get("fuzzing_auroc")), n_detection=_count(get("detection")),
        n_fuzzing=_count(get("fuzzing")))


def _score_latent(data, latent: int, explain_guard: _Guarded, score_guard: _Guarded, seed: int,
                  n_explain: int | None) -> LatentScore:
    explain_set, held = split_examples(data.top_examples(latent), data.quantile_examples(latent), n_explain=n_explain)
    explanation = _explain(explain_guard, data, latent, explain_set)
    rng = random.Random(f"{seed}:{latent}")
    notes = [explanation.note] if explanation.note else []
    tasks = {"detection": detection_samples(held, data.negative_examples(latent), rng),
             "fuzzing": fuzzing_samples(held, rng)}
    scores, sources = {}, []
    for task, samples in tasks.items():
        score = TaskScore(math.nan, math.nan, len(samples), sum(s.label for s in samples))
        if explanation.text != NOT_FIRING and 0 < score.n_positive < score.n:
            contexts = [data.tokens_str(s.tokens) for s in samples]
            args = (contexts,) if task == "detection" else (contexts, [s.marked for s in samples])
            confidences, source, note = score_guard.call("detect" if task == "detection" else "fuzz",
                                                         explanation.text, *args)
            score = score_predictions(samples, confidences)
            sources.append(source)
            notes += [note] if note and note not in notes else []
        elif explanation.text != NOT_FIRING:
            notes.append(f"{task}: needs both kinds of context, got {score.n_positive} of {score.n} positive")
        scores[task] = score
    detection, fuzzing = scores["detection"], scores["fuzzing"]
    return LatentScore(
        latent=latent, explanation=explanation.text, explanation_source=explanation.source,
        scorer_source="/".join(dict.fromkeys(sources)) or "-", detection=detection.balanced_accuracy,
        detection_auroc=detection.auroc, fuzzing=fuzzing.balanced_accuracy, fuzzing_auroc=fuzzing.auroc,
        n_detection=detection.n, n_fuzzing=fuzzing.n, note="; ".join(notes))


def write_autointerp(folder, result: AutointerpResult) -> None:
    """Store explanations and scores in the feature folder's explanations.json (one write per source, so
    each latent records which explainer wrote it)."""
    by_source: dict[str, list[LatentScore]] = {}
    for row in result.latents:
        by_source.setdefault(row.explanation_source, []).append(row)
    for source, rows in by_source.items():
        write_explanations(folder, {r.latent: r.explanation for r in rows}, {r.latent: r.scores() for r in rows},
                           source=source, fingerprint=result.meta.get("fingerprint"))
