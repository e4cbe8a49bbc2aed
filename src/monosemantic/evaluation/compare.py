"""Comparing dictionaries by their decoder directions: MMCS and feature stitching.

Both look only at decoder rows (what a latent writes), normalised to unit length, so the
scale of codes does not matter. Crosscoder decoders ``[F, S, D]`` are flattened to ``[F, S*D]``.
Cosine matrices ``[F_a, F_b]`` are never held whole: they are computed ``chunk_rows`` rows of
``a`` at a time, keeping only each row's maximum.

- **MMCS** (mean max cosine similarity, Sharkey et al. 2022): for each latent of ``a`` its
  best cosine with any latent of ``b``, averaged. ``a -> b`` asks "is every latent of a found
  in b?"; it is not symmetric, so both directions and their mean are reported.
- **Stitching** (after Leask et al. 2025, "Sparse autoencoders do not find canonical units"):
  for a small and a large dictionary of one site, each large latent is *re-split* (it refines
  a small latent: max cosine to the small dictionary >= threshold) or *novel* (below it).
  Each small latent lists the large latents that re-split it (those whose best match it is).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..dictionaries import Dictionary
from ..errors import MonosemanticError
from .results import Result

# Cosine-matrix entries computed at once: 2**24 float32 is 64 MiB.
CHUNK_ELEMENTS = 2**24


@dataclass(frozen=True)
class MMCSResult(Result):
    a_to_b: float  # mean over a's latents of the max cosine with b's
    b_to_a: float
    symmetric: float  # mean of the two directions
    n_a: int
    n_b: int
    absolute: bool  # whether |cos| was used (sign-blind, for signed bases such as PCA or ICA)
    a: dict | None  # DictionaryConfig of a (None when given as a tensor)
    b: dict | None


@dataclass(frozen=True)
class StitchResult(Result):
    threshold: float
    absolute: bool
    n_small: int
    n_large: int
    n_resplit: int  # large latents with max cosine >= threshold
    n_novel: int
    novel: tuple[int, ...]  # indices of the novel large latents
    max_cosine: tuple[float, ...]  # per large latent: its best cosine with the small dictionary
    nearest: tuple[int, ...]  # per large latent: the small latent achieving it
    children: tuple[tuple[int, ...], ...]  # per small latent: the large latents re-splitting it
    small: dict | None
    large: dict | None


def decoder_directions(dictionary: Dictionary | Tensor) -> Tensor:
    """Unit decoder rows ``[F, O]`` in float32 on the CPU (zero rows stay zero)."""
    W_dec = dictionary.W_dec if isinstance(dictionary, Dictionary) else dictionary
    if not isinstance(W_dec, Tensor) or W_dec.ndim < 2 or not W_dec.is_floating_point():
        got = tuple(W_dec.shape) if isinstance(W_dec, Tensor) else type(W_dec).__name__
        raise MonosemanticError(f"expected a dictionary or a floating decoder [latents, width] tensor; got {got}")
    rows_FO = W_dec.detach().to("cpu", torch.float32).flatten(1)
    return rows_FO / rows_FO.norm(dim=1, keepdim=True).clamp_min(1e-12)


def max_cosines(a: Dictionary | Tensor, b: Dictionary | Tensor, *, absolute: bool = False,
                chunk_rows: int | None = None) -> tuple[Tensor, Tensor]:
    """For each decoder row of ``a``: (max cosine with ``b``'s rows ``[F_a]``, its index in ``b`` ``[F_a]``)."""
    a_FO, b_GO = decoder_directions(a), decoder_directions(b)
    if a_FO.shape[1] != b_GO.shape[1]:
        raise MonosemanticError(f"the dictionaries decode to different widths ({a_FO.shape[1]} and {b_GO.shape[1]}); "
                                "compare dictionaries of the same site")
    chunk = chunk_rows or max(1, CHUNK_ELEMENTS // max(1, b_GO.shape[0]))
    values, indices = [], []
    for start in range(0, a_FO.shape[0], chunk):
        cos_cG = a_FO[start:start + chunk] @ b_GO.T
        best = (cos_cG.abs() if absolute else cos_cG).max(dim=1)
        values.append(best.values)
        indices.append(best.indices)
    return torch.cat(values), torch.cat(indices)


def mmcs(a: Dictionary | Tensor, b: Dictionary | Tensor, *, absolute: bool = False,
         chunk_rows: int | None = None) -> MMCSResult:
    """Mean max cosine similarity of decoder rows, both ways."""
    a_FO, b_GO = decoder_directions(a), decoder_directions(b)
    a_to_b = float(max_cosines(a_FO, b_GO, absolute=absolute, chunk_rows=chunk_rows)[0].double().mean())
    b_to_a = float(max_cosines(b_GO, a_FO, absolute=absolute, chunk_rows=chunk_rows)[0].double().mean())
    return MMCSResult(a_to_b=a_to_b, b_to_a=b_to_a, symmetric=(a_to_b + b_to_a) / 2, n_a=a_FO.shape[0],
                      n_b=b_GO.shape[0], absolute=absolute, a=_config(a), b=_config(b))


def stitch(small: Dictionary | Tensor, large: Dictionary | Tensor, *, threshold: float = 0.7,
           absolute: bool = False, chunk_rows: int | None = None) -> StitchResult:
    """Classify each latent of ``large`` as re-split (max cosine to ``small`` >= threshold) or novel."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1:
        raise MonosemanticError(f"stitching threshold={threshold!r} is invalid; expected a cosine in [-1, 1], "
                                "e.g. 0.7")
    best_G, nearest_G = max_cosines(large, small, absolute=absolute, chunk_rows=chunk_rows)
    n_small = decoder_directions(small).shape[0]
    resplit_G = best_G >= threshold
    children: list[list[int]] = [[] for _ in range(n_small)]
    for g in resplit_G.nonzero().squeeze(1).tolist():
        children[int(nearest_G[g])].append(g)
    return StitchResult(
        threshold=float(threshold), absolute=absolute, n_small=n_small, n_large=best_G.shape[0],
        n_resplit=int(resplit_G.sum()), n_novel=int((~resplit_G).sum()),
        novel=tuple((~resplit_G).nonzero().squeeze(1).tolist()), max_cosine=tuple(best_G.tolist()),
        nearest=tuple(nearest_G.tolist()), children=tuple(tuple(c) for c in children),
        small=_config(small), large=_config(large))


def _config(d: Dictionary | Tensor) -> dict | None:
    return d.config.to_dict() if isinstance(d, Dictionary) else None
