"""Exact search through cheap bfloat16 scores, where the CPU multiplies bfloat16 natively.

The float32 score matmul is most of the search's time, and it already runs at the cores'
float32 peak. CPUs with AVX512-BF16 multiply bfloat16 about twice as fast, with AMX about five
times. Cheap scores
are off by at most a bound that follows from how they are computed (inputs rounded to
bfloat16, products summed in float32, the sum rounded to bfloat16), so every code whose cheap
score comes within twice that bound of the k-th best cheap score is a candidate, and the true
k best are always among the candidates. The few candidates are scored again exactly (float
products summed in double) and ranked; a row whose bound leaves too many candidates (or meets
NaN, inf or float32's limits) is searched in full in float64. The ids are those of an exact
search (ties to the lower index); the float32 search gives the same except where two scores lie
within float32 rounding of each other, which it orders by chance. A group whose largest code is
far beyond its typical one is searched in float32: the bound takes the group's largest code, so
it would leave most rows with too many candidates.

The compiled kernel does the selection and rescoring on CPU. :func:`screened_topk` does the same
in torch operations, for CUDA, where bfloat16 matmuls are many times faster than float32 ones;
it is used there only when :data:`CUDA_ENV` is set (it has not yet run on a GPU). Tensor cores
may truncate rather than round when they add, so on CUDA the bound takes four times float32's
unit roundoff per addition.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator

import torch
from torch import Tensor

from codebook_features.codebook import native

DISABLE_ENV = "CODEBOOK_FEATURES_NO_BF16_SEARCH"
"""Set to any value to search in float32 only."""
CUDA_ENV = "CODEBOOK_FEATURES_BF16_SEARCH_CUDA"
"""Set to any value to search through bfloat16 scores on CUDA as well."""
BF16_UNIT = 2.0**-8
"""Unit roundoff of bfloat16 (8 significant bits, rounding to nearest)."""
FLOAT32_UNIT = 2.0**-24
FLUSHED = 2.0**-125
"""Bounds what flushing one value below float32's normal range to zero loses (with margin)."""
MIN_CODES = 256
"""Fewer codes than this are searched in float32: the matmul is then too small to gain."""
SPREAD = 4.0
"""A group tile whose largest code is more than this many times its mean code norm is searched
in float32."""


def accumulation_factor(dim: int) -> float:
    """``gamma_d``: products summed in float32 are off by at most this times the sum of their
    sizes."""
    return dim * FLOAT32_UNIT / (1 - dim * FLOAT32_UNIT)


@functools.lru_cache(maxsize=1)
def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (otherwise it would be slower)."""
    flags = native.cpu_flags().split()
    return b"avx512_bf16" in flags or b"amx_bf16" in flags


def enabled(x: Tensor, num_codes: int, k: int) -> bool:
    """Whether a search of float32 ``x`` goes through cheap scores."""
    if (
        x.dtype != torch.float32
        or num_codes < MIN_CODES
        or k > num_codes // 4
        or os.environ.get(DISABLE_ENV)
    ):
        return False
    if x.device.type == "cuda":
        return bool(os.environ.get(CUDA_ENV))
    return x.device.type == "cpu" and native_bfloat16() and native.available()


_sums_lock = threading.Lock()
_sums_users = 0
_sums_before = True


@contextlib.contextmanager
def float32_sums(device: torch.device) -> Iterator[None]:
    """cuBLAS may sum bfloat16 products in reduced precision, which the bound does not cover:
    within this block it sums them in float32. The setting is the process's: it is restored
    when the last thread inside such a block leaves it."""
    global _sums_users, _sums_before
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    with _sums_lock:
        if _sums_users == 0:
            _sums_before = matmul.allow_bf16_reduced_precision_reduction
            matmul.allow_bf16_reduced_precision_reduction = False
        _sums_users += 1
    try:
        yield
    finally:
        with _sums_lock:
            _sums_users -= 1
            if _sums_users == 0:
                matmul.allow_bf16_reduced_precision_reduction = _sums_before


def uses_kernel(x: Tensor) -> bool:
    """Whether the compiled kernel selects and rescores (CPU), rather than torch operations."""
    return x.device.type == "cpu" and native.available()


def capacity(k: int) -> int:
    """Most candidates a row is scored again with before it is searched in full."""
    return max(64, 4 * k)


class GroupTile:
    """One tile of groups prepared for a screened search: the codes in float32 and bfloat16,
    and the coefficients of their error bound.

    With ``x~``, ``m~`` the inputs rounded to bfloat16, ``dx = x~ - x`` and ``dm = m~ - m``, a
    cheap score is ``x~ . m~ = x . m + x~ . dm + dx . m``, summed in float32 and rounded to
    bfloat16 (values below float32's normal range may be flushed to zero). So it is off by at
    most ``|x~| |dm| + |dx| |m| + gamma_d |x~| |m~|``, plus ``u`` times its own size for the
    final rounding, plus what flushing loses. Measured rounding (``|dx|``, ``|dm|``) is about a
    third of the worst case ``u |x|``, which keeps the candidates few. Without offsets the last
    rounding is bounded by the cheap score itself (the kernel's relative term); with offsets
    (euclidean), whose size says nothing about the score's, by ``u (1 + gamma_d) |x~| |m~|``,
    and adding the offset in float32 rounds once more (relative to the sum).
    """

    def __init__(self, matrix: Tensor, offset: Tensor | None) -> None:
        self.matrix = matrix.contiguous()  # (g, C, d) float32
        cheap = matrix.to(torch.bfloat16)
        self.cheap_t = cheap.transpose(1, 2).contiguous()  # (g, d, C): the faster GEMM layout
        self.offset = None if offset is None else offset.reshape(matrix.shape[:2]).contiguous()
        sizes = native.code_sizes if uses_kernel(matrix) else code_sizes
        code, cheap_code, rounding, mean_code = sizes(self.matrix, cheap).unbind(1)
        # one far code widens every row's bound (it takes the group's largest): then the
        # candidates would be too many, and the float32 search is faster; codes holding NaN
        # (a NaN mean) are searched in float32 too, as the kernel's reasoning needs finite codes
        self.narrows = bool((mean_code.isfinite() & (code <= SPREAD * mean_code)).all())
        dim = matrix.shape[-1]
        gamma = accumulation_factor(dim)
        if matrix.device.type == "cuda":  # tensor cores may truncate when they add
            gamma *= 4
        output = BF16_UNIT / (1 - BF16_UNIT)
        if offset is None:
            last, self.relative = torch.zeros_like(code), output
        else:
            last = BF16_UNIT * (1 + gamma) * cheap_code
            self.relative = FLOAT32_UNIT / (1 - FLOAT32_UNIT)
        self.relative *= 1 + 2.0**-30
        # a row's absolute bound is b0 |x~| + b1 |dx| + b2 (the kernel takes the row's norms)
        self.bound = torch.stack(
            [
                rounding + gamma * cheap_code + last + FLUSHED * dim**0.5,
                code,
                FLUSHED * (1 + dim + dim**0.5 * cheap_code),
            ],
            dim=1,
        ).contiguous()

    def search(self, x: Tensor, cheap_x: Tensor, cheap: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Ids ``(g, t, k)`` of a tile of rows ``x`` ``(g, t, d)`` (``cheap_x`` in bfloat16)
        from their cheap scores ``(g, t, C)`` (codes left out already at ``-inf``), and the
        ``(g, t)`` rows left for a full search."""
        groups, tokens, _ = x.shape
        select = native.screened_topk_bf16 if uses_kernel(x) else screened_topk
        ids, fallback = select(
            cheap, x, cheap_x, self.matrix, self.offset, self.bound, self.relative, k, capacity(k)
        )
        return ids.view(groups, tokens, k), fallback.view(groups, tokens)


def code_sizes(matrix: Tensor, cheap: Tensor) -> Tensor:
    """:func:`.native.code_sizes` in torch operations: per group ``(G, 4)`` float64, the largest
    ``|m|``, ``|m~|`` and ``|m~ - m|``, and the mean ``|m|``."""
    exact, rounded = matrix.double(), cheap.double()
    code = exact.norm(dim=-1)
    return torch.stack(
        [
            code.amax(-1),
            rounded.norm(dim=-1).amax(-1),
            (rounded - exact).norm(dim=-1).amax(-1),
            code.mean(-1),
        ],
        dim=1,
    )


def screened_topk(
    cheap: Tensor,
    x: Tensor,
    cheap_x: Tensor,
    matrix: Tensor,
    offset: Tensor | None,
    bound: Tensor,
    relative: float,
    k: int,
    capacity: int,
) -> tuple[Tensor, Tensor]:
    """:func:`.native.screened_topk_bf16` in torch operations (same arguments and results;
    rows need not be contiguous): the candidates of each row are its at most ``capacity``
    largest cheap scores that reach the threshold, scored again in float64."""
    groups, tokens, width = cheap.shape
    row = cheap.float()  # no score is +inf or NaN where the row's bound is finite (row_bound)
    if offset is not None:  # a NaN after the offset is no candidate, as in the kernel
        row = row + offset.unsqueeze(1)
        row.masked_fill_(row.isnan(), -torch.inf)
    kth = row.topk(k, dim=-1).values[..., -1].double()
    xd, cheap_xd = x.double(), cheap_x.double()
    coef = bound.to(x.device).unsqueeze(1)  # (G, 1, 3)
    size = cheap_xd.norm(dim=-1)
    absolute = (
        coef[..., 0] * size + coef[..., 1] * (cheap_xd - xd).norm(dim=-1) + coef[..., 2]
    ) * (1.0 + 2.0**-30)
    # as in the kernel's row_bound: a row whose cheap scores could overflow is searched in full
    absolute = absolute.masked_fill(~(size * coef[..., 1] * (1.0 + 2.0**-7) <= 2.0**126), torch.inf)
    # v + a + rel |v| >= kth - a - rel |kth|, solved for v, widened, rounded down to float32
    reach = kth - 2.0 * absolute - relative * kth.abs()
    lowest = torch.where(reach >= 0, reach / (1.0 + relative), reach / (1.0 - relative))
    lowest = lowest - 2.0**-40 * (lowest.abs() + kth.abs())
    threshold = lowest.float()
    below = threshold.nextafter(threshold.new_tensor(-torch.inf))
    threshold = torch.where(threshold.double() > lowest, below, threshold)
    candidates = row >= threshold.unsqueeze(-1)
    fallback = (
        ~kth.isfinite()
        | ~absolute.isfinite()
        | ~(threshold > -torch.inf)
        | (candidates.sum(-1) > capacity)
    )
    # the candidates are among the row's `room` largest cheap scores (or it falls back)
    room = min(max(capacity, k), width)
    values, chosen = row.topk(room, dim=-1)
    keep = values >= threshold.unsqueeze(-1)
    flat = (chosen + torch.arange(groups, device=x.device).view(-1, 1, 1) * width).view(-1, room)
    exact = _exact_scores(matrix.reshape(groups * width, -1), xd.reshape(-1, xd.shape[-1]), flat)
    exact = exact.view(groups, tokens, room)
    if offset is not None:
        exact = exact + offset.double().reshape(-1)[flat].view(groups, tokens, room)
    fallback |= (exact.isnan() & keep).any(-1)
    _, ids = best_first(exact.masked_fill(~keep, -torch.inf), chosen)
    return ids[..., :k].reshape(groups * tokens, k), fallback.reshape(-1)


def best_first(scores: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
    """Scores and their code ids (last dimension) ordered best first, exact ties to the lower
    id: the order of an exact search."""
    ids, order = ids.sort(dim=-1)
    scores, order = scores.gather(-1, order).sort(dim=-1, descending=True, stable=True)
    return scores, ids.gather(-1, order)


RESCORED = 1 << 21
"""Float64 values of candidate codes gathered at once (16 MiB)."""


def _exact_scores(table: Tensor, xd: Tensor, rows: Tensor) -> Tensor:
    """Float64 scores ``(n, m)`` of inputs ``xd`` ``(n, d)`` against the codes ``table[rows]``,
    a few rows at a time so the gathered codes stay small."""
    n, m = rows.shape
    step = max(1, RESCORED // (m * table.shape[1]))
    parts = [
        (table[rows[i : i + step]].double() @ xd[i : i + step].unsqueeze(-1)).squeeze(-1)
        for i in range(0, n, step)
    ]
    return torch.cat(parts) if parts else xd.new_empty(0, m)
