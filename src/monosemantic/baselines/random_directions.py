"""Random directions: what any dictionary of the same size gets without learning anything.

Decoder rows are independent uniformly random unit vectors (normalised Gaussians, from
``seed``) and ``b_dec`` the sample mean. Two encoders (option ``encoder``):

- ``"lstsq"`` (default): codes are the least-squares coefficients, ``W_enc = pinv(W_dec)``,
  so the reconstruction is the best one the directions allow: the orthogonal projection onto
  their span when ``d_sae < d_in``, exact when the rows span the space (``d_sae >= d_in``,
  then the minimum-norm coefficients).
- ``"project"``: codes are the plain projections ``(x - b_dec) . w_f``, ``W_enc = W_dec.T``,
  as an untrained tied SAE would compute. The reconstruction is generally poor (overcomplete
  sets add each direction's share many times over); use it as the floor for encoders.

Decoder rows are also the reference for MMCS: a learned dictionary's MMCS against another
should be well above its MMCS against random directions of the same size.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..dictionaries import register
from ..errors import MonosemanticError
from .linear import PROVENANCE_OPTIONS, LinearBaseline, build, check_sample

ENCODERS = ("lstsq", "project")


@register("random")
class RandomBaseline(LinearBaseline):
    SUMMARY = "baseline: random unit directions with least-squares codes"
    OPTIONS = {**PROVENANCE_OPTIONS, "encoder": "lstsq"}

    @classmethod
    def _check_options(cls, options, config):
        if options["encoder"] not in ENCODERS:
            raise MonosemanticError(f"random option encoder={options['encoder']!r} is invalid; "
                                    f"expected one of {', '.join(ENCODERS)}")
        return super()._check_options(options, config)


def random_unit_rows(n: int, d: int, seed: int) -> Tensor:
    """``[n, d]`` float64 rows uniform on the unit sphere, fixed by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    rows_nd = torch.randn(n, d, generator=generator, dtype=torch.float64)
    return rows_nd / rows_nd.norm(dim=1, keepdim=True)


def fit_random(x_ND: Tensor, *, n_components: int | None = None, seed: int = 0, site: str | None = None,
               model: str | None = None, encoder: str = "lstsq") -> RandomBaseline:
    """``n_components`` (default ``D``) random unit directions; any positive number, overcomplete too."""
    x_ND = check_sample("random", x_ND, least_rows=1)
    N, D = x_ND.shape
    F = D if n_components is None else n_components
    if isinstance(F, bool) or not isinstance(F, int) or F < 1:
        raise MonosemanticError(f"random n_components={n_components!r} is invalid; expected a positive integer")
    dictionary = build(RandomBaseline, D, F, site=site, model=model, fit_rows=N, seed=seed, encoder=encoder)
    W_dec_FD = random_unit_rows(F, D, seed)
    W_enc_DF = torch.linalg.pinv(W_dec_FD) if encoder == "lstsq" else W_dec_FD.T
    dictionary.set_weights_(W_enc_DF, W_dec_FD, x_ND.mean(0))
    return dictionary
