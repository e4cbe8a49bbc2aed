"""ReLU dictionaries with an L1 penalty (Cunningham et al. 2023; Bricken et al. 2023).

With ``weight_l1_by_decoder_norm`` the penalty is ``sum_f codes_f * ||W_dec_f||`` and the
decoder is left unconstrained (Anthropic's April 2024 update), so that the penalty cannot be
dodged by shrinking codes and growing decoder rows; otherwise rows are kept at unit norm and
the penalty is the plain L1 norm of the codes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels.relu import DEFAULT_MAX_DENSITY, relu_autoencode
from .base import PENALTY_DECODER_INIT_NORM, Dictionary, reconstruction_mse
from .options import check_bool, check_float
from .registry import register
from .step import LossOutput, StepInput, loss_terms

# Defaults for inputs normalised so that E||x||^2 = d_in; the weighted default is Anthropic's.
L1_COEFF_WEIGHTED = 5.0
# Measured (benchmarks/README.md, recipes.py): 1M SmolLM2 rows, 8x, reach held-out FVU 0.106 at
# L0 218 with no dead latent; 2.4 gives L0 68 with 5% dead, 5.0 kills 65%. The old 1e-3 left
# 73% of the latents active on every row.
L1_COEFF_PLAIN = 1.0


@register("relu")
class ReLUDictionary(Dictionary):
    SUMMARY = "ReLU codes with an L1 penalty (Cunningham et al. 2023); decoder-norm weighted L1 optional"
    SPARSITY_OPTION = "l1_coeff"
    OPTIONS = {"l1_coeff": None, "weight_l1_by_decoder_norm": False}
    DECODER_INIT_NORM = PENALTY_DECODER_INIT_NORM

    @classmethod
    def _check_options(cls, options, config):
        weighted = check_bool(cls.arch, "weight_l1_by_decoder_norm", options["weight_l1_by_decoder_norm"])
        if options["l1_coeff"] is None:
            options["l1_coeff"] = L1_COEFF_WEIGHTED if weighted else L1_COEFF_PLAIN
        options["l1_coeff"] = check_float(cls.arch, "l1_coeff", options["l1_coeff"])
        return options

    # Code density below which a training step runs its sparse path (see kernels.relu); an
    # instance attribute, not an option: it changes speed only, never results.
    max_sparse_density: float = DEFAULT_MAX_DENSITY

    @property
    def unit_norm_decoder(self) -> bool:
        return not self.options["weight_l1_by_decoder_norm"]

    def _activate(self, pre_NF: Tensor) -> Tensor:
        return torch.relu(pre_NF)

    def l1_penalty(self, codes_NF: Tensor) -> Tensor:
        """The unweighted penalty: summed over latents, averaged over rows."""
        if self.options["weight_l1_by_decoder_norm"]:
            codes_NF = codes_NF * self.W_dec.norm(dim=1)
        return codes_NF.abs().float().sum(-1).mean()

    def _loss(self, x_ND: Tensor, target_ND: Tensor, step: StepInput) -> LossOutput:
        if self._fast_path_applies(x_ND):
            recon_ND, codes_NF, l1 = self._fast_forward(x_ND)
        else:
            recon_ND, codes_NF, _ = self(x_ND)
            l1 = self.l1_penalty(codes_NF)
        mse = reconstruction_mse(recon_ND, target_ND)
        sparsity = self.options["l1_coeff"] * step.sparsity_scale * l1
        return LossOutput(mse + sparsity, loss_terms(mse, sparsity), recon_ND, codes_NF)

    def _fast_forward(self, x_ND: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(recon, codes, l1_penalty) through kernels.relu: the same values and gradients, less work."""
        if self.options["weight_l1_by_decoder_norm"]:
            weight_F = self.W_dec.norm(dim=1)
        else:
            weight_F = self.W_dec.new_ones(self.d_sae)  # codes are >= 0, so |codes| = codes
        centre_D = self.b_dec if self.apply_b_dec_to_input else None
        recon_ND, codes_NF, l1 = relu_autoencode(x_ND, self.W_enc, self.b_enc, centre_D, self.W_dec, weight_F,
                                                 self.max_sparse_density)
        return self._add_skip(recon_ND + self.b_dec, x_ND), codes_NF, l1
