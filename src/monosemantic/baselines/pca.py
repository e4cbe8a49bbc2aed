"""Principal components: the best linear reconstruction with a given number of directions.

Decoder rows are the top principal directions of the sample (orthonormal), the encoder their
transpose, and ``b_dec`` the sample mean, so codes are the projections of the centred input.
On the sample it was fitted on, the FVU of k components is exactly 1 minus their explained
variance ratio: no linear dictionary of k directions does better, which makes PCA the bound a
sparse dictionary of k *active* latents is compared with.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..dictionaries import register
from .linear import LinearBaseline, build, check_sample, component_count


@register("pca")
class PCABaseline(LinearBaseline):
    """``W_dec [k, D]``: principal directions by decreasing variance; ``W_enc = W_dec.T``."""
    SUMMARY = "baseline: principal directions by decreasing variance"

    AT_MOST_D_IN = True


def principal_directions(x_ND: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(mean ``[D]``, top-k principal directions ``[k, D]``) of a float64 sample, signs fixed.

    Each direction's sign makes its largest-magnitude coordinate positive, so refitting the
    same sample gives the same dictionary (SVD signs are otherwise arbitrary).
    """
    mean_D = x_ND.mean(0)
    _, _, Vh_KD = torch.linalg.svd(x_ND - mean_D, full_matrices=False)
    V_kD = Vh_KD[:k]
    biggest_k = V_kD.abs().argmax(1)
    signs_k = torch.sign(V_kD.gather(1, biggest_k[:, None]))
    return mean_D, V_kD * signs_k


def fit_pca(x_ND: Tensor, *, n_components: int | None = None, seed: int = 0, site: str | None = None,
            model: str | None = None) -> PCABaseline:
    """PCA with ``n_components`` (default: all ``D``) directions; deterministic, so ``seed`` is unused."""
    x_ND = check_sample("pca", x_ND)
    N, D = x_ND.shape
    k = component_count("pca", n_components, x_ND)
    mean_D, V_kD = principal_directions(x_ND, k)
    dictionary = build(PCABaseline, D, k, site=site, model=model, fit_rows=N)
    dictionary.set_weights_(V_kD.T, V_kD, mean_D)
    return dictionary
