"""Token -> codes: which codes fire on a given token, ranked like regex features.

A token is named by its text (``" dragon"``, or ``dragon`` to take every token that reads so
once stripped of spaces); the rows of the tokens with that text are the feature, scored by
:func:`~codebook_features.search.regex.score_codes`. Token texts come from the store itself (the
characters each token id covers), so no tokenizer is needed.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from codebook_features.errors import CodebookError
from codebook_features.search.regex import CodeScore, score_codes
from codebook_features.store.descriptions import first_token_texts
from codebook_features.store.reader import CodeStore


def token_texts(store: CodeStore) -> dict[int, str]:
    """Token id -> the characters it covers (taken at its first occurrence)."""
    return _token_texts(store)


@lru_cache(maxsize=4)
def _token_texts(store: CodeStore) -> dict[int, str]:
    return first_token_texts(store.token, store.document, store.start, store.end, store.texts)


def token_rows(store: CodeStore, text: str, exact: bool = False) -> np.ndarray:
    """Rows (ascending) of the tokens whose text is ``text`` (or, unless ``exact``, reads as
    ``text`` once surrounding spaces are stripped)."""
    wanted = text if exact else text.strip()
    if not wanted:
        raise CodebookError("give a token's text (not empty)")
    ids = [
        i
        for i, piece in token_texts(store).items()
        if (piece if exact else piece.strip()) == wanted
    ]
    if not ids:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.isin(np.asarray(store.token), ids))


def token_codes(
    store: CodeStore, text: str, sites: Any = None, *, exact: bool = False, **ranking: Any
) -> tuple[list[CodeScore], int]:
    """The codes ranked as classifiers of the token ``text``, and how many rows it has."""
    rows = token_rows(store, text, exact)
    return score_codes(store, rows, sites, **ranking), len(rows)
