"""How much of a result survives a change of seed: intervals over seeds and cross-seed feature overlap.

Dictionaries trained on the same data from different initialisations share only part of their
latents (Paulo & Belrose 2025, "Sparse autoencoders trained on the same data learn different
features", arXiv 2501.16615). Two consequences for reporting:

- A metric from one seed is one draw. :func:`interval` gives the Student-t interval of its
  mean over seeds, and :meth:`Interval.separated_above` says whether one setting beats another
  beyond seed noise (non-overlapping intervals: conservative, never claimed from one seed).
- Latents themselves are only partly reproducible. :func:`cross_seed_overlap` matches the
  decoder rows of two dictionaries one-to-one (Hungarian assignment on decoder cosines) and
  reports the mean matched cosine and the share of latents whose partner is at least
  ``threshold`` alike. Unlike MMCS (``compare.mmcs``), two latents cannot claim one partner.

Cost, measured on a 2-core CPU (one thread, random unit rows, the hardest case): the assignment
for F=4608 takes about 2 s (plus 0.4 s for the cosines), F=8192 about 8 s; it grows roughly as
F**3 and holds an F x F float64 matrix (F=32768: 8 GiB), so pass ``max_latents`` for very wide
dictionaries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch
from torch import Tensor

from ..dictionaries import Dictionary
from ..errors import MonosemanticError
from .compare import decoder_directions
from .results import Result

# Quantiles of the matched cosines kept in results (the full array stays out of JSON).
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
# Seed of the latent subsample taken under ``max_latents``: fixed, so reruns agree.
SUBSAMPLE_SEED = 0


@dataclass(frozen=True)
class Interval(Result):
    """The mean of a metric over seeds with its confidence interval.

    With fewer than two values the spread is unknown, so the interval is unbounded
    (low=-inf, high=+inf; ``to_dict`` writes None): one seed never claims a separation.
    """

    mean: float
    low: float
    high: float
    n: int  # values used (non-finite ones are dropped)
    level: float = 0.95

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def overlaps(self, other: Interval) -> bool:
        """Whether the two intervals share any value."""
        return self.low <= other.high and other.low <= self.high

    def separated_above(self, other: Interval) -> bool:
        """Whether this interval lies wholly above ``other`` (low > other.high)."""
        return self.low > other.high


def interval(values, level: float = 0.95) -> Interval:
    """Student-t interval of the mean of ``values`` (one per seed); NaN and inf values are dropped.

    ``n`` says how many were kept; with n < 2 the interval is unbounded (see :class:`Interval`).
    """
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise MonosemanticError(f"interval level={level!r} is invalid; expected a probability in (0, 1), e.g. 0.95")
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise MonosemanticError("an interval needs at least one value; pass one metric value per seed")
    kept = array[np.isfinite(array)]
    n = int(kept.size)
    mean = float(kept.mean()) if n else math.nan
    if n < 2:
        return Interval(mean=mean, low=-math.inf, high=math.inf, n=n, level=float(level))
    from scipy.stats import t as student_t  # scipy comes with the eval extra

    half = float(student_t.ppf((1 + level) / 2, n - 1) * kept.std(ddof=1) / math.sqrt(n))
    return Interval(mean=mean, low=mean - half, high=mean + half, n=n, level=float(level))


@dataclass(frozen=True)
class SeedOverlap(Result):
    """One-to-one matching of two dictionaries' decoder rows."""

    mean_cosine: float  # mean cosine of the matched pairs
    share: float  # matched pairs with cosine >= threshold, over all matched pairs
    threshold: float
    n_a: int
    n_b: int
    n_matched: int  # min(latents of a used, n_b): the larger side's extra latents have no partner
    quantiles: tuple[float, ...]  # matched cosines at QUANTILES
    max_latents: int | None  # the subsample of a's latents used, when one was taken


def hungarian_match(a: Dictionary | Tensor, b: Dictionary | Tensor, *,
                    max_latents: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One-to-one matching of decoder rows maximising total cosine: (rows of a, rows of b, cosines) ``[M]``.

    ``max_latents`` matches only that many of a's latents (a fixed random subsample) against all
    of b's, so each keeps its true partner available while the cost drops. With fewer rivals
    for b's rows the subsample's matches read slightly higher than the full matching's, so
    compare runs at one ``max_latents``.
    """
    a_FO, b_GO = decoder_directions(a), decoder_directions(b)
    if a_FO.shape[1] != b_GO.shape[1]:
        raise MonosemanticError(f"the dictionaries decode to different widths ({a_FO.shape[1]} and "
                                f"{b_GO.shape[1]}); compare seeds of the same site")
    rows_A = _subsample(a_FO.shape[0], max_latents)
    cos_AG = (a_FO[rows_A] @ b_GO.T).numpy()
    from scipy.optimize import linear_sum_assignment

    matched_rows, cols = linear_sum_assignment(cos_AG, maximize=True)
    cos_M = torch.from_numpy(cos_AG[matched_rows, cols].copy())
    return rows_A[torch.from_numpy(matched_rows)], torch.from_numpy(cols), cos_M


def _subsample(n: int, max_latents: int | None) -> Tensor:
    if max_latents is None:
        return torch.arange(n)
    if isinstance(max_latents, bool) or not isinstance(max_latents, int) or max_latents < 1:
        raise MonosemanticError(f"max_latents={max_latents!r} is invalid; expected a positive int like 2048, "
                                "or None for all latents")
    if n <= max_latents:
        return torch.arange(n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SUBSAMPLE_SEED))
    return order[:max_latents].sort().values


def cross_seed_overlap(a: Dictionary | Tensor, b: Dictionary | Tensor, threshold: float = 0.7, *,
                       max_latents: int | None = None) -> SeedOverlap:
    """How many of a's latents reappear in b: Hungarian-matched decoder cosines (rows normalised)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1:
        raise MonosemanticError(f"overlap threshold={threshold!r} is invalid; expected a cosine in [-1, 1], e.g. 0.7")
    _, _, cos_M = hungarian_match(a, b, max_latents=max_latents)
    cos_M = cos_M.double()
    n_a, n_b = _n_latents(a), _n_latents(b)
    return SeedOverlap(
        mean_cosine=float(cos_M.mean()), share=float((cos_M >= threshold).double().mean()),
        threshold=float(threshold), n_a=n_a, n_b=n_b, n_matched=int(cos_M.numel()),
        quantiles=tuple(float(q) for q in torch.quantile(cos_M, torch.tensor(QUANTILES, dtype=torch.float64))),
        max_latents=max_latents if max_latents is not None and max_latents < n_a else None)


def _n_latents(d: Dictionary | Tensor) -> int:
    return (d.W_dec if isinstance(d, Dictionary) else d).shape[0]


def _describe(member: Dictionary | Tensor) -> dict:
    """What must agree between seeds of one setting."""
    if isinstance(member, Dictionary):
        config = member.config
        return {"arch": config.arch, "d_in": config.d_in, "d_out": config.d_out, "d_sae": config.d_sae,
                "skip": config.skip, "options": config.options}
    if isinstance(member, Tensor):
        return {"decoder shape": tuple(member.shape)}
    raise MonosemanticError(f"expected dictionaries or decoder tensors; got {type(member).__name__}")


def check_seed_group(dictionaries: Mapping[str, Dictionary | Tensor]) -> None:
    """Refuse a seed group whose members differ in architecture or size (arch, widths, skip, options).

    Seeds are comparable only when nothing but the initialisation differs.
    """
    if not isinstance(dictionaries, Mapping) or not dictionaries:
        raise MonosemanticError("expected a non-empty {name: dictionary} mapping of one setting's seeds")
    (first, first_desc), *rest = ((name, _describe(d)) for name, d in dictionaries.items())
    for name, desc in rest:
        differ = [key for key in sorted(first_desc.keys() | desc.keys()) if first_desc.get(key) != desc.get(key)]
        if differ:
            what = "; ".join(f"{key}: {first_desc.get(key)!r} vs {desc.get(key)!r}" for key in differ)
            raise MonosemanticError(f"seeds that differ in architecture or size: {first} and {name} differ in "
                                    f"{what}; group only seeds of one spec (see training.sweep.seed_groups)")


@dataclass(frozen=True)
class SeedOverlapMatrix(Result):
    """Every pair of one setting's seeds, and the mean over pairs.

    Pairs share seeds, so they are not independent: the intervals are optimistic (too narrow).
    """

    names: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    overlaps: tuple[SeedOverlap, ...]  # one per pair, in the order of ``pairs``
    threshold: float
    mean_cosine: Interval  # over pairs
    share: Interval  # over pairs


def overlap_matrix(dictionaries: Mapping[str, Dictionary | Tensor], threshold: float = 0.7, *,
                   max_latents: int | None = None) -> SeedOverlapMatrix:
    """``cross_seed_overlap`` for every pair of ``dictionaries`` (the seeds of one setting)."""
    check_seed_group(dictionaries)
    if len(dictionaries) < 2:
        raise MonosemanticError(f"an overlap matrix needs at least two seeds; got {len(dictionaries)} "
                                "(train with seeds=[0, 1, ...])")
    pairs = tuple(combinations(dictionaries, 2))
    overlaps = tuple(cross_seed_overlap(dictionaries[x], dictionaries[y], threshold, max_latents=max_latents)
                     for x, y in pairs)
    return SeedOverlapMatrix(
        names=tuple(dictionaries), pairs=pairs, overlaps=overlaps, threshold=float(threshold),
        mean_cosine=interval([o.mean_cosine for o in overlaps]), share=interval([o.share for o in overlaps]))


def seed_intervals(values: Mapping[str, float], groups: Mapping[str, Sequence[str]],
                   level: float = 0.95) -> dict[str, Interval]:
    """A metric's interval per group: ``{base: interval over its members' values}`` (see ``seed_groups``)."""
    missing = sorted(name for members in groups.values() for name in members if name not in values)
    if missing:
        raise MonosemanticError(f"no value for {missing}; pass a value for every member of every seed group")
    return {base: interval([values[name] for name in members], level) for base, members in groups.items()}
