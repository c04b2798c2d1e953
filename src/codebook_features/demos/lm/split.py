"""Documents -> a seeded training/validation split: by source document, stratified by label,
optionally chunked and capped per label.

The split is decided on whole source documents (a Brown file, a chapter, a scene) before they
are chunked, so no text of a validation document is ever in training. Every label is in both
splits. The cap keeps per label a seeded sample of the pieces of each split, so a
large source (the Bible, Shakespeare, Austen: a million words each) does not dominate the
fifteen Brown genres (10 to 160 thousand words each).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import replace

from codebook_features.demos.lm.parsing import SourceDocument, word_count
from codebook_features.errors import CodebookError

SPLITS = ("train", "validation")


def chunk_text(text: str, max_words: int) -> list[str]:
    """``text`` in pieces of at most ``max_words`` words, of about equal size, cut between
    paragraphs (blank lines) where possible, else between lines, else between words."""
    if not word_count(text):
        return []
    return [c for c in _pack(text, max_words, ("\n\n", "\n", " ")) if c.strip()]


def _target(remaining: int, limit: int) -> int:
    """The size that shares ``remaining`` words equally among the fewest pieces."""
    return math.ceil(remaining / max(1, math.ceil(remaining / limit)))


def _pack(text: str, limit: int, separators: tuple[str, ...]) -> list[str]:
    if word_count(text) <= limit or not separators:
        return [text]
    separator, finer = separators[0], separators[1:]
    pieces: list[str] = []
    for part in text.split(separator):
        pieces += _pack(part, limit, finer) if word_count(part) > limit else [part]
    sizes = [word_count(piece) for piece in pieces]
    remaining = sum(sizes)  # words not yet placed
    target = _target(remaining, limit)
    chunks: list[str] = []
    current: list[str] = []
    count = 0
    for piece, size in zip(pieces, sizes, strict=True):
        over, under = count + size - target, target - count  # with the piece; without it
        rest_fits = count + remaining <= limit  # no tiny last piece: take all that is left
        if current and not rest_fits and (count + size > limit or (over > 0 and over > under)):
            chunks.append(separator.join(current))
            current, count, target = [], 0, _target(remaining, limit)
        current.append(piece)
        count += size
        remaining -= size
    if current:
        chunks.append(separator.join(current))
    return chunks


def chunk_document(document: SourceDocument, max_words: int | None) -> list[SourceDocument]:
    """``document`` as pieces of at most ``max_words`` words (itself when ``None``)."""
    if max_words is None:
        return [document] if document.words else []
    pieces = chunk_text(document.text, max_words)
    if len(pieces) == 1:
        return [replace(document, text=pieces[0])]
    return [replace(document, text=p, id=f"{document.id}#{i}") for i, p in enumerate(pieces, 1)]


def split_corpus(
    documents: list[SourceDocument],
    *,
    seed: int,
    validation_fraction: float,
    max_words: int | None = None,
    max_per_label: int | None = None,
) -> dict[str, list[SourceDocument]]:
    """Training and validation documents, each list in a seeded shuffled order (labels mixed,
    so the first documents of a file are a fair sample).

    Per label, the source documents are shuffled with the seed and the label; the first
    ``validation_fraction`` of them (at least one, and at least one left for training) go to
    validation. Each is then cut into pieces of at most ``max_words`` words; with
    ``max_per_label``, each split keeps its share of that many pieces per label.
    """
    by_label: dict[str, list[SourceDocument]] = defaultdict(list)
    for document in sorted(documents, key=lambda d: d.id):
        by_label[document.label].append(document)
    splits: dict[str, list[SourceDocument]] = {name: [] for name in SPLITS}
    for label in sorted(by_label):
        group = by_label[label]
        if len(group) < 2:
            raise CodebookError(
                f"label {label!r} has only {len(group)} document(s): it needs at least 2 to be "
                "in both splits (split by document)"
            )
        random.Random(f"{seed}/{label}").shuffle(group)
        n_validation = min(max(1, round(validation_fraction * len(group))), len(group) - 1)
        parts = {"validation": group[:n_validation], "train": group[n_validation:]}
        caps = _caps(max_per_label, validation_fraction)
        for name, part in parts.items():
            pieces = [piece for document in part for piece in chunk_document(document, max_words)]
            if caps:  # a sample of pieces from across the label's documents
                random.Random(f"{seed}/{label}/{name}").shuffle(pieces)
                pieces = pieces[: caps[name]]
            splits[name] += pieces
    for name in SPLITS:
        random.Random(f"{seed}/{name}").shuffle(splits[name])
    return splits


def _caps(max_per_label: int | None, validation_fraction: float) -> dict[str, int] | None:
    if max_per_label is None:
        return None
    validation = max(1, round(max_per_label * validation_fraction))
    return {"validation": validation, "train": max(1, max_per_label - validation)}
