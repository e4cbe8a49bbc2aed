"""Matryoshka BatchTopK dictionaries (Bussmann et al. 2025; Nabeshima 2024).

Latents are split into consecutive groups; every prefix of groups must reconstruct the target
on its own, so early latents learn general features and later ones refine them instead of
absorbing them. Selection, the inference threshold and AuxK are BatchTopK's.
"""

from __future__ import annotations

from torch import Tensor

from ..errors import MonosemanticError
from ..kernels import sparse
from ..kernels import topk as fast_topk
from .base import reconstruction_mse
from .batchtopk import BatchSelection, BatchTopKDictionary
from .registry import register
from .step import LossOutput, StepInput, loss_terms


def default_group_sizes(d_sae: int) -> list[int]:
    """Doubling groups: F/16, F/16, F/8, F/4 and the rest (about F/2); empty groups dropped."""
    sizes = [d_sae // 16, d_sae // 16, d_sae // 8, d_sae // 4]
    sizes.append(d_sae - sum(sizes))
    return [size for size in sizes if size > 0]


@register("matryoshka")
class MatryoshkaDictionary(BatchTopKDictionary):
    SUMMARY = "BatchTopK whose nested latent prefixes each reconstruct the input (Bussmann et al. 2025)"
    OPTIONS = {**BatchTopKDictionary.OPTIONS, "group_sizes": None}

    @classmethod
    def _check_options(cls, options, config):
        options = super()._check_options(options, config)
        sizes = options["group_sizes"]
        if sizes is None:
            sizes = default_group_sizes(config.d_sae)
        valid = (isinstance(sizes, list) and sizes
                 and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes))
        if not valid or sum(sizes) != config.d_sae:
            raise MonosemanticError(
                f"matryoshka option group_sizes={sizes!r} is invalid; expected positive integers summing to "
                f"d_sae={config.d_sae}, e.g. {default_group_sizes(config.d_sae)}")
        options["group_sizes"] = sizes
        return options

    def prefix_mses(self, codes_NF: Tensor, target_ND: Tensor, x_ND: Tensor | None = None
                    ) -> tuple[list[Tensor], Tensor]:
        """(error using only each prefix of groups, shortest first; the full reconstruction)."""
        recon_ND = self._add_skip(self.b_dec.expand(codes_NF.shape[0], -1), x_ND)
        mses, start = [], 0
        for size in self.options["group_sizes"]:
            stop = start + size
            # Cumulative: each group is decoded once, not once per prefix containing it.
            recon_ND = recon_ND + codes_NF[:, start:stop] @ self.W_dec[start:stop]
            mses.append(reconstruction_mse(recon_ND, target_ND))
            start = stop
        return mses, recon_ND

    def _fast_prefix_mses(self, selected: BatchSelection, target_ND: Tensor, x_ND: Tensor
                          ) -> tuple[list[Tensor], Tensor]:
        """``prefix_mses`` of the kept entries, each group decoded through the kernels."""
        active, values_E = selected.active, selected.values_E
        positions_E = sparse.flat_positions(active)
        recon_ND = self._add_skip(self.b_dec.expand(x_ND.shape[0], -1), x_ND)
        mses, start = [], 0
        for size in self.options["group_sizes"]:
            in_group_E = (active.cols >= start) & (active.cols < start + size)
            group = sparse.from_flat(positions_E[in_group_E], active.n_rows, active.n_latents)
            recon_ND = recon_ND + fast_topk.decode(group, values_E[in_group_E], self.W_dec)
            mses.append(reconstruction_mse(recon_ND, target_ND))
            start += size
        return mses, recon_ND

    def _loss(self, x_ND: Tensor, target_ND: Tensor, step: StepInput) -> LossOutput:
        if self.training and self._fast_path_applies(x_ND):
            selected = self._fast_train_codes(x_ND, step)
            mses, recon_ND = self._fast_prefix_mses(selected, target_ND, x_ND)
            return self._fast_output(selected, target_ND, recon_ND, mses[-1], sum(mses[1:], mses[0]) / len(mses), step)
        pre_NF, codes_NF = self._train_codes(x_ND, step)
        mses, recon_ND = self.prefix_mses(codes_NF, target_ND, x_ND)
        aux = self._aux_term(pre_NF, target_ND - recon_ND, step, codes_NF)
        loss = sum(mses) / len(mses) + aux
        return LossOutput(loss, loss_terms(mses[-1], aux=aux), recon_ND, codes_NF)
