"""JumpReLU dictionaries with an L0 penalty (Rajamanoharan et al. 2024, "Jumping Ahead").

Each latent fires only above its own learned threshold: ``codes = pre * (pre > threshold)``.
The threshold and the L0 count are trained through straight-through estimators (see ste.py).
``log_threshold`` stays float32 whatever the module's dtype: with bandwidth 1e-3, bfloat16
could not even represent the steps a threshold takes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import PENALTY_DECODER_INIT_NORM, Dictionary, reconstruction_mse
from .options import check_float
from .registry import register
from .ste import jumprelu
from .ste import step as heaviside
from .step import LossOutput, StepInput, loss_terms


@register("jumprelu")
class JumpReLUDictionary(Dictionary):
    SUMMARY = "per-latent learned thresholds with an L0 penalty (Rajamanoharan et al. 2024)"
    SPARSITY_OPTION = "l0_coeff"
    DECODER_INIT_NORM = PENALTY_DECODER_INIT_NORM
    # l0_coeff 1.0 suits inputs normalised so that E||x||^2 = d_in; sweep it per site.
    OPTIONS = {"l0_coeff": 1.0, "bandwidth": 0.001, "initial_threshold": 0.001}
    FLOAT32_TENSORS = ("log_threshold",)

    def __init__(self, config):
        super().__init__(config)
        start = math.log(self.options["initial_threshold"])
        self.log_threshold = nn.Parameter(torch.full((config.d_sae,), start, dtype=torch.float32))

    @classmethod
    def _check_options(cls, options, config):
        options["l0_coeff"] = check_float(cls.arch, "l0_coeff", options["l0_coeff"])
        options["bandwidth"] = check_float(cls.arch, "bandwidth", options["bandwidth"], low_open=True)
        options["initial_threshold"] = check_float(cls.arch, "initial_threshold", options["initial_threshold"],
                                                   low_open=True)
        return options

    @property
    def threshold(self) -> Tensor:
        """Per-latent thresholds ``[F]`` (float32)."""
        return self.log_threshold.exp()

    def _activate(self, pre_NF: Tensor) -> Tensor:
        return jumprelu(pre_NF, self.threshold, self.options["bandwidth"])

    def _scale_codes_(self, factor: float) -> None:
        super()._scale_codes_(factor)
        self.log_threshold.add_(math.log(factor))

    def _loss(self, x_ND: Tensor, target_ND: Tensor, step: StepInput) -> LossOutput:
        recon_ND, codes_NF, pre_NF = self(x_ND)
        mse = reconstruction_mse(recon_ND, target_ND)
        l0 = heaviside(pre_NF, self.threshold, self.options["bandwidth"]).float().sum(-1).mean()
        sparsity = self.options["l0_coeff"] * step.sparsity_scale * l0
        return LossOutput(mse + sparsity, loss_terms(mse, sparsity), recon_ND, codes_NF)
