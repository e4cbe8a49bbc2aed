"""Writing shards on a background thread while the model computes the next one.

The device-to-host copy, building the row fields, serialising, hashing and writing a shard
together take about as long as a forward pass of a small model, so doing them inline would
nearly halve the harvest rate. Here they overlap with the model: the main thread hands each
finished shard to one writer thread through a short queue, and only waits when the writer is
a whole queue behind.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .plan import ShardPlan
from .shards import row_fields, write_shard

_STOP = object()


@dataclass
class ShardJob:
    plan: ShardPlan
    mask_WS: Tensor
    host_acts: Callable[[], dict[str, Tensor]]  # waits for the device-to-host copy, returns CPU tensors


_copy_streams: dict[torch.device, torch.cuda.Stream] = {}


def start_host_copy(acts_ND: dict[str, Tensor]) -> Callable[[], dict[str, Tensor]]:
    """Begin copying device tensors to the host; return a function that waits for and returns them.

    On CUDA the copy runs on a side stream into pinned memory, so it overlaps with the next
    forward passes instead of queueing behind them on the compute stream.
    """
    device = next(iter(acts_ND.values())).device
    if device.type == "cpu":
        return lambda: acts_ND
    if device.type != "cuda":
        return lambda: {site: t.cpu() for site, t in acts_ND.items()}
    stream = _copy_streams.setdefault(device, torch.cuda.Stream(device))
    stream.wait_stream(torch.cuda.current_stream(device))  # the rows must be computed first
    with torch.cuda.stream(stream):
        host = {}
        for site, t in acts_ND.items():
            host[site] = torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)
            t.record_stream(stream)  # keeps the allocator from reusing t before the copy ends
        done = torch.cuda.Event()
        done.record(stream)

    def wait() -> dict[str, Tensor]:
        done.synchronize()
        return host

    return wait


class ShardWriter:
    """One background thread writing :class:`ShardJob` s; errors resurface in the caller."""

    def __init__(self, folder: Path, on_written: Callable | None = None, max_queued: int = 1):
        self.folder = Path(folder)
        self.on_written = on_written
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="monosemantic-shard-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._queue.get()) is not _STOP:
            if self._error is None:  # after a failure, drain without writing
                try:
                    record = _write_job(self.folder, job)
                    if self.on_written:
                        self.on_written(record)
                except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
                    self._error = e

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, job: ShardJob) -> None:
        self._raise_if_failed()
        self._queue.put(job)

    def close(self) -> None:
        """Wait for every submitted shard to be written; raise the writer's error, if any."""
        self._queue.put(_STOP)
        self._thread.join()
        self._raise_if_failed()

    def abandon(self) -> None:
        """Stop after the job in hand (used when the main thread fails); unwritten shards stay unwritten."""
        self._error = self._error or RuntimeError("harvest abandoned")
        self._queue.put(_STOP)
        self._thread.join()


def _write_job(folder: Path, job: ShardJob):
    plan = job.plan
    tensors = {**job.host_acts(), **row_fields(plan.windows_WS, job.mask_WS, plan.window_start)}
    return write_shard(folder, plan.index, tensors, plan.window_start, plan.window_end)
