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
import itertools
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
    found: list[tuple[TopicCode, np.ndarray]] = []  # with the documents each covers
    for site in store.select_sites(sites):
        info = store.sites[site]
        codes, docs, shares = document_shares(store, site, min_share)
        if not codes.size:
            continue
        bounds = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1], True])
        for a, b in itertools.pairwise(bounds):
            if b - a < min_documents:
                continue
            group, number = divmod(int(codes[a]), info.num_codes)
            covered = docs[a:b]
            entry = TopicCode(
                CodeRef(site, group, number),
                int(b - a),
                float(shares[a:b].mean()),
                [int(d) for d in doc_ids[covered[:examples]]],
            )
            found.append((entry, covered))
    most = len(doc_ids) * everywhere if everywhere is not None else math.inf
    apart = [(e, c) for e, c in found if e.documents > most]
    found = [(e, c) for e, c in found if e.documents <= most]
    apart.sort(key=_by_documents)
    apart_out = [_with_label(e, labels, c, label) for e, c in apart[:top]]
    if sort == "documents":  # only the shown codes need their labels
        found.sort(key=_by_documents)
        return Topics([_with_label(e, labels, c, label) for e, c in found[:top]], apart_out)
    ranked = [_with_label(entry, labels, covered, label) for entry, covered in found]
    score = {"precision": lambda t: t.precision, "lift": lambda t: t.lift, "f1": _f1}[sort]
    ranked.sort(key=lambda t: (-(score(t) or 0.0), -t.documents, t.code.sort_key()))
    return Topics(ranked[:top], apart_out)


def _by_documents(found: tuple[TopicCode, np.ndarray]) -> tuple[Any, ...]:
    entry = found[0]
    return (-entry.documents, -entry.mean_share, entry.code.sort_key())


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


def _with_label(
    entry: TopicCode, labels: np.ndarray | None, covered: np.ndarray, label: str | None
) -> TopicCode:
    if labels is None:
        return entry
    mine = labels[covered]
    if label is None:
        names, counts = np.unique(mine, return_counts=True)
        label = str(names[np.argmax(counts)])
    hits, holding = int((mine == label).sum()), int((labels == label).sum())
    precision = hits / len(covered)
    return dataclasses.replace(
        entry,
        label=label,
        precision=precision,
        recall=hits / holding,
        lift=precision / (holding / len(labels)),
    )


def _f1(topic: TopicCode) -> float:
    return f1(topic.precision or 0.0, topic.recall or 0.0)
