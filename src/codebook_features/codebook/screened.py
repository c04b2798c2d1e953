"""Exact search through cheap bfloat16 scores, where the CPU multiplies bfloat16 natively.

The float32 score matmul is most of the search's time, and it already runs at the cores'
float32 peak. CPUs with AVX512-BF16 or AMX multiply bfloat16 about twice as fast. Cheap scores
are off by at most a bound that follows from how they are computed (inputs rounded to
bfloat16, products summed in float32, the sum rounded to bfloat16), so every code whose cheap
score comes within twice that bound of the k-th best cheap score is a candidate, and the true
k best are always among the candidates. The few candidates are scored again exactly (float
products summed in double) and ranked; a row whose bound leaves too many candidates is searched
in full in float32. The ids are those of an exact search; the float32 search gives the same
except where two scores lie within float32 rounding of each other, which it orders by chance.
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


def accumulation_factor(dim: int) -> float:
    """``gamma_d``: products summed in float32 are off by at most this times the sum of their
    sizes."""
    return dim * FLOAT32_UNIT / (1 - dim * FLOAT32_UNIT)


@functools.lru_cache(maxsize=1)
def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (otherwise it would be slower)."""
    flags = native._cpu_flags().split()
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
    and the sizes their error bounds need.

    With ``x~``, ``m~`` the inputs rounded to bfloat16, ``dx = x~ - x`` and ``dm = m~ - m``, a
    cheap score is ``x~ . m~ = x . m + x~ . dm + dx . m``, summed in float32 and rounded to
    bfloat16 (values below float32's normal range may be flushed to zero). So it is off by at
    most ``|x~| |dm| + |dx| |m| + gamma_d |x~| |m~| + u |cheap| / (1 - u)`` plus what flushing
    loses, and adding the offset in float32 rounds once more. Measured rounding (``|dx|``,
    ``|dm|``) is about a third of the worst case ``u |x|``, which keeps the candidates few.
    """

    def __init__(self, matrix: Tensor, offset: Tensor | None) -> None:
        self.matrix = matrix.contiguous()  # (g, C, d) float32
        cheap = matrix.to(torch.bfloat16)
        self.cheap_t = cheap.transpose(1, 2).contiguous()  # (g, d, C): the faster GEMM layout
        self.offset = None if offset is None else offset.reshape(matrix.shape[:2]).contiguous()
        sizes = native.largest_code_sizes(self.matrix, cheap.contiguous())  # (g, 3)
        self.largest_code, self.largest_cheap_code, self.largest_rounding = sizes.unbind(1)
        self.largest_offset = (
            torch.zeros_like(self.largest_code)
            if self.offset is None
            else self.offset.abs().amax(-1).double()
        )
        output = BF16_UNIT / (1 - BF16_UNIT)
        added = 0.0 if offset is None else FLOAT32_UNIT / (1 - FLOAT32_UNIT)
        self.relative = (output * (1 + added) + added) * (1 + 2.0**-30)
        # a row's absolute bound is b0 |x~| + b1 |dx| + b2 (the kernel takes the row's norms)
        dim = matrix.shape[-1]
        self.bound = torch.stack(
            [
                self.largest_rounding
                + accumulation_factor(dim) * self.largest_cheap_code
                + FLUSHED * dim**0.5,
                self.largest_code,
                FLUSHED * (1 + dim + dim**0.5 * self.largest_cheap_code)
                + output * self.largest_offset,
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
