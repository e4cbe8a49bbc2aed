"""k-sparse probing on many binary tasks (SAE-Probes, arXiv 2502.16681; SAEBench's sparse probing).

For every task of a :class:`~.tasks.TaskWindows` and every contender (a dictionary's codes,
or ``activations``: the raw site as a dense probe, the ceiling), windows are split into train
and test (whole windows, one split for all tasks). On the training split only, latents are
ranked by |mean on positives - mean on negatives| / their standard deviation, and a logistic
regression (classes weighted by inverse frequency; :mod:`.logistic` fits every task's at once)
is fitted on the top ``k`` for each ``k``.
Test scores are AUROC of its decision values and balanced accuracy. Pooled tasks probe the
mean of the codes over each (window, document) segment's storable positions.

A task is scored only when both splits hold at least ``min_examples`` positives and negatives;
the others are listed in ``skipped`` with their counts, so a report can say what ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..dictionaries import Dictionary
from ..errors import MonosemanticError
from .features import class_scores, columns, dictionary_codes, issparse, sklearn, subsample, top_features, window_split
from .logistic import fit_gathered, fit_shared, gathered_decision, shared_decision
from .results import Result
from .tasks import TaskWindows

ACTIVATIONS = "activations"  # the dense probe on the raw site: the ceiling


@dataclass(frozen=True)
class TaskProbingConfig(Result):
    ks: tuple[int, ...]
    test_fraction: float  # share of windows held out for scoring
    max_rows: int  # token rows per task (train and test together)
    min_examples: int  # fewest positives and negatives per split for a task to be scored
    C: float
    max_iter: int
    seed: int


@dataclass(frozen=True)
class TaskInfo(Result):
    name: str
    description: str
    family: str
    pooled: bool
    n_train: int
    n_test: int
    positives_train: int
    positives_test: int


@dataclass(frozen=True)
class TaskProbeScore(Result):
    task: str
    name: str  # a contender, or "activations"
    k: int | None  # latents; None for the dense probe
    auroc: float
    balanced_accuracy: float
    latents: tuple[int, ...]


@dataclass(frozen=True)
class TaskProbingResult(Result):
    config: TaskProbingConfig
    corpus: dict  # the EvalCorpus the windows came from
    n_windows: int
    tasks: tuple[TaskInfo, ...]  # the tasks scored
    skipped: tuple[tuple[str, str], ...]  # (task, why) for tasks not scored
    scores: tuple[TaskProbeScore, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.name for s in self.scores))

    def per_task(self, name: str, k: int | None, metric: str = "auroc") -> dict[str, float]:
        """``{task: score}`` of ``name``'s probe with ``k`` latents (None: dense)."""
        return {s.task: getattr(s, metric) for s in self.scores if (s.name, s.k) == (name, k)}

    def mean(self, name: str, k: int | None, metric: str = "auroc") -> float:
        """The mean over tasks (NaN when ``name`` has no such probe)."""
        values = [v for v in self.per_task(name, k, metric).values() if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan


def probe_tasks(contenders: dict[str, tuple[Dictionary | None, Tensor]], data: TaskWindows, *, corpus: dict,
                ks=(1, 2, 5), test_fraction: float = 0.25, max_rows: int = 8000, min_examples: int = 10,
                C: float = 1.0, max_iter: int = 100, seed: int = 0) -> TaskProbingResult:
    """Probe every task of ``data`` with every contender's codes.

    ``contenders`` maps a name to ``(dictionary, acts_ND)``: the activations of the storable
    positions of ``data.windows_WS`` (row order of ``data.keep_WS.nonzero()``) in the model
    the dictionary reads (a random-model control reads its own model). A ``None`` dictionary
    is probed densely on the activations themselves.
    """
    config = _config(ks, test_fraction, max_rows, min_examples, C, max_iter, seed)
    window_N = data.keep_WS.nonzero()[:, 0].numpy()
    n_windows = data.windows_WS.shape[0]
    test_W = window_split(np.arange(n_windows), test_fraction, seed)
    # Pooled tasks are probed per (window, document) segment: a window may hold several documents.
    pairs_N2 = np.stack([window_N, data.documents_WS[data.keep_WS].numpy()], axis=1)
    segments_G2, segment_N = np.unique(pairs_N2, axis=0, return_inverse=True)
    segment_N = segment_N.reshape(-1)
    first_G = np.full(len(segments_G2), window_N.size)
    np.minimum.at(first_G, segment_N, np.arange(window_N.size))
    plans, skipped = [], []
    for name, labels in data.labels.items():
        task = data.tasks[name]
        y_N = labels[data.keep_WS].numpy().astype(np.int64)
        if task.pooled:
            y_N, test_N = y_N[first_G], test_W[segments_G2[:, 0]]
        else:
            test_N = test_W[window_N]
        plan = _Plan.make(name, y_N, test_N, config)
        if isinstance(plan, str):
            skipped.append((name, plan))
        else:
            plans.append((task, plan))
    scores: list[TaskProbeScore] = []
    for name, (dictionary, acts_ND) in contenders.items():
        _check_rows(name, acts_ND, window_N.size)
        X = acts_ND.float().cpu().numpy() if dictionary is None else dictionary_codes(dictionary, acts_ND)
        for pooled in (False, True):
            group = [plan for task, plan in plans if task.pooled == pooled]
            if group:
                X_rows = _pool(X, segment_N, len(segments_G2)) if pooled else X
                scores += _dense(name, X_rows, group, config) if dictionary is None else \
                    _sparse(name, X_rows, group, config)
    infos = tuple(TaskInfo(t.name, t.description, t.family, t.pooled, p.train.size, p.test.size,
                           int(p.y_train.sum()), int(p.y_test.sum())) for t, p in plans)
    order = {t.name: i for i, (t, _) in enumerate(plans)}
    scores.sort(key=lambda s: (order[s.task], list(contenders).index(s.name), -1 if s.k is None else s.k))
    return TaskProbingResult(config, corpus, n_windows, infos, tuple(skipped), tuple(scores))


class _Plan:
    """One task's rows, labels and split, shared by every contender."""

    def __init__(self, task: str, train: np.ndarray, test: np.ndarray, y_N: np.ndarray):
        self.task, self.train, self.test = task, train, test
        self.y_train, self.y_test = y_N[train], y_N[test]

    @classmethod
    def make(cls, task: str, y_N: np.ndarray, test_N: np.ndarray, config: TaskProbingConfig):
        """The plan for rows labelled ``y_N`` (1, 0, -1 unscored), or why the task cannot be scored."""
        rows = np.flatnonzero(y_N >= 0)
        rows = rows[subsample(rows.size, config.max_rows, config.seed)]
        train, test = rows[~test_N[rows]], rows[test_N[rows]]
        counts = {split: (int((y_N[r] == 1).sum()), int((y_N[r] == 0).sum()))
                  for split, r in (("train", train), ("test", test))}
        least = min(min(c) for c in counts.values())
        if least < config.min_examples:
            found = ", ".join(f"{s}: {p} positive / {n} negative" for s, (p, n) in counts.items())
            return (f"needs >= {config.min_examples} positives and negatives in each split ({found}); "
                    "evaluate on more windows")
        return cls(task, train, test, y_N)

    def score(self, name: str, k: int | None, decision_N: np.ndarray, latents=()) -> TaskProbeScore:
        """Scores of test-row decision values (a probe predicts positive above 0)."""
        _, _, metrics, _ = sklearn()
        return TaskProbeScore(self.task, name, k, float(metrics.roc_auc_score(self.y_test, decision_N)),
                         float(metrics.balanced_accuracy_score(self.y_test, decision_N > 0)), tuple(latents))


def _sparse(name: str, X, plans: list[_Plan], config: TaskProbingConfig) -> list[TaskProbeScore]:
    """k-sparse probes of every plan, batched: the top max(k) latents per task, then a prefix per k."""
    top = max(config.ks)
    chosen, X_TNK, y_TN, train_TN = [], [], [], []
    width = max(p.train.size + p.test.size for p in plans)
    for plan in plans:
        best = top_features(class_scores(X[plan.train], plan.y_train, np.array([1]))[0], top)
        chosen.append(best)
        rows = np.concatenate([plan.train, plan.test])
        X_TNK.append(_padded(columns(X[rows], best), width))
        y_TN.append(_padded(np.concatenate([plan.y_train, plan.y_test]), width))
        train_TN.append(np.arange(width) < plan.train.size)
    X_TNK_t, y_TN_t = torch.from_numpy(np.stack(X_TNK)), torch.from_numpy(np.stack(y_TN)).float()
    train_t = torch.from_numpy(np.stack(train_TN))
    out = []
    for k in config.ks:
        kk = min(k, X_TNK_t.shape[2])
        W_TK, b_T, mean_TK, std_TK = fit_gathered(X_TNK_t[:, :, :kk], y_TN_t, train_t, C=config.C,
                                                  max_iter=config.max_iter)
        decision_TN = gathered_decision(X_TNK_t[:, :, :kk], W_TK, b_T, mean_TK, std_TK)
        for t, plan in enumerate(plans):
            test = slice(plan.train.size, plan.train.size + plan.test.size)
            out.append(plan.score(name, k, decision_TN[t, test].numpy(), chosen[t][:kk].tolist()))
    return out


def _dense(name: str, X, plans: list[_Plan], config: TaskProbingConfig) -> list[TaskProbeScore]:
    """Dense probes on every column (the raw activations), all tasks in one batched fit."""
    X_ND = torch.from_numpy(np.asarray(X, dtype=np.float32))
    y_NT = torch.zeros(X_ND.shape[0], len(plans))
    train_NT = torch.zeros(X_ND.shape[0], len(plans), dtype=torch.bool)
    for t, plan in enumerate(plans):
        y_NT[plan.train, t] = torch.from_numpy(plan.y_train).float()
        train_NT[plan.train, t] = True
    decision_NT = shared_decision(X_ND, *fit_shared(X_ND, y_NT, train_NT, C=config.C, max_iter=config.max_iter))
    return [plan.score(name, None, decision_NT[plan.test, t].numpy()) for t, plan in enumerate(plans)]


def _padded(values: np.ndarray, rows: int) -> np.ndarray:
    out = np.zeros((rows,) + values.shape[1:], dtype=np.float32)
    out[:values.shape[0]] = values
    return out


def _pool(X, segment_N: np.ndarray, n_segments: int):
    """Mean codes per segment ``[G, F]`` (dense: pooled codes are not sparse)."""
    from scipy import sparse

    counts_G = np.bincount(segment_N, minlength=n_segments).astype(np.float64)
    weights_N = 1.0 / np.maximum(counts_G, 1)[segment_N]
    pool_GN = sparse.csr_matrix((weights_N, (segment_N, np.arange(segment_N.size))),
                                shape=(n_segments, segment_N.size))
    pooled = pool_GN @ X
    return np.asarray(pooled.todense() if issparse(pooled) else pooled, dtype=np.float32)


def _check_rows(name: str, acts_ND: Tensor, n_rows: int) -> None:
    if not isinstance(acts_ND, Tensor) or acts_ND.ndim != 2 or acts_ND.shape[0] != n_rows:
        got = tuple(acts_ND.shape) if isinstance(acts_ND, Tensor) else type(acts_ND).__name__
        raise MonosemanticError(f"contender {name!r} has activations {got}; expected [{n_rows}, width]: one row per "
                                "storable position of the task windows")


def _config(ks, test_fraction, max_rows, min_examples, C, max_iter, seed) -> TaskProbingConfig:
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise MonosemanticError(f"ks={ks!r} is invalid; expected positive integers, e.g. (1, 2, 5)")
    for label, value, least in (("max_rows", max_rows, 4), ("min_examples", min_examples, 1),
                                ("max_iter", max_iter, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise MonosemanticError(f"{label}={value!r} is invalid; expected an integer >= {least}")
    if not C > 0:
        raise MonosemanticError(f"C={C!r} is invalid; expected a positive float, e.g. 1.0")
    return TaskProbingConfig(ks, float(test_fraction), max_rows, min_examples, float(C), max_iter, seed)
