"""The AuxK loss (Gao et al. 2024), shared by the top-k family.

The AuxK loss asks the ``aux_k`` largest pre-activations among dead latents to reconstruct the
residual ``target - recon`` that the live latents left, which gives dead latents a gradient
again. Which latents are dead is the trainer's to say (``StepInput.dead_F``: one definition for
AuxK, resampling and the logged metrics, resolved against the run's length); a step without
that mask has no AuxK term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kernels import topk as fast_topk
from .base import Dictionary, reconstruction_mse
from .options import check_float, check_int
from .step import SparseCodes, StepInput, fired_latents

DEFAULT_AUX_K = 512


def check_auxk_options(arch: str, options: dict, config) -> dict:
    """Validate k and the AuxK options, filling in aux_k's default."""
    F_ = config.d_sae
    options["k"] = check_int(arch, "k", options["k"], 1, F_ - 1)
    if options["aux_k"] is None:
        options["aux_k"] = max(1, min(DEFAULT_AUX_K, F_ // 2))
    options["aux_k"] = check_int(arch, "aux_k", options["aux_k"], 1, F_)
    options["aux_coeff"] = check_float(arch, "aux_coeff", options["aux_coeff"])
    return options


def dead_in_batch(step: StepInput, codes: SparseCodes | Tensor, n_latents: int, device) -> Tensor | None:
    """Boolean ``[F]``: the trainer's dead mask less the latents that fire in ``codes``; None when none is dead.

    ``step.dead_F`` is counted up to the previous batch; as in Gao et al., this batch counts first.
    Firing is taken over every process's rows, so that every process drops the same latents.
    """
    # One host sync per step; it skips the rest entirely while no latent is dead (the usual case).
    if step.dead_F is None or not bool(step.dead_F.any()):
        return None
    fired_F = step.reduce.max_(fired_latents(codes, n_latents).to(torch.int32)).bool()
    dead_F = step.dead_F.to(device) & ~fired_F
    return dead_F if bool(dead_F.any()) else None


class AuxKDictionary(Dictionary):
    """A Dictionary with an AuxK loss term over the latents the step input calls dead."""

    OPTIONS = {"k": None, "aux_k": None, "aux_coeff": 1 / 32}
    REQUIRED = ("k",)
    EXAMPLE = {"k": 4}
    # Until 0.1 the dictionary counted firing itself (10M rows, so AuxK never started in short runs).
    RETIRED_OPTIONS = {"dead_after_tokens": "the trainer decides which latents are dead; set "
                                            "TrainConfig.dead_after_tokens (by default a fifth of the run)"}
    RETIRED_TENSORS = ("tokens_since_fired",)

    @classmethod
    def _check_options(cls, options, config):
        return check_auxk_options(cls.arch, options, config)

    def _dead_indices(self, step: StepInput, codes: SparseCodes | Tensor) -> Tensor | None:
        """Indices of the dead latents (``dead_in_batch``), or None when there is no AuxK term to compute."""
        if not self.training or self.options["aux_coeff"] == 0:
            return None
        dead_F = dead_in_batch(step, codes, self.d_sae, self.W_dec.device)
        return None if dead_F is None else dead_F.nonzero().squeeze(1)

    def _aux_term(self, pre_NF: Tensor, residual_ND: Tensor, step: StepInput, codes: SparseCodes | Tensor) -> Tensor:
        """``aux_coeff`` times the AuxK loss; 0 when no latent is dead or outside training."""
        zero = pre_NF.new_zeros((), dtype=torch.float32)
        dead_idx = self._dead_indices(step, codes)
        if dead_idx is None:
            return zero
        # Only the dead columns are read: with few dead latents this is far cheaper than
        # masking the live ones out of the whole [N, F] matrix.
        k = min(self.options["aux_k"], dead_idx.numel())
        values_NK, local_NK = pre_NF.index_select(1, dead_idx).topk(k, dim=-1, sorted=False)
        values_NK = torch.relu(values_NK)
        # Flat views: a crosscoder's [F, S, D] decoder and [N, S, D] residual become [F, S*D], [N, S*D].
        W_dec_FO = self.W_dec.reshape(self.d_sae, -1)
        recon_NO = F.embedding_bag(dead_idx[local_NK], W_dec_FO, per_sample_weights=values_NK, mode="sum")
        return self.options["aux_coeff"] * reconstruction_mse(recon_NO, residual_ND.reshape(recon_NO.shape).detach())

    def _aux_term_sparse(self, encoding: fast_topk.DenseEncoding, recon_NO: Tensor, codes: SparseCodes,
                         W_dec_FO: Tensor, target_NO: Tensor, step: StepInput) -> Tensor:
        """``_aux_term`` for the fast path: the same loss, with gradients only at the chosen entries.

        ``codes`` are the step's selected entries (which latents fired). Call it before the
        pre-activations are recycled into the codes.
        """
        zero = encoding.pre_NF.new_zeros((), dtype=torch.float32)
        dead_idx = self._dead_indices(step, codes)
        if dead_idx is None:
            return zero  # the usual case, so the residual is only formed below
        k = min(self.options["aux_k"], dead_idx.numel())
        with torch.no_grad():
            local_NK = encoding.pre_NF.index_select(1, dead_idx).topk(k, dim=-1, sorted=False).indices
        active, values_E = fast_topk.select(encoding, dead_idx[local_NK])
        aux_recon_NO = fast_topk.decode(active, values_E, W_dec_FO)
        return self.options["aux_coeff"] * reconstruction_mse(aux_recon_NO, (target_NO - recon_NO).detach())
