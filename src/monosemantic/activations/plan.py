"""The harvest plan: which windows go into which shard and how many rows each stores.

The plan depends on the tokens alone (never on the model), so it is known before any forward
pass: a too-small corpus is refused before anything is written, and every rerun (a resume,
another torchrun rank) derives the very same shards.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import torch
from torch import Tensor

from ..data import storable_mask


@dataclass(frozen=True)
class ShardPlan:
    """Shard ``index``: windows ``[window_start, window_end)`` storing ``rows`` rows."""

    index: int
    window_start: int
    windows_WS: Tensor  # int32: half the memory of int64 for a plan that is held whole
    rows: int

    @property
    def window_end(self) -> int:
        return self.window_start + self.windows_WS.shape[0]

    def mask(self, special_ids: Collection[int], skip_first: bool) -> Tensor:
        """``[W, S]`` bool: the positions stored, truncated to ``rows`` (only the last shard is cut)."""
        mask_WS = storable_mask(self.windows_WS, special_ids, skip_first=skip_first)
        kept_WS = mask_WS.flatten().cumsum(0).view_as(mask_WS) <= self.rows
        return mask_WS & kept_WS


def _chunks(windows: Iterable[Tensor], size: int) -> Iterator[Tensor]:
    iterator = iter(windows)
    while chunk := list(islice(iterator, size)):
        yield torch.stack(chunk).to(torch.int32)


def plan_shards(windows: Iterable[Tensor], special_ids: Collection[int], *, n_tokens: int,
                windows_per_shard: int, skip_first: bool) -> tuple[list[ShardPlan], int]:
    """Group ``windows`` into shards until ``n_tokens`` rows are planned.

    Returns the plans and the number of rows planned (less than ``n_tokens`` only when the
    windows ran out). Stops consuming ``windows`` once enough rows are planned.
    """
    plans: list[ShardPlan] = []
    total = 0
    for windows_WS in _chunks(windows, windows_per_shard):
        counts_W = storable_mask(windows_WS, special_ids, skip_first=skip_first).sum(1)
        cumulative_W = counts_W.cumsum(0) + total
        start = len(plans) * windows_per_shard
        if int(cumulative_W[-1]) >= n_tokens:
            # The last shard ends at the first window that reaches n_tokens, cut inside it.
            n_windows = int(torch.searchsorted(cumulative_W, n_tokens)) + 1
            plans.append(ShardPlan(len(plans), start, windows_WS[:n_windows].clone(), n_tokens - total))
            return plans, n_tokens
        plans.append(ShardPlan(len(plans), start, windows_WS, int(cumulative_W[-1]) - total))
        total = int(cumulative_W[-1])
    return plans, total
