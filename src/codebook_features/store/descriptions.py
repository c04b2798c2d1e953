"""Every code's automatic description: a short rule over the store's own tokens that predicts
where the code fires, found on half of the documents and scored on the other half. Built with
the index (``descriptions.parquet``, read by :attr:`CodeStore.descriptions`); searched by
:mod:`~codebook_features.search.describe`.

No language model is involved: a description is "the row's key is in S", for a set S of at
most ``max_terms`` keys of one kind:

- ``token``: the token (its id, shown as its text);
- ``word``: the token's text stripped of surrounding whitespace and case-folded (a token of
  only whitespace keeps its text), so ``" Ship"``, ``"ship"`` and ``" SHIP"`` are one key;
- ``shape``: the token's class by a few regexes (:data:`SHAPES`: number, punctuation, a
  capitalized word, a piece inside a word, a line break, ...);
- ``after``: the previous token of the same document (or the start of the document);
- ``pair``: the previous token (or the start) and the token.

**Split.** Documents with an even id are the *fit* half, documents with an odd id the
*held-out* half: descriptions are found on fit rows only and scored on held-out rows only, so
a score says how well a description predicts text it was not chosen on.

**Fit.** Over the fit rows of one group: ``a[c, x]`` rows where code ``c`` fires and the key is
``x``, ``b[x]`` rows with key ``x``, ``n[c]`` rows where ``c`` fires. Keys with ``a >=
min_count`` are candidates, and a set's F1 is ``2 sum(a) / (sum(b) + n[c])``. The set of any
size that maximises this ratio is a prefix of the candidates sorted by precision ``a / b``
(ties: larger ``a``, then the key's order), so the prefixes of 1 to ``max_terms`` keys are
tried and the best kept (ties: the shorter). Per code, the kind with the best fit F1 wins
(ties: the simpler, in the order token, word, after, pair). All codes of a group are fitted
at once (:mod:`~codebook_features.store.key_sets`).

**Score.** On the held-out rows: precision = rows where the code fires and the key is in S /
rows with the key in S; recall = the same / rows where the code fires (``support``); F1 =
``2 hits / (predicted + support)``. A code that never fires on a fit row (``fit_support``
0), or whose keys never repeat ``min_count`` times there, has no description: an empty
``kind``, no terms and NaN scores. A description with a low F1 is one that does not predict.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from codebook_features.attach.code_ref import CodeRef
from codebook_features.errors import CodebookError
from codebook_features.store.key_sets import GroupSets, SplitKeys, group_sets, row_codes

KINDS = ("token", "word", "shape", "after", "pair")
"""The kinds of description, simplest first (the first wins a tie)."""
SHAPES = (
    ("line break", r"\n"),
    ("space", r"^\s+$"),
    ("number", r"^\s?\d[\d,.]*$"),
    ("punctuation", r"^\s?[^\w\s]+$"),
    ("capitalized word", r"^ [A-Z]"),
    ("word", r"^ \w"),
    ("capitalized piece", r"^[A-Z]"),
    ("piece", r"^\w"),
)
"""The ``shape`` kind: each token's first class whose regex its text matches (``other`` when
none does), so a code that fires on numbers, on line breaks or on the pieces inside words is
described as such."""
OTHER_SHAPE = "other"
MAX_TERMS = 8
"""Keys per description at most (the index's descriptions use this)."""
MIN_COUNT = 2
"""Fit rows a key must share with a code to be one of its candidates."""
START = "<start of document>"
"""The term of ``after`` for a document's first token (in ``pair`` terms: ``null``)."""


@dataclass(frozen=True)
class CodeDescription:
    """What a code stands for, as far as the store's tokens tell, and how well that predicts
    where it fires on held-out documents."""

    code: CodeRef
    kind: str
    """One of :data:`KINDS`; empty when the code has no description."""
    terms: list[str]
    """The keys, machine readable: token texts (``token``, ``after``; :data:`START` for the
    start of a document), words (``word``), or JSON ``[previous, token]`` (``pair``)."""
    text: str
    """One readable line, e.g. ``token " ship" | " ships"``."""
    precision: float
    """Held-out rows where the code fires among those the description picks (NaN: none)."""
    recall: float
    """Held-out rows the description picks among those where the code fires (NaN: none)."""
    f1: float
    support: int
    """Held-out rows where the code fires."""
    fit_support: int
    """Fit rows where the code fires (0: it never fired there, so it has no description)."""

    def to_dict(self) -> dict[str, Any]:
        numbers = {k: _finite(getattr(self, k)) for k in ("precision", "recall", "f1")}
        return asdict(self) | {"code": str(self.code)} | numbers


def first_token_texts(
    token: np.ndarray,
    document: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    texts: Mapping[int, str],
) -> dict[int, str]:
    """Token id -> the characters it covers at its first occurrence."""
    ids, first = np.unique(np.asarray(token), return_index=True)
    return {
        int(i): texts[int(document[r])][int(start[r]) : int(end[r])]
        for i, r in zip(ids, first, strict=True)
    }


def describe_table(
    token: np.ndarray,
    document: np.ndarray,
    pieces: Mapping[int, str],
    ids: Mapping[str, tuple[np.ndarray, int]],
    *,
    max_terms: int = MAX_TERMS,
    min_count: int = MIN_COUNT,
) -> Any:
    """The descriptions of every code of ``ids`` (site -> ``(tokens, groups, k)`` ids and its
    number of codes) as a pyarrow Table, one row per code in site, group, id order; what the
    index stores. ``pieces``: token id -> its text."""
    import pyarrow as pa

    for name, value in (("max_terms", max_terms), ("min_count", min_count)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CodebookError(f"{name} must be a whole number >= 1, got {value!r}")
    document = np.asarray(document)
    kinds = _kinds(np.asarray(token), document, pieces)
    fit = document % 2 == 0
    split = [SplitKeys.split(kind.keys, kind.size, fit) for kind in kinds]
    columns: dict[str, list] = {name: [] for name in _COLUMNS}
    for site, (site_ids, num_codes) in ids.items():
        for group in range(site_ids.shape[1]):
            slots = row_codes(np.asarray(site_ids[:, group, :]))
            found = group_sets(slots, fit, split, num_codes, max_terms, min_count)
            _append(columns, site, group, kinds, found)
    types = {"group": pa.int32(), "id": pa.int32(), "terms": pa.list_(pa.string())}
    return pa.table({k: pa.array(v, types.get(k)) for k, v in columns.items()})


_COLUMNS = (
    "code",
    "site",
    "group",
    "id",
    "kind",
    "terms",
    "text",
    "precision",
    "recall",
    "f1",
    "support",
    "fit_support",
)


def descriptions_from_table(table: Any) -> list[CodeDescription]:
    """The rows of a descriptions table (:func:`describe_table`) as :class:`CodeDescription`."""
    rows = table.to_pydict()
    return [
        CodeDescription(
            code=CodeRef(site, group, id_),
            kind=kind,
            terms=list(terms),
            text=text,
            precision=precision,
            recall=recall,
            f1=f1,
            support=support,
            fit_support=fit_support,
        )
        for site, group, id_, kind, terms, text, precision, recall, f1, support, fit_support in zip(
            *(rows[name] for name in _COLUMNS[1:]), strict=True
        )
    ]


# ---------------------------------------------------------------------- keys
@dataclass(frozen=True)
class _Kind:
    """One kind of key: a dense key per token row (``0 .. size - 1``, ordered as ties break)
    and how a key reads."""

    name: str
    keys: np.ndarray
    size: int
    term: Callable[[int], str]
    show: Callable[[int], str]


def _kinds(token: np.ndarray, document: np.ndarray, pieces: Mapping[int, str]) -> list[_Kind]:
    vocab, dense = np.unique(token, return_inverse=True)
    dense = dense.astype(np.int64).reshape(-1)
    texts = [pieces[int(t)] for t in vocab]
    size = len(texts)
    prev = np.empty_like(dense)  # the previous token + 1; 0: the start of a document
    prev[1:] = dense[:-1] + 1
    if len(prev):
        prev[np.r_[True, document[1:] != document[:-1]]] = 0
    words = sorted({_word(t) for t in texts})
    index = {w: i for i, w in enumerate(words)}
    word_of = np.array([index[_word(t)] for t in texts], dtype=np.int64)
    pairs, pair = np.unique(prev * size + dense, return_inverse=True)
    shapes = [name for name, _ in SHAPES] + [OTHER_SHAPE]
    shape_of = np.array([token_shape(t) for t in texts], dtype=np.int64)

    quoted = [_quote(t) for t in texts]

    def before(key: int) -> str:
        return quoted[key - 1] if key else START

    def pair_term(key: int) -> str:  # as json.dumps([previous or None, token]) writes it
        p, t = divmod(int(pairs[key]), size)
        return f"[{quoted[p - 1] if p else 'null'}, {quoted[t]}]"

    def pair_show(key: int) -> str:
        p, t = divmod(int(pairs[key]), size)
        return f"{before(p)} → {quoted[t]}"

    return [
        _Kind("token", dense, size, texts.__getitem__, quoted.__getitem__),
        _Kind("word", word_of[dense], len(words), words.__getitem__, lambda x: _show(words[x])),
        _Kind("shape", shape_of[dense], len(shapes), shapes.__getitem__, shapes.__getitem__),
        _Kind("after", prev, size + 1, lambda x: texts[x - 1] if x else START, before),
        _Kind("pair", pair.astype(np.int64).reshape(-1), len(pairs), pair_term, pair_show),
    ]


def token_shape(text: str) -> int:
    """The index of the first of :data:`SHAPES` that ``text`` matches (``len(SHAPES)``:
    other)."""
    return next((i for i, (_, regex) in enumerate(SHAPES) if re.search(regex, text)), len(SHAPES))


def _word(text: str) -> str:
    return text.strip().casefold() or text


def _quote(text: str) -> str:
    """A token in quotes, so that its spaces show (and a newline reads ``\\n``)."""
    return json.dumps(text, ensure_ascii=False)


def _show(word: str) -> str:
    plain = word and not any(c.isspace() or c in '|"→' for c in word)
    return word if plain else _quote(word)


def _append(
    columns: dict[str, list], site: str, group: int, kinds: Sequence[_Kind], found: GroupSets
) -> None:
    """One group's rows of the table: scores for all codes at once, texts per described code."""
    kind, hits, predicted, support = found.kind, found.hits, found.predicted, found.support
    num_codes, described = len(kind), kind >= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(described & (predicted > 0), hits / predicted, np.nan)
        recall = np.where(described & (support > 0), hits / support, np.nan)
        total = predicted + support
        f1 = np.where(described & (total > 0), 2 * hits / total, np.nan)
    for code in range(num_codes):
        terms, text, name = [], "", ""
        if kind[code] >= 0:
            k, keys = kinds[kind[code]], found.sets[kind[code]].keys_of(code)
            terms = [k.term(x) for x in keys]
            name, text = k.name, f"{k.name} " + " | ".join(k.show(x) for x in keys)
        columns["code"].append(f"{site}/{group}/{code}")
        columns["kind"].append(name)
        columns["terms"].append(terms)
        columns["text"].append(text)
    columns["site"] += [site] * num_codes
    columns["group"] += [group] * num_codes
    columns["id"] += range(num_codes)
    for name, values in (
        ("precision", precision),
        ("recall", recall),
        ("f1", f1),
        ("support", support),
        ("fit_support", found.fit_support),
    ):
        columns[name] += values.tolist()


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value
