"""A fixed activation scale: train on ``x * s`` with ``s = sqrt(D) / mean ||x||``, so E||x||^2 ~ D.

Default hyper-parameters (l1 coefficients, learning rates) then transfer between models and
layers whose activations differ in size by orders of magnitude. The scale is estimated once,
on the first rows, kept in checkpoints, and folded into the weights of every saved dictionary
(``Dictionary.fold_scale_``) so that what is saved acts on raw activations. Transcoders get
separate input and output scales, crosscoders one scale per source.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import torch
from torch import Tensor

from ..dictionaries import Dictionary
from ..errors import MonosemanticError
from ..kernels import scratch
from .layout import Batch

# Rows used for the scale and the decoder-bias initialisation.
SAMPLE_ROWS = 8192


Scale = float | tuple[float, ...]  # one value, or one per source for crosscoder rows [N, S, D]


class Scales(NamedTuple):
    """Multipliers applied to the rows before training (1.0 when normalisation is off)."""

    scale_in: Scale  # for inputs x
    scale_out: Scale  # for targets; equals scale_in for autoencoders and crosscoders

    def apply(self, batch: Batch) -> Batch:
        if self.scale_in == 1.0 and self.scale_out == 1.0:
            return batch
        target = None if batch.target is None else _times(batch.target, self.scale_out)
        return Batch(_times(batch.x, self.scale_in), target)

    @classmethod
    def from_json(cls, scale_in, scale_out) -> Scales:
        return cls(*(tuple(s) if isinstance(s, list) else s for s in (scale_in, scale_out)))


UNIT = Scales(1.0, 1.0)


def _times(rows: Tensor, scale: Scale) -> Tensor:
    # A tuple holds one scale per source, for crosscoder rows [N, S, D].
    factor = torch.tensor(scale, dtype=rows.dtype, device=rows.device)[:, None] if isinstance(scale, tuple) else scale
    # A batch is ~10 MB: pooled memory on CPU spares page-faulting a fresh block every step.
    return torch.mul(rows, factor, out=scratch.new_empty(rows))


def _scale(rows_ND: Tensor, what: str) -> float:
    mean_norm = float(rows_ND.float().norm(dim=-1).mean())
    if not (math.isfinite(mean_norm) and mean_norm > 0):
        raise MonosemanticError(f"the first {rows_ND.shape[0]} {what} rows have mean norm {mean_norm}; cannot "
                                "normalise them; check the activations or set normalize_activations=False")
    return math.sqrt(rows_ND.shape[-1]) / mean_norm


def estimate_scales(sample: Batch, n_sites: int = 1) -> Scales:
    """The scales that make the sample's mean squared norm about its width (per site when rows span several)."""
    if n_sites > 1:
        # Sources (layers, models) differ in size, and a crosscoder folds one scale per source.
        per_source = tuple(_scale(sample.x[:, s], f"source {s} input") for s in range(sample.x.shape[1]))
        if sample.target is None:
            return Scales(per_source, per_source)
        return Scales(per_source, tuple(_scale(sample.target[:, s], f"source {s} target")
                                        for s in range(sample.target.shape[1])))
    scale_in = _scale(sample.x, "input")
    return Scales(scale_in, scale_in if sample.target is None else _scale(sample.target, "target"))


def folded_copy(dictionary: Dictionary, scales: Scales) -> Dictionary:
    """A copy of ``dictionary`` that acts on raw activations (the original keeps training)."""
    raw = copy.deepcopy(dictionary)
    if scales != UNIT:
        raw.fold_scale_(scales.scale_in, scales.scale_out)
    return raw
