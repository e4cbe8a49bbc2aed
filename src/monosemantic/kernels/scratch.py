"""Reusable memory for the large per-step tensors of training on CPU.

A training step needs one or two ``[N, F]`` tensors (75 MB at N=4096, F=4608) and several
of 9-17 MB (centred inputs, candidate blocks, residuals, sliced tables, weight gradients).
glibc maps blocks that large fresh from the OS for every allocation and unmaps them on free,
so each step page-faults them in again: about 15 ms for a 75 MB tensor on a 2-core machine,
a tenth of a top-k step, and 1-2 ms for each 10 MB one (a pass over it costs less).
This pool keeps a few blocks and hands a block out again only once no tensor refers to it
(the storage's use count is back to the pool's own reference), so a caller still holding, say,
the previous step's codes never sees them change.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import torch
from torch import Tensor

_MAX_BLOCKS = 12
_MIN_BYTES = 1 << 23  # smaller tensors mostly come from the allocator's own free lists
_blocks: list[torch.UntypedStorage] = []
_lock = threading.Lock()


def _storage_use_count() -> Callable[[torch.UntypedStorage], int] | None:
    """torch's reference count of a storage, or None where this torch does not expose it.

    The call is private, but it is the only way to see whether a storage is still shared. Kept
    in this one place: without it the pool falls back to fresh tensors (correct, only slower).
    """
    private = getattr(torch._C, "_storage_Use_Count", None)
    if private is None:
        return None
    return lambda storage: private(storage._cdata)


_use_count = _storage_use_count()


def empty(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """An uninitialised contiguous CPU tensor, in reused memory where a free block fits."""
    nbytes, use_count = math.prod(shape) * dtype.itemsize, _use_count
    if use_count is None or nbytes < _MIN_BYTES:
        return torch.empty(shape, dtype=dtype)
    with _lock:
        block = _free_block(nbytes, use_count)
        tensor = torch.empty(0, dtype=dtype)
        # Set while holding the lock: once the tensor refers to the block, no other caller takes it.
        return tensor.set_(block, 0, shape, _contiguous_strides(shape))


def new_empty(like: Tensor, shape: tuple[int, ...] | None = None) -> Tensor:
    """``like.new_empty(shape)`` (``like``'s shape by default), in pooled memory when on CPU."""
    shape = tuple(like.shape if shape is None else shape)
    return empty(shape, like.dtype) if like.device.type == "cpu" else like.new_empty(shape)


def _free_block(nbytes: int, use_count: Callable[[torch.UntypedStorage], int]) -> torch.UntypedStorage:
    # At most twice the size asked for, so a small request never holds a large block hostage.
    free = [b for b in _blocks if nbytes <= b.nbytes() <= 2 * nbytes and use_count(b) == 1]
    if free:
        return min(free, key=lambda b: b.nbytes())
    block = torch.empty(nbytes, dtype=torch.uint8).untyped_storage()
    if len(_blocks) >= _MAX_BLOCKS:
        idle = [b for b in _blocks if use_count(b) == 1]
        if not idle:
            return block  # every pooled block is in use: this one is not pooled
        _blocks.remove(min(idle, key=lambda b: b.nbytes()))
    _blocks.append(block)
    return block


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def release() -> None:
    """Give the pooled memory back (blocks still in use are freed when their tensors are)."""
    with _lock:
        _blocks.clear()
