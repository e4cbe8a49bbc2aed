"""Top-k dictionaries (Gao et al. 2024): each row keeps its k largest ReLU pre-activations.

Sparsity is enforced by construction, so there is no sparsity penalty; the AuxK term revives
dead latents. Training goes through the sparse path: the decoder is an ``embedding_bag`` over
the k selected rows of ``W_dec``, so decoding and its backward touch only those latents.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kernels import topk as fast_topk
from .auxk import AuxKDictionary
from .base import reconstruction_mse
from .registry import register
from .step import LossOutput, SparseCodes, StepInput, loss_terms


@register("topk")
class TopKDictionary(AuxKDictionary):
    SUMMARY = "the k largest pre-activations of each row, with AuxK for dead latents (Gao et al. 2024)"
    SPARSITY_OPTION = "k"

    def _select(self, pre_NF: Tensor) -> SparseCodes:
        values_NK, indices_NK = pre_NF.topk(self.options["k"], dim=-1)
        return SparseCodes(torch.relu(values_NK), indices_NK)

    def _activate(self, pre_NF: Tensor) -> Tensor:
        values_NK, indices_NK = self._select(pre_NF)
        return torch.zeros_like(pre_NF).scatter(-1, indices_NK, values_NK)

    def encode_sparse(self, x_ND: Tensor) -> SparseCodes:
        """The k active latents of each row, without materialising dense codes."""
        return self._select(self.pre_acts(x_ND))

    def decode_sparse(self, values_NK: Tensor, indices_NK: Tensor, x_ND: Tensor | None = None) -> Tensor:
        """``decode`` of sparse codes: sums the selected decoder rows, weighted by their values."""
        recon_ND = F.embedding_bag(indices_NK, self.W_dec, per_sample_weights=values_NK.to(self.W_dec.dtype),
                                   mode="sum")
        return self._add_skip(recon_ND + self.b_dec, x_ND)

    def _loss(self, x_ND: Tensor, target_ND: Tensor, step: StepInput) -> LossOutput:
        if self._fast_path_applies(x_ND):
            return self._fast_loss(x_ND, target_ND, step)
        pre_NF = self.pre_acts(x_ND)
        codes = self._select(pre_NF)
        recon_ND = self.decode_sparse(codes.values, codes.indices, x_ND)
        mse = reconstruction_mse(recon_ND, target_ND)
        aux = self._aux_term(pre_NF, target_ND - recon_ND, step, codes)
        codes_NF = torch.zeros_like(pre_NF).scatter(-1, codes.indices, codes.values) if step.dense_codes else None
        return LossOutput(mse + aux, loss_terms(mse, aux=aux), recon_ND, codes_NF, codes)

    def _fast_loss(self, x_ND: Tensor, target_ND: Tensor, step: StepInput) -> LossOutput:
        """``_loss`` through the top-k kernel: one dense GEMM, every other product over the k selected latents."""
        centre_D = self.b_dec if self.apply_b_dec_to_input else None
        selected = fast_topk.autoencode(x_ND, self.W_enc, self.b_enc, centre_D, self.W_dec, self.b_dec,
                                        self.options["k"])
        recon_ND = self._add_skip(selected.recon_NO, x_ND)
        mse = reconstruction_mse(recon_ND, target_ND)
        codes = SparseCodes(selected.values_NK, selected.indices_NK)
        aux = self._aux_term_sparse(selected.encoding, recon_ND, codes, self.W_dec, target_ND, step)
        codes_NF = fast_topk.recycle_into_codes(selected.encoding, codes.indices, codes.values) \
            if step.dense_codes else None
        return LossOutput(mse + aux, loss_terms(mse, aux=aux), recon_ND, codes_NF, codes)
