"""Dead-latent tracking and the AuxK loss (Gao et al. 2024), shared by the top-k family.

A latent is dead once it has not fired for ``dead_after_tokens`` training rows. The AuxK loss
asks the ``aux_k`` largest pre-activations among dead latents to reconstruct the residual
``target - recon`` that the live latents left, which gives dead latents a gradient again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Dictionary, reconstruction_mse
from .options import check_float, check_int

DEFAULT_AUX_K = 512


class AuxKDictionary(Dictionary):
    """A Dictionary with a ``tokens_since_fired [F]`` int64 buffer and an AuxK loss term."""

    OPTIONS = {"k": None, "aux_k": None, "aux_coeff": 1 / 32, "dead_after_tokens": 10_000_000}
    REQUIRED = ("k",)

    def __init__(self, config):
        super().__init__(config)
        self.register_buffer("tokens_since_fired", torch.zeros(config.d_sae, dtype=torch.int64))

    @classmethod
    def _check_options(cls, options, config):
        F_ = config.d_sae
        options["k"] = check_int(cls.arch, "k", options["k"], 1, F_ - 1)
        if options["aux_k"] is None:
            options["aux_k"] = max(1, min(DEFAULT_AUX_K, F_ // 2))
        options["aux_k"] = check_int(cls.arch, "aux_k", options["aux_k"], 1, F_)
        options["aux_coeff"] = check_float(cls.arch, "aux_coeff", options["aux_coeff"])
        options["dead_after_tokens"] = check_int(cls.arch, "dead_after_tokens", options["dead_after_tokens"], 1)
        return options

    def dead_latents(self) -> Tensor:
        """Boolean ``[F]``: latents that have not fired for ``dead_after_tokens`` rows."""
        return self.tokens_since_fired >= self.options["dead_after_tokens"]

    @torch.no_grad()
    def _record_firing_(self, codes_NF: Tensor) -> None:
        self.tokens_since_fired += codes_NF.shape[0]
        self.tokens_since_fired[(codes_NF > 0).any(dim=0)] = 0

    def _aux_term(self, pre_NF: Tensor, residual_ND: Tensor) -> Tensor:
        """``aux_coeff`` times the AuxK loss; 0 when no latent is dead or outside training."""
        zero = pre_NF.new_zeros((), dtype=torch.float32)
        if not self.training or self.options["aux_coeff"] == 0:
            return zero
        dead_F = self.dead_latents()
        # One host sync per step; it skips the top-k entirely while no latent is dead (the usual case).
        n_dead = int(dead_F.sum())
        if n_dead == 0:
            return zero
        k = min(self.options["aux_k"], n_dead)
        values_NK, indices_NK = pre_NF.masked_fill(~dead_F, float("-inf")).topk(k, dim=-1, sorted=False)
        values_NK = torch.relu(values_NK)
        recon_ND = F.embedding_bag(indices_NK, self.W_dec, per_sample_weights=values_NK, mode="sum")
        return self.options["aux_coeff"] * reconstruction_mse(recon_ND, residual_ND.detach())
