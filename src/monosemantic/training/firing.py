"""How long since each latent fired, counted in training rows: the basis of "dead" latents.

Dictionaries of the top-k family keep this count themselves (``tokens_since_fired``, which
their AuxK loss reads); for the others the trainer keeps an identical counter. Either way the
trainer reads one ``counts_F`` tensor, and under data parallelism makes it global: a latent
that fired on any rank's rows has fired.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..dictionaries import Dictionary, LossOutput


class Firing:
    """The rows-since-fired counter of one dictionary."""

    def __init__(self, dictionary: Dictionary, device: torch.device):
        own = getattr(dictionary, "tokens_since_fired", None)
        # Owned here when the dictionary has no counter of its own; then it goes in checkpoints.
        self.owned = not isinstance(own, Tensor)
        self.counts_F = torch.zeros(dictionary.d_sae, dtype=torch.int64, device=device) if self.owned else own

    @torch.no_grad()
    def update_(self, out: LossOutput, replicas) -> None:
        """Count this step's rows (this rank's codes in ``out``; ``replicas`` makes it global)."""
        if not self.owned and replicas.world == 1:
            return  # the dictionary's own count is already right
        local_rows = out.recon.shape[0]
        fired_F = replicas.any_(_fired(out, self.counts_F.shape[0]))
        global_rows = local_rows * replicas.world
        # A dictionary with its own counter has counted its local rows already: where it saw no
        # firing, its count is the old one plus local_rows, so swap those for the global rows.
        since_F = self.counts_F + (global_rows if self.owned else global_rows - local_rows)
        self.counts_F.copy_(torch.where(fired_F, torch.zeros_like(since_F), since_F))

    def dead(self, window: int) -> Tensor:
        """Boolean ``[F]``: latents that have not fired for ``window`` rows."""
        return self.counts_F >= window

    @torch.no_grad()
    def reset_(self, latents_F: Tensor) -> None:
        self.counts_F[latents_F] = 0


def _fired(out: LossOutput, n_latents: int) -> Tensor:
    """Boolean ``[F]``: latents active on some row of the step's codes (dense or sparse)."""
    if out.codes is None:
        return out.sparse.fired(n_latents)
    # Codes of every trained architecture are non-negative, so a column max > 0 means "fired";
    # one reduction is ~4x cheaper than materialising a [N, F] boolean mask first.
    return out.codes.reshape(-1, n_latents).amax(dim=0) > 0
