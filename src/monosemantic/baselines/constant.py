"""Dictionaries that reconstruct a constant: zero ablation and mean ablation as dictionaries.

``zero`` always reconstructs 0; ``mean`` always reconstructs ``b_dec``, the mean of the sample
it was fitted on. Splicing them in zero- or mean-ablates the site, so they are the floor every
real dictionary is measured against (``zero`` gives loss recovered 0 by definition; ``mean``
gives FVU 1 on its own sample). Both have a single latent that never fires: a config needs
``d_sae >= 1``, and a dictionary without latents would be a special case everywhere else.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..dictionaries import register
from .linear import LinearBaseline, build, check_sample


class ConstantBaseline(LinearBaseline):
    def __init__(self, config):
        super().__init__(config)
        self.set_weights_(torch.zeros(self.d_in, self.d_sae), torch.zeros(self.d_sae, self.d_in))

    def _activate(self, pre_NF: Tensor) -> Tensor:
        # Zero whatever the weights hold, so a constant dictionary stays constant even if trained.
        return torch.zeros_like(pre_NF)


@register("zero")
class ZeroBaseline(ConstantBaseline):
    """Reconstructs 0 (``b_dec`` stays zero): splicing it in zero-ablates the site."""
    SUMMARY = "baseline: always reconstructs zero (zero ablation)"

    OPTIONS = {}


@register("mean")
class MeanBaseline(ConstantBaseline):
    """Reconstructs ``b_dec``, the sample mean: splicing it in mean-ablates the site."""
    SUMMARY = "baseline: always reconstructs the fitted mean (mean ablation)"

    OPTIONS = {"fit_rows": None}


def fit_zero(x_ND: Tensor, *, site: str | None = None, model: str | None = None) -> ZeroBaseline:
    """A zero dictionary as wide as ``x_ND`` (the rows are not used)."""
    x_ND = check_sample("zero", x_ND, least_rows=0)
    return build(ZeroBaseline, x_ND.shape[1], 1, site=site, model=model)


def fit_mean(x_ND: Tensor, *, site: str | None = None, model: str | None = None) -> MeanBaseline:
    """A mean dictionary whose constant is the (float64-accumulated) mean of ``x_ND``."""
    x_ND = check_sample("mean", x_ND, least_rows=1)
    dictionary = build(MeanBaseline, x_ND.shape[1], 1, site=site, model=model, fit_rows=x_ND.shape[0])
    dictionary.set_weights_(dictionary.W_enc.detach(), dictionary.W_dec.detach(), x_ND.mean(0))
    return dictionary
