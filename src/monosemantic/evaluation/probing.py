"""Linear probes on latent codes against raw activations: how readable is a labelled task?

For every dictionary (an SAE, or a baseline: ``identity`` = neurons, ``pca``, ``ica``) and for
the raw activations, logistic-regression probes (scikit-learn, multinomial, features
standardised by scale) are fitted on a training split and scored on held-out *windows* (so no
context is seen in both). Probes:

- ``full``: all latents (``k`` None);
- k-sparse (Gurnee et al. 2023): for each class, the ``k`` latents with the largest
  |mean in class - mean out of class| (divided by the latent's standard deviation with
  ``selection="normalised"``), chosen on the training split. Per class, a binary probe on
  that class's ``k`` latents (rows ``target=<class>``); overall, a multinomial probe on the
  union of every class's ``k`` latents (``target="overall"``, up to ``k x classes`` features);
- ``majority``: always the training split's most frequent class.

Per (name, k, target) a :class:`ProbeScore`: accuracy and F1 (binary for a class; macro over
classes overall; per-class rows of ``full`` and ``majority`` read the multinomial predictions
one-vs-rest). Tokens are subsampled to ``max_tokens`` (20k) and ``max_iter`` is bounded, so a
comparison of several dictionaries takes seconds to a minute on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from ..dictionaries import Dictionary
from ..errors import MonosemanticError
from .features import (
    check_rows,
    class_scores,
    columns,
    dictionary_codes,
    fit_logistic,
    subsample,
    top_features,
    window_split,
)
from .results import Result

SELECTIONS = ("normalised", "mean_diff")


@dataclass(frozen=True)
class ProbingConfig(Result):
    ks: tuple[int, ...]  # latents per class of the k-sparse probes
    selection: str  # how k-sparse latents are ranked: "normalised" or "mean_diff"
    test_fraction: float  # share of windows held out for scoring
    max_tokens: int | None  # tokens sampled (train and test together)
    C: float  # inverse L2 strength of the logistic regressions
    max_iter: int
    seed: int


@dataclass(frozen=True)
class ProbeScore(Result):
    name: str  # a dictionary's name, "activations" or "majority"
    k: int | None  # latents per class; None for the full probe (and the majority baseline)
    target: str  # "overall" or a class name
    accuracy: float
    f1: float  # binary for a class, macro over classes overall (NaN/None when undefined)
    n_features: int
    latents: tuple[int, ...]  # k-sparse: the chosen latents (a class's, or the union overall)


@dataclass(frozen=True)
class ProbingResult(Result):
    config: ProbingConfig
    classes: tuple[str, ...]  # class names, by label index
    test_counts: tuple[int, ...]  # test tokens per class
    n_train: int
    n_test: int
    n_train_windows: int
    n_test_windows: int
    dictionaries: dict  # name -> the DictionaryConfig probed
    scores: tuple[ProbeScore, ...]

    def score(self, name: str, k: int | None = None, target: str = "overall") -> ProbeScore:
        """The score of ``name``'s probe with ``k`` latents (None: full) on ``target``."""
        for s in self.scores:
            if (s.name, s.k, s.target) == (name, k, target):
                return s
        raise MonosemanticError(f"no probe ({name!r}, k={k!r}, {target!r}) in this result; names: "
                                f"{sorted({s.name for s in self.scores})}, ks: {list(self.config.ks)}")


def probe_dictionaries(dictionaries: dict[str, Dictionary], acts_ND: Tensor, labels_N: Tensor, windows_N: Tensor, *,
                       ks=(1, 2, 5, 10, 20), classes=None, selection: str = "normalised",
                       test_fraction: float = 0.25, max_tokens: int | None = 20_000, C: float = 1.0,
                       max_iter: int = 200, seed: int = 0, include_activations: bool = True) -> ProbingResult:
    """Probe accuracy of each dictionary's codes (and of ``acts_ND`` itself) on ``labels_N``.

    ``labels_N``: class indices (-1: skip the token); ``windows_N``: each token's window, for
    the held-out split; ``classes``: names by index (default "0", "1", ...).
    """
    config = _config(ks, selection, test_fraction, max_tokens, C, max_iter, seed)
    check_rows(acts_ND, labels_N, windows_N)
    acts_ND, labels_N, windows_N = acts_ND.detach().cpu(), labels_N.cpu(), windows_N.cpu()
    labelled = (labels_N >= 0).nonzero().squeeze(1).numpy()
    rows = labelled[subsample(labelled.size, max_tokens, seed)]
    y_N, window_N = labels_N.numpy()[rows], windows_N.numpy()[rows]
    names = _class_names(classes, y_N)
    test_N = window_split(window_N, test_fraction, seed)
    split = _Split(y_N[~test_N], y_N[test_N], names, config)
    scores = list(split.scored("majority", None, np.full(test_N.sum(), split.majority), 0, ()))
    acts_N_D = acts_ND[rows].float().numpy()
    if include_activations:
        scores += _full(split, "activations", acts_N_D[~test_N], acts_N_D[test_N])
    for name, dictionary in dictionaries.items():
        X = dictionary_codes(dictionary, acts_ND[rows])
        scores += _full(split, name, X[~test_N], X[test_N])
        scores += _sparse(split, name, X[~test_N], X[test_N])
    return ProbingResult(
        config=config, classes=names, test_counts=tuple(int((split.y_test == c).sum()) for c in range(len(names))),
        n_train=int((~test_N).sum()), n_test=int(test_N.sum()), n_train_windows=np.unique(window_N[~test_N]).size,
        n_test_windows=np.unique(window_N[test_N]).size,
        dictionaries={name: d.config.to_dict() for name, d in dictionaries.items()}, scores=tuple(scores))


class _Split:
    """Train and test labels of one probing run, and how predictions become scores."""

    def __init__(self, y_train: np.ndarray, y_test: np.ndarray, names: tuple[str, ...], config: ProbingConfig):
        self.y_train, self.y_test, self.names, self.config = y_train, y_test, names, config
        self.class_ids = np.unique(y_train)
        if self.class_ids.size < 2:
            raise MonosemanticError(f"the training split holds {self.class_ids.size} class; a probe needs at least "
                                    "2; pass more tokens or a task with several classes")
        values, counts = np.unique(y_train, return_counts=True)
        self.majority = int(values[np.argmax(counts)])

    def scored(self, name: str, k: int | None, pred_N: np.ndarray, n_features: int, latents,
               per_class: bool = True) -> list[ProbeScore]:
        """The overall score of multinomial predictions and, with ``per_class``, one-vs-rest ones."""
        present = [c for c in self.class_ids if (self.y_test == c).any()]
        f1s = [_f1(self.y_test == c, pred_N == c) for c in present]
        rows = [ProbeScore(name, k, "overall", _accuracy(self.y_test, pred_N), _nanmean(f1s), n_features,
                           tuple(latents))]
        if per_class:
            rows += [ProbeScore(name, k, self.names[c], _accuracy(self.y_test == c, pred_N == c),
                                _f1(self.y_test == c, pred_N == c), n_features, tuple(latents))
                     for c in self.class_ids]
        return rows


def _full(split: _Split, name: str, X_train, X_test) -> list[ProbeScore]:
    cfg = split.config
    model = fit_logistic(X_train, split.y_train, C=cfg.C, max_iter=cfg.max_iter)
    return split.scored(name, None, model.predict(X_test), X_train.shape[1], ())


def _sparse(split: _Split, name: str, X_train, X_test) -> list[ProbeScore]:
    """k-sparse probes: per class a binary probe on its k best latents; overall one on their union."""
    cfg = split.config
    scores_CF = class_scores(X_train, split.y_train, split.class_ids, normalised=cfg.selection == "normalised")
    rows = []
    for k in cfg.ks:
        k = min(k, X_train.shape[1])
        chosen = {int(c): top_features(scores_CF[i], k) for i, c in enumerate(split.class_ids)}
        union = np.array(sorted({int(f) for top in chosen.values() for f in top}))
        model = fit_logistic(columns(X_train, union), split.y_train, C=cfg.C, max_iter=cfg.max_iter)
        rows += split.scored(name, k, model.predict(columns(X_test, union)), union.size, union.tolist(),
                             per_class=False)
        for c, top in chosen.items():
            model = fit_logistic(columns(X_train, top), split.y_train == c, C=cfg.C, max_iter=cfg.max_iter)
            pred_N = model.predict(columns(X_test, top))
            rows.append(ProbeScore(name, k, split.names[c], _accuracy(split.y_test == c, pred_N),
                                   _f1(split.y_test == c, pred_N), k, tuple(int(f) for f in top)))
    return rows


def _accuracy(truth_N: np.ndarray, pred_N: np.ndarray) -> float:
    return float((truth_N == pred_N).mean()) if truth_N.size else math.nan


def _f1(truth_N: np.ndarray, pred_N: np.ndarray) -> float:
    """Binary F1 (NaN when the class neither occurs nor is predicted: undefined, not 0)."""
    tp = int((truth_N & pred_N).sum())
    wrong = int((truth_N ^ pred_N).sum())
    return 2 * tp / (2 * tp + wrong) if 2 * tp + wrong else math.nan


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _class_names(classes, y_N: np.ndarray) -> tuple[str, ...]:
    if y_N.size == 0:
        raise MonosemanticError("no token has a label (all -1); expected class indices >= 0; check the labels")
    top = int(y_N.max())
    if classes is None:
        return tuple(str(c) for c in range(top + 1))
    names = tuple(str(c) for c in classes)
    if top >= len(names):
        raise MonosemanticError(f"label {top} has no name: got {len(names)} class names; pass one name per class "
                                "index, e.g. classes=PYTHON_CATEGORIES")
    return names


def _config(ks, selection, test_fraction, max_tokens, C, max_iter, seed) -> ProbingConfig:
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise MonosemanticError(f"ks={ks!r} is invalid; expected positive integers, e.g. (1, 2, 5, 10, 20)")
    if selection not in SELECTIONS:
        raise MonosemanticError(f"selection={selection!r} is unknown; expected one of {', '.join(SELECTIONS)}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 2):
        raise MonosemanticError(f"max_tokens={max_tokens!r} is invalid; expected an integer >= 2 or None")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1 or not C > 0:
        raise MonosemanticError(f"max_iter={max_iter!r}, C={C!r} are invalid; expected a positive integer and a "
                                "positive float, e.g. 200 and 1.0")
    return ProbingConfig(ks=ks, selection=selection, test_fraction=float(test_fraction), max_tokens=max_tokens,
                         C=float(C), max_iter=max_iter, seed=seed)
