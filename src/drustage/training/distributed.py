"""Data-parallel training under ``torchrun`` (DistributedDataParallel: gloo on CPU, nccl on CUDA).

Every process draws the same global batch from the same seeded sampler (so balancing, weighting
and augmentation are those of one process) and trains on its shard of it, rows ``rank::world``;
each shard's loss is scaled so that DDP's gradient average is the gradient of the global batch's
mean loss. With the same global batch size the losses therefore match a single process (up to
floating-point order; dropout masks differ per process). Only rank 0 writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["DistributedContext", "SINGLE", "from_environment"]


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, rows: int) -> slice:
        """This process's rows of a global batch of ``rows``."""
        return slice(self.rank, rows, self.world_size)

    def loss_scale(self, local_rows: int, global_rows: int) -> float:
        """Factor on a shard's summed loss so that the average over processes is the global mean."""
        return self.world_size / global_rows if local_rows else 0.0

    def sum(self, values: list[float]) -> list[float]:
        """Sums over processes (the values themselves in one process)."""
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def device(self, device: torch.device) -> torch.device:
        """A CUDA device per local process; the CPU as it is."""
        if self.enabled and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()


SINGLE = DistributedContext()


def from_environment(device: str) -> DistributedContext:
    """The context ``torchrun`` describes in the environment (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``), its process group started (nccl when ``device`` resolves to CUDA, else gloo);
    one process when there is none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    import torch.distributed as dist

    from drustage.inference.device import resolve_device

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if resolve_device(device).type == "cuda":
            torch.cuda.set_device(local_rank)
            # nccl for the gradients on the GPU, gloo for the CPU-side sums of the loss records
            dist.init_process_group("cpu:gloo,cuda:nccl")
        else:
            dist.init_process_group("gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank)
