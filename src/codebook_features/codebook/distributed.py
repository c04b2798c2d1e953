"""The few collective operations codebooks need, as no-ops when not running distributed.

Dead-code refresh and k-means initialisation change parameters outside the optimiser; under
data-parallel training every process must make the same change, so rank 0 decides and the
others receive its result.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` on every process with rank ``src``'s value."""
    if is_distributed():
        dist.broadcast(tensor, src)
    return tensor


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` in place over all processes (``sum`` or ``max``)."""
    if is_distributed():
        dist.all_reduce(tensor, dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor
