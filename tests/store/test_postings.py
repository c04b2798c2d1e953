"""Compact postings: every code's rows read back exactly as the plain CSR arrays hold them."""

from __future__ import annotations

import numpy as np
import pytest

from codebook_features.errors import CodebookError
from codebook_features.store import postings
from codebook_features.store.postings import pack_postings, postings_files, unpack_postings


def csr(per_code: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.r_[0, np.cumsum([len(r) for r in per_code])].astype(np.int64)
    rows = np.concatenate(per_code).astype(np.int32) if per_code else np.zeros(0, np.int32)
    return rows, indptr


def read(directory, site: str) -> list[np.ndarray]:
    return [np.load(directory / name, mmap_mode="r") for name in postings_files(site)]


def edge_cases(rng: np.random.Generator) -> list[np.ndarray]:
    total = 2**31 - 1  # the largest row of an int32 index
    return [
        np.zeros(0, np.int64),  # never fires
        np.array([5]),  # once
        np.arange(100, 400),  # every token: gaps of one, packed in zero bits
        np.array([0, total]),  # the widest gap
        np.array([0, 1, 2, 7, 8, 2**20, 2**20 + 1]),
        np.zeros(0, np.int64),
        np.sort(rng.choice(10**6, 5000, replace=False)),  # common
        np.sort(rng.choice(10**6, 3, replace=False)),  # rare
        np.array([total - 1, total]),
    ]


@pytest.mark.parametrize(
    ("chunk", "block"),
    [(1, 1 << 16), (7, 1 << 16), (1 << 18, 1 << 16), (1, 8), (50, 16)],
)  # chunk edges inside and between codes; large codes packed and read in blocks
def test_every_code_reads_back_its_rows(tmp_path, monkeypatch, chunk: int, block: int) -> None:
    monkeypatch.setattr(postings, "BLOCK", block)
    rng = np.random.default_rng(0)
    per_code = edge_cases(rng) + [
        np.sort(rng.choice(50_000, rng.integers(0, 300), replace=False)) for _ in range(200)
    ]
    rows, indptr = csr(per_code)
    pack_postings(tmp_path, "s", rows, indptr, chunk)
    packed, offsets, widths, firsts = read(tmp_path, "s")
    for code, expected in enumerate(per_code):
        got = unpack_postings(packed, offsets, widths, firsts, indptr, code, code + 1)
        assert got.dtype == np.int64
        assert np.array_equal(got, expected), code
    # ranges of codes, as the index reads them: code after code
    for lo, hi in [(0, len(per_code)), (3, 9), (6, 7), (0, 1), (10, 150)]:
        got = unpack_postings(packed, offsets, widths, firsts, indptr, lo, hi)
        assert np.array_equal(got, rows[indptr[lo] : indptr[hi]])
    # a code that fires on every token costs no bits; the common one far fewer than 32 a row
    assert widths[2] == 0 and offsets[3] == offsets[2]
    assert (offsets[7] - offsets[6]) * 8 / 4999 < 12
    assert packed.nbytes < rows.nbytes / 2


def test_no_codes_and_codes_that_never_fire(tmp_path) -> None:
    rows, indptr = csr([np.zeros(0, np.int64)] * 4)
    pack_postings(tmp_path, "s", rows, indptr, 5)
    packed, offsets, widths, firsts = read(tmp_path, "s")
    assert list(firsts) == [-1] * 4 and not offsets.any()
    assert unpack_postings(packed, offsets, widths, firsts, indptr, 0, 4).size == 0
    assert not list(tmp_path.glob("*.raw"))  # the pieces became the .npy files


def test_zero_codes_and_rows_out_of_order(tmp_path) -> None:
    rows, indptr = csr([])
    pack_postings(tmp_path, "none", rows, indptr, 5)
    packed, offsets, widths, firsts = read(tmp_path, "none")
    assert list(offsets) == [0] and widths.size == firsts.size == 0
    assert unpack_postings(packed, offsets, widths, firsts, indptr, 0, 0).size == 0
    for bad in ([5, 5, 9], [9, 5]):  # a repeated row, a descending one
        rows, indptr = csr([np.array([1, 2]), np.array(bad)])
        with pytest.raises(CodebookError, match="not strictly ascending: the store is damaged"):
            pack_postings(tmp_path, "bad", rows, indptr, 1 << 18)
        assert not list(tmp_path.glob("bad.*"))  # nothing half written is left
