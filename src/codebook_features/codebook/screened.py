"""Exact search through cheap bfloat16 scores, where the CPU multiplies bfloat16 natively.

The float32 score matmul is most of the search's time, and it already runs at the cores'
float32 peak. CPUs with AVX512-BF16 or AMX multiply bfloat16 about twice as fast. Cheap scores
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
"""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor

from codebook_features.codebook import native

DISABLE_ENV = "CODEBOOK_FEATURES_NO_BF16_SEARCH"
"""Set to any value to search in float32 only."""
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
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and num_codes >= MIN_CODES
        and k <= num_codes // 4
        and not os.environ.get(DISABLE_ENV)
        and native_bfloat16()
        and native.available()
    )


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
        code, cheap_code, rounding, mean_code = native.code_sizes(self.matrix, cheap).unbind(1)
        # one far code widens every row's bound (it takes the group's largest): then the
        # candidates would be too many, and the float32 search is faster
        self.narrows = bool((code <= SPREAD * mean_code).all())
        dim = matrix.shape[-1]
        gamma = accumulation_factor(dim)
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
        ids, fallback = native.screened_topk_bf16(
            cheap, x, cheap_x, self.matrix, self.offset, self.bound, self.relative, k, capacity(k)
        )
        return ids.view(groups, tokens, k), fallback.view(groups, tokens)
