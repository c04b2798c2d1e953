"""Topic codes: codes that fire across a large share of a document's tokens (the paper's topic
codes), ranked by how many documents they cover; with labelled data, also by how well the
documents they cover single out one label (precision, lift over the label's base rate, F1).
Codes that cover nearly every document are kept apart: they single out no topic, yet would
lead a ranking by documents or by F1 for a common label.

The index keeps, per code, the documents it fires in with the number of its tokens there
(:meth:`CodeStore.document_counts`), so a query reads those pairs once, in chunks, and keeps the
ones over the share: far fewer than the token rows, and no row is read.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Literal, get_args

import numpy as np

from codebook_features.attach.code_ref import CodeRef
from codebook_features.errors import CodebookError
from codebook_features.search.scores import f1
from codebook_features.store.reader import CodeStore

CHUNK = 1 << 22
"""(code, document) pairs read at once."""
TopicSort = Literal["documents", "precision", "lift", "f1"]
TOPIC_SORTS: tuple[str, ...] = get_args(TopicSort)


@dataclass(frozen=True)
class TopicCode:
    """A code that fires on at least ``min_share`` of the tokens of some documents."""

    code: CodeRef
    documents: int
    """Documents it covers."""
    mean_share: float
    """Mean share of the tokens it fires on, over the documents it covers."""
    examples: list[int] = field(default_factory=list)
    """Some covered documents (ids)."""
    label: str | None = None
    """The label most of its covered documents have (labelled data)."""
    precision: float | None = None
    """Covered documents with ``label`` / covered documents."""
    recall: float | None = None
    """Covered documents with ``label`` / documents with ``label``."""
    lift: float | None = None
    """``precision`` / the share of all documents with ``label``: above 1, the code prefers
    the label."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"code": str(self.code)}


@dataclass(frozen=True)
class Topics:
    codes: list[TopicCode]
    """The ranked topic codes."""
    everywhere: list[TopicCode]
    """Codes covering nearly every document, kept apart (most documents first)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "codes": [t.to_dict() for t in self.codes],
            "everywhere": [t.to_dict() for t in self.everywhere],
        }


def document_shares(
    store: CodeStore, site: str, min_share: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(flat codes, document indices, shares)`` of every (code, document) pair where the
    code fires on at least ``min_share`` of the document's tokens, sorted by code then
    document."""
    indptr, documents, counts = store.document_counts(site)
    lengths = np.diff(store.document_rows[1])
    codes_out, docs_out, shares_out = [], [], []
    for lo in range(0, len(documents), CHUNK):
        hi = min(lo + CHUNK, len(documents))
        docs = np.asarray(documents[lo:hi])
        share = np.asarray(counts[lo:hi]) / lengths[docs]
        keep = np.flatnonzero(share >= min_share)
        codes_out.append(np.searchsorted(indptr, keep + lo, side="right") - 1)
        docs_out.append(docs[keep].astype(np.int64))
        shares_out.append(share[keep])
    if not codes_out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return tuple(np.concatenate(x) for x in (codes_out, docs_out, shares_out))  # type: ignore[return-value]


def topic_codes(store: CodeStore, sites: Any = None, **query: Any) -> list[TopicCode]:
    """The ranked topic codes of :func:`find_topics` (without the codes that cover nearly
    every document)."""
    return find_topics(store, sites, **query).codes


def find_topics(
    store: CodeStore,
    sites: Any = None,
    *,
    min_share: float = 0.5,
    min_documents: int = 2,
    label_field: str | None = None,
    label: str | None = None,
    sort: TopicSort | None = None,
    everywhere: float | None = 0.5,
    top: int = 20,
    examples: int = 5,
) -> Topics:
    """Codes covering (firing on at least ``min_share`` of the tokens of) at least
    ``min_documents`` documents. With ``label_field`` (a column of the documents table), each
    code's label (``label``, or else the one most of its documents have) with precision,
    recall and lift. ``sort``: ``documents`` covered, or ``precision``, ``lift`` or ``f1``
    for that label (default: ``precision`` with a label, else ``documents``; ties: more
    documents first). Codes covering more than ``everywhere`` of all documents are kept
    apart (``None``: ranked with the rest): they fire nearly everywhere, so they single out
    no topic."""
    if not 0 < min_share <= 1:
        raise CodebookError(f"min_share must be in (0, 1], got {min_share}")
    if everywhere is not None and not 0 < everywhere <= 1:
        raise CodebookError(f"everywhere must be in (0, 1], got {everywhere}")
    sort = sort or ("precision" if label is not None else "documents")
    if sort not in TOPIC_SORTS:
        raise CodebookError(f"sort must be one of {', '.join(TOPIC_SORTS)}, got {sort!r}")
    doc_ids, _ = store.document_rows
    labels = checked_labels(store, label_field, label)
    if sort != "documents" and labels is None:
        raise CodebookError(f"ranking by {sort} needs the documents' label column (label_field)")
    found = _Candidates.of(store, store.select_sites(sites), min_share, min_documents)
    scores = _LabelScores.of(found, labels, label) if labels is not None else None
    most = len(doc_ids) * everywhere if everywhere is not None else math.inf
    apart = found.documents > most
    natural = np.arange(len(found.documents))  # the codes' order: sites, groups, ids
    by_documents = np.lexsort((natural, -found.mean_share, -found.documents))
    if sort == "documents":
        ranked = by_documents[~apart[by_documents]]
    else:
        assert scores is not None  # checked above: ranking by a label needs them
        ranked = np.lexsort((natural, -found.documents, -scores.score(sort)))
        ranked = ranked[~apart[ranked]]
    shown_apart = by_documents[apart[by_documents]][:top]
    starts = found.start

    def entry(i: int) -> TopicCode:
        site = found.sites[found.site[i]]
        group, number = divmod(int(found.flat[i]), store.sites[site].num_codes)
        first = starts[i]
        covered = found.docs[first : first + min(examples, found.documents[i])]
        topic = TopicCode(
            CodeRef(site, group, number),
            int(found.documents[i]),
            float(found.mean_share[i]),
            [int(d) for d in doc_ids[covered]],
        )
        return topic if scores is None else scores.fill(topic, i)

    return Topics([entry(i) for i in ranked[:top]], [entry(i) for i in shown_apart])


@dataclass(frozen=True)
class _Candidates:
    """Every code covering at least ``min_documents`` documents, as arrays in the codes'
    natural order (sites, groups, ids): ``docs`` holds the documents each covers, code after
    code (document indices, ascending), so code ``i``'s are ``docs[start[i]:start[i] +
    documents[i]]``."""

    sites: list[str]
    site: np.ndarray
    flat: np.ndarray
    documents: np.ndarray
    mean_share: np.ndarray
    docs: np.ndarray

    @property
    def start(self) -> np.ndarray:
        return np.cumsum(self.documents) - self.documents

    @classmethod
    def of(
        cls, store: CodeStore, sites: list[str], min_share: float, min_documents: int
    ) -> _Candidates:
        columns: dict[str, list[np.ndarray]] = {
            k: [] for k in ("site", "flat", "documents", "mean_share", "docs")
        }
        for number, site in enumerate(sites):
            codes, docs, shares = document_shares(store, site, min_share)
            if not codes.size:
                continue
            firsts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
            counts = np.diff(np.r_[firsts, len(codes)])
            keep = counts >= min_documents
            columns["site"].append(np.full(int(keep.sum()), number))
            columns["flat"].append(codes[firsts[keep]])
            columns["documents"].append(counts[keep])
            columns["mean_share"].append((np.add.reduceat(shares, firsts) / counts)[keep])
            columns["docs"].append(docs[np.repeat(keep, counts)])
        joined = {
            k: np.concatenate(v) if v else np.zeros(0, float if k == "mean_share" else np.int64)
            for k, v in columns.items()
        }
        return cls(sites, **joined)


@dataclass(frozen=True)
class _LabelScores:
    """Per candidate code, its label (``label``, or else the one most of its documents have;
    ties: the first by name) and how well its documents single that label out, counted for
    every code at once."""

    names: np.ndarray
    chosen: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    lift: np.ndarray

    @classmethod
    def of(cls, found: _Candidates, labels: np.ndarray, label: str | None) -> _LabelScores:
        names, inverse = np.unique(labels, return_inverse=True)
        count = len(found.documents)
        owner = np.repeat(np.arange(count), found.documents)  # the code of each docs entry
        table = np.bincount(
            owner * len(names) + inverse[found.docs], minlength=count * len(names)
        ).reshape(count, len(names))
        if label is None:
            chosen = table.argmax(axis=1)
        else:
            chosen = np.full(count, int(np.searchsorted(names, label)))
        hits = table[np.arange(count), chosen]
        holding = np.bincount(inverse, minlength=len(names))[chosen]
        precision = hits / np.maximum(found.documents, 1)
        lift = precision / (holding / len(labels))
        return cls(names, chosen, precision, hits / holding, lift)

    def score(self, sort: str) -> np.ndarray:
        if sort == "precision":
            return self.precision
        return self.lift if sort == "lift" else f1(self.precision, self.recall)

    def fill(self, topic: TopicCode, i: int) -> TopicCode:
        return dataclasses.replace(
            topic,
            label=str(self.names[self.chosen[i]]),
            precision=float(self.precision[i]),
            recall=float(self.recall[i]),
            lift=float(self.lift[i]),
        )


def checked_labels(store: CodeStore, field: str | None, label: str | None) -> np.ndarray | None:
    """Each document's label in ``field`` (:func:`labels_in_order`), refusing a field the
    documents lack or a ``label`` none has; ``None`` without a field."""
    if field is None:
        if label is not None:
            raise CodebookError("give the label's column (label_field) to rank by a label")
        return None
    values = labels_in_order(store, field)
    if label is not None and label not in set(values.tolist()):
        raise CodebookError(f"no document has {field} = {label!r}")
    return values


def labels_in_order(store: CodeStore, field: str) -> np.ndarray:
    """The label of each document, in :attr:`CodeStore.document_rows` order (object array)."""
    return _labels_in_order(store, field)


@lru_cache(maxsize=8)
def _labels_in_order(store: CodeStore, field: str) -> np.ndarray:
    by_id = document_labels(store, field)
    values = np.array([by_id[int(d)] for d in store.document_rows[0]], dtype=object)
    values.flags.writeable = False  # shared by every caller
    return values


def document_labels(store: CodeStore, field: str) -> dict[int, str]:
    """Each document's value in the label column ``field`` (as text)."""
    table = store.documents
    if field not in table.column_names:
        raise CodebookError(
            f"the documents have no column {field!r}; they have: {', '.join(table.column_names)}"
        )
    ids = table.column("document").to_pylist()
    return {int(d): str(v) for d, v in zip(ids, table.column(field).to_pylist(), strict=True)}
