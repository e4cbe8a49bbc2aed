"""The training-step contract: what the trainer passes into a loss, and what the loss returns.

The trainer owns every piece of run state (the schedules, which latents are dead, the process
group) and hands it to ``Dictionary.loss(x, target, step)`` as a :class:`StepInput`; a
dictionary keeps no run state of its own beyond what inference needs (e.g. BatchTopK's
threshold). The loss returns a :class:`LossOutput` with its terms by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from ..errors import MonosemanticError

__all__ = ["LOCAL", "BatchReduce", "LossOutput", "SparseCodes", "StepInput", "fired_latents", "loss_terms"]


class BatchReduce(Protocol):
    """Reductions over the processes that share a global batch (torchrun), for batch-level selections."""

    world: int

    def gather_rows(self, rows: Tensor) -> Tensor:
        """Every process's ``rows`` concatenated in rank order."""
        ...

    def max_(self, values: Tensor) -> Tensor:
        """The element-wise maximum over processes."""
        ...


class _Local:
    """One process holds the whole batch: every reduction is the identity."""

    world = 1

    def gather_rows(self, rows: Tensor) -> Tensor:
        return rows

    def max_(self, values: Tensor) -> Tensor:
        return values


LOCAL: BatchReduce = _Local()


@dataclass(frozen=True)
class StepInput:
    """Run state a loss may read; the defaults describe a lone step outside any run."""

    sparsity_scale: float = 1.0  # in [0, 1]: multiplies the sparsity coefficient (the trainer's warm-up)
    dead_F: Tensor | None = None  # boolean [F]: latents dead by the run's one definition; None: none known
    reduce: BatchReduce = LOCAL  # how a batch-level selection reaches the other processes' rows
    progress: float = 1.0  # share of the run done before this step, in [0, 1] (schedules inside a loss)
    dense_codes: bool = True  # False: an architecture with sparse codes may return only ``sparse``

    def __post_init__(self) -> None:
        for name in ("sparsity_scale", "progress"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise MonosemanticError(f"StepInput {name} must be a number in [0, 1]; got {value!r}")


class SparseCodes(NamedTuple):
    """Codes as their selected entries: the k latents of each row, ``[N, K]``.

    A batch-level selection (BatchTopK), which keeps any number per row, gives every entry of
    the batch as one row, ``[1, E]``: enough for which latents fired and how many entries.
    """

    values: Tensor  # [N, K] activations (>= 0), or [1, E]
    indices: Tensor  # [N, K] int64 latent indices, or [1, E]

    def fired(self, n_latents: int) -> Tensor:
        """Boolean ``[F]``: latents active (value > 0) on some row."""
        # A count per latent, entries that did not fire going to a spare bin: ~6x cheaper on CPU
        # than boolean-mask indexing followed by an index_put.
        chosen = torch.where(self.values > 0, self.indices, n_latents).reshape(-1)
        return torch.bincount(chosen, minlength=n_latents + 1)[:n_latents] > 0


def fired_latents(codes: SparseCodes | Tensor, n_latents: int) -> Tensor:
    """Boolean ``[F]``: latents active on some row of ``codes`` (sparse, or dense ``[N, F]``/``[N, ..., F]``)."""
    if isinstance(codes, SparseCodes):
        return codes.fired(n_latents)
    # Codes of every trained architecture are non-negative, so a column max > 0 means "fired";
    # one reduction is ~4x cheaper than materialising a [N, F] boolean mask first.
    return codes.reshape(-1, n_latents).amax(dim=0) > 0


def loss_terms(mse: Tensor, sparsity: Tensor | None = None, aux: Tensor | None = None) -> dict[str, Tensor]:
    """The terms every architecture reports, absent ones as zeros (so every run logs the same names)."""
    zero = mse.new_zeros(())
    return {"mse": mse, "sparsity": zero if sparsity is None else sparsity, "aux": zero if aux is None else aux}


class LossOutput(NamedTuple):
    """What ``Dictionary.loss`` returns.

    ``terms`` are 0-dim tensors, each already weighted; ``terms["mse"]`` is always the
    reconstruction error of ``recon`` (:func:`reconstruction_mse`), and ``loss`` is the sum of
    the terms except for matryoshka, whose loss replaces ``mse`` by its prefixes' mean error.
    """

    loss: Tensor  # the scalar to backpropagate
    terms: dict[str, Tensor]  # named loss terms, e.g. {"mse", "sparsity", "aux"}
    recon: Tensor  # [N, D_out] reconstruction ([N, S, D] for several sites)
    codes: Tensor | None  # [N, F] latent activations; None when the codes are only given ``sparse``
    sparse: SparseCodes | None = None  # the selected entries, when StepInput.dense_codes is False

    @property
    def mse(self) -> Tensor:
        return self.terms["mse"]

    def fired(self, n_latents: int) -> Tensor:
        """Boolean ``[F]``: latents active on some row of this step's codes (dense or sparse)."""
        codes = self.codes if self.codes is not None else self.sparse
        assert codes is not None
        return fired_latents(codes, n_latents)

    def active_count(self) -> Tensor:
        """Active (row, latent) entries of the codes, summed over the batch."""
        active = self.sparse.values if self.codes is None else self.codes  # type: ignore[union-attr]
        return (active > 0).sum()
