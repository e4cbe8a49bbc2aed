"""A JumpReLU autoencoder's training computation as one autograd function, dense or sparse.

The plain computation (``dictionaries/jumprelu.py`` with the straight-through estimators of
``dictionaries/ste.py``) runs five dense GEMMs and a dozen ``[N, F]`` passes a step. Here, as
for ReLU (:mod:`.relu`, whose code-gradient helpers this reuses), only the encoder GEMM stays
dense once codes are sparse. The thresholds' pseudo-derivatives need the code gradient only at
the entries within ``bandwidth / 2`` of a threshold, active or not: the forward lists those
entries, and the backward computes dot products there alone.

Values and gradients equal the plain computation's (up to float summation order). Thresholds
must be positive (JumpReLU stores their logarithms), so a code is nonzero exactly where its
pre-activation is above its threshold.

Shapes: N rows, I input width, O output width, F latents, E active entries, W window entries.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import scratch, sparse
from .relu import DEFAULT_MAX_DENSITY, _dense_code_grads, _encoder_grads, _sparse_code_grads, code_density


def near_threshold(pre_NF: Tensor, threshold_F: Tensor, bandwidth: float) -> Tensor:
    """Boolean ``[N, F]``: pre-activations within ``bandwidth / 2`` of their threshold, tested in float32.

    The rectangle kernel's support, where the thresholds' pseudo-derivatives come from; the
    plain straight-through estimators (dictionaries/ste.py) use this test too.
    """
    return (pre_NF.float() - threshold_F).div_(bandwidth).abs_() < 0.5


class JumpReLUAutoencoder(torch.autograd.Function):
    """``(recon, codes, l0)`` with ``codes = pre * (pre > threshold)``, ``pre = (x - centre) @ W_enc + b_enc``,
    ``recon = codes @ W_dec`` (no bias) and ``l0`` the mean count of nonzero codes per row."""

    @staticmethod
    def forward(ctx, x_NI, W_enc_IF, b_enc_F, centre_I, W_dec_FO, threshold_F, bandwidth, max_density):
        n, f = x_NI.shape[0], b_enc_F.numel()
        xc_NI = x_NI if centre_I is None else x_NI - centre_I
        codes_NF = torch.addmm(b_enc_F, xc_NI, W_enc_IF, out=scratch.new_empty(x_NI, (n, f)))
        window = sparse.from_flat(near_threshold(codes_NF, threshold_F, bandwidth).view(-1).nonzero().squeeze(1), n, f)
        codes_NF.masked_fill_(codes_NF <= threshold_F, 0.0)
        if code_density(codes_NF) < max_density:
            active, values_E = sparse.from_dense(codes_NF)
            recon_NO = sparse.row_sums(active, values_E, W_dec_FO)
            count = values_E.numel()
        else:
            active = values_E = None
            recon_NO = codes_NF @ W_dec_FO
            count = int(torch.count_nonzero(codes_NF))
        l0 = torch.tensor(count / n, dtype=torch.float32, device=x_NI.device)  # float32, as the plain L0
        ctx.active, ctx.values_E, ctx.window, ctx.bandwidth = active, values_E, window, bandwidth
        ctx.save_for_backward(xc_NI, W_enc_IF, W_dec_FO, threshold_F, codes_NF)
        ctx.set_materialize_grads(False)
        return recon_NO, codes_NF, l0

    @staticmethod
    def backward(ctx, g_recon_NO, g_codes_NF, g_l0):
        xc_NI, W_enc_IF, W_dec_FO, threshold_F, codes_NF = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if g_recon_NO is None and g_codes_NF is None:
            g_pre = g_W_dec_FO = None
        elif ctx.active is None:
            g_pre, g_W_dec_FO = _dense_code_grads(codes_NF, W_dec_FO, g_recon_NO, g_codes_NF, None)
        else:
            g_pre, g_W_dec_FO = _sparse_code_grads(ctx.active, ctx.values_E, W_dec_FO, g_recon_NO, g_codes_NF, None)
        g_x_NI = g_W_enc_IF = g_b_enc_F = g_centre_I = None
        if g_pre is not None:
            g_x_NI, g_W_enc_IF, g_b_enc_F = _encoder_grads(g_pre, ctx.active, xc_NI, W_enc_IF, needs[0], needs[1])
            if needs[3]:
                g_centre_I = -(W_enc_IF @ g_b_enc_F)
        g_threshold_F = _threshold_grad(ctx.window, threshold_F, ctx.bandwidth, W_dec_FO, g_recon_NO, g_codes_NF,
                                        g_l0, xc_NI.shape[0]) if needs[5] else None
        return (g_x_NI, g_W_enc_IF, g_b_enc_F, g_centre_I, g_W_dec_FO if needs[4] else None, g_threshold_F,
                None, None)


def _threshold_grad(window: sparse.ActiveSet, threshold_F: Tensor, bandwidth: float, W_dec_FO: Tensor,
                    g_recon_NO: Tensor | None, g_codes_NF: Tensor | None, g_l0: Tensor | None, n: int) -> Tensor:
    """The thresholds' pseudo-derivatives (ste.py), from the code gradient at the window entries only."""
    g_F = torch.zeros_like(threshold_F, dtype=torch.float32)
    if g_recon_NO is not None or g_codes_NF is not None:
        g_code_W = W_dec_FO.new_zeros(window.cols.numel())
        if g_recon_NO is not None:
            g_code_W += sparse.sampled_dots(window, g_recon_NO, W_dec_FO)
        if g_codes_NF is not None:
            g_code_W += g_codes_NF[window.rows, window.cols]
        g_F -= threshold_F.float() / bandwidth * sparse.latent_totals(window, g_code_W.float())
    if g_l0 is not None:
        counts_F = torch.bincount(window.cols, minlength=threshold_F.numel())
        g_F -= g_l0.float() * counts_F / (bandwidth * n)
    return g_F.to(threshold_F.dtype)


def jumprelu_autoencode(x_NI: Tensor, W_enc_IF: Tensor, b_enc_F: Tensor, centre_I: Tensor | None, W_dec_FO: Tensor,
                        threshold_F: Tensor, bandwidth: float, max_density: float = DEFAULT_MAX_DENSITY
                        ) -> tuple[Tensor, Tensor, Tensor]:
    """``(codes @ W_dec, codes, mean nonzero codes per row)`` for JumpReLU codes (positive thresholds).

    ``centre_I`` (or None) is subtracted from the input before encoding; add the decoder bias
    to the reconstruction yourself. ``max_density`` 0 forces the dense path, 1 the sparse one.
    """
    return JumpReLUAutoencoder.apply(x_NI, W_enc_IF, b_enc_F, centre_I, W_dec_FO, threshold_F, bandwidth,
                                     max_density)
