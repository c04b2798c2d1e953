"""Topic codes: codes that fire across a large share of a document's tokens (the paper's topic
codes), ranked by how many documents they cover; with labelled data, also by how well the
documents they cover single out one label.

The index keeps, per code, the documents it fires in with the number of its tokens there
(:meth:`CodeStore.document_counts`), so a query reads those pairs once, in chunks, and keeps the
ones over the share: far fewer than the token rows, and no row is read.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from codebook_features.attach.code_ref import CodeRef
from codebook_features.errors import CodebookError
from codebook_features.search.scores import f1
from codebook_features.store.reader import CodeStore

CHUNK = 1 << 22
"""(code, document) pairs read at once."""


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"code": str(self.code)}


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


def topic_codes(
    store: CodeStore,
    sites: Any = None,
    *,
    min_share: float = 0.5,
    min_documents: int = 2,
    label_field: str | None = None,
    label: str | None = None,
    top: int = 20,
    examples: int = 5,
) -> list[TopicCode]:
    """Codes covering (firing on at least ``min_share`` of the tokens of) at least
    ``min_documents`` documents, ranked by documents covered; with ``label_field`` (a column
    of the documents table), each code's best label with its precision and recall; with
    ``label``, ranked by F1 for that label."""
    if not 0 < min_share <= 1:
        raise CodebookError(f"min_share must be in (0, 1], got {min_share}")
    doc_ids, _ = store.document_rows
    labels = _labels(store, doc_ids, label_field, label)
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
    if label is None:  # ranked without labels: only the shown codes need theirs
        found.sort(key=lambda t: (-t[0].documents, -t[0].mean_share, t[0].code.sort_key()))
        return [_with_label(entry, labels, covered, label) for entry, covered in found[:top]]
    ranked = [_with_label(entry, labels, covered, label) for entry, covered in found]
    ranked.sort(key=lambda t: (-_f1(t), -t.documents, t.code.sort_key()))
    return ranked[:top]


def _labels(
    store: CodeStore, doc_ids: np.ndarray, field: str | None, label: str | None
) -> np.ndarray | None:
    if field is None:
        if label is not None:
            raise CodebookError("give the label's column (label_field) to rank by a label")
        return None
    by_id = document_labels(store, field)
    values = np.array([by_id[int(d)] for d in doc_ids], dtype=object)
    if label is not None and label not in set(values.tolist()):
        raise CodebookError(f"no document has {field} = {label!r}")
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
    hits = int((mine == label).sum())
    return TopicCode(
        entry.code,
        entry.documents,
        entry.mean_share,
        entry.examples,
        label,
        hits / len(covered),
        hits / int((labels == label).sum()),
    )


def _f1(topic: TopicCode) -> float:
    return f1(topic.precision or 0.0, topic.recall or 0.0)
