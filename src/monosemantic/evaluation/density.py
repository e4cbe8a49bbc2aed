"""How often each latent fires on the evaluation tokens: dead, dense, and the log10 histogram.

A latent *fires* on a token when its code is nonzero (not "> 0": baseline codes such as the
neuron basis or PCA projections are signed). *Dead* latents fire on no evaluation token;
*dense* ones on more than ``dense_threshold`` of them (10% by default, after Anthropic's
"ultralow/high density" reading of the histogram). The histogram's bin edges are fixed by
the config, not by the data, so histograms of different dictionaries line up bin for bin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .results import Result


@dataclass(frozen=True)
class DensityResult(Result):
    n_tokens: int  # evaluation tokens the counts are over
    n_latents: int
    dead: int  # latents that never fired
    dense: int  # latents firing on more than dense_threshold of the tokens
    dead_fraction: float
    dense_fraction: float
    dense_threshold: float
    histogram_edges: tuple[float, ...]  # log10 density, histogram_bins + 1 edges up to 0
    histogram_counts: tuple[int, ...]  # live latents per bin; densities below the first edge go in bin 0
    below_histogram: int  # live latents whose density is below the first edge (also counted in bin 0)


def density_summary(fire_counts_F: Tensor, n_tokens: int, *, dense_threshold: float = 0.1,
                    histogram_low: float = -7.0, histogram_bins: int = 35) -> DensityResult:
    """Summary of per-latent firing counts over ``n_tokens`` tokens (dead latents are not in the histogram)."""
    counts_F = fire_counts_F.detach().to("cpu", torch.float64)
    density_F = counts_F / n_tokens
    live_F = counts_F > 0
    dead, dense = int((~live_F).sum()), int((density_F > dense_threshold).sum())
    n_latents = counts_F.numel()
    # low * (bins - i) / bins rather than linspace: round edges such as -2.0 come out exact, so a
    # density of exactly 1e-2 lands in the bin that starts at -2, not in the one below.
    steps = torch.arange(histogram_bins, -1, -1, dtype=torch.float64)
    edges = histogram_low * steps / histogram_bins
    log_density = density_F[live_F].log10()
    below = int((log_density < histogram_low).sum())
    # Clamped into range so every live latent is counted: a density of 1 is log10 = 0, the last edge.
    bins = torch.bucketize(log_density.clamp(histogram_low, 0.0), edges, right=True).sub(1)
    histogram = torch.bincount(bins.clamp(0, histogram_bins - 1), minlength=histogram_bins)
    return DensityResult(
        n_tokens=n_tokens, n_latents=n_latents, dead=dead, dense=dense,
        dead_fraction=dead / n_latents if n_latents else math.nan,
        dense_fraction=dense / n_latents if n_latents else math.nan, dense_threshold=dense_threshold,
        histogram_edges=tuple(float(e) + 0.0 for e in edges),  # + 0.0 makes the last edge 0.0, not -0.0
        histogram_counts=tuple(int(c) for c in histogram), below_histogram=below)
