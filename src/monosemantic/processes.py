"""The processes of a torchrun job, for harvest and training alike.

Under ``torchrun`` (``WORLD_SIZE`` > 1) every process joins one process group through
:func:`join_processes` and gets a :class:`ProcessGroup`: its rank, which work items are its
own, the collectives training needs (gradient averaging, gathers, reductions, broadcasts) and a
``close`` that tears the group down safely. A single process gets :class:`SingleProcess`, whose
collectives are identities, and never imports ``torch.distributed``. Backend: nccl on CUDA,
gloo on CPU.
"""

from __future__ import annotations

import os
import time

import torch
from torch import Tensor, nn

from .errors import MonosemanticError


class SingleProcess:
    """The whole job in one process: every collective is the identity."""

    rank, world, is_main = 0, 1, True

    def mine(self, index: int) -> bool:
        """Whether the ``index``-th of a list of equal work items (e.g. shards) is this process's."""
        return index % self.world == self.rank

    def rows(self, rows: Tensor) -> Tensor:
        """This process's slice of a global batch's rows."""
        return rows

    def average_grads_(self, module: nn.Module) -> None:
        pass

    def any_(self, mask: Tensor) -> Tensor:
        return mask

    def sum_(self, values: Tensor) -> Tensor:
        return values

    def max_(self, values: Tensor) -> Tensor:
        return values

    def gather_rows(self, rows: Tensor) -> Tensor:
        return rows

    def broadcast_(self, module: nn.Module) -> None:
        pass

    def average_buffers_(self, module: nn.Module) -> None:
        pass

    def barrier(self) -> None:
        pass

    def close(self) -> None:
        pass


class ProcessGroup(SingleProcess):
    """This process's part of a torchrun job."""

    def __init__(self, device: torch.device):
        import torch.distributed as dist

        self.dist = dist
        if device.type == "cuda":
            # NCCL runs its collectives (barriers included) on the current device; without this
            # every rank would use cuda:0.
            torch.cuda.set_device(device if device.index is not None else int(os.environ.get("LOCAL_RANK", "0")))
        # gloo reduces CPU tensors, NCCL CUDA ones: collectives move their input there and back.
        self.device = torch.device("cuda", torch.cuda.current_device()) if device.type == "cuda" else \
            torch.device("cpu")
        self._created = not dist.is_initialized()
        if self._created:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.is_main = self.rank == 0

    def rows(self, rows: Tensor) -> Tensor:
        n = rows.shape[0]
        if n % self.world:
            raise MonosemanticError(f"batch_size {n} does not divide among {self.world} processes; "
                                    f"use a multiple of {self.world}")
        part = n // self.world
        return rows[self.rank * part:(self.rank + 1) * part]

    def average_grads_(self, module: nn.Module) -> None:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            return
        # One collective per dictionary rather than one per parameter.
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def any_(self, mask: Tensor) -> Tensor:
        flags = mask.to(self.device, torch.int32)
        self.dist.all_reduce(flags, op=self.dist.ReduceOp.MAX)
        return flags.bool().to(mask.device)

    def sum_(self, values: Tensor) -> Tensor:
        total = values.to(self.device, copy=True)
        self.dist.all_reduce(total)
        return total.to(values.device)

    def max_(self, values: Tensor) -> Tensor:
        largest = values.to(self.device, copy=True)
        self.dist.all_reduce(largest, op=self.dist.ReduceOp.MAX)
        return largest.to(values.device)

    def gather_rows(self, rows: Tensor) -> Tensor:
        parts = [torch.empty_like(rows) for _ in range(self.world)]
        self.dist.all_gather(parts, rows.contiguous())
        return torch.cat(parts)

    @torch.no_grad()
    def broadcast_(self, module: nn.Module) -> None:
        for tensor in module.state_dict().values():
            self.dist.broadcast(tensor, src=0)

    @torch.no_grad()
    def average_buffers_(self, module: nn.Module) -> None:
        for buffer in module.buffers():
            if buffer.is_floating_point():
                self.dist.all_reduce(buffer)
                buffer /= self.world

    def barrier(self) -> None:
        self.dist.barrier()

    def close(self) -> None:
        if self._created:
            gloo = self.dist.get_backend() == "gloo"
            self.dist.destroy_process_group()
            self._created = False
            if gloo:
                # gloo's worker threads outlive destroy_process_group and may still be releasing
                # the last collectives' tensors. Releasing a tensor Python knows takes the GIL,
                # which aborts the process ("terminate called without an active exception") if the
                # interpreter has begun shutting down meanwhile: seen in ~1 of 25 two-process runs,
                # backtrace in pt_gloo_runloop -> ~AsyncBarrierWork -> gil_scoped_acquire during
                # Py_FinalizeEx. A short pause lets them finish while Python is still alive.
                time.sleep(0.1)


def join_processes(device: torch.device | str = "cpu") -> SingleProcess:
    """This process's place in a torchrun job, or :class:`SingleProcess` outside one.

    The backend is nccl for a CUDA ``device`` and gloo otherwise. Call ``close()`` when done:
    the group is torn down only if this call created it.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return SingleProcess()
    return ProcessGroup(torch.device(device))
