"""The neuron basis: codes are the activations themselves, one latent per coordinate.

At an ``mlp_hidden`` site these latents are exactly the MLP's neurons, the usual baseline for
"are dictionary latents more interpretable than neurons?". Reconstruction is exact.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..dictionaries import register
from ..errors import MonosemanticError
from .linear import LinearBaseline, build, check_sample


@register("identity")
class IdentityBaseline(LinearBaseline):
    SUMMARY = "baseline: the neuron basis (codes are the activations)"
    OPTIONS = {}

    @classmethod
    def _check_options(cls, options, config):
        if config.d_sae != config.d_in:
            raise MonosemanticError(f"the identity baseline has one latent per coordinate, so d_sae must equal "
                                    f"d_in={config.d_in}; got d_sae={config.d_sae}")
        return super()._check_options(options, config)

    def __init__(self, config):
        super().__init__(config)
        # Identity from construction, so the config alone defines it (nothing is fitted).
        eye_DD = torch.eye(self.d_in)
        self.set_weights_(eye_DD, eye_DD)


def fit_identity(x_ND: Tensor, *, site: str | None = None, model: str | None = None) -> IdentityBaseline:
    """The identity dictionary as wide as ``x_ND`` (the rows are not used)."""
    x_ND = check_sample("identity", x_ND, least_rows=0)
    return build(IdentityBaseline, x_ND.shape[1], x_ND.shape[1], site=site, model=model)
