"""Where training rows come from: sources that can start at any step, for exact resume.

A source is anything with a ``layout`` (:class:`~.layout.Layout`) and
``batches(batch_size, *, seed, start_step=0)`` yielding :class:`~.layout.Batch` es forever
(epoch after epoch). The batch at step n depends only on (seed, batch_size, n), so a run
resumed at step n sees exactly the batches the uninterrupted run saw. The trainer supplies
batch size and seed from its config: a source describes data, not a run.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from ..activations import ActivationStore
from ..errors import MonosemanticError
from .layout import Batch, Layout
from .seeds import derive_seed, generator


class BatchSource(Protocol):
    layout: Layout

    def batches(self, batch_size: int, *, seed: int, start_step: int = 0) -> Iterator[Batch]:
        """Batches from ``start_step`` on, endlessly; the same ones for the same arguments."""
        ...

    # Optional: ``local_batches(batch_size, *, seed, start_step, rank, world)`` yielding only rank
    # ``rank``'s ``batch_size / world`` rows of each global batch, read without the other ranks'
    # data. Sources without it are read whole by every rank and sliced.
    # Optional: ``describe()`` -> a JSON dict naming the text and windows the rows come from
    # (kept in training.json as ``data``, where evaluation looks for the windows never trained on).


class TensorSource:
    """Rows in memory: ``x`` ``[N, D]`` (or ``[N, S, D]``), optional ``target`` ``[N, D_out]`` (``[N, S, D_out]``).

    Each epoch is a fresh permutation seeded by (seed, epoch); the last ``N % batch_size`` rows
    of a permutation are left out so that every batch is full. Starting at step n costs nothing.
    """

    def __init__(self, x: Tensor, target: Tensor | None = None):
        if not isinstance(x, Tensor) or x.ndim not in (2, 3) or not x.is_floating_point():
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise MonosemanticError(f"TensorSource x must be a floating [rows, D] or [rows, sites, D] tensor; "
                                    f"got {got}")
        # [N, D_out] for a transcoder; [N, S, D_out] for transcoders at S layers (x [N, S, D]).
        if target is not None and (not isinstance(target, Tensor) or target.ndim != x.ndim
                                   or tuple(target.shape[:-1]) != tuple(x.shape[:-1])):
            got = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
            want = "[rows, D_out]" if x.ndim == 2 else f"[rows, {x.shape[1]}, D_out]"
            raise MonosemanticError(f"TensorSource target must be a {want} tensor with the {x.shape[0]} rows of x; "
                                    f"got {got}")
        self.x, self.target = x, target
        self.layout = Layout(tuple(x.shape[1:]), None if target is None else target.shape[-1], "tensor")

    def batches(self, batch_size: int, *, seed: int, start_step: int = 0) -> Iterator[Batch]:
        n_rows = self.x.shape[0]
        per_epoch = n_rows // batch_size
        if per_epoch == 0:
            raise MonosemanticError(f"TensorSource has {n_rows} rows, fewer than one batch of {batch_size}; "
                                    "give more rows or lower batch_size")
        epoch, index = divmod(start_step, per_epoch)
        while True:
            order_N = torch.randperm(n_rows, generator=generator(seed, "tensor-epoch", epoch))
            for i in range(index, per_epoch):
                rows_B = order_N[i * batch_size:(i + 1) * batch_size]
                yield Batch(self.x[rows_B], None if self.target is None else self.target[rows_B])
            epoch, index = epoch + 1, 0


class StoreSource:
    """Rows of an activation store, epoch after epoch of ``store.batches`` (seeded by seed and epoch).

    ``site_in`` alone: autoencoder rows; with ``site_out``: transcoder (input, target) rows; with
    ``sites=[...]`` instead: crosscoder rows ``[N, S, D]``. Each epoch drops its last partial
    batch. Resuming skips whole epochs by counting and reads through the rest of one epoch.

    Data parallelism: with ``partitions=P`` the shards are dealt round-robin into P parts, each
    with its own shuffled stream, and a global batch is the concatenation of one ``batch_size/P``
    piece from every part. A torchrun rank then reads only its own parts (:meth:`local_batches`),
    and a single process with the same ``partitions`` sees exactly the same global batches.
    ``partitions=None`` means one part in a single process and one part per rank under torchrun.
    """

    def __init__(self, store: ActivationStore | str | Path, site_in: str | None = None, site_out: str | None = None,
                 *, sites: Sequence[str] | None = None, split: str = "train", holdout: float = 0.05,
                 buffer_shards: int = 4, partitions: int | None = None):
        self.store = store if isinstance(store, ActivationStore) else ActivationStore(store)
        self.input_sites, self.target_site = _store_sites(self.store, site_in, site_out, sites)
        self.sites = self.input_sites + ([self.target_site] if self.target_site else [])  # every site read
        self.split, self.holdout, self.buffer_shards = split, holdout, buffer_shards
        if partitions is not None and (isinstance(partitions, bool) or not isinstance(partitions, int)
                                       or partitions < 1):
            raise MonosemanticError(f"partitions={partitions!r} is not allowed; expected a positive integer "
                                    "(the number of torchrun processes, or a multiple of it) or None")
        self.partitions = partitions
        widths = [self.store.width(s) for s in self.input_sites]
        target_width = None if self.target_site is None else self.store.width(self.target_site)
        if len(self.input_sites) > 1:
            if len(set(widths)) != 1:
                raise MonosemanticError(f"crosscoder sites {self.input_sites} have widths {widths}; expected one "
                                        "width for all; pick sites of the same kind")
            self.layout = Layout((len(self.input_sites), widths[0]), None, f"store sites {self.input_sites}")
        else:
            self.layout = Layout((widths[0],), target_width, f"store site {self.input_sites[0]!r}")

    def describe(self) -> dict:
        """The text and windows these rows come from, so evaluation can find the windows never trained on."""
        settings = self.store.manifest.settings
        return {"kind": "store", "store": str(self.store.path), "corpus": settings.corpus,
                "context_length": settings.context_length, "prepend_bos": settings.prepend_bos,
                "split": self.split, "holdout": self.holdout, "model": settings.model.get("name")
                if isinstance(settings.model, dict) else None}

    def batches(self, batch_size: int, *, seed: int, start_step: int = 0) -> Iterator[Batch]:
        parts = self.partitions or 1
        return self._batches(batch_size, seed, start_step, parts, range(parts))

    def local_batches(self, batch_size: int, *, seed: int, start_step: int = 0, rank: int, world: int
                      ) -> Iterator[Batch]:
        """Rank ``rank``'s ``batch_size / world`` rows of every global batch, read from its own shards only."""
        parts = self.partitions or world
        if parts % world:
            raise MonosemanticError(f"StoreSource partitions={parts} do not divide among {world} processes; "
                                    f"use a multiple of {world}, or None")
        per_rank = parts // world
        return self._batches(batch_size, seed, start_step, parts, range(rank * per_rank, (rank + 1) * per_rank))

    def _batches(self, batch_size: int, seed: int, start_step: int, parts: int, mine: range) -> Iterator[Batch]:
        if batch_size % parts:
            raise MonosemanticError(f"batch_size {batch_size} does not divide into {parts} store partitions; "
                                    f"use a multiple of {parts}")
        if self.store.num_shards < parts:
            raise MonosemanticError(f"store {self.store.path} has {self.store.num_shards} shards, fewer than the "
                                    f"{parts} partitions data-parallel reading needs; harvest with smaller shards "
                                    "or use fewer processes")
        piece = batch_size // parts
        # Every rank must agree on the epoch length, so it is computed over all parts, not just its own.
        per_epoch = min(len(self._epoch(piece, seed, 0, parts, p)) for p in range(parts))
        if per_epoch == 0:
            raise MonosemanticError(f"the {self.split!r} split of store {self.store.path} has fewer rows than one "
                                    f"batch of {batch_size}"
                                    + (f" in each of its {parts} partitions" if parts > 1 else "")
                                    + "; lower batch_size or harvest more tokens")
        epoch, index = divmod(start_step, per_epoch)
        while True:
            streams = [itertools.islice(self._epoch(piece, seed, epoch, parts, p), index, per_epoch) for p in mine]
            for pieces in zip(*streams):
                yield self._batch(pieces[0] if len(pieces) == 1 else
                                  {s: torch.cat([rows[s] for rows in pieces]) for s in self.sites})
            epoch, index = epoch + 1, 0

    def _epoch(self, batch_size: int, seed: int, epoch: int, parts: int, part: int):
        # One part keeps the seed of the plain single-stream order.
        epoch_seed = derive_seed(seed, "store-epoch", epoch) if parts == 1 else \
            derive_seed(seed, "store-epoch", epoch, "part", part, parts)
        shards = None if parts == 1 else list(range(part, self.store.num_shards, parts))
        return self.store.batches(self.sites, batch_size, seed=epoch_seed, split=self.split, holdout=self.holdout,
                                  shuffle=True, buffer_shards=self.buffer_shards, drop_last=True, shards=shards)

    def _batch(self, rows: dict[str, Tensor]) -> Batch:
        target = None if self.target_site is None else rows[self.target_site]
        if len(self.input_sites) > 1:
            return Batch(torch.stack([rows[s] for s in self.input_sites], dim=1), target)
        return Batch(rows[self.input_sites[0]], target)


def _store_sites(store: ActivationStore, site_in, site_out, sites) -> tuple[list[str], str | None]:
    """(input sites, target site or None for rows that are their own target)."""
    if sites is not None:
        if site_in is not None or site_out is not None:
            raise MonosemanticError("pass either site_in (and site_out) or sites=[...] for a crosscoder, not both")
        names = [sites] if isinstance(sites, str) else list(sites)
        if len(names) < 2 or len(set(names)) != len(names):
            raise MonosemanticError(f"crosscoder sites {names} are invalid; expected two or more different sites")
        for s in names:
            store.width(s)  # StoreError naming the store's sites when unknown
        return names, None
    if site_in is None:
        if len(store.sites) != 1:
            raise MonosemanticError(f"store {store.path} holds sites {', '.join(store.sites)}; say which to train "
                                    "on with site_in")
        site_in = store.sites[0]
    store.width(site_in)
    if site_out is None or site_out == site_in:
        return [site_in], None
    store.width(site_out)
    return [site_in], site_out
