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

from codebook_features.store.appender import NpyAppender

PADDING = 8
"""Zero bytes after the last code, so that reading any value's 8-byte window stays inside."""


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
    n = np.diff(np.asarray(indptr[lo : hi + 1], dtype=np.int64))
    if not n.sum():
        return np.zeros(0, dtype=np.int64)
    gap_counts = np.maximum(n - 1, 0)
    owner = np.repeat(np.arange(hi - lo), gap_counts)
    width = np.asarray(widths[lo:hi], dtype=np.int64)[owner]
    within = np.arange(owner.size) - np.repeat(np.cumsum(gap_counts) - gap_counts, gap_counts)
    bit = np.asarray(offsets[lo:hi], dtype=np.int64)[owner] * 8 + within * width
    window = np.asarray(packed)[(bit >> 3)[:, None] + np.arange(8)]
    words = np.ascontiguousarray(window).view("<u8").ravel()
    masks = (np.uint64(1) << width.astype(np.uint64)) - np.uint64(1)
    steps = ((words >> (bit & 7).astype(np.uint64)) & masks).astype(np.int64) + 1
    # posting j of code c is its first row plus the code's first j steps
    climbed = np.r_[0, np.cumsum(steps)]
    posting_owner = np.repeat(np.arange(hi - lo), n)
    j = np.arange(posting_owner.size) - np.repeat(np.cumsum(n) - n, n)
    first_step = (np.cumsum(gap_counts) - gap_counts)[posting_owner]
    first = np.asarray(firsts[lo:hi], dtype=np.int64)[posting_owner]
    return first + climbed[first_step + j] - climbed[first_step]


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
