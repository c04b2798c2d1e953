"""Codes by what they stand for: every code's automatic description (a set of tokens, words,
token shapes, previous tokens or token pairs, found on the documents with an even id and
scored on those with an odd id; see :mod:`~codebook_features.store.descriptions`), searched
by words.

The index keeps each code's description, so a search reads one small table and matches words
against its terms; :func:`describe_codes` finds them anew, e.g. with other settings.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from codebook_features.errors import CodebookError
from codebook_features.store.descriptions import (
    MAX_TERMS,
    MIN_COUNT,
    START,
    CodeDescription,
    describe_table,
    descriptions_from_table,
    first_token_texts,
)
from codebook_features.store.reader import CodeStore

MIN_STEM = 3
"""A word matches its inflections (``ship``: ``ships``; ``walk``: ``walked``, ``walking``)
once it has this many characters."""
ENDINGS = ("s", "es", "ed", "d", "ing", "'s")
FRAMING = frozenset(
    {"a", "about", "an", "and", "any", "code", "codes", "fire", "fires", "firing", "for"}
    | {"in", "is", "of", "on", "or", "that", "the", "to", "what", "which", "with"}
)
"""Words that frame a question ("codes about ships") rather than name what is sought; left
out of a query unless it holds nothing else."""


def describe_codes(
    store: CodeStore,
    sites: Any = None,
    *,
    max_terms: int = MAX_TERMS,
    min_count: int = MIN_COUNT,
) -> list[CodeDescription]:
    """Every code of ``sites`` (all by default) described anew from the store, in site,
    group, id order; the index keeps the answer for the defaults
    (:attr:`CodeStore.descriptions`), which is far cheaper to read."""
    chosen = store.select_sites(sites)
    token, document = np.asarray(store.token), np.asarray(store.document)
    pieces = first_token_texts(token, document, store.start, store.end, store.texts)
    ids = {site: (store.ids(site), store.sites[site].num_codes) for site in chosen}
    table = describe_table(token, document, pieces, ids, max_terms=max_terms, min_count=min_count)
    return descriptions_from_table(table)


def find_descriptions(
    store: CodeStore,
    query: str | None = None,
    *,
    min_f1: float = 0.0,
    top: int = 20,
    sites: Any = None,
) -> list[CodeDescription]:
    """The described codes whose terms match words of ``query`` (case-insensitive, edge
    punctuation and framing words such as "codes about" left out; a word matches a term that
    equals it or is an inflection of it, so ``ship`` and ``ships`` find each other), with a
    held-out F1 of at least ``min_f1``: the most words matched first, then the most matched
    exactly, then the best F1 (then the most held-out firings). Without a query, the
    best-described codes. ``sites``: names, kinds or globs."""
    if not 0 <= min_f1 <= 1:
        raise CodebookError(f"min_f1 must be between 0 and 1, got {min_f1}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise CodebookError(f"top must be a whole number >= 1, got {top!r}")
    words = query_words(query) if query is not None else []
    if query is not None and not words:
        raise CodebookError("give words to look for in the descriptions (the query is empty)")
    index = _word_index(store)
    keep = index.described & np.isin(index.site, store.select_sites(sites))
    keep &= index.f1 >= min_f1  # NaN (no score) never passes
    matched = np.zeros(len(keep), dtype=np.int64)
    exact = np.zeros(len(keep), dtype=np.int64)
    for word in words:
        hit = np.zeros(len(keep), dtype=bool)
        for term, rows in index.postings.items():
            if term == word:
                exact[rows] += 1
                hit[rows] = True
            elif _inflected(word, term):
                hit[rows] = True
        matched += hit
    if words:
        keep &= matched > 0
    chosen = np.flatnonzero(keep)
    order = np.lexsort(  # stable: code order last
        (-index.support[chosen], -index.f1[chosen], -exact[chosen], -matched[chosen])
    )[:top]
    return descriptions_from_table(store.descriptions.take(chosen[order])) if order.size else []


def query_words(query: str) -> list[str]:
    """The words of a query that are looked for: case-folded, without the punctuation around
    them, and without framing words unless there is nothing else."""
    words = [w.strip('.,;:!?"()[]{}') for w in query.casefold().split()]
    words = [w for w in words if w]
    named = [w for w in words if w not in FRAMING]
    return named or words


@dataclass(frozen=True)
class _WordIndex:
    """What a search reads of the descriptions table, and per word the rows whose terms
    read as it."""

    site: np.ndarray
    described: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    postings: dict[str, list[int]]


@lru_cache(maxsize=4)
def _word_index(store: CodeStore) -> _WordIndex:
    table = store.descriptions
    kinds, terms = table.column("kind").to_pylist(), table.column("terms").to_pylist()
    postings: dict[str, list[int]] = defaultdict(list)
    for row, (kind, these) in enumerate(zip(kinds, terms, strict=True)):
        for word in set(term_words(kind, these)) if kind else ():
            postings[word].append(row)
    return _WordIndex(
        site=table.column("site").to_numpy(zero_copy_only=False),
        described=np.array([bool(kind) for kind in kinds], dtype=bool),
        f1=table.column("f1").to_numpy(),
        support=table.column("support").to_numpy(),
        postings=dict(postings),
    )


def term_words(kind: str, terms: list[str]) -> list[str]:
    """The words a description's terms read as, stripped and case-folded: a pair's two
    tokens, and no word for the start of a document."""
    if kind == "pair":
        texts = [t for term in terms for t in json.loads(term) if t is not None]
    else:
        texts = [t for t in terms if not (kind == "after" and t == START)]
    return [w for w in (t.strip().casefold() for t in texts) if w]


def _inflected(word: str, term: str) -> bool:
    """Whether one is the other with an inflectional ending (``ship``/``ships``)."""
    short, long = sorted((word, term), key=len)
    return len(short) >= MIN_STEM and long.startswith(short) and long[len(short) :] in ENDINGS
