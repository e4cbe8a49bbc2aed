"""The two scoring tasks, built from a latent's examples, and how predictions are scored.

In the style of delphi (Paulo et al. 2024, "Automatically Interpreting Millions of Features"):

- **detection**: the scorer gets the explanation and a shuffled mix of activating contexts
  (held-out top and quantile examples) and non-activating ones (the latent's negatives), and
  says which activate. It tests whether the explanation *recalls* where the latent fires.
- **fuzzing**: the scorer gets activating contexts in which either the tokens the latent
  really fires on (activation > 0) are marked, or as many tokens on which it does not fire,
  and says which are marked correctly. It tests whether the explanation pins down *which
  tokens* fire, not merely the topic.

Both are scored by balanced accuracy (the mean of the true-positive and true-negative rates,
0.5 for a scorer that cannot tell), and by AUROC of the scorer's confidences.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import NamedTuple


class Sample(NamedTuple):
    """One context put to a scorer."""

    tokens: list[int]  # token ids of the context
    marked: tuple[int, ...]  # positions shown marked (fuzzing; empty for detection)
    label: bool  # detection: the latent fires in it; fuzzing: the marks are its firing tokens


class TaskScore(NamedTuple):
    """How well a scorer's predictions on one task match the labels."""

    balanced_accuracy: float  # (TPR + TNR) / 2; NaN when a class is missing
    auroc: float  # area under the ROC of the confidences; NaN when a class is missing
    n: int  # samples scored
    n_positive: int  # of which labelled positive


def _key(example) -> tuple[int, int]:
    return example.window, example.start


def split_examples(top: Sequence, quantiles: Sequence[Sequence], *, n_explain: int | None = None) -> tuple[list, list]:
    """(to explain from, to score on): every other top example explains (at most ``n_explain``); the rest
    and every quantile example not shown to the explainer are held out for scoring."""
    explain, held = list(top[::2]), list(top[1::2])
    if n_explain is not None:
        explain, held = explain[:n_explain], held + explain[n_explain:]
    seen = {_key(e) for e in explain}
    for example in (e for group in quantiles for e in group):
        if _key(example) not in seen:
            seen.add(_key(example))
            held.append(example)
    return explain, held


def detection_samples(activating: Sequence, negatives: Sequence, rng: random.Random) -> list[Sample]:
    """Activating (label True) and non-activating contexts, shuffled."""
    samples = [Sample(list(e.tokens), (), True) for e in activating if max(e.acts, default=0.0) > 0]
    samples += [Sample(list(e.tokens), (), False) for e in negatives]
    rng.shuffle(samples)
    return samples


def fuzzing_samples(activating: Sequence, rng: random.Random) -> list[Sample]:
    """Half the activating contexts with their firing tokens marked, half with as many non-firing tokens marked."""
    usable = [e for e in activating if any(a > 0 for a in e.acts) and any(a <= 0 for a in e.acts)]
    usable = rng.sample(usable, len(usable))
    samples = []
    for n, example in enumerate(usable):
        firing = [i for i, a in enumerate(example.acts) if a > 0]
        if n % 2 == 0:
            samples.append(Sample(list(example.tokens), tuple(firing), True))
        else:
            quiet = [i for i, a in enumerate(example.acts) if a <= 0]
            samples.append(Sample(list(example.tokens), tuple(sorted(rng.sample(quiet, min(len(firing), len(quiet))))),
                                  False))
    rng.shuffle(samples)
    return samples


def balanced_accuracy(labels: Sequence[bool], predictions: Sequence[bool]) -> float:
    positives = [p for y, p in zip(labels, predictions) if y]
    negatives = [p for y, p in zip(labels, predictions) if not y]
    if not positives or not negatives:
        return math.nan
    return (sum(positives) / len(positives) + sum(not p for p in negatives) / len(negatives)) / 2


def auroc(labels: Sequence[bool], confidences: Sequence[float]) -> float:
    """The probability that a random positive gets a higher confidence than a random negative (ties half)."""
    positives = [c for y, c in zip(labels, confidences) if y]
    negatives = [c for y, c in zip(labels, confidences) if not y]
    if not positives or not negatives:
        return math.nan
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def score_predictions(samples: Sequence[Sample], confidences: Sequence[float]) -> TaskScore:
    """Predictions are ``confidence >= 0.5``."""
    labels = [s.label for s in samples]
    return TaskScore(balanced_accuracy(labels, [c >= 0.5 for c in confidences]), auroc(labels, confidences),
                     len(samples), sum(labels))
