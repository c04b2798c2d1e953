"""Batched k-means (Lloyd's algorithm) in torch, one clustering per group, seeded."""

from __future__ import annotations

import torch
from torch import Tensor

from codebook_features.codebook.search import search_codes

KMEANS_PP_MAX_CODES = 4096
"""``seeding="auto"`` uses k-means++ up to this many codes (it takes one step per code), and
distinct random samples above it."""


@torch.no_grad()
def kmeans(
    samples: Tensor,
    num_codes: int,
    iters: int = 20,
    seed: int = 0,
    chunk_size: int | None = None,
    seeding: str = "auto",
) -> Tensor:
    """Cluster each group's samples into ``num_codes`` centres.

    Args:
        samples: ``(G, N, d)``, with ``N >= num_codes``.
        num_codes: centres per group.
        iters: Lloyd iterations.
        seed: seeds the initial centres and the re-seeding of clusters that become empty.
        chunk_size: tokens per tile of the nearest-centre search.
        seeding: ``kmeans++`` (spread-out start, one pass over the data per code), ``random``
            (distinct random samples) or ``auto`` (k-means++ up to
            :data:`KMEANS_PP_MAX_CODES` codes).

    Returns:
        ``(G, num_codes, d)`` centres in the dtype of ``samples``.
    """
    groups, n, dim = samples.shape
    generator = torch.Generator(device=samples.device).manual_seed(seed)
    data = samples.float() if samples.dtype != torch.float64 else samples
    if seeding == "auto":
        seeding = "kmeans++" if num_codes <= KMEANS_PP_MAX_CODES else "random"
    if seeding == "kmeans++":
        centres = _kmeans_plus_plus(data, num_codes, generator)
    else:
        order = torch.rand(groups, n, generator=generator, device=data.device).argsort(dim=1)
        centres = torch.gather(data, 1, order[:, :num_codes, None].expand(-1, -1, dim)).clone()
    offsets = torch.arange(groups, device=data.device).view(-1, 1) * num_codes
    for _ in range(iters):
        assign = search_codes(data, centres, 1, "euclidean", chunk_size)[..., 0]
        flat = (assign + offsets).view(-1)
        sums = torch.zeros(groups * num_codes, dim, dtype=data.dtype, device=data.device)
        sums.index_add_(0, flat, data.reshape(-1, dim))
        counts = torch.zeros(groups * num_codes, dtype=data.dtype, device=data.device)
        counts.index_add_(0, flat, torch.ones_like(flat, dtype=data.dtype))
        means = (sums / counts.clamp_min(1).unsqueeze(1)).view(groups, num_codes, dim)
        pick = torch.randint(n, (groups, num_codes), generator=generator, device=data.device)
        fresh = torch.gather(data, 1, pick.unsqueeze(-1).expand(-1, -1, dim))
        empty = (counts == 0).view(groups, num_codes, 1)
        centres = torch.where(empty, fresh, means)
    return centres.to(samples.dtype)


def _kmeans_plus_plus(data: Tensor, num_codes: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding for every group at once: each next centre is a sample drawn with
    probability proportional to its squared distance from the nearest centre so far."""
    groups, n, dim = data.shape
    rows = torch.arange(groups, device=data.device)
    columns = data.transpose(1, 2).contiguous()  # (G, d, N): fast row-vector products
    sq_norms = data.pow(2).sum(-1)
    centres = torch.empty(groups, num_codes, dim, dtype=data.dtype, device=data.device)
    nearest = torch.full((groups, n), float("inf"), dtype=data.dtype, device=data.device)
    pick = torch.randint(n, (groups,), generator=generator, device=data.device)
    for i in range(num_codes):
        centre = data[rows, pick]
        centres[:, i] = centre
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2
        dots = torch.bmm(centre.unsqueeze(1), columns).squeeze(1)
        dist = sq_norms - 2 * dots + centre.pow(2).sum(-1, keepdim=True)
        nearest = torch.minimum(nearest, dist.clamp_min(0))
        if i + 1 < num_codes:
            # inverse-CDF draw; much faster than torch.multinomial on long rows
            cdf = nearest.double().cumsum(-1)
            u = torch.rand(groups, 1, generator=generator, device=data.device, dtype=cdf.dtype)
            pick = torch.searchsorted(cdf, u * cdf[:, -1:]).squeeze(1).clamp_max(n - 1)
    return centres
