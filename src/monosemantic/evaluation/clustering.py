"""Clusters of tokens by their latent codes: do the codes group tokens the way labels do?

Tokens are clustered with KMeans (scikit-learn) on their codes, each code vector scaled to unit
length first (``normalise``, the default): which latents fire, in what proportion, matters and
not how loud the token is, which would otherwise let a few high-norm tokens own clusters.
Reported: purity (the share of labelled tokens whose cluster's most common label is theirs)
and normalised mutual information against the labels, and for every cluster its most
frequent tokens and the tokens nearest its centre, each in a short context.

Pass ``dictionary=None`` to cluster the raw activations, the baseline for "do codes cluster
better than activations?".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from ..dictionaries import Dictionary
from ..errors import MonosemanticError
from .features import check_rows, dictionary_codes, sklearn, subsample
from .labels import LabelledRows
from .results import Result


@dataclass(frozen=True)
class ClusteringConfig(Result):
    n_clusters: int
    max_tokens: int | None  # tokens sampled before clustering
    normalise: bool  # unit-length code vectors
    n_init: int  # KMeans restarts
    n_examples: int  # tokens nearest each centre that are reported
    context_before: int  # tokens of context shown before the example token
    context_after: int
    seed: int


@dataclass(frozen=True)
class TokenExample(Result):
    token: str
    context: str  # the text around it, the token between « and »
    window: int
    position: int
    label: str | None  # its class name (None: unlabelled)
    distance: float  # to the cluster centre, in the clustered space


@dataclass(frozen=True)
class Cluster(Result):
    index: int
    size: int
    majority_label: str | None  # most common label among its labelled tokens
    purity: float  # share of its labelled tokens that carry it (NaN: none labelled)
    label_counts: dict  # class name -> tokens
    top_tokens: tuple[tuple[str, int], ...]  # most frequent token strings and their counts
    examples: tuple[TokenExample, ...]  # nearest the centre first


@dataclass(frozen=True)
class ClusteringResult(Result):
    config: ClusteringConfig
    name: str
    dictionary: dict | None  # the DictionaryConfig clustered (None: raw activations)
    classes: tuple[str, ...]
    n_tokens: int
    n_labelled: int
    purity: float
    nmi: float  # normalised mutual information between clusters and labels
    clusters: tuple[Cluster, ...]  # largest first


def cluster_codes(dictionary: Dictionary | None, rows: LabelledRows, windows_WS: Tensor, tokenizer, *,
                  classes=None, n_clusters: int = 20, max_tokens: int | None = 20_000, normalise: bool = True,
                  n_init: int = 3, n_examples: int = 5, context_before: int = 8, context_after: int = 2,
                  seed: int = 0, name: str | None = None) -> ClusteringResult:
    """KMeans clusters of ``rows``' tokens by their codes, scored against their labels.

    ``rows``: as :func:`~monosemantic.evaluation.labels.labelled_activations` returns them
    (labels may be -1); their ``window_N`` index ``windows_WS``, which gives the contexts.
    """
    config = _config(n_clusters, max_tokens, normalise, n_init, n_examples, context_before, context_after, seed)
    check_rows(rows.acts_ND, rows.labels_N, rows.window_N)
    _, preprocessing, metrics, cluster = sklearn()
    picked = subsample(rows.acts_ND.shape[0], max_tokens, seed)
    if picked.size < n_clusters:
        raise MonosemanticError(f"got {picked.size} tokens for {n_clusters} clusters; expected at least one token "
                                "per cluster; pass more tokens or fewer clusters")
    acts_ND = rows.acts_ND[picked]
    X = acts_ND.detach().float().cpu().numpy() if dictionary is None else dictionary_codes(dictionary, acts_ND)
    if normalise:
        X = preprocessing.normalize(X)
    kmeans = cluster.KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit(X)
    assigned_N = kmeans.labels_
    distance_N = kmeans.transform(X)[np.arange(picked.size), assigned_N]
    labels_N = rows.labels_N.cpu().numpy()[picked]
    names = _names(classes, labels_N)
    window_N, position_N = rows.window_N.cpu().numpy()[picked], rows.position_N.cpu().numpy()[picked]
    _check_positions(windows_WS, window_N, position_N)
    windows_WS = windows_WS.cpu()
    token_N = windows_WS.numpy()[window_N, position_N]
    context = _Contexts(tokenizer, windows_WS, window_N, position_N, context_before, context_after)
    clusters = [_cluster(c, assigned_N == c, labels_N, names, token_N, distance_N, context, n_examples)
                for c in range(n_clusters)]
    labelled = labels_N >= 0
    n_majority = sum(max(cl.label_counts.values(), default=0) for cl in clusters)
    return ClusteringResult(
        config=config, name=name or ("activations" if dictionary is None else dictionary.config.arch),
        dictionary=None if dictionary is None else dictionary.config.to_dict(), classes=names,
        n_tokens=int(picked.size), n_labelled=int(labelled.sum()),
        purity=n_majority / labelled.sum() if labelled.any() else float("nan"),
        nmi=float(metrics.normalized_mutual_info_score(labels_N[labelled], assigned_N[labelled]))
        if labelled.any() else float("nan"),
        clusters=tuple(sorted(clusters, key=lambda cl: (-cl.size, cl.index))))


class _Contexts:
    """Token strings and their surrounding text, decoded on demand."""

    def __init__(self, tokenizer, windows_WS: Tensor, window_N: np.ndarray, position_N: np.ndarray,
                 before: int, after: int):
        self.tokenizer, self.windows_WS = tokenizer, windows_WS
        self.window_N, self.position_N, self.before, self.after = window_N, position_N, before, after

    def token(self, token_id: int) -> str:
        return self.tokenizer.decode([int(token_id)])

    def example(self, n: int, label: str | None, distance: float) -> TokenExample:
        w, p = int(self.window_N[n]), int(self.position_N[n])
        ids = self.windows_WS[w].tolist()
        left = self.tokenizer.decode(ids[max(0, p - self.before):p])
        right = self.tokenizer.decode(ids[p + 1:p + 1 + self.after])
        token = self.tokenizer.decode([ids[p]])
        return TokenExample(token=token, context=f"{left}«{token}»{right}", window=w, position=p, label=label,
                            distance=float(distance))


def _cluster(index: int, member_N: np.ndarray, labels_N: np.ndarray, names: tuple[str, ...], token_N: np.ndarray,
             distance_N: np.ndarray, context: _Contexts, n_examples: int) -> Cluster:
    members = np.flatnonzero(member_N)
    member_labels = labels_N[members]
    counts = Counter(names[c] for c in member_labels[member_labels >= 0].tolist())
    labelled = sum(counts.values())
    majority = max(sorted(counts), key=counts.__getitem__) if counts else None
    top = Counter(token_N[members].tolist()).most_common(n_examples)
    nearest = members[np.argsort(distance_N[members], kind="stable")[:n_examples]]
    examples = tuple(context.example(n, names[labels_N[n]] if labels_N[n] >= 0 else None, float(distance_N[n]))
                     for n in nearest)
    return Cluster(index=index, size=int(members.size), majority_label=majority,
                   purity=counts[majority] / labelled if labelled else float("nan"),
                   label_counts=dict(sorted(counts.items())),
                   top_tokens=tuple((context.token(t), int(c)) for t, c in top), examples=examples)


def _check_positions(windows_WS: Tensor, window_N: np.ndarray, position_N: np.ndarray) -> None:
    W, S = windows_WS.shape
    if window_N.size and (window_N.min() < 0 or window_N.max() >= W or position_N.min() < 0 or position_N.max() >= S):
        raise MonosemanticError(f"token rows point at window {int(window_N.max())}, position {int(position_N.max())}, "
                                f"outside the {W} windows of {S} tokens given; pass the windows the rows came from")


def _names(classes, labels_N: np.ndarray) -> tuple[str, ...]:
    top = int(labels_N.max()) if labels_N.size else -1
    names = tuple(str(c) for c in classes) if classes is not None else tuple(str(c) for c in range(top + 1))
    if top >= len(names):
        raise MonosemanticError(f"label {top} has no name: got {len(names)} class names; pass one name per class "
                                "index, e.g. classes=PYTHON_CATEGORIES")
    return names


def _config(n_clusters, max_tokens, normalise, n_init, n_examples, before, after, seed) -> ClusteringConfig:
    for key, value, least in (("n_clusters", n_clusters, 2), ("n_init", n_init, 1), ("n_examples", n_examples, 0),
                              ("context_before", before, 0), ("context_after", after, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise MonosemanticError(f"{key}={value!r} is invalid; expected an integer >= {least}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 2):
        raise MonosemanticError(f"max_tokens={max_tokens!r} is invalid; expected an integer >= 2 or None")
    return ClusteringConfig(n_clusters=n_clusters, max_tokens=max_tokens, normalise=bool(normalise), n_init=n_init,
                            n_examples=n_examples, context_before=before, context_after=after, seed=seed)
