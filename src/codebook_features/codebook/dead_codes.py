"""Re-seeding dead codes: codes no token chose for a while are moved onto recent inputs."""

from __future__ import annotations

import math

import torch
from torch import Tensor


@torch.no_grad()
def reseed_codes(codes: Tensor, dead: Tensor, pool: Tensor, noise: float) -> int:
    """Replace ``codes[g, c]`` wherever ``dead[g, c]`` by a random row of ``pool[g]`` plus noise.

    Args:
        codes: ``(G, C, d)`` code vectors, changed in place.
        dead: ``(G, C)`` bool.
        pool: ``(G, R, d)`` recent (normalised) inputs of each group.
        noise: norm of the added Gaussian noise relative to the copied input's norm.

    Returns:
        The number of codes re-seeded.
    """
    group_idx, code_idx = dead.nonzero(as_tuple=True)
    count = group_idx.numel()
    if count == 0:
        return 0
    pick = torch.randint(pool.shape[1], (count,), device=pool.device)
    source = pool[group_idx, pick].to(codes.dtype)
    jitter = torch.randn_like(source) * (noise / math.sqrt(source.shape[-1]))
    codes[group_idx, code_idx] = source + jitter * source.norm(dim=-1, keepdim=True)
    return count
