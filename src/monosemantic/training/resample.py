"""Dead-latent resampling in the manner of Bricken et al. 2023 ("Towards Monosemanticity").

Every ``resample_every`` steps, latents that have not fired during the last half of that
interval are re-initialised toward inputs the dictionary reconstructs badly:

1. score the current batch's rows by their squared reconstruction error ``e``;
2. draw one row per dead latent with probability proportional to ``e**2``;
3. decoder row = the drawn (centred) target row, normalised; encoder column = the drawn
   (centred) input row, normalised and scaled to 0.2 x the mean norm of the alive latents'
   encoder columns; encoder bias 0;
4. zero the Adam moments of every parameter entry that belongs to those latents.

"Centred" means minus ``b_dec``, which the decoder adds back anyway. The draw uses a
generator seeded by (seed, dictionary, step), so a resumed run resamples identically.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..dictionaries import Dictionary, require_single_site
from ..kernels.adam import moments
from .layout import Batch


def check_resamplable(name: str, dictionary: Dictionary) -> None:
    """MonosemanticError, before training starts, for a dictionary this resampling cannot handle."""
    require_single_site(dictionary, f"dead-latent resampling (of {name!r})", "set resample_every=None")


@torch.no_grad()
def resample_dead_(dictionary: Dictionary, optimizer: torch.optim.Optimizer, dead_F: Tensor, batch: Batch,
                   gen: torch.Generator, replicas) -> int:
    """Re-initialise the latents in ``dead_F`` (boolean ``[F]``); returns how many were resampled."""
    latents = dead_F.nonzero().squeeze(1)
    if latents.numel() == 0:
        return 0
    check_resamplable(dictionary.arch, dictionary)
    x_ND, target_ND = _global_rows(dictionary, batch, replicas)
    picks = _draw_rows(dictionary, x_ND, target_ND, latents.numel(), gen)
    enc_ND = x_ND[picks] - dictionary.b_dec if dictionary.apply_b_dec_to_input else x_ND[picks]
    dec_ND = target_ND[picks] - dictionary.b_dec
    alive_F = ~dead_F
    alive_norm = float(dictionary.W_enc[:, alive_F].norm(dim=0).mean()) if bool(alive_F.any()) else 1.0
    dictionary.W_enc[:, latents] = (_unit_rows(enc_ND) * (0.2 * alive_norm)).T.to(dictionary.W_enc.dtype)
    dictionary.W_dec[latents] = _unit_rows(dec_ND).to(dictionary.W_dec.dtype)
    for name in dictionary.LATENT_BIASES:
        getattr(dictionary, name)[latents] = 0
    _reset_moments_(dictionary, optimizer, latents)
    return latents.numel()


def _global_rows(dictionary: Dictionary, batch: Batch, replicas) -> tuple[Tensor, Tensor]:
    """The whole global batch on every rank, so that every rank draws the same rows."""
    target = batch.x if batch.target is None else batch.target
    return replicas.gather_rows(batch.x), replicas.gather_rows(target)


def _draw_rows(dictionary: Dictionary, x_ND: Tensor, target_ND: Tensor, n: int, gen: torch.Generator) -> Tensor:
    recon_ND = dictionary(x_ND).recon
    error_N = (recon_ND.float() - target_ND.float()).pow(2).sum(dim=1)
    weights_N = error_N.pow(2).double().cpu()
    if not bool(torch.isfinite(weights_N).all()) or float(weights_N.sum()) <= 0:
        weights_N = torch.ones_like(weights_N)
    replacement = n > int((weights_N > 0).sum())
    return torch.multinomial(weights_N, n, replacement=replacement, generator=gen).to(x_ND.device)


def _unit_rows(rows_ND: Tensor) -> Tensor:
    return rows_ND / rows_ND.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _reset_moments_(dictionary: Dictionary, optimizer: torch.optim.Optimizer, latents: Tensor) -> None:
    F = dictionary.d_sae
    for name, param in dictionary.named_parameters():
        if name == "W_dec":
            dim = 0
        elif name in ("b_dec", "W_skip") or param.shape[-1] != F:
            continue
        else:
            dim = param.ndim - 1
        for moment in moments(optimizer, param):
            moment.index_fill_(dim, latents.to(moment.device), 0)
