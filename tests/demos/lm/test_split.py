"""The split: seeded, by source document, stratified by label; chunking; the per-label cap."""

from __future__ import annotations

import pytest

from codebook_features.demos.lm.parsing import SourceDocument, word_count
from codebook_features.demos.lm.split import chunk_document, chunk_text, split_corpus
from codebook_features.errors import CodebookError


def corpus() -> list[SourceDocument]:
    """Three labels of very different sizes; each document has 3 paragraphs of 40 words."""
    documents = []
    for label, count in (("big", 40), ("mid", 10), ("small", 2)):
        for i in range(count):
            paragraphs = [" ".join(f"{label}{i}p{p}w{w}" for w in range(40)) for p in range(3)]
            documents.append(SourceDocument("\n\n".join(paragraphs), label, "test", f"{label}/{i}"))
    return documents


def origin(piece: SourceDocument) -> str:
    return piece.id.split("#")[0]


def test_chunks_cut_between_paragraphs_and_keep_every_word() -> None:
    text = "\n\n".join(" ".join(["w"] * n) for n in (30, 50, 20, 70))
    pieces = chunk_text(text, 100)
    assert all(word_count(p) <= 100 for p in pieces)
    assert sum(word_count(p) for p in pieces) == 170
    assert all(not p.startswith("\n") and not p.endswith("\n") for p in pieces)
    assert chunk_text("short text", 100) == ["short text"]
    # a paragraph longer than the limit is cut between lines, then between words
    long_verse = "\n".join(" ".join(["v"] * 7) for _ in range(10))
    assert [word_count(p) for p in chunk_text(long_verse, 20)] == [14, 14, 14, 14, 14]
    assert [word_count(p) for p in chunk_text(" ".join(["x"] * 25), 10)] == [9, 8, 8]


def test_chunk_ids_name_their_document() -> None:
    document = corpus()[0]
    pieces = chunk_document(document, 50)
    assert [p.id for p in pieces] == ["big/0#1", "big/0#2", "big/0#3"]
    assert chunk_document(document, None) == [document]


def test_split_is_seeded_by_document_and_stratified() -> None:
    documents = corpus()
    first = split_corpus(documents, seed=3, validation_fraction=0.2, max_words=50)
    again = split_corpus(list(reversed(documents)), seed=3, validation_fraction=0.2, max_words=50)
    assert first == again  # the input order does not matter
    other = split_corpus(documents, seed=4, validation_fraction=0.2, max_words=50)
    assert {p.id for p in other["validation"]} != {p.id for p in first["validation"]}
    train, validation = first["train"], first["validation"]
    assert {origin(p) for p in train}.isdisjoint({origin(p) for p in validation})
    for label, total, held_out in (("big", 40, 8), ("mid", 10, 2), ("small", 2, 1)):
        assert len({origin(p) for p in validation if p.label == label}) == held_out
        assert len({origin(p) for p in train if p.label == label}) == total - held_out
    assert len(train) + len(validation) == 52 * 3  # every document cut in 3
    assert [p.label for p in train[:10]] != sorted(p.label for p in train[:10])  # mixed


def test_cap_per_label_balances_labels() -> None:
    split = split_corpus(corpus(), seed=0, validation_fraction=0.2, max_words=50, max_per_label=20)
    for name, cap in (("train", 16), ("validation", 4)):
        counts = {label: sum(p.label == label for p in split[name]) for label in ("big", "mid")}
        assert counts == {"big": cap, "mid": cap}
    assert sum(p.label == "small" for p in split["validation"]) == 3  # all it has
    assert {origin(p) for p in split["train"]}.isdisjoint({origin(p) for p in split["validation"]})


def test_a_label_needs_two_documents() -> None:
    lonely = SourceDocument("just one", "lonely", "test", "lonely/1")
    with pytest.raises(CodebookError, match="'lonely' has only 1 document"):
        split_corpus([*corpus(), lonely], seed=0, validation_fraction=0.1)
