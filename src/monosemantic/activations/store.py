"""Reading a finished activation store."""

from __future__ import annotations

import bisect
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import StoreError
from .batching import ShardBatches
from .files import sha256_file
from .manifest import MANIFEST_NAME, STORAGE_DTYPES, Manifest, read_manifest
from .shards import check_shard_layout, load_shard, open_shard, shard_name
from .split import check_split


class RowTokens(NamedTuple):
    """Per-row token fields of a whole store, each ``[rows]``."""

    token_id: Tensor  # int32
    position: Tensor  # int32, position in its window
    window: Tensor  # int64, global window index


class ActivationStore:
    """A complete store written by :func:`~monosemantic.activations.harvest`."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        manifest = read_manifest(self.path) if self.path.is_dir() else None
        if manifest is None:
            raise StoreError(f"no activation store at {self.path} (no {MANIFEST_NAME}); expected a folder made "
                             "by harvest; check the path or run harvest first")
        if not manifest.complete:
            raise StoreError(f"store at {self.path}: harvest did not finish; rerun the same harvest command "
                             "to complete it")
        for index, shard in enumerate(manifest.shards):
            # A listed file is read as folder / name: anything but the expected name could lie
            # outside the store, or be another shard.
            if shard.file != shard_name(index):
                raise StoreError(f"{self.path / MANIFEST_NAME} lists {shard.file!r} as shard {index}; expected "
                                 f"{shard_name(index)!r}, a file of the store in order; the manifest was changed by "
                                 "hand; re-harvest")
        self._manifest = manifest
        # _starts[i] is the first global row of shard i; the extra last entry is the total.
        self._starts = [0]
        for shard in manifest.shards:
            self._starts.append(self._starts[-1] + shard.rows)
        self._cached: tuple[int, dict[str, Tensor]] | None = None
        self._tokens: RowTokens | None = None

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.path)!r}, sites={self.sites}, rows={len(self)})"

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def sites(self) -> list[str]:
        return list(self._manifest.settings.sites)

    @property
    def context_length(self) -> int:
        return self._manifest.settings.context_length

    @property
    def dtype(self) -> torch.dtype:
        return STORAGE_DTYPES[self._manifest.settings.dtype]

    @property
    def num_shards(self) -> int:
        return len(self._manifest.shards)

    def __len__(self) -> int:
        return self._starts[-1]

    def width(self, site: str) -> int:
        return self._manifest.settings.widths[self._check_site(site)]

    def _check_site(self, site: str) -> str:
        if site not in self._manifest.settings.sites:
            raise StoreError(f"store at {self.path} has no site {site!r}; it has {', '.join(self.sites)}; "
                             "pick one of those or harvest that site")
        return site

    def verify(self) -> None:
        """Check the whole store against its manifest; StoreError naming the first thing that does not match.

        The shard list (every listed file present, none unlisted), the total rows, each shard's
        sha256, and the shapes and dtypes of its tensors against the manifest's rows, widths,
        context length and storage dtype.
        """
        settings, shards = self._manifest.settings, self._manifest.shards
        unlisted = sorted({p.name for p in self.path.glob("shard_*.safetensors")} - {s.file for s in shards})
        if unlisted:
            raise StoreError(f"{self.path} holds shard files the manifest does not list ({', '.join(unlisted[:3])}"
                             f"{', ...' if len(unlisted) > 3 else ''}); the manifest was changed by hand; re-harvest")
        if len(self) != settings.n_tokens:
            raise StoreError(f"the manifest's shards hold {len(self):,} rows, but the store was made for "
                             f"{settings.n_tokens:,}; the manifest was changed by hand; re-harvest")
        for shard in shards:
            try:
                digest, size = sha256_file(self.path / shard.file)
            except FileNotFoundError:
                raise StoreError(f"{shard.file} is missing from {self.path}; expected every shard the "
                                 "manifest lists; re-harvest") from None
            if (digest, size) != (shard.sha256, shard.bytes):
                raise StoreError(f"{shard.file} checksum does not match the manifest: the file was modified "
                                 "or truncated; re-harvest")
            check_shard_layout(self.path, shard, settings)

    def read_shard(self, index: int) -> dict[str, Tensor]:
        """All tensors of shard ``index``, checked against the manifest's checksum."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.num_shards:
            raise StoreError(f"shard index {index!r} is out of range; expected 0 to {self.num_shards - 1}")
        return load_shard(self.path, self._manifest.shards[index])

    def rows(self, site: str, start: int = 0, stop: int | None = None) -> Tensor:
        """Rows ``[start, stop)`` of ``site`` in store order, ``[stop - start, D]`` in the storage dtype."""
        self._check_site(site)
        stop = len(self) if stop is None else stop
        if not 0 <= start <= stop <= len(self):
            raise StoreError(f"rows {start}:{stop} are out of range; expected 0 <= start <= stop <= {len(self)}")
        pieces = []
        shard = bisect.bisect_right(self._starts, start) - 1
        while start < stop:
            first, data = self._starts[shard], self._shard_cached(shard)
            end = min(stop, self._starts[shard + 1])
            pieces.append(data[site][start - first:end - first])
            start, shard = end, shard + 1
        return torch.cat(pieces) if pieces else torch.empty(0, self.width(site), dtype=self.dtype)

    def _shard_cached(self, index: int) -> dict[str, Tensor]:
        # One shard is kept, so sequential reads in small steps read each shard once.
        if self._cached is None or self._cached[0] != index:
            self._cached = (index, self.read_shard(index))
        return self._cached[1]

    def tokens(self) -> RowTokens:
        """token_id, position and window of every row (12 bytes a row, read once and kept).

        Only these small tensors are read from each file (not checksummed: use :meth:`verify`).
        """
        if self._tokens is None:
            fields = {"token_id": [], "position": [], "window": []}
            for shard in self._manifest.shards:
                with open_shard(self.path, shard) as f:
                    for name, parts in fields.items():
                        parts.append(f.get_tensor(name))
            self._tokens = RowTokens(**{name: torch.cat(parts) for name, parts in fields.items()})
        return self._tokens

    def batches(self, sites: str | Sequence[str], batch_size: int, *, seed: int = 0, split: str = "train",
                holdout: float = 0.05, shuffle: bool = True, buffer_shards: int = 4, drop_last: bool = False,
                device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                shards: Sequence[int] | None = None) -> ShardBatches:
        """One epoch of batches ``[batch_size, D]`` (a dict of them, rows aligned, for a list of sites).

        ``shards`` restricts the epoch to those shard indices (a data-parallel rank's part).
        Shards are read ``buffer_shards`` at a time in a seeded order and their rows shuffled
        together, so memory stays bounded. Same seed, same order. ``split`` is ``train``,
        ``holdout`` (windows chosen by a fixed hash, a ``holdout`` fraction of them) or ``all``.
        """
        names = [sites] if isinstance(sites, str) else list(sites)
        if not names:
            raise StoreError(f"no sites given; expected one or more of {', '.join(self.sites)}")
        for site in names:
            self._check_site(site)
        for name, value in (("batch_size", batch_size), ("buffer_shards", buffer_shards)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise StoreError(f"{name}={value!r} is not allowed; expected an integer >= 1; "
                                 "try batch_size=4096, buffer_shards=4")
        check_split(split, holdout)
        if shards is not None:
            shards = [int(i) for i in shards]
            bad = [i for i in shards if not 0 <= i < self.num_shards]
            if bad or not shards or len(set(shards)) != len(shards):
                raise StoreError(f"shards {shards} are not distinct indices of this store's {self.num_shards} shards; "
                                 f"expected a non-empty subset of 0..{self.num_shards - 1}")
        return ShardBatches(self, names, single=isinstance(sites, str), batch_size=int(batch_size), seed=seed,
                            split=split, holdout=holdout, shuffle=shuffle, buffer_shards=int(buffer_shards),
                            drop_last=drop_last, device=device, dtype=dtype, shards=shards)
