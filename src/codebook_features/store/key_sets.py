"""For every code of one group at once, the set of keys that best predicts where it fires
(by F1 on the fit rows) and how that set does on the held-out rows: the arithmetic behind
:mod:`~codebook_features.store.descriptions`, which says what the keys are and why.

Each token row has one key per kind (dense numbers, ``0 .. size - 1``, in the order ties
break). Per group and kind: count the (code, key) pairs of the fit rows (in a dense table when
it is small, else by a stable radix sort by code of rows already sorted by key), keep the
pairs held by ``min_count`` rows, sort them by code and precision, and take cumulative sums
within each code's run, so every code's best prefix comes out of a few passes over arrays.
Memory: a few arrays the size of one group's slots (rows x k), and a dense table of at most
:data:`DENSE_COUNTS` cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np


def row_codes(ids: np.ndarray) -> np.ndarray:
    """``(rows, k)`` code per slot, ``-1`` for an empty slot or a code repeated in its row
    (a row counts once for a code)."""
    slots = np.sort(ids.astype(np.int32), axis=1)
    slots[slots < 0] = -1
    repeated = slots[:, 1:] == slots[:, :-1]
    slots[:, 1:][repeated] = -1
    return slots


@dataclass(frozen=True)
class SplitKeys:
    """One kind's keys on the fit rows (also sorted, for counting pairs) and held-out rows."""

    size: int
    """Keys are ``0 .. size - 1``."""
    fit: np.ndarray
    fit_order: np.ndarray
    """The fit rows (among fit rows) by key, stably."""
    fit_counts: np.ndarray
    """Fit rows per key."""
    held: np.ndarray
    held_counts: np.ndarray

    @classmethod
    def split(cls, keys: np.ndarray, size: int, fit: np.ndarray) -> SplitKeys:
        """``keys`` of every row, split by the mask of the fit rows."""
        keys_fit, held = keys[fit], keys[~fit]
        count = partial(np.bincount, minlength=size)
        order = np.argsort(keys_fit, kind="stable")
        return cls(size, keys_fit, order, count(keys_fit), held, count(held))


@dataclass(frozen=True)
class BestSets:
    """One kind's best set per code: the keys ``keys[first[c] : first[c] + length[c]]``, with
    fit F1 ``f1[c]`` (-1 without candidates)."""

    f1: np.ndarray
    first: np.ndarray
    length: np.ndarray
    keys: np.ndarray

    def keys_of(self, code: int) -> list[int]:
        return self.keys[self.first[code] : self.first[code] + self.length[code]].tolist()

    def chosen(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The sets of ``codes`` as pairs: (code, key) for each key of each set."""
        lengths = self.length[codes]
        owner = np.repeat(codes, lengths)
        offsets = np.arange(owner.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return owner, self.keys[np.repeat(self.first[codes], lengths) + offsets]


@dataclass(frozen=True)
class GroupSets:
    """Per code of one group: the kind whose set wins (-1: none), every kind's best sets, and
    on the held-out rows the rows where the code fires and its set holds (``hits``), where
    its set holds (``predicted``) and where it fires (``support``); and where it fires on
    the fit rows (``fit_support``)."""

    kind: np.ndarray
    sets: list[BestSets]
    hits: np.ndarray
    predicted: np.ndarray
    support: np.ndarray
    fit_support: np.ndarray


def group_sets(
    slots: np.ndarray,
    fit: np.ndarray,
    kinds: Sequence[SplitKeys],
    num_codes: int,
    max_terms: int,
    min_count: int,
) -> GroupSets:
    """Fit every kind's sets on the fit rows of ``slots`` (:func:`row_codes`), choose per
    code the kind with the best fit F1 (ties: the earlier kind), and count how the chosen
    sets do on the held-out rows."""
    fit_slots, held = slots[fit], slots[~fit]
    fit_support = np.bincount(fit_slots[fit_slots >= 0], minlength=num_codes)
    sets = [_best_sets(k, fit_slots, fit_support, max_terms, min_count) for k in kinds]
    scores = np.stack([f.f1 for f in sets])
    kind = np.where(scores.max(axis=0) > 0, scores.argmax(axis=0), -1)
    hits, predicted, support = _score(held, kind, sets, kinds, num_codes)
    return GroupSets(kind, sets, hits, predicted, support, fit_support)


DENSE_COUNTS = 1 << 23
"""Pairs of a group are counted in a dense (code, key) table up to this many cells (8 bytes
each), and by sorting beyond (e.g. the ``pair`` kind, or a large vocabulary)."""


def _candidates(
    keys: SplitKeys, slots: np.ndarray, num_codes: int, min_count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (code, key) pairs held by at least ``min_count`` fit rows, sorted by code then
    key, with their counts."""
    size = keys.size
    if num_codes * size > DENSE_COUNTS:
        c, x, a = _pairs(slots, keys.fit_order, keys.fit[keys.fit_order], num_codes)
        kept = a >= min_count
        return c[kept], x[kept], a[kept]
    cells = slots.astype(np.int64) * size + keys.fit[:, None]
    counts = np.bincount(cells[slots >= 0], minlength=num_codes * size)
    found = np.flatnonzero(counts >= min_count)
    c, x = np.divmod(found, size)
    return c, x, counts[found]


def _code_type(num_codes: int) -> type:
    """Codes as 16-bit numbers where they fit, which numpy sorts by radix (linear)."""
    return np.uint16 if num_codes < 1 << 16 else np.int64


def _pairs(
    slots: np.ndarray, order: np.ndarray, keys: np.ndarray, num_codes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (code, key) pairs of the rows ``slots``, sorted by code then key, and the
    rows that hold each; ``order`` sorts the rows by key and ``keys`` holds their keys in that
    order. A stable sort by code of rows already sorted by key
    (a radix sort of 16-bit codes, linear) stands in for a comparison sort of pairs."""
    code = slots[order].reshape(-1)
    # empty slots (-1) sort last (as 65535 when codes are 16-bit)
    by_code = np.argsort(
        np.where(code < 0, num_codes, code).astype(_code_type(num_codes)), kind="stable"
    )
    valid = int(np.count_nonzero(code >= 0))
    by_code = by_code[:valid]
    code, key = code[by_code], np.repeat(keys, slots.shape[1])[by_code]
    starts = np.flatnonzero(np.r_[True, (code[1:] != code[:-1]) | (key[1:] != key[:-1])])
    starts = starts[starts < valid]  # none: no pairs
    return code[starts], key[starts], np.diff(np.r_[starts, valid])


def _best_sets(
    keys: SplitKeys, slots: np.ndarray, n: np.ndarray, max_terms: int, min_count: int
) -> BestSets:
    """Per code, the best prefix of its candidates sorted by precision (see the module
    :mod:`~codebook_features.store.descriptions`), all codes at once."""
    num_codes = len(n)
    c, x, a = _candidates(keys, slots, num_codes, min_count)
    b = keys.fit_counts[x]
    kept = _may_be_chosen(c, a, b, n)
    c, x, a, b = c[kept], x[kept], a[kept], b[kept]
    # by code, then precision (descending), then a (descending); the key's order stays
    order = np.lexsort((-a.astype(np.int32), -(a / b), c.astype(_code_type(num_codes))))
    c, x, a, b = c[order], x[order], a[order], b[order]
    rank = _rank_in_runs(c)
    kept = rank < max_terms
    c, x, a, b, rank = c[kept], x[kept], a[kept], b[kept], rank[kept]
    f1 = 2 * _cumsum_in_runs(a, rank) / (_cumsum_in_runs(b, rank) + n[c])
    f1_of, first = np.full(num_codes, -1.0), np.zeros(num_codes, np.int64)
    length = np.zeros(num_codes, np.int64)
    if c.size:
        run_starts = np.flatnonzero(rank == 0)
        run = np.cumsum(rank == 0) - 1
        best = np.maximum.reduceat(f1, run_starts)
        at_best = np.flatnonzero(f1 == best[run])
        at_best = at_best[np.r_[True, run[at_best[1:]] != run[at_best[:-1]]]]  # the shortest
        codes = c[run_starts]
        f1_of[codes], first[codes], length[codes] = best, run_starts, rank[at_best] + 1
    return BestSets(f1_of, first, length, x)


def _may_be_chosen(c: np.ndarray, a: np.ndarray, b: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The candidates that can be in their code's best set, which saves sorting the rest:
    those more precise than half of ``L``, the F1 of the code's best single key ``x``. A key
    raises a set's F1 only if its precision exceeds half the F1 it reaches, and ties go to
    the shorter set, so every key of the best set is more precise than half the best F1,
    which is at least ``L`` when ``x`` is among the first ``max_terms`` keys (the prefix that
    ends with it does as well as ``x`` alone); otherwise every key of any allowed set is
    more precise than ``x``, whose precision exceeds ``L / 2``. The dropped keys sort after
    all kept ones, so the sets do not change (the margin only keeps more, for rounding)."""
    if not c.size:
        return np.zeros(0, bool)
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    single = np.maximum.reduceat(2 * a / (b + n[c]), starts)
    half = 0.5 * np.repeat(single, np.diff(np.r_[starts, c.size]))
    return a / b > half * (1 - 1e-9)


def _rank_in_runs(values: np.ndarray) -> np.ndarray:
    """Each element's place in its run of equal consecutive values."""
    if not values.size:
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return np.arange(values.size) - np.repeat(starts, np.diff(np.r_[starts, values.size]))


def _cumsum_in_runs(values: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting where ``rank`` is 0."""
    total = np.cumsum(values)
    before = (total - values)[rank == 0]
    return total - np.repeat(before, np.diff(np.r_[np.flatnonzero(rank == 0), values.size]))


def _score(
    held: np.ndarray,
    kind: np.ndarray,
    sets: Sequence[BestSets],
    kinds: Sequence[SplitKeys],
    num_codes: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per code, on the held-out rows ``held``: rows where it fires and its description
    holds, rows where its description holds, and rows where it fires."""
    rows, slot = np.nonzero(held >= 0)
    code = held[rows, slot]
    slot_kind = kind[code]
    by_kind = np.argsort(slot_kind.astype(np.int8), kind="stable")  # a radix sort
    bounds = np.searchsorted(slot_kind[by_kind], np.arange(len(sets) + 1))
    hits = np.zeros(num_codes, np.int64)
    predicted = np.zeros(num_codes, np.int64)
    for j, (keys, best) in enumerate(zip(kinds, sets, strict=True)):
        owner, chosen = best.chosen(np.flatnonzero(kind == j))
        if not owner.size:
            continue
        weights = keys.held_counts[chosen]
        predicted += np.bincount(owner, weights, minlength=num_codes).astype(np.int64)
        here = by_kind[bounds[j] : bounds[j + 1]]  # the slots of codes described by kind j
        mine = code[here]
        hit = _member(mine, keys.held[rows[here]], owner, chosen, keys.size, num_codes)
        hits += np.bincount(mine[hit], minlength=num_codes)
    return hits, predicted, np.bincount(code, minlength=num_codes)


def _member(
    code: np.ndarray,
    key: np.ndarray,
    owner: np.ndarray,
    chosen: np.ndarray,
    size: int,
    num_codes: int,
) -> np.ndarray:
    """Whether each pair ``(code[i], key[i])`` is one of the pairs ``(owner, chosen)``."""
    if num_codes * size <= DENSE_COUNTS:
        table = np.zeros(num_codes * size, bool)
        table[owner * size + chosen] = True
        return table[code.astype(np.int64) * size + key]
    wanted = np.sort(owner.astype(np.int64) * size + chosen)
    pairs = code.astype(np.int64) * size + key
    at = np.minimum(np.searchsorted(wanted, pairs), wanted.size - 1)
    return wanted[at] == pairs
