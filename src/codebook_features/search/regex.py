"""Regex -> codes: which codes stand for the tokens a pattern matches.

The feature is "this token overlaps a match" (or, when the pattern has a capture group, "this
token overlaps the first group's span": ``(?:the )(dragon)`` labels only the dragon tokens). A
match is found in each document's text and mapped to tokens through their exact character
offsets, so it aligns with byte-level BPE merges across spaces, multi-byte characters and
patterns that span several tokens. Then, for every code of every recorded site:
precision = tokens where it fires and the feature holds / tokens where it fires, recall = the
same / tokens where the feature holds. Only the matching tokens' ids are read (the per-code
counts come from the index), so a query costs the number of matches, not the size of the store.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn

import numpy as np
import regex as regex_module

from codebook_features.attach.code_ref import CodeRef
from codebook_features.attach.site_names import natural_key
from codebook_features.errors import CodebookError
from codebook_features.search.scores import Rank, f1
from codebook_features.store.reader import CodeStore


@dataclass(frozen=True)
class Example:
    """One token where a code fires on the feature, with its context."""

    document: int
    position: int
    token: str
    context: str
    """The text around the token, the token marked as ``[[token]]``."""
    before: str = ""
    """The text just before the token (``context`` without the markers is
    ``before + token + after``)."""
    after: str = ""
    """The text just after the token."""
    marks: tuple[tuple[int, int], ...] = ()
    """Character spans ``(start, end)`` in ``before + token + after`` of every token shown where
    the code fires, this one included (on code pages; empty elsewhere)."""


@dataclass(frozen=True)
class CodeScore:
    """How well one code classifies the feature."""

    code: CodeRef
    precision: float
    recall: float
    support: int
    """Tokens the code fires on."""
    hits: int
    """Of those, tokens the feature holds on."""
    examples: list[Example] = field(default_factory=list)

    @property
    def f1(self) -> float:
        return f1(self.precision, self.recall)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"code": str(self.code), "f1": self.f1}


def regex_token_rows(
    store: CodeStore, pattern: str | re.Pattern[str], *, time_limit: float | None = None
) -> np.ndarray:
    """Token rows (ascending) that overlap a match of ``pattern`` (or of its first group).
    With ``time_limit`` (seconds of wall-clock time), a search still matching then is refused,
    so neither a pattern that backtracks without end nor one that matches everywhere can hold
    a server's worker, however busy the machine."""
    regex = _compile(pattern)
    tokens = _Tokens(*store.document_rows, store.start, store.end, store.texts)  # read here
    if time_limit is None:
        return _token_rows(tokens, regex, None, threading.Event())
    limit = min(time_limit, MAX_TIME_LIMIT)
    return _within(limit, regex, lambda stop: _token_rows(tokens, regex, limit, stop))


MAX_TIME_LIMIT = 1e6
"""Longer limits are taken as this (about 12 days; a thread cannot wait for any longer)."""

BACKSTOP = 4
"""The ``regex`` library's own limit, as a multiple of the wall-clock one. It counts the CPU
time of the whole process (every thread), so it cannot be the limit itself: it only bounds a
search abandoned at its deadline, and is generous enough not to cut a search short while
other threads of a server work."""


@dataclass(frozen=True)
class _Tokens:
    """What a search reads of a store, read before it starts (the store's files are loaded and
    checked in the caller, not counted against the time limit)."""

    documents: np.ndarray
    firsts: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    texts: Any


def _within(time_limit: float, regex: Any, work: Callable[[threading.Event], np.ndarray]) -> Any:
    """``work`` run on a thread of its own, its answer awaited for ``time_limit`` seconds of
    wall-clock time, then refused. The abandoned search is told to stop, which it does before
    its next document; inside one, the ``regex`` library's limit (:data:`BACKSTOP`) ends it."""
    stop = threading.Event()
    answer: dict[str, Any] = {}

    def run() -> None:
        try:
            answer["rows"] = work(stop)
        except BaseException as error:  # handed to the caller
            answer["error"] = error

    thread = threading.Thread(target=run, name="regex search", daemon=True)
    thread.start()
    thread.join(time_limit)
    if thread.is_alive():
        stop.set()
        _too_slow(regex, time_limit)
    if "error" in answer:
        raise answer["error"]
    return answer["rows"]


def _token_rows(
    tokens: _Tokens, regex: Any, time_limit: float | None, stop: threading.Event
) -> np.ndarray:
    found: list[np.ndarray] = []
    for i, document in enumerate(tokens.documents.tolist()):
        if stop.is_set():
            break
        lo, hi = int(tokens.firsts[i]), int(tokens.firsts[i + 1])
        spans = [
            match.span(1) if regex.groups else match.span()
            for match in _matches(regex, tokens.texts[document], time_limit)
        ]
        spans = [(begin, end) for begin, end in spans if begin >= 0 and end > begin]
        if spans:
            starts, ends = np.asarray(tokens.starts[lo:hi]), np.asarray(tokens.ends[lo:hi])
            found.append(np.flatnonzero(_overlapping(starts, ends, spans)) + lo)
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def _overlapping(starts: np.ndarray, ends: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """Which tokens overlap a span (end > begin and start < stop) and cover a character. Token
    offsets run forward, so each span covers one run of tokens, found by binary search: the cost
    is matches + tokens, not their product."""
    begins, stops = np.array(spans, dtype=np.int64).T
    if not (np.all(np.diff(starts) >= 0) and np.all(np.diff(ends) >= 0)):  # out of order
        covered = np.zeros(len(starts), dtype=bool)
        for begin, stop in spans:
            covered |= (ends > begin) & (starts < stop)
        return covered & (ends > starts)
    first = np.searchsorted(ends, begins, side="right")  # first token ending after the begin
    stop_at = np.searchsorted(starts, stops, side="left")  # tokens starting before the stop
    keep = first < stop_at
    edges = np.zeros(len(starts) + 1, dtype=np.int64)
    np.add.at(edges, first[keep], 1)
    np.add.at(edges, stop_at[keep], -1)
    return (np.cumsum(edges[:-1]) > 0) & (ends > starts)


def regex_codes(
    store: CodeStore,
    pattern: str | re.Pattern[str],
    sites: Any = None,
    *,
    time_limit: float | None = None,
    **ranking: Any,
) -> tuple[list[CodeScore], int]:
    """The codes of ``sites`` (all by default) ranked as classifiers of the pattern's tokens
    (see :func:`score_codes` for the ranking options), and how many tokens match."""
    positive = regex_token_rows(store, pattern, time_limit=time_limit)
    return score_codes(store, positive, sites, **ranking), len(positive)


def score_codes(
    store: CodeStore,
    positive: np.ndarray,
    sites: Any = None,
    *,
    sort: Rank = "f1",
    min_precision: float = 0.0,
    min_recall: float = 0.0,
    min_support: int = 1,
    top: int | None = 20,
    examples: int = 3,
    rows: np.ndarray | None = None,
) -> list[CodeScore]:
    """Every code of ``sites`` as a classifier of the token rows ``positive`` (ascending),
    ranked by ``sort``; codes below the thresholds are left out (``top=None``: keep all).
    With ``rows`` (ascending), only those token rows count: support is counted over them and
    ``positive`` is cut to them, so codes can be chosen on one part of a store and judged on
    another."""
    if sort not in ("f1", "precision", "recall"):
        raise CodebookError(f"unknown sort {sort!r}: choose f1, precision or recall")
    names = sorted(store.select_sites(sites), key=natural_key)  # ties go in natural order
    if rows is not None:
        positive = np.intersect1d(positive, rows)
    if not len(positive):
        return []
    found: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []  # site, code, hits, support
    for number, site in enumerate(names):
        joint = store.code_counts(site, positive)
        fires = store.counts(site).reshape(-1) if rows is None else store.code_counts(site, rows)
        code = np.flatnonzero(joint)
        found.append((number, code, joint[code], fires[code]))
    site_of = np.concatenate([np.full(len(f[1]), f[0]) for f in found])
    code, hits, support = (np.concatenate([f[i] for f in found]) for i in (1, 2, 3))
    precision, recall = hits / support, hits / len(positive)
    keep = (support >= min_support) & (precision >= min_precision) & (recall >= min_recall)
    site_of, code, hits, support = site_of[keep], code[keep], hits[keep], support[keep]
    precision, recall = precision[keep], recall[keep]
    keys = {"f1": (f1(precision, recall), precision, recall), "precision": (precision, recall)}
    keys["recall"] = (recall, precision)
    # np.lexsort sorts by its last key first: best scores, then site (natural order), group, id
    order = np.lexsort((code, site_of, *(-k for k in reversed(keys[sort]))))[:top]
    ranked = []
    for i in order.tolist():
        site = names[int(site_of[i])]
        ref = CodeRef(site, *divmod(int(code[i]), store.sites[site].num_codes))
        examples_here = _examples(store, ref, positive, examples)
        score = CodeScore(ref, float(precision[i]), float(recall[i]), int(support[i]), int(hits[i]))
        ranked.append(dataclasses.replace(score, examples=examples_here))
    return ranked


def _examples(store: CodeStore, ref: CodeRef, positive: np.ndarray, count: int) -> list[Example]:
    """Up to ``count`` tokens where the code fires on the feature, from different documents."""
    if count <= 0:
        return []
    rows = np.intersect1d(store.occurrences(ref), positive, assume_unique=True)
    chosen, seen = [], set()
    for row in rows.tolist():
        document = int(store.document[row])
        if document in seen:
            continue
        seen.add(document)
        chosen.append(_example(store, row))
        if len(chosen) == count:
            break
    return chosen


def _example(store: CodeStore, row: int, width: int = 40) -> Example:
    document = int(store.document[row])
    text = store.texts[document]
    begin, stop = int(store.start[row]), int(store.end[row])
    before, token = text[max(0, begin - width) : begin], text[begin:stop]
    after = text[stop : stop + width]
    context = f"{before}[[{token}]]{after}"
    return Example(document, int(store.position[row]), token, context, before=before, after=after)


_FLAGS = {
    re.IGNORECASE: regex_module.IGNORECASE,
    re.MULTILINE: regex_module.MULTILINE,
    re.DOTALL: regex_module.DOTALL,
    re.VERBOSE: regex_module.VERBOSE,
    re.ASCII: regex_module.ASCII,
}
"""Python's flags and the ``regex`` library's: the same meaning, not always the same bits."""


MAX_WRITTEN_OUT = 100_000
"""Compiling unrolls counted repeats: ``(?:a{3000}){3000}`` takes seconds and gigabytes before
any search could be stopped, so a pattern whose counted repeats multiply past this is refused."""

_COUNT = re.compile(r"\{([0-9]*)(?:,([0-9]*))?\}")
_HUGE = 10**9
"""A count of more digits than this has is taken as this (past any limit, and ``int`` of a
4,300-digit string would raise)."""


def written_out_size(pattern: str) -> int:
    """About how many atoms ``pattern`` has once every counted repeat ``{n}``/``{n,m}`` is
    written out (a bound, not the compiled size: alternatives are added, not the longest
    taken; ``+`` and ``*`` count once). Comments are skipped; with and without verbose mode
    (``#`` to the end of a line), whichever is larger."""
    return max(_written_out(pattern, verbose=False), _written_out(pattern, verbose=True))


def _written_out(pattern: str, verbose: bool) -> int:
    sizes = [0]  # the running size of each open group
    last = 0  # the size of the atom or group a quantifier would repeat
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i, last = i + 2, 1
            sizes[-1] += 1
            continue
        if verbose and char == "#":
            end = pattern.find("\n", i)
            i = len(pattern) if end < 0 else end + 1
            continue
        if pattern.startswith("(?#", i):
            end = pattern.find(")", i)
            i = len(pattern) if end < 0 else end + 1
            continue
        if char == "[":  # a class is one atom: skip to its closing bracket, if it has one
            j = i + 1 + (pattern[i + 1 : i + 2] == "^")
            j += pattern[j : j + 1] == "]"
            while j < len(pattern) and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i, last = (j + 1 if j < len(pattern) else i + 1), 1
            sizes[-1] += 1
            continue
        if char == "(":
            if pattern.startswith("(?", i):  # a group's prefix (?:, (?P<name>, (?i) ...
                j = i + 2
                while j < len(pattern) and pattern[j] not in ":>=!)":
                    j += 1
                if j < len(pattern) and pattern[j] == ")":  # inline flags: no group
                    i, last = j + 1, 0
                    continue
                i = j
            sizes.append(0)
        elif char == ")":
            last = sizes.pop() if len(sizes) > 1 else 0
            sizes[-1] += last
        elif char == "{" and (count := _COUNT.match(pattern, i)) and any(count.groups()):
            times = max(int(n) if len(n) <= 9 else _HUGE for n in count.groups() if n)
            sizes[-1] += last * (times - 1)
            last *= times
            i = count.end()
            continue
        elif char not in "|?*+":
            sizes[-1] += 1
            last = 1
        i += 1
    return sum(sizes)


def _compile(pattern: str | re.Pattern[str]) -> Any:
    """The pattern compiled by the ``regex`` library (Python's syntax, plus a time limit)."""
    if isinstance(pattern, re.Pattern):
        text = pattern.pattern
        flags = sum(ours for theirs, ours in _FLAGS.items() if pattern.flags & theirs)
    else:
        text, flags = pattern, 0
    if not isinstance(text, str):
        raise CodebookError(f"a pattern must be text, got {text!r}")
    size = written_out_size(text)
    if size > MAX_WRITTEN_OUT:
        raise CodebookError(
            f"{text[:60]!r} is too large to compile (some {size:,} atoms once its counted "
            "repeats {n} are written out): use smaller counts, + and *, or a shorter pattern"
        )
    try:
        return regex_module.compile(text, flags)
    except (regex_module.error, ValueError, OverflowError, RecursionError) as error:
        raise CodebookError(f"{text!r} is not a valid regular expression: {error}") from error


def _matches(compiled: Any, text: str, limit: float | None) -> list[Any]:
    """The matches in ``text``; with a limit, the interpreter lock released (the thread
    waiting for the deadline answers on time) and the ``regex`` library's backstop set."""
    if limit is None:
        return list(compiled.finditer(text))
    try:
        return list(compiled.finditer(text, concurrent=True, timeout=BACKSTOP * limit))
    except TimeoutError:
        _too_slow(compiled, limit)


def _too_slow(compiled: Any, limit: float | None) -> NoReturn:
    raise CodebookError(
        f"searching for {compiled.pattern!r} took longer than {limit:g} s: give a more specific "
        "pattern (nested repeats such as (a+)+ can also backtrack without end)"
    )
