"""How long since each latent fired, counted in training rows: the one basis of "dead" latents.

The trainer keeps one counter per dictionary, and one window (``TrainConfig.dead_window``,
resolved against the run's length) turns it into the dead mask that AuxK, resampling and the
logged dead fraction all read. Under data parallelism the count is global: a latent that fired
on any rank's rows has fired.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..dictionaries import Dictionary, LossOutput


class Firing:
    """The rows-since-fired counter of one dictionary (saved in checkpoints)."""

    def __init__(self, dictionary: Dictionary, device: torch.device):
        self.counts_F = torch.zeros(dictionary.d_sae, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update_(self, out: LossOutput, replicas) -> None:
        """Count this step's rows (this rank's codes in ``out``; ``replicas`` makes it global)."""
        fired_F = replicas.any_(out.fired(self.counts_F.shape[0]))
        self.counts_F += out.recon.shape[0] * replicas.world
        self.counts_F.masked_fill_(fired_F, 0)

    def dead(self, window: int) -> Tensor:
        """Boolean ``[F]``: latents that have not fired for ``window`` rows."""
        return self.counts_F >= window

    @torch.no_grad()
    def reset_(self, latents_F: Tensor) -> None:
        self.counts_F[latents_F] = 0
