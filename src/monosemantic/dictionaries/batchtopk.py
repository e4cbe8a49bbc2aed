"""BatchTopK dictionaries (Bussmann et al. 2024): top ``k * rows`` activations over the whole batch.

Rows share a budget of k latents on average, so easy tokens use fewer and hard ones more. The
selection depends on the batch, so inference uses a learned global threshold instead: an
exponential moving average of the smallest positive activation kept in each training batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..kernels import sparse
from ..kernels import topk as fast_topk
from ..kernels.sparse import ActiveSet
from .auxk import AuxKDictionary
from .base import reconstruction_mse
from .options import check_float
from .registry import register
from .step import LOCAL, BatchReduce, LossOutput, SparseCodes, StepInput, loss_terms


@register("batchtopk")
class BatchTopKDictionary(AuxKDictionary):
    SUMMARY = ("the k * rows largest pre-activations of the batch; a learned threshold at inference "
               "(Bussmann et al. 2024)")
    SPARSITY_OPTION = "k"
    OPTIONS = {**AuxKDictionary.OPTIONS, "threshold_beta": 0.99}
    FLOAT32_TENSORS = ("threshold",)
    CALIBRATES = True
    threshold: Tensor  # a buffer, registered in __init__

    def __init__(self, config):
        super().__init__(config)
        # 0 means "not yet estimated"; the first training batch sets it directly.
        self.register_buffer("threshold", torch.zeros((), dtype=torch.float32))

    @classmethod
    def _check_options(cls, options, config):
        options = super()._check_options(options, config)
        options["threshold_beta"] = check_float(cls.arch, "threshold_beta", options["threshold_beta"], 0.0, 1.0,
                                                low_open=False)
        return options

    def _activate(self, pre_NF: Tensor) -> Tensor:
        return self._select_batch(pre_NF, LOCAL) if self.training else pre_NF * (pre_NF > self.threshold)

    def _select_batch(self, pre_NF: Tensor, reduce: BatchReduce) -> Tensor:
        """Codes keeping the top ``k * rows`` pre-activations of the global batch (``reduce`` reaches it)."""
        flat = pre_NF.flatten()
        budget = self.options["k"] * pre_NF.shape[0]
        if reduce.world == 1:
            values, indices = flat.topk(min(budget, flat.numel()), sorted=False)
            return torch.zeros_like(flat).scatter(0, indices, torch.relu(values)).view_as(pre_NF)
        # The global batch's top k * rows lie among each process's own top k * rows * world, so
        # gathering those gives the global cut-off; entries at or above it are kept.
        budget *= reduce.world
        local = flat.detach().topk(min(budget, flat.numel()), sorted=False).values
        cutoff = reduce.gather_rows(local).topk(budget, sorted=False).values.min()
        return torch.where(flat >= cutoff, torch.relu(flat), 0.0).view_as(pre_NF)

    @torch.no_grad()
    def _update_threshold_(self, smallest: Tensor, reduce: BatchReduce) -> None:
        """Moves the threshold towards ``smallest``, this process's smallest kept activation (inf: none)."""
        # All tensor ops, so that no GPU synchronisation is needed per step.
        smallest = -reduce.max_(-smallest.float())  # the global batch's smallest
        beta = self.options["threshold_beta"]
        ema = torch.where(self.threshold > 0, beta * self.threshold + (1 - beta) * smallest, smallest)
        self.threshold.copy_(torch.where(torch.isfinite(smallest), ema, self.threshold))

    def _train_codes(self, x_ND: Tensor, step: StepInput) -> tuple[Tensor, Tensor]:
        """(pre-activations, codes) of a training batch; updates the threshold in training mode."""
        pre_NF = self.pre_acts(x_ND)
        if not self.training:
            return pre_NF, self._activate(pre_NF)
        codes_NF = self._select_batch(pre_NF, step.reduce)
        self._update_threshold_(_smallest_kept(codes_NF), step.reduce)
        return pre_NF, codes_NF

    @torch.no_grad()
    def calibrate_(self, x_ND: Tensor, l0: float | None = None, batch_size: int = 4096) -> None:
        """The threshold training would set from batches of ``x_ND``, the weights as they are.

        An untrained copy's threshold is 0 ("not yet estimated"), at which every positive
        pre-activation fires (half the latents); estimated like this, it keeps k per row on
        average, as its trained counterpart does, so ``l0`` is not needed.
        """
        x_ND = self._rows(x_ND, self.d_in, "calibration rows")
        self.threshold.zero_()
        for x_BD in x_ND.split(batch_size):
            codes_BF = self._select_batch(self.pre_acts(x_BD), LOCAL)
            self._update_threshold_(_smallest_kept(codes_BF), LOCAL)

    def _scale_codes_(self, factor: float) -> None:
        super()._scale_codes_(factor)
        self.threshold.mul_(factor)

    def _loss(self, x_ND: Tensor, target_ND: Tensor, step: StepInput) -> LossOutput:
        if self.training and self._fast_path_applies(x_ND):
            selected = self._fast_train_codes(x_ND, step)
            recon_ND = self._add_skip(fast_topk.decode(selected.active, selected.values_E, self.W_dec, self.b_dec),
                                      x_ND)
            mse = reconstruction_mse(recon_ND, target_ND)
            return self._fast_output(selected, target_ND, recon_ND, mse, mse, step)
        pre_NF, codes_NF = self._train_codes(x_ND, step)
        recon_ND = self.decode(codes_NF, x_ND)
        mse = reconstruction_mse(recon_ND, target_ND)
        aux = self._aux_term(pre_NF, target_ND - recon_ND, step, codes_NF)
        return LossOutput(mse + aux, loss_terms(mse, aux=aux), recon_ND, codes_NF)

    # ----- the CPU fast path (kernels.topk): one dense GEMM, everything else over the kept entries

    def _fast_train_codes(self, x_ND: Tensor, step: StepInput) -> BatchSelection:
        """``_train_codes`` through the kernels: the kept entries of the batch, and the threshold updated."""
        centre_D = self.b_dec if self.apply_b_dec_to_input else None
        encoding = fast_topk.encode_dense(x_ND, self.W_enc, self.b_enc, centre_D)
        active = sparse.from_flat(self._kept_positions(encoding.pre_NF, step.reduce), *encoding.pre_NF.shape)
        values_E = fast_topk.select_entries(encoding, active)
        smallest = values_E.detach().min() if values_E.numel() else values_E.new_tensor(torch.inf)
        self._update_threshold_(smallest, step.reduce)
        return BatchSelection(encoding, active, values_E)

    def _kept_positions(self, pre_NF: Tensor, reduce: BatchReduce) -> Tensor:
        """Ascending row-major positions of the positive entries among the global batch's top ``k * rows``.

        The same entries as ``_select_batch`` keeps with a nonzero code (ties aside).
        """
        budget = self.options["k"] * pre_NF.shape[0] * reduce.world
        positions_C = fast_topk.top_entries(pre_NF, min(budget, pre_NF.numel()))
        values_C = pre_NF.view(-1).index_select(0, positions_C)
        keep_C = values_C > 0
        if reduce.world > 1:
            keep_C &= values_C >= reduce.gather_rows(values_C).topk(budget, sorted=False).values.min()
        return positions_C[keep_C].sort().values

    def _fast_output(self, selected: BatchSelection, target_ND: Tensor, recon_ND: Tensor, mse: Tensor,
                     loss: Tensor, step: StepInput) -> LossOutput:
        """The step's output from its reconstruction error and main loss: AuxK added, codes as ``step`` asks."""
        # Entries in any number per row: every entry of the batch as one row of sparse codes.
        codes = SparseCodes(selected.values_E.view(1, -1), selected.active.cols.view(1, -1))
        aux = self._aux_term_sparse(selected.encoding, recon_ND, codes, self.W_dec, target_ND, step)
        codes_NF = (fast_topk.recycle_entries_into_codes(selected.encoding, selected.active, selected.values_E)
                    if step.dense_codes else None)
        return LossOutput(loss + aux, loss_terms(mse, aux=aux), recon_ND, codes_NF, codes)


def _smallest_kept(codes_NF: Tensor) -> Tensor:
    """The smallest positive code (inf when none is positive), outside autograd."""
    return torch.where(codes_NF > 0, codes_NF, torch.inf).detach().min()


class BatchSelection(NamedTuple):
    """A training batch's BatchTopK selection through the kernels."""

    encoding: fast_topk.DenseEncoding  # the dense pre-activations (recycled into codes last)
    active: ActiveSet  # the kept (row, latent) entries, row-major
    values_E: Tensor  # their activations, carrying gradients to the encoder
