"""A ReLU autoencoder's training computation as one autograd function, dense or sparse.

Under plain autograd a ReLU step builds half a dozen ``[N, F]`` temporaries (ReLU, weighting,
abs, and the gradient of each), which on a CPU costs as much as a sixth GEMM. Here the forward
keeps one ``[N, F]`` tensor (pre-activations, rectified in place into the codes) and the
backward one (the code gradient, masked in place), around the five GEMMs a step needs.

Once training has made codes sparse, only active entries carry gradient: below
``max_density`` the decoder forward and all backward products run over the active entries
(:mod:`.sparse`), so only the encoder GEMM stays dense. Values and gradients are those of
the dense computation either way (up to float summation order).

Shapes: N rows, I input width, O output width, F latents, E active entries.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import scratch, sparse

# Density (fraction of nonzero codes) below which the sparse path runs. At N=4096, D=576,
# F=4608 on a 2-core AVX-512 CPU a step takes 154 ms sparse vs 358 ms dense at 1.2% density,
# 258 vs 373 ms at 3.2%: the crossover is near 5% (a multiply-add over gathered rows costs
# about 20x one inside a GEMM). 4% keeps a margin for machines with relatively slower gathers.
DEFAULT_MAX_DENSITY = 0.04
# Density is estimated on this many evenly spaced rows: deciding costs no full pass.
_DENSITY_SAMPLE_ROWS = 256


def code_density(codes_NF: Tensor) -> float:
    """The fraction of nonzero codes, estimated on evenly spaced rows."""
    stride = max(1, codes_NF.shape[0] // _DENSITY_SAMPLE_ROWS)
    sample = codes_NF[::stride]
    return int(torch.count_nonzero(sample)) / max(1, sample.numel())


class ReLUAutoencoder(torch.autograd.Function):
    """``(recon, codes, penalty)`` with ``codes = relu((x - centre) @ W_enc + b_enc)``,
    ``recon = codes @ W_dec`` (no bias) and ``penalty = sum_f colsum(codes)_f * weight_f / N``."""

    @staticmethod
    def forward(ctx, x_NI, W_enc_IF, b_enc_F, centre_I, W_dec_FO, weight_F, max_density):
        n = x_NI.shape[0]
        xc_NI = x_NI if centre_I is None else x_NI - centre_I
        codes_NF = torch.addmm(b_enc_F, xc_NI, W_enc_IF, out=scratch.new_empty(x_NI, (n, b_enc_F.numel()))).relu_()
        if code_density(codes_NF) < max_density:
            active, values_E = sparse.from_dense(codes_NF)
            recon_NO = sparse.row_sums(active, values_E, W_dec_FO)
            colsum_F = sparse.latent_totals(active, values_E)
        else:
            active = values_E = None
            recon_NO = codes_NF @ W_dec_FO
            colsum_F = codes_NF.sum(0)
        penalty = colsum_F @ weight_F / n
        ctx.active, ctx.values_E = active, values_E
        ctx.save_for_backward(xc_NI, W_enc_IF, W_dec_FO, weight_F, colsum_F, codes_NF)
        ctx.set_materialize_grads(False)  # unused outputs (the codes, usually) cost nothing
        return recon_NO, codes_NF, penalty

    @staticmethod
    def backward(ctx, g_recon_NO, g_codes_NF, g_penalty):
        xc_NI, W_enc_IF, W_dec_FO, weight_F, colsum_F, codes_NF = ctx.saved_tensors
        n = xc_NI.shape[0]
        # The penalty's gradient per code: the same for every row, so one [F] vector.
        g_unit_F = None if g_penalty is None else g_penalty * weight_F / n
        if ctx.active is None:
            g_pre, g_W_dec_FO = _dense_code_grads(codes_NF, W_dec_FO, g_recon_NO, g_codes_NF, g_unit_F)
        else:
            g_pre, g_W_dec_FO = _sparse_code_grads(ctx.active, ctx.values_E, W_dec_FO, g_recon_NO, g_codes_NF,
                                                   g_unit_F)
        needs = ctx.needs_input_grad
        g_x_NI, g_W_enc_IF, g_b_enc_F = _encoder_grads(g_pre, ctx.active, xc_NI, W_enc_IF, needs[0], needs[1])
        g_centre_I = None
        if needs[3] and g_b_enc_F is not None:
            # pre = (x - centre) @ W_enc + b_enc, so d/dcentre = -W_enc @ (sum over rows of dpre).
            g_centre_I = -(W_enc_IF @ g_b_enc_F)
        if not needs[4]:
            g_W_dec_FO = None
        g_weight_F = None if g_penalty is None or not needs[5] else g_penalty * colsum_F / n
        return g_x_NI, g_W_enc_IF, g_b_enc_F, g_centre_I, g_W_dec_FO, g_weight_F, None


def _dense_code_grads(codes_NF, W_dec_FO, g_recon_NO, g_codes_NF, g_unit_F):
    """(gradient of the pre-activations [N, F], gradient of W_dec [F, O])."""
    n, f = codes_NF.shape
    if g_recon_NO is not None:
        g_NF = torch.mm(g_recon_NO, W_dec_FO.T, out=scratch.new_empty(codes_NF, (codes_NF.shape[0], f)))
        if g_unit_F is not None:
            g_NF += g_unit_F
    elif g_unit_F is not None:
        g_NF = g_unit_F.expand(n, f).clone()
    else:
        g_NF = torch.zeros_like(codes_NF)
    if g_codes_NF is not None:
        g_NF += g_codes_NF
    # ReLU's backward, in place: keep the gradient where the code is positive.
    torch.ops.aten.threshold_backward.grad_input(g_NF, codes_NF, 0, grad_input=g_NF)
    g_W_dec_FO = None if g_recon_NO is None else codes_NF.T @ g_recon_NO
    return g_NF, g_W_dec_FO


def _sparse_code_grads(active, values_E, W_dec_FO, g_recon_NO, g_codes_NF, g_unit_F):
    """(gradient of the pre-activations at the active entries [E], gradient of W_dec [F, O])."""
    g_E = values_E.new_zeros(values_E.shape)
    g_W_dec_FO = None
    if g_recon_NO is not None:
        g_E += sparse.sampled_dots(active, g_recon_NO, W_dec_FO)
        g_W_dec_FO = sparse.latent_sums(active, values_E, g_recon_NO)
    if g_unit_F is not None:
        g_E += g_unit_F[active.cols]
    if g_codes_NF is not None:
        g_E += g_codes_NF[active.rows, active.cols]
    # Inactive entries have zero ReLU derivative, so the active ones carry all the gradient.
    return g_E, g_W_dec_FO


def _encoder_grads(g_pre, active, xc_NI, W_enc_IF, need_x, need_W_enc):
    """(dx [N, I], dW_enc [I, F], db_enc [F]) from the pre-activation gradient, dense or at entries."""
    if active is None:
        g_x = g_pre @ W_enc_IF.T if need_x else None
        g_W_enc = xc_NI.T @ g_pre if need_W_enc else None
        return g_x, g_W_enc, g_pre.sum(0)
    g_x = sparse.row_sums(active, g_pre, W_enc_IF.T.contiguous()) if need_x else None
    g_W_enc = sparse.latent_sums(active, g_pre, xc_NI).T if need_W_enc else None
    return g_x, g_W_enc, sparse.latent_totals(active, g_pre)


def relu_autoencode(x_NI: Tensor, W_enc_IF: Tensor, b_enc_F: Tensor, centre_I: Tensor | None, W_dec_FO: Tensor,
                    weight_F: Tensor, max_density: float = DEFAULT_MAX_DENSITY) -> tuple[Tensor, Tensor, Tensor]:
    """``(codes @ W_dec, codes, mean over rows of sum_f codes_f * weight_f)`` for ReLU codes.

    ``centre_I`` (or None) is subtracted from the input before encoding; add the decoder bias
    to the reconstruction yourself. ``max_density`` 0 forces the dense path, 1 the sparse one.
    """
    return ReLUAutoencoder.apply(x_NI, W_enc_IF, b_enc_F, centre_I, W_dec_FO, weight_F, max_density)
