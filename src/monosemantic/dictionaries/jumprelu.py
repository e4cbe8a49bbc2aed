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

from ..errors import MonosemanticError
from ..kernels.jumprelu import jumprelu_autoencode
from ..kernels.relu import DEFAULT_MAX_DENSITY
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
    # Adam moves a parameter by about lr per step, so at the run's lr a log-threshold moves by a
    # factor of at most ~e^0.1 in a 1M-row run (244 steps), and L0 stays where the initial
    # threshold puts it whatever l0_coeff asks for. threshold_lr_scale multiplies the lr of
    # log_threshold; initial_threshold 0.1 is about one standard deviation of the initial
    # pre-activations (decoder rows of norm 0.1, normalised inputs). benchmarks/README.md has the runs.
    OPTIONS = {"l0_coeff": 1.0, "bandwidth": 0.001, "initial_threshold": 0.1, "threshold_lr_scale": 30.0}
    INIT_ONLY_OPTIONS = ("decoder_init_norm", "initial_threshold")
    FLOAT32_TENSORS = ("log_threshold",)
    LOG_TENSORS = ("log_threshold",)
    CALIBRATES = True  # an untrained copy's thresholds are set from rows (see calibrate_)
    FORMER_DEFAULTS = {"threshold_lr_scale": 1.0}

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
        options["threshold_lr_scale"] = check_float(cls.arch, "threshold_lr_scale", options["threshold_lr_scale"],
                                                    low_open=True)
        return options

    def lr_scales(self) -> dict[str, float]:
        return {"log_threshold": self.options["threshold_lr_scale"]}

    @property
    def threshold(self) -> Tensor:
        """Per-latent thresholds ``[F]`` (float32)."""
        return self.log_threshold.exp()

    def _activate(self, pre_NF: Tensor) -> Tensor:
        return jumprelu(pre_NF, self.threshold, self.options["bandwidth"])

    @torch.no_grad()
    def calibrate_(self, x_ND: Tensor, l0: float | None = None, batch_size: int = 4096) -> None:
        """Thresholds at which every latent fires on the same share of ``x_ND``'s rows, ``l0`` per row in all.

        An untrained copy keeps ``initial_threshold``, which sits inside the initial
        pre-activations (about 40% of latents fire), so as a control it would be dense where the
        trained dictionary is sparse. Each latent's threshold is set at its own quantile of the
        pre-activations rather than one threshold for all, so that no latent of the control is dead.
        """
        x_ND = self._rows(x_ND, self.d_in, "calibration rows")
        if l0 is None or not 0 <= l0 <= self.d_sae:
            raise MonosemanticError(f"jumprelu calibration needs l0, the mean active latents per row to match, in "
                                    f"[0, {self.d_sae}]; got {l0!r}; pass the trained dictionary's L0 on these rows")
        fired = round(len(x_ND) * l0 / self.d_sae)  # rows each latent fires on
        if fired >= len(x_ND):
            self.log_threshold.fill_(math.log(torch.finfo(torch.float32).tiny))
            return
        # Each latent's fired+1 largest pre-activations, kept over batches.
        kept_KF = torch.empty(0, self.d_sae, dtype=torch.float32, device=x_ND.device)
        for x_BD in x_ND.split(batch_size):
            both_KF = torch.cat([kept_KF, self.pre_acts(x_BD).float()])
            kept_KF = both_KF.topk(min(fired + 1, len(both_KF)), dim=0).values
        # Midway between the last row that fires and the first that does not, so that the trip
        # through log_threshold's rounding cannot move a row across.
        above_F = kept_KF[fired - 1] if fired else 2 * kept_KF[0].abs() + 1
        threshold_F = ((above_F + kept_KF[fired]) / 2).clamp_min(torch.finfo(torch.float32).tiny)
        self.log_threshold.copy_(threshold_F.log())

    def _scale_codes_(self, factor: float) -> None:
        super()._scale_codes_(factor)
        self.log_threshold.add_(math.log(factor))

    # Code density below which a training step runs its sparse path (see kernels.relu); an
    # instance attribute, not an option: it changes speed only, never results.
    max_sparse_density: float = DEFAULT_MAX_DENSITY

    def _loss(self, x_ND: Tensor, target_ND: Tensor, step: StepInput) -> LossOutput:
        if self._fast_path_applies(x_ND):
            centre_D = self.b_dec if self.apply_b_dec_to_input else None
            recon_ND, codes_NF, l0 = jumprelu_autoencode(x_ND, self.W_enc, self.b_enc, centre_D, self.W_dec,
                                                         self.threshold, self.options["bandwidth"],
                                                         self.max_sparse_density)
            recon_ND = self._add_skip(recon_ND + self.b_dec, x_ND)
        else:
            recon_ND, codes_NF, pre_NF = self(x_ND)
            l0 = heaviside(pre_NF, self.threshold, self.options["bandwidth"]).float().sum(-1).mean()
        mse = reconstruction_mse(recon_ND, target_ND)
        sparsity = self.options["l0_coeff"] * step.sparsity_scale * l0
        return LossOutput(mse + sparsity, loss_terms(mse, sparsity), recon_ND, codes_NF)
