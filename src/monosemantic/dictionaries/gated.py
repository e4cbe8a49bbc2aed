"""Gated dictionaries (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated SAEs").

Whether a latent fires and how strongly are decided by two paths that share ``W_enc``:

    gate      = (x - b_dec) @ W_enc + b_gate > 0
    magnitude = relu((x - b_dec) @ W_enc * exp(r_mag) + b_mag)
    codes     = gate * magnitude

The L1 penalty acts on the gate path only, so it no longer shrinks the magnitudes; an auxiliary
loss, reconstructing the target from relu(gate pre-acts) through a frozen decoder, trains the
gate path, which the step function cuts off from the main reconstruction.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import PENALTY_DECODER_INIT_NORM, Dictionary, reconstruction_mse
from .options import check_float
from .registry import register
from .step import LossOutput, StepInput, loss_terms


@register("gated")
class GatedDictionary(Dictionary):
    SUMMARY = "separate gate and magnitude paths, L1 on the gate (Rajamanoharan et al. 2024)"
    SPARSITY_OPTION = "l1_coeff"
    DECODER_INIT_NORM = PENALTY_DECODER_INIT_NORM
    LATENT_BIASES = ("b_gate", "b_mag")
    # The gated L1 is the decoder-norm weighted L1 of Anthropic's update applied to the gate,
    # hence the same default coefficient (inputs normalised so that E||x||^2 = d_in).
    OPTIONS = {"l1_coeff": 5.0}
    HAS_B_ENC = False

    def __init__(self, config):
        super().__init__(config)
        F = config.d_sae
        self.b_gate = nn.Parameter(torch.zeros(F))
        self.r_mag = nn.Parameter(torch.zeros(F))
        self.b_mag = nn.Parameter(torch.zeros(F))

    @classmethod
    def _check_options(cls, options, config):
        options["l1_coeff"] = check_float(cls.arch, "l1_coeff", options["l1_coeff"])
        return options

    def _shared(self, x_ND: Tensor) -> Tensor:
        x_ND = self._normalized_input(x_ND)
        if self.apply_b_dec_to_input:
            x_ND = x_ND - self.b_dec
        return x_ND @ self.W_enc

    def pre_acts(self, x_ND: Tensor) -> Tensor:
        """The gate's pre-activations ``[N, F]``: a latent fires where they are positive."""
        return self._shared(x_ND) + self.b_gate

    def _encode_parts(self, x_ND: Tensor) -> tuple[Tensor, Tensor]:
        shared_NF = self._shared(x_ND)
        gate_pre_NF = shared_NF + self.b_gate
        magnitude_NF = torch.relu(shared_NF * self.r_mag.exp() + self.b_mag)
        return gate_pre_NF, magnitude_NF * (gate_pre_NF > 0)

    def _scale_codes_(self, factor: float) -> None:
        self.b_gate.mul_(factor)
        self.b_mag.mul_(factor)

    def _loss(self, x_ND: Tensor, target_ND: Tensor, step: StepInput) -> LossOutput:
        recon_ND, codes_NF, gate_pre_NF = self(x_ND)
        mse = reconstruction_mse(recon_ND, target_ND)
        gate_NF = torch.relu(gate_pre_NF)
        l1 = (gate_NF * self.W_dec.norm(dim=1)).float().sum(-1).mean()
        sparsity = self.options["l1_coeff"] * step.sparsity_scale * l1
        # Frozen decoder (and skip): this term trains the gate path only.
        gate_recon_ND = gate_NF @ self.W_dec.detach() + self.b_dec.detach()
        if self.config.skip:
            gate_recon_ND = gate_recon_ND + self._rows(x_ND, self.d_in, "input") @ self.W_skip.detach().T
        aux = reconstruction_mse(gate_recon_ND, target_ND)
        return LossOutput(mse + sparsity + aux, loss_terms(mse, sparsity, aux), recon_ND, codes_NF)
