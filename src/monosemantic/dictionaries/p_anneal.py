"""ReLU dictionaries whose sparsity penalty anneals from L1 toward L0 (p-annealing).

Karvonen et al. 2024 (dictionary_learning's ``PAnnealTrainer``) train a plain ReLU autoencoder
with an ``L_p`` penalty on the codes and lower p during training: L1 early, while features
form, then steps toward L0, which penalises how many latents fire rather than how strongly, so
the codes shrink less. Here:

- p is ``p_start`` until ``anneal_start`` (a share of the run), then falls linearly to ``p_end``
  in ``anneal_steps`` equal steps ending at the end of the run: a pure function of
  ``StepInput.progress``, so the trainer's run state is all it needs;
- the penalty is ``sum_f codes_f^p`` per row (``penalty="lp^p"``) or its p-th root
  (``penalty="lp"``), averaged over rows;
- lowering p changes the penalty's scale, so its coefficient is rescaled to keep the penalty's
  value where L_{p_start} would put it: ``l1_coeff * L_{p_start}(codes) / L_p(codes)``, the
  ratio measured on the batch and held constant for the gradient. ``PAnnealTrainer`` instead
  rescales the coefficient once at each change of p, by the ratio averaged over its last 10
  batches, and keeps it; that needs state the trainer would have to carry for this one
  architecture, and the per-batch ratio gives the same scale where the codes change slowly.

Decoder rows are kept at unit norm, as for the plain ReLU dictionary. Training runs plain
autograd (no CPU kernel). At inference this is a ReLU dictionary, and exports as one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import MonosemanticError
from .base import PENALTY_DECODER_INIT_NORM, Dictionary, reconstruction_mse
from .options import check_float, check_int
from .registry import register
from .step import LossOutput, StepInput, loss_terms

PENALTIES = ("lp", "lp^p")
# Measured (benchmarks/README.md, recipes.py; 1M SmolLM2 rows, 8x): 0.3 reaches held-out FVU
# 0.148 at L0 154, 0.5% dead; 1.0 gives L0 32 with 18% dead; the old 1e-3 left 69% of latents active.
L1_COEFF_P_ANNEAL = 0.3


def annealed_p(progress: float, p_start: float, p_end: float, anneal_start: float, anneal_steps: int) -> float:
    """p after ``progress`` (share of the run done): ``p_start``, then ``anneal_steps`` equal steps to ``p_end``."""
    if progress < anneal_start:
        return p_start
    done = math.floor((progress - anneal_start) / (1.0 - anneal_start) * anneal_steps) + 1
    return p_start + (p_end - p_start) * min(done, anneal_steps) / anneal_steps


@register("p_anneal")
class PAnnealDictionary(Dictionary):
    SUMMARY = "ReLU codes with an L_p penalty, p annealed from 1 toward 0 (Karvonen et al. 2024)"
    SPARSITY_OPTION = "l1_coeff"
    OPTIONS = {"l1_coeff": L1_COEFF_P_ANNEAL, "p_start": 1.0, "p_end": 0.2, "anneal_start": 0.1, "anneal_steps": 10,
               "penalty": "lp"}
    DECODER_INIT_NORM = PENALTY_DECODER_INIT_NORM

    @classmethod
    def _check_options(cls, options, config):
        options["l1_coeff"] = check_float(cls.arch, "l1_coeff", options["l1_coeff"])
        options["p_start"] = check_float(cls.arch, "p_start", options["p_start"], 0.0, 1.0, low_open=True)
        options["p_end"] = check_float(cls.arch, "p_end", options["p_end"], 0.0, options["p_start"], low_open=True)
        options["anneal_start"] = check_float(cls.arch, "anneal_start", options["anneal_start"], 0.0, 0.99)
        options["anneal_steps"] = check_int(cls.arch, "anneal_steps", options["anneal_steps"], 1)
        if options["penalty"] not in PENALTIES:
            raise MonosemanticError(f"p_anneal option penalty={options['penalty']!r} is invalid; expected one of "
                                    f"{', '.join(PENALTIES)}")
        return options

    def _activate(self, pre_NF: Tensor) -> Tensor:
        return torch.relu(pre_NF)

    def p_at(self, progress: float) -> float:
        """The exponent of the penalty after ``progress`` of the run."""
        o = self.options
        return annealed_p(progress, o["p_start"], o["p_end"], o["anneal_start"], o["anneal_steps"])

    def lp_penalty(self, codes_NF: Tensor, p: float) -> Tensor:
        """``sum_f codes_f^p`` per row (or its p-th root with penalty "lp"), averaged over rows."""
        active_NF = codes_NF > 0
        # Powers of exact zeros would give 0 * inf gradients; they contribute nothing anyway.
        powered_NF = torch.where(active_NF, torch.where(active_NF, codes_NF, 1.0).float().pow(p), 0.0)
        per_row_N = powered_NF.sum(-1)
        if self.options["penalty"] == "lp":
            per_row_N = per_row_N.clamp_min(1e-30).pow(1.0 / p) * (per_row_N > 0)
        return per_row_N.mean()

    def _loss(self, x_ND: Tensor, target_ND: Tensor, step: StepInput) -> LossOutput:
        recon_ND, codes_NF, _ = self(x_ND)
        mse = reconstruction_mse(recon_ND, target_ND)
        p, p_start = self.p_at(step.progress), self.options["p_start"]
        penalty = self.lp_penalty(codes_NF, p)
        if p != p_start:
            with torch.no_grad():
                reference = self.lp_penalty(codes_NF, p_start)
                penalty_scale = reference / penalty.detach() if float(penalty) > 0 else torch.ones_like(reference)
            penalty = penalty * penalty_scale
        sparsity = self.options["l1_coeff"] * step.sparsity_scale * penalty
        return LossOutput(mse + sparsity, loss_terms(mse, sparsity), recon_ND, codes_NF)
