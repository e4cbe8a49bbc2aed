"""Train / held-out split by window: the one rule every stage uses.

Windows are numbered in the packed token stream of a corpus (``token_windows``), and a row's
split depends only on its window's index, through a fixed multiplicative hash (Knuth's
2654435761), never on a seed: every window, and so every row of it, lands in the same
split for every reader, shuffle seed and epoch, and no context is shared by both splits. The
hash of consecutive integers is evenly spread, so the held-out share is close to ``holdout``
even for small stores.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch
from torch import Tensor

from ..errors import MonosemanticError, StoreError

SPLITS = ("train", "holdout", "all")
_W = TypeVar("_W")  # a window, or anything carried along with one
_KNUTH = 2654435761
_SPAN = 2**32


def check_split(split: str, holdout: float) -> None:
    if split not in SPLITS:
        raise StoreError(f"split {split!r} is unknown; expected one of {', '.join(SPLITS)}; try 'train'")
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0 <= holdout < 1:
        raise StoreError(f"holdout={holdout!r} is not a fraction in [0, 1); try 0.05")
    if split == "holdout" and holdout == 0:
        raise StoreError("split='holdout' with holdout=0 selects no rows; expected holdout > 0; try holdout=0.05")


def held_out(window_N: Tensor, holdout: float) -> Tensor:
    """Bool ``[N]``: True for rows whose window is held out."""
    # int64 cannot overflow here: window < 2**31 and the multiplier < 2**32.
    return (window_N.to(torch.int64) * _KNUTH) % _SPAN < int(holdout * _SPAN)


def in_split(window_N: Tensor, split: str, holdout: float) -> Tensor:
    """Bool ``[N]``: True for rows that belong to ``split``."""
    if split == "all":
        return torch.ones(window_N.shape, dtype=torch.bool)
    held = held_out(window_N, holdout)
    return held if split == "holdout" else ~held


DEFAULT_HOLDOUT = 0.05  # the share of windows no dictionary trains on, unless a run says otherwise


def split_windows(windows: Iterable[_W], split: str, holdout: float) -> Iterator[tuple[int, _W]]:
    """``(index, window)`` for the windows of ``split``, numbered from 0 in stream order.

    Stores, the live source and evaluation all number windows this way, so a window held out
    at harvest time is held out everywhere else too.
    """
    if split not in SPLITS:
        raise MonosemanticError(f"split {split!r} is unknown; expected one of {', '.join(SPLITS)}")
    for index, window in enumerate(windows):
        if split == "all" or bool(held_out(torch.tensor([index]), holdout)) == (split == "holdout"):
            yield index, window
