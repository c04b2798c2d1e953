"""Exact top-k code search, batched over groups and tiled so memory stays bounded.

The naive search builds a ``tokens x codes`` score matrix per group and calls ``topk`` on it.
Here every group is searched in one batched matmul, over tiles of tokens (and of groups when
the codebooks are very large), so the live score buffer has a size set by the tile, not by
how many tokens come in: about 16 MiB, or 256 tokens x codes when one group's 256 tokens hold
more (64 MiB at 65,536 codes); an explicit ``chunk_size`` gives groups x chunk_size x codes.
Tiles of bfloat16 scores hold twice as many scores in the same bytes (a search that scores some
groups in bfloat16 and others in float32, below, holds both buffers: three times the bytes).
Results do not depend on the tile size.

Where the CPU multiplies bfloat16 natively (and on CUDA when asked to), the scores are computed
in bfloat16 and the few codes they cannot tell apart are scored again exactly
(:mod:`.screened`): the same codes, in a half to a fifth of the matmul time on CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from codebook_features.codebook import native, screened
from codebook_features.codebook.config import Similarity

SCORE_BUDGET = 1 << 22
"""Score elements per tile when no chunk size is given (16 MiB in float32): small enough to
stay in cache between the matmul that writes a tile and the top-k that reads it."""
PREFERRED_TOKENS = 512
"""Tokens per tile before groups are split across tiles: long tiles keep the matmul efficient."""
MIN_TOKENS = 256
"""Fewest tokens per tile (unless fewer come in): with very large codebooks a tile then holds
more than the budget (64 MiB at 65,536 codes), because shorter tiles measured much slower."""
BLOCK = 64
"""Block width of the two-level top-k."""

Exclusion = tuple[Tensor, Tensor | None]
"""Codes to leave out of the search: a ``(G, C)`` mask, and optionally an ``(N,)`` token mask
saying at which tokens (all tokens when ``None``)."""


def search_dtype(*tensors: Tensor) -> torch.dtype:
    """Scores are computed in float32, or float64 when an input is float64."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def search_matrix(
    codes: Tensor, similarity: Similarity, dtype: torch.dtype
) -> tuple[Tensor, Tensor | None]:
    """Codes in the form the search multiplies with, and the per-code score offset.

    ``inner_product`` and ``cosine`` rank codes by ``x . c / |c|`` (for a given token, |x| is a
    constant, so both rank alike); ``euclidean`` ranks by ``x . c - |c|^2 / 2``, which orders
    codes like ``-|x - c|^2``.
    """
    codes = codes.to(dtype)
    if similarity == "euclidean":
        return codes, -0.5 * codes.pow(2).sum(-1).unsqueeze(1)
    norms = codes.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(codes.dtype).tiny)
    return codes / norms, None


def tile_shape(
    groups: int, tokens: int, num_codes: int, chunk_size: int | None, budget: int | None = None
) -> tuple[int, int]:
    """(groups, tokens) searched per tile, near ``budget`` scores (:data:`SCORE_BUDGET`)."""
    budget = SCORE_BUDGET if budget is None else budget
    if chunk_size is not None:
        return groups, max(1, min(tokens, chunk_size))
    token_tile = min(tokens, max(MIN_TOKENS, min(PREFERRED_TOKENS, budget // num_codes)))
    group_tile = max(1, min(groups, budget // (token_tile * num_codes)))
    if group_tile == groups:  # everything fits: take more tokens per tile instead
        token_tile = max(token_tile, min(tokens, budget // (groups * num_codes)))
    return group_tile, token_tile


@torch.no_grad()
def search_codes(
    x: Tensor,
    codes: Tensor,
    k: int,
    similarity: Similarity,
    chunk_size: int | None = None,
    exclude: Sequence[Exclusion] = (),
) -> Tensor:
    """Ids of the ``k`` codes most similar to each input, most similar first.

    Args:
        x: inputs, ``(G, N, d)``.
        codes: codebooks, ``(G, C, d)``.
        k: codes per token.
        similarity: see :func:`search_matrix`.
        chunk_size: tokens per tile; ``None`` keeps a tile near :data:`SCORE_BUDGET` scores.
        exclude: codes that may not be chosen (see :data:`Exclusion`).

    Returns:
        ``(G, N, k)`` int64 code ids.
    """
    groups, tokens, _ = x.shape
    num_codes = codes.shape[1]
    if tokens == 0:
        return torch.empty(groups, 0, k, dtype=torch.long, device=x.device)
    with torch.autocast(x.device.type, enabled=False):
        dtype = search_dtype(x, codes)
        x = x.to(dtype)
        cheap_x = None
        if screened.enabled(x, num_codes, k):
            x = x.contiguous()  # laid out like its bfloat16 copy, which the kernel reads beside it
            cheap_x = x.to(torch.bfloat16)
        ids = torch.empty(groups, tokens, k, dtype=torch.long, device=x.device)
        # bfloat16 scores take half the bytes: a tile of the same bytes holds twice as many
        # (fewer tiles, less work per tile)
        budget = SCORE_BUDGET if cheap_x is None else 2 * SCORE_BUDGET
        group_tile, token_tile = tile_shape(groups, tokens, num_codes, chunk_size, budget)
        tile_scores = group_tile * token_tile * num_codes
        cheap_buffer = buffer = None  # each made for the first group scored that way
        for g0 in range(0, groups, group_tile):
            g1 = min(groups, g0 + group_tile)
            # prepared per group tile, so no full-size copy of a large codebook is made
            matrix, offset = search_matrix(codes[g0:g1], similarity, dtype)
            prepared = None if cheap_x is None else screened.GroupTile(matrix, offset)
            if prepared is not None and not prepared.narrows:
                prepared = None  # the float32 search is faster for these codes
            matrix_t = None
            for t0 in range(0, tokens, token_tile):
                t1 = min(tokens, t0 + token_tile)
                size = (g1 - g0) * (t1 - t0) * num_codes
                if prepared is not None and cheap_x is not None:
                    if cheap_buffer is None:
                        cheap_buffer = x.new_empty(tile_scores, dtype=torch.bfloat16)
                    cheap = cheap_buffer[:size].view(g1 - g0, t1 - t0, -1)
                    with screened.float32_sums(x.device):
                        torch.bmm(cheap_x[g0:g1, t0:t1], prepared.cheap_t, out=cheap)
                    for exclusion in exclude:
                        _mask_excluded(cheap, exclusion, slice(g0, g1), slice(t0, t1))
                    ids[g0:g1, t0:t1] = _screened_ids(
                        prepared, x, cheap_x, cheap, offset, k, exclude, g0, t0
                    )
                    continue
                if matrix_t is None:  # (g, d, C): the faster GEMM layout
                    matrix_t = matrix.transpose(1, 2).contiguous()
                if buffer is None:
                    buffer = x.new_empty(tile_scores)
                scores = buffer[:size].view(g1 - g0, t1 - t0, -1)
                if offset is None:
                    torch.bmm(x[g0:g1, t0:t1], matrix_t, out=scores)
                else:
                    torch.baddbmm(offset, x[g0:g1, t0:t1], matrix_t, out=scores)
                for exclusion in exclude:
                    _mask_excluded(scores, exclusion, slice(g0, g1), slice(t0, t1))
                ids[g0:g1, t0:t1] = topk_ids(scores, k)
    return ids


def _screened_ids(
    prepared: screened.GroupTile,
    x: Tensor,
    cheap_x: Tensor,
    cheap: Tensor,
    offset: Tensor | None,
    k: int,
    exclude: Sequence[Exclusion],
    g0: int,
    t0: int,
) -> Tensor:
    """Ids of a tile (groups from ``g0``, tokens from ``t0``) from its cheap scores, the rows
    the kernel leaves searched in full, exactly."""
    groups, tokens, _ = cheap.shape
    tile_x = x[g0 : g0 + groups, t0 : t0 + tokens]
    found, fallback = prepared.search(tile_x, cheap_x[g0 : g0 + groups, t0 : t0 + tokens], cheap, k)
    for g in fallback.any(-1).nonzero().flatten().tolist():  # rare
        rows = fallback[g].nonzero().flatten()
        found[g, rows] = _exact_rows(
            tile_x[g, rows], prepared.matrix[g], offset, g, k, exclude, g0, t0 + rows
        )
    return found


def _exact_rows(
    x: Tensor,
    matrix: Tensor,
    offset: Tensor | None,
    g: int,
    k: int,
    exclude: Sequence[Exclusion],
    g0: int,
    tokens: Tensor,
) -> Tensor:
    """The exact top-k of rows ``x`` ``(n, d)`` of group ``g0 + g``, at token positions
    ``tokens``, against ``matrix`` ``(C, d)``: scores in float64, ties to the lower index, NaN
    last."""
    scores = x.double() @ matrix.double().T
    if offset is not None:
        scores += offset[g].double()
    for exclusion in exclude:
        _mask_excluded(scores.unsqueeze(0), exclusion, slice(g0 + g, g0 + g + 1), tokens)
    scores.nan_to_num_(nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    values, chosen = screened.best_first(*scores.topk(k, dim=-1))
    # a code tied with the k-th one but not chosen may have the lower index: sort those in full
    kth = values[:, -1:]
    tied = ((scores == kth).sum(-1) > (values == kth).sum(-1)).nonzero().flatten()
    if len(tied):
        chosen[tied] = scores[tied].sort(dim=-1, descending=True, stable=True).indices[:, :k]
    return chosen


def _mask_excluded(
    scores: Tensor, exclude: Exclusion, groups: slice, tokens: slice | Tensor
) -> None:
    """Set the left-out codes' scores ``(g, t, C)`` to ``-inf``, for the groups and tokens (a
    range, or token positions) the scores are of."""
    code_mask, token_mask = exclude
    mask = code_mask[groups].unsqueeze(1)
    if token_mask is not None:
        mask = mask & token_mask[tokens].view(1, -1, 1)
    scores.masked_fill_(mask, float("-inf"))


def topk_ids(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` largest scores along the last dimension, largest first.

    On CPU, float32 scores go to the compiled kernel (:mod:`.native`) when it is available.
    Otherwise wide rows go through a two-level search: the ``k`` blocks with the largest maxima
    hold the ``k`` largest scores, so ``topk`` only runs over block maxima and then over those
    ``k`` blocks. Both are exact (with exact ties any of the tied codes is a valid answer).
    """
    width = scores.shape[-1]
    on_cpu = scores.device.type == "cpu"
    if on_cpu and scores.dtype == torch.float32 and scores.is_contiguous() and native.available():
        return native.topk_rows(scores.view(-1, width), k).view(*scores.shape[:-1], k)
    if not on_cpu or width < 16 * BLOCK or width % BLOCK or k * BLOCK > width // 4:
        return scores.topk(k, dim=-1).indices
    return two_level_topk(scores, k)


def two_level_topk(scores: Tensor, k: int) -> Tensor:
    """Exact top-k through block maxima; needs a width that is a multiple of :data:`BLOCK`."""
    width = scores.shape[-1]
    lead = scores.shape[:-1]
    rows = scores.reshape(-1, width)
    n_rows, n_blocks = rows.shape[0], width // BLOCK
    block_max = rows.view(n_rows, n_blocks, BLOCK).amax(-1)
    top_blocks = block_max.topk(k, dim=-1).indices
    flat_blocks = torch.arange(n_rows, device=rows.device).unsqueeze(1) * n_blocks + top_blocks
    candidates = rows.view(n_rows * n_blocks, BLOCK).index_select(0, flat_blocks.view(-1))
    best = candidates.view(n_rows, k * BLOCK).topk(k, dim=-1).indices
    chosen_blocks = torch.gather(top_blocks, 1, best // BLOCK)
    return (chosen_blocks * BLOCK + best % BLOCK).view(*lead, k)
