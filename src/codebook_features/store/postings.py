"""Per code, the token rows where it fires, stored compactly: the gaps between a code's sorted
rows, bit-packed at one width per code.

A code's rows ascend, so the gaps between them are small numbers where the code is common and
large ones where it is rare; each code packs its gaps (less one: rows are distinct) at the bit
width of its largest gap, its first row kept apart. On the language demo's store that is 182
bytes per token instead of the 512 of int32 rows, and a code's rows are still read alone:
its bytes start at a byte offset of their own, and any value is found from its position.

Files per site (``.npy``): ``packed`` (uint8, 8 zero bytes at the end so a value's 8-byte
window never runs past it), ``offsets`` (int64, codes + 1: each code's first byte),
``widths`` (uint8: bits per gap), ``firsts`` (int64: first row, -1 for a code that never
fires). How many rows a code has is the CSR ``indptr`` of the index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from codebook_features.errors import CodebookError
from codebook_features.store.appender import NpyAppender

PADDING = 8
"""Zero bytes after the last code, so that reading any value's 8-byte window stays inside."""
BLOCK = 1 << 16
"""Gaps packed or decoded at a time within one code: a multiple of 8, so every block of a
code starts on a byte."""


def postings_files(site: str) -> tuple[str, str, str, str]:
    """``(packed, offsets, widths, firsts)`` file names of ``site``."""
    return (
        f"{site}.postings.npy",
        f"{site}.postings_offsets.npy",
        f"{site}.postings_widths.npy",
        f"{site}.postings_firsts.npy",
    )


def pack_postings(
    directory: Path, site: str, rows: np.ndarray, indptr: np.ndarray, chunk: int
) -> None:
    """Write ``site``'s postings files from CSR ``rows``/``indptr`` (each code's rows
    ascending), ``chunk`` rows of codes at a time, so memory stays bounded."""
    codes = len(indptr) - 1
    counts = np.diff(indptr)
    offsets = np.zeros(codes + 1, dtype=np.int64)
    widths = np.zeros(codes, dtype=np.uint8)
    firsts = np.full(codes, -1, dtype=np.int64)
    packed_name, offsets_name, widths_name, firsts_name = postings_files(site)
    with NpyAppender(directory / packed_name, np.uint8) as packed:
        written, code = 0, 0
        while code < codes:
            last = int(np.searchsorted(indptr, indptr[code] + chunk, side="right")) - 1
            last = min(max(last, code + 1), codes)
            lo, hi = int(indptr[code]), int(indptr[last])
            here = np.asarray(rows[lo:hi], dtype=np.int64)
            n = counts[code:last]
            starts = indptr[code:last] - lo
            fires = n > 0
            firsts[code:last][fires] = here[starts[fires]]
            # gaps less one, with each code's first row dropped (it is kept apart)
            gaps = np.diff(here, prepend=0) - 1
            keep = np.ones(here.size, dtype=bool)
            keep[starts[fires]] = False
            gaps = gaps[keep]
            if gaps.size and gaps.min() < 0:
                raise CodebookError(
                    f"the token rows of a code of {site} are not strictly ascending: the "
                    "store is damaged; record it again"
                )
            gap_counts = np.maximum(n - 1, 0)
            owner = np.repeat(np.arange(last - code), gap_counts)
            largest = np.zeros(last - code, dtype=np.int64)
            spaced = gap_counts > 0
            if spaced.any():
                first_gaps = (np.cumsum(gap_counts) - gap_counts)[spaced]
                largest[spaced] = np.maximum.reduceat(gaps, first_gaps)
            width = _bit_length(largest)
            nbytes = (np.maximum(n - 1, 0) * width + 7) // 8
            widths[code:last] = width
            offsets[code + 1 : last + 1] = written + np.cumsum(nbytes)
            if last - code == 1:  # one code, perhaps larger than the chunk: in blocks
                for block in range(0, len(gaps), BLOCK):
                    size = min(BLOCK, len(gaps) - block)
                    piece = (size * width + 7) // 8
                    packed.append(_pack(gaps[block : block + size], owner[:size], width, piece))
            else:  # codes that fit in the chunk: all of them at once
                packed.append(_pack(gaps, owner, width, nbytes))
            written = int(offsets[last])
            code = last
        packed.append(np.zeros(PADDING, dtype=np.uint8))
    np.save(directory / offsets_name, offsets)
    np.save(directory / widths_name, widths)
    np.save(directory / firsts_name, firsts)


def unpack_postings(
    packed: np.ndarray,
    offsets: np.ndarray,
    widths: np.ndarray,
    firsts: np.ndarray,
    indptr: np.ndarray,
    lo: int,
    hi: int,
) -> np.ndarray:
    """The rows of codes ``lo`` to ``hi - 1``, code after code (each ascending), as int64:
    what ``rows[indptr[lo]:indptr[hi]]`` of plain CSR arrays would hold."""
    parts = [
        _unpack_code(packed, int(offsets[c]), int(widths[c]), int(firsts[c]), count)
        for c in range(lo, hi)
        if (count := int(indptr[c + 1] - indptr[c]))
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _unpack_code(packed: np.ndarray, offset: int, width: int, first: int, count: int) -> np.ndarray:
    """One code's ``count`` rows, decoded :data:`BLOCK` gaps at a time (memory stays bounded
    by a block, whatever the code's size): each value is read from the 8 bytes its bits start
    in."""
    out = np.empty(count, dtype=np.int64)
    out[0] = first
    mask = np.uint64((1 << width) - 1)
    for start in range(0, count - 1, BLOCK):
        size = min(BLOCK, count - 1 - start)
        bit = offset * 8 + (start + np.arange(size, dtype=np.int64)) * width
        window = np.asarray(packed)[(bit >> 3)[:, None] + np.arange(8)]
        words = np.ascontiguousarray(window).view("<u8").ravel()
        steps = ((words >> (bit & 7).astype(np.uint64)) & mask).astype(np.int64) + 1
        here = out[1 + start : 1 + start + size]
        np.cumsum(steps, out=here)
        here += out[start]
    return out


def _bit_length(values: np.ndarray) -> np.ndarray:
    """Bits needed for each non-negative int64 value (0 for 0)."""
    out = np.zeros(values.shape, dtype=np.int64)
    rest = values.copy()
    while rest.any():
        out += rest > 0
        rest >>= 1
    return out


def _pack(gaps: np.ndarray, owner: np.ndarray, width: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
    """The chunk's bytes: each code's gaps at its width, little-endian bit order, each code
    starting on a byte of its own."""
    bits = np.zeros(int(nbytes.sum()) * 8, dtype=np.uint8)
    if not gaps.size:
        return np.packbits(bits, bitorder="little")
    gap_counts = np.bincount(owner, minlength=width.size)
    within = np.arange(owner.size) - np.repeat(np.cumsum(gap_counts) - gap_counts, gap_counts)
    base = (np.cumsum(nbytes) - nbytes)[owner] * 8 + within * width[owner]
    each = width[owner]
    for j in range(int(width.max(initial=0))):
        wide = each > j
        bits[base[wide] + j] = (gaps[wide] >> j) & 1
    return np.packbits(bits, bitorder="little")
