"""Splitting a harvest across torchrun processes.

Under ``torchrun`` (``WORLD_SIZE`` > 1) rank r computes the shards with ``index % world == r``
into the same folder. The ranks only meet at a few barriers: after rank 0 has prepared the
folder, after all shards are written, and after rank 0 has written the final manifest. A single
process never touches ``torch.distributed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    _created_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, shard_index: int) -> bool:
        return shard_index % self.world == self.rank

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Tear down the process group only if :func:`join_ranks` created it."""
        if self._created_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._created_group = False


def join_ranks() -> Ranks:
    """This process's rank and world size, joining torchrun's process group when there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        # gloo works on any machine and only carries barriers here, so its speed is irrelevant.
        dist.init_process_group("gloo")
        created = True
    return Ranks(rank=dist.get_rank(), world=dist.get_world_size(), _created_group=created)
