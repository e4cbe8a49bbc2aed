"""The training computation of top-k dictionaries with one dense GEMM.

Only the encoder's forward needs every pre-activation (to select the top k). It runs once,
outside autograd; the selected entries are then read out through :class:`SelectedPreActs`,
whose backward touches only those entries, and decoded through :class:`SparseDecode`. So
dW_enc, db_enc, the decoder and dW_dec all cost O(N k D) instead of O(N F D), and no dense
``[N, F]`` gradient is ever built. Values and gradients equal those of the dense computation
(up to float summation order).

Shapes: N rows, I input width, O output width, F latents, K selected per row, E = N*K entries.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from . import scratch, sparse
from .sparse import ActiveSet


class DenseEncoding(NamedTuple):
    """Pre-activations computed without autograd, and the tensors their gradients flow to."""

    pre_NF: Tensor  # no autograd history; may be recycled into the codes at the end of a step
    xc_NI: Tensor  # the (centred) input the GEMM saw, no autograd history
    x_NI: Tensor
    W_enc_IF: Tensor
    b_enc_F: Tensor
    centre_I: Tensor | None  # subtracted from the input before encoding, or None


def encode_dense(x_NI: Tensor, W_enc_IF: Tensor, b_enc_F: Tensor, centre_I: Tensor | None) -> DenseEncoding:
    """``(x - centre) @ W_enc + b_enc`` as a plain tensor, with what selections need for gradients."""
    with torch.no_grad():
        xc_NI = x_NI if centre_I is None else torch.sub(x_NI, centre_I, out=scratch.new_empty(x_NI))
        pre_NF = scratch.new_empty(x_NI, (x_NI.shape[0], W_enc_IF.shape[1]))
        # The bias added after the product, in place: addmm would first broadcast it into all of
        # [N, F] for the GEMM to read back, measured ~1.5% slower in whole top-k steps.
        torch.mm(xc_NI, W_enc_IF, out=pre_NF).add_(b_enc_F)
    return DenseEncoding(pre_NF, xc_NI, x_NI, W_enc_IF, b_enc_F, centre_I)


# Blocks for the top-k pre-selection: 32 contiguous latents, then sub-blocks of 4 inside them.
# Powers of two, so that positions split into (block, offset) by shifts and masks: integer
# division and remainder of int64 tensors cost several times more.
_BLOCK, _SUB_BLOCK = 32, 4
_BLOCK_BITS, _SUB_BLOCK_BITS = _BLOCK.bit_length() - 1, _SUB_BLOCK.bit_length() - 1


def top_indices(pre_NF: Tensor, k: int) -> Tensor:
    """``[N, K]`` int64: the k largest pre-activations of each row (any order; ties broken arbitrarily).

    ``torch.topk`` over [4096, 4608] takes about half as long as the encoder GEMM on a 2-core
    CPU, so candidates are narrowed first. The k largest entries lie in the k blocks with the
    largest maxima (any other block's maximum is below the k maxima, each an entry of its
    block), and likewise for sub-blocks inside those; so top-k over block maxima, then over
    sub-block maxima, then over the remaining k * 4 entries gives the exact top k.
    """
    n, f = pre_NF.shape
    if f % _BLOCK or f // _BLOCK < 2 * k or not pre_NF.is_contiguous():
        return pre_NF.topk(k, dim=-1, sorted=False).indices
    blocks_NK = _top_blocks(pre_NF.view(n, f // _BLOCK, _BLOCK), k)
    cand_NCS = _gather_blocks(pre_NF.view(n, f // _BLOCK, _BLOCK), blocks_NK).view(n, -1, _SUB_BLOCK)
    subs_NK = _top_blocks(cand_NCS, k)  # sub-blocks of the k * 32 candidates
    final_NM = _gather_blocks(cand_NCS, subs_NK).view(n, k * _SUB_BLOCK)
    local_NK = final_NM.topk(k, dim=-1, sorted=False).indices  # in [0, k * 4)
    position_NK = _join(subs_NK.gather(1, local_NK >> _SUB_BLOCK_BITS), local_NK, _SUB_BLOCK_BITS)  # in [0, k * 32)
    return _join(blocks_NK.gather(1, position_NK >> _BLOCK_BITS), position_NK, _BLOCK_BITS)


def top_entries(pre_NF: Tensor, count: int) -> Tensor:
    """``[count]`` int64: row-major positions of the ``count`` largest entries of the whole matrix (any order).

    BatchTopK's selection. The same block pre-selection as :func:`top_indices`, over the matrix
    as one row: ~8x faster than ``torch.topk`` of the flat [4096 * 4608] matrix for 32 * 4096
    entries on a 2-core CPU.
    """
    return top_indices(pre_NF.reshape(1, -1), count).view(-1)


def _join(block_NK: Tensor, position_NK: Tensor, bits: int) -> Tensor:
    """``block * 2**bits + position % 2**bits``: a position inside a chosen block made global."""
    return (block_NK << bits) | (position_NK & ((1 << bits) - 1))


def _top_blocks(blocks_NBS: Tensor, k: int) -> Tensor:
    """``[N, K]``: the k blocks (dim 1) with the largest maxima."""
    return blocks_NBS.amax(-1).topk(k, dim=-1, sorted=False).indices


def _gather_blocks(blocks_NBS: Tensor, chosen_NK: Tensor) -> Tensor:
    """``[N, K, S]``: the chosen blocks of each row. index_select of whole blocks copies each
    in one piece, several times faster than gather's per-element indexing."""
    n, n_blocks, size = blocks_NBS.shape
    flat_NK = torch.arange(n, device=chosen_NK.device)[:, None] * n_blocks + chosen_NK
    out = scratch.new_empty(blocks_NBS, (flat_NK.numel(), size))
    return torch.index_select(blocks_NBS.reshape(-1, size), 0, flat_NK.flatten(), out=out).view(n, -1, size)


class SelectedPreActs(torch.autograd.Function):
    """Pre-activations at the active entries ``[E]``; gradients flow to x, W_enc, b_enc and the centre."""

    @staticmethod
    def forward(ctx, pre_NF, xc_NI, x_NI, W_enc_IF, b_enc_F, centre_I, active):
        ctx.active = active
        ctx.save_for_backward(xc_NI, W_enc_IF)
        return pre_NF.reshape(-1).index_select(0, sparse.flat_positions(active))

    @staticmethod
    def backward(ctx, g_E):
        xc_NI, W_enc_IF = ctx.saved_tensors
        active, needs = ctx.active, ctx.needs_input_grad
        g_b_enc_F = sparse.latent_totals(active, g_E)
        g_x_NI = sparse.row_sums(active, g_E, W_enc_IF.T.contiguous()) if needs[2] else None
        # dW_enc = xc.T @ dpre, with dpre nonzero only at the entries: one sum per latent.
        g_W_enc_IF = sparse.latent_sums(active, g_E, xc_NI).T if needs[3] else None
        # pre = (x - centre) @ W_enc + b_enc, so d/dcentre = -W_enc @ (sum over rows of dpre).
        g_centre_I = -(W_enc_IF @ g_b_enc_F) if needs[5] else None
        return None, None, g_x_NI, g_W_enc_IF, g_b_enc_F, g_centre_I, None


class SparseDecode(torch.autograd.Function):
    """``codes @ W_dec + bias`` ``[N, O]`` for codes given by their values at the active entries."""

    @staticmethod
    def forward(ctx, values_E, W_dec_FO, bias_O, active):
        ctx.active = active
        ctx.save_for_backward(values_E, W_dec_FO)
        recon_NO = sparse.row_sums(active, values_E, W_dec_FO)
        return recon_NO if bias_O is None else recon_NO.add_(bias_O)  # in place: no second [N, O] tensor

    @staticmethod
    def backward(ctx, g_NO):
        values_E, W_dec_FO = ctx.saved_tensors
        active, needs = ctx.active, ctx.needs_input_grad
        g_values_E = sparse.sampled_dots(active, g_NO, W_dec_FO) if needs[0] else None
        g_W_dec_FO = sparse.latent_sums(active, values_E, g_NO) if needs[1] else None
        g_bias_O = g_NO.sum(0) if needs[2] else None
        return g_values_E, g_W_dec_FO, g_bias_O, None


def select(encoding: DenseEncoding, indices_NK: Tensor) -> tuple[ActiveSet, Tensor]:
    """(the entries ``indices`` names, ReLU of their pre-activations ``[E]``, differentiable)."""
    active = sparse.from_indices(indices_NK, encoding.pre_NF.shape[1])
    return active, select_entries(encoding, active)


def select_entries(encoding: DenseEncoding, active: ActiveSet) -> Tensor:
    """ReLU of the pre-activations at ``active``'s entries ``[E]``, differentiable."""
    return torch.relu(SelectedPreActs.apply(*encoding, active))


def decode(active: ActiveSet, values_E: Tensor, W_dec_FO: Tensor, bias_O: Tensor | None = None) -> Tensor:
    """``codes @ W_dec + bias`` (bias optional), differentiable in the values, W_dec and the bias."""
    return SparseDecode.apply(values_E, W_dec_FO, bias_O, active)


def recycle_into_codes(encoding: DenseEncoding, indices_NK: Tensor, values_NK: Tensor) -> Tensor:
    """Dense codes ``[N, F]`` written over the pre-activations, which are no longer needed.

    Reusing that buffer saves allocating (and, for a fresh 75 MB block, page-faulting) another
    ``[N, F]`` tensor each step. The codes stay differentiable in the values.
    """
    return encoding.pre_NF.zero_().scatter_(1, indices_NK, values_NK)


def recycle_entries_into_codes(encoding: DenseEncoding, active: ActiveSet, values_E: Tensor) -> Tensor:
    """:func:`recycle_into_codes` for entries in any number per row."""
    pre_NF = encoding.pre_NF
    return pre_NF.zero_().view(-1).scatter_(0, sparse.flat_positions(active), values_E).view(pre_NF.shape)


class TopKStep(NamedTuple):
    """A top-k autoencoder's forward through these kernels, with what the AuxK term and codes reuse."""

    encoding: DenseEncoding  # the dense pre-activations (recycled into codes last)
    indices_NK: Tensor  # the k selected latents of each row
    values_NK: Tensor  # their activations, carrying gradients to the encoder
    recon_NO: Tensor  # codes @ W_dec + b_dec, carrying gradients to the decoder and the values


def autoencode(x_NI: Tensor, W_enc_IF: Tensor, b_enc_F: Tensor, centre_I: Tensor | None, W_dec_FO: Tensor,
               b_dec_O: Tensor, k: int) -> TopKStep:
    """The top-k family's one entry point: encode densely once, keep the top k, decode sparsely."""
    encoding = encode_dense(x_NI, W_enc_IF, b_enc_F, centre_I)
    indices_NK = top_indices(encoding.pre_NF, k)
    active, values_E = select(encoding, indices_NK)
    return TopKStep(encoding, indices_NK, values_E.view(indices_NK.shape), decode(active, values_E, W_dec_FO, b_dec_O))
