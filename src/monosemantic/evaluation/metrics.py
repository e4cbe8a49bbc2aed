"""Reconstruction quality and sparsity of a dictionary on held-out activations.

Streamed over batches: running sums in float64 (a few scalars, one ``[D_out]`` vector for the
target mean and one ``[F]`` vector of firing counts), so memory is one batch whatever the
number of tokens, and the result does not depend on how the rows were batched (beyond
float64 rounding). Metrics, all over the evaluation rows:

- ``mse``: squared error summed over the width, mean over rows (``reconstruction_mse``'s
  convention, so it matches training logs); ``fvu``: total squared error / total squared
  deviation of the target from its mean (1 means "no better than the mean");
- ``cosine``: mean cosine similarity between target and reconstruction over rows with a
  nonzero target (a zero reconstruction counts 0; a zero target has no direction to match);
- ``l0``: mean number of nonzero codes per row; ``l1``: mean sum of |codes|;
- shrinkage: ``l2_ratio`` mean of ||recon|| / ||target|| over rows with a nonzero target,
  ``norm_ratio`` sum ||recon|| / sum ||target|| (the same, weighted by norm), and
  ``relative_reconstruction_bias`` = sum ||recon||^2 / sum <recon, target>, the inverse of the
  best rescaling of the reconstructions (Wright & Sharkey 2024): below 1 means shrunk;
- firing: dead and dense latents and the log10 density histogram (see :mod:`.density`).

Crosscoder rows ``[N, S, D]`` are flattened to ``[N, S*D]``: one row is one token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..dictionaries import Dictionary
from ..errors import MonosemanticError
from ..models import eval_mode
from .density import DensityResult, density_summary
from .results import Result, ratio
from .rows import activation_batches


@dataclass(frozen=True)
class ReconstructionConfig(Result):
    batch_size: int = 4096  # rows per forward when data comes as one tensor
    max_tokens: int | None = None  # stop after this many rows (None: all)
    min_tokens: int = 2000  # fewer rows cannot resolve densities below ~1/min_tokens
    dense_threshold: float = 0.1
    histogram_low: float = -7.0  # log10 density of the histogram's first edge
    histogram_bins: int = 35


@dataclass(frozen=True)
class ReconstructionResult(Result):
    config: ReconstructionConfig
    dictionary: dict  # the evaluated dictionary's DictionaryConfig
    n_tokens: int
    mse: float
    fvu: float
    cosine: float
    l0: float
    l1: float
    l2_ratio: float
    norm_ratio: float
    relative_reconstruction_bias: float
    density: DensityResult


class _Totals:
    """Float64 running sums over batches."""

    def __init__(self, d_sae: int):
        self.rows = 0
        self.sums: dict[str, float] = dict.fromkeys(_SUM_NAMES, 0.0)
        # Target sums are kept about a shift (the first batch's mean): the variance then comes
        # from small numbers, not from the difference of two large ones when the mean is far
        # from zero (residual streams have large constant components).
        self.shift_D: Tensor | None = None
        self.shifted_sum_D: Tensor | None = None
        self.fires_F = torch.zeros(d_sae, dtype=torch.int64)

    @torch.no_grad()
    def add(self, target_ND: Tensor, recon_ND: Tensor, codes_NF: Tensor) -> None:
        t_ND, r_ND = target_ND.double(), recon_ND.double()
        if self.shift_D is None:
            self.shift_D = t_ND.mean(0)
        shifted_ND = t_ND - self.shift_D
        t_norm_N, r_norm_N = t_ND.norm(dim=1), r_ND.norm(dim=1)
        nonzero_N = t_norm_N > 0
        fired_NF = codes_NF != 0
        batch = {
            "squared_error": (r_ND - t_ND).pow(2).sum(),
            "shifted_squares": shifted_ND.pow(2).sum(),
            "cosine": torch.nn.functional.cosine_similarity(r_ND[nonzero_N], t_ND[nonzero_N], dim=1, eps=1e-30).sum(),
            "l0": fired_NF.sum(),
            "l1": codes_NF.double().abs().sum(),
            "l2_ratio": (r_norm_N[nonzero_N] / t_norm_N[nonzero_N]).sum(),
            "nonzero_rows": nonzero_N.sum(),
            "recon_norm": r_norm_N.sum(),
            "target_norm": t_norm_N.sum(),
            "squared_recon": r_ND.pow(2).sum(),
            "recon_dot_target": (r_ND * t_ND).sum(),
        }
        # One device-to-host copy per batch, not one per metric.
        values = torch.stack([v.double() for v in batch.values()]).tolist()
        for name, value in zip(batch, values):
            self.sums[name] += value
        batch_sum_D = shifted_ND.sum(0).cpu()
        self.shifted_sum_D = batch_sum_D if self.shifted_sum_D is None else self.shifted_sum_D + batch_sum_D
        self.fires_F += fired_NF.sum(0).cpu()
        self.rows += target_ND.shape[0]

    def metrics(self) -> dict[str, float]:
        s, n = self.sums, self.rows
        assert self.shifted_sum_D is not None  # callers check for rows (min_tokens >= 1) before asking
        # Total squared deviation from the mean: sum||t - c||^2 - ||sum(t - c)||^2 / n for any shift c.
        deviation = s["shifted_squares"] - float(self.shifted_sum_D.pow(2).sum()) / n
        return {"mse": s["squared_error"] / n, "fvu": ratio(s["squared_error"], deviation),
                "cosine": ratio(s["cosine"], s["nonzero_rows"]), "l0": s["l0"] / n, "l1": s["l1"] / n,
                "l2_ratio": ratio(s["l2_ratio"], s["nonzero_rows"]),
                "norm_ratio": ratio(s["recon_norm"], s["target_norm"]),
                "relative_reconstruction_bias": ratio(s["squared_recon"], s["recon_dot_target"])}


_SUM_NAMES = ("squared_error", "shifted_squares", "cosine", "l0", "l1", "l2_ratio", "nonzero_rows", "recon_norm",
              "target_norm", "squared_recon", "recon_dot_target")


def evaluate_reconstruction(dictionary: Dictionary, data, *, batch_size: int = 4096, max_tokens: int | None = None,
                            min_tokens: int = 2000, dense_threshold: float = 0.1, histogram_low: float = -7.0,
                            histogram_bins: int = 35) -> ReconstructionResult:
    """Reconstruction and sparsity metrics of ``dictionary`` on held-out ``data`` (see :mod:`.rows`).

    Example: ``evaluate_reconstruction(sae, store_rows(store, sae))`` for a store's held-out split.
    """
    config = ReconstructionConfig(batch_size=batch_size, max_tokens=max_tokens, min_tokens=min_tokens,
                                  dense_threshold=dense_threshold, histogram_low=histogram_low,
                                  histogram_bins=histogram_bins)
    _check_config(config)
    totals = _Totals(dictionary.d_sae)
    device = next(dictionary.parameters()).device
    with torch.inference_mode(), eval_mode(dictionary):
        for x, target in activation_batches(data, dictionary, batch_size):
            if max_tokens is not None:
                x, target = x[:max_tokens - totals.rows], target[:max_tokens - totals.rows]
            out = dictionary(x.to(device))
            n = x.shape[0]
            totals.add(target.to(device).reshape(n, -1), out.recon.reshape(n, -1), out.codes)
            if max_tokens is not None and totals.rows >= max_tokens:
                break  # before asking for another batch: a store would read its next shard
    if totals.rows < min_tokens:
        raise MonosemanticError(f"evaluation needs at least {min_tokens:,} tokens for a density histogram; got "
                                f"{totals.rows:,}; pass more held-out rows (or lower min_tokens)")
    density = density_summary(totals.fires_F, totals.rows, dense_threshold=dense_threshold,
                              histogram_low=histogram_low, histogram_bins=histogram_bins)
    return ReconstructionResult(config=config, dictionary=dictionary.config.to_dict(), n_tokens=totals.rows,
                                density=density, **totals.metrics())


def _check_config(config: ReconstructionConfig) -> None:
    for name in ("batch_size", "min_tokens", "histogram_bins"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MonosemanticError(f"{name}={value!r} is invalid; expected a positive integer")
    if config.max_tokens is not None and (not isinstance(config.max_tokens, int) or config.max_tokens < 1):
        raise MonosemanticError(f"max_tokens={config.max_tokens!r} is invalid; expected a positive integer or None")
    if not 0 < config.dense_threshold <= 1:
        raise MonosemanticError(f"dense_threshold={config.dense_threshold!r} is invalid; expected a fraction in "
                                "(0, 1], e.g. 0.1")
    if not config.histogram_low < 0:
        raise MonosemanticError(f"histogram_low={config.histogram_low!r} is invalid; expected a negative log10 "
                                "density, e.g. -7")
