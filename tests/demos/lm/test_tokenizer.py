"""The language demo's byte-level BPE: an ordinary HF tokenizer whose offsets the code store can
trust, which decodes back to the text exactly and comes out the same every time."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from codebook_features.demos.lm.tokenizer import END_OF_TEXT, train_tokenizer
from codebook_features.errors import CodebookError

WORDS = ["the", "dragon", "flew", "over", "a", "castle", "and", "sang", "to", "children"]
EXTRA = ["café", "naïve", "Straße", "日本語", "🙂", "—", "  two  spaces", "tab\tstop"]


def corpus(lines: int = 300, seed: int = 0) -> list[str]:
    """Sentences of common words, with some multi-byte and whitespace oddities mixed in."""
    rng = random.Random(seed)
    out = []
    for i in range(lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 12))]
        if i % 5 == 0:
            words.insert(rng.randrange(len(words)), rng.choice(EXTRA))
        out.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ", said he."]))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_tokenizer(corpus(), tmp_path_factory.mktemp("tok") / "tokenizer", vocab_size=400)


@pytest.fixture(scope="module")
def tokenizer(trained):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(trained)


SAMPLES = [
    "The dragon flew over a castle, and sang to children.",
    "  leading spaces, trailing spaces  ",
    "new\nlines\n\nand\ttabs",
    "Unseen words: zyzzyva quokka 12345 !?",
    "Multi-byte: café naïve Straße 日本語 🙂 — Ωμέγα ثلاثة",
]


def test_loads_as_an_ordinary_fast_tokenizer(tokenizer) -> None:
    assert tokenizer.is_fast
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.pad_token == END_OF_TEXT
    assert tokenizer.convert_tokens_to_ids(END_OF_TEXT) == tokenizer.eos_token_id
    assert 257 < len(tokenizer) <= 400  # 256 bytes, the special token, and merges
    ids = tokenizer(" the dragon", add_special_tokens=False)["input_ids"]
    assert len(ids) == 2  # frequent words became single tokens
    assert tokenizer(END_OF_TEXT)["input_ids"] == [tokenizer.eos_token_id]


@pytest.mark.parametrize("text", SAMPLES)
def test_decoding_gives_back_the_text(tokenizer, text) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id not in ids  # byte-level: nothing is unknown


@pytest.mark.parametrize("text", SAMPLES)
def test_offsets_cover_each_tokens_characters(tokenizer, text) -> None:
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = encoded["offset_mapping"]
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for (start, end), (next_start, _) in itertools.pairwise(spans):
        # contiguous; a character split over several byte tokens gives them the same span
        assert start < end and next_start in (start, end)
    for token, (start, end) in zip(encoded["input_ids"], spans, strict=True):
        piece = tokenizer.decode([token])
        if "\ufffd" not in piece:  # a whole character or more (not part of one's bytes)
            assert text[start:end] == piece  # the leading space included: nothing trimmed


def test_the_same_text_gives_the_same_tokenizer(tmp_path, trained) -> None:
    again = train_tokenizer(iter(corpus()), tmp_path / "again", vocab_size=400)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (again / name).read_bytes() == (trained / name).read_bytes()


def test_an_existing_directory_is_replaced_only_when_asked(tmp_path) -> None:
    out = train_tokenizer(corpus(50), tmp_path / "tok", vocab_size=300)
    with pytest.raises(CodebookError, match="not empty"):
        train_tokenizer(corpus(50), out, vocab_size=300)
    train_tokenizer(corpus(60, seed=1), out, vocab_size=300, overwrite=True)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CodebookError, match=r"notes\.txt"):
        train_tokenizer(corpus(50), out, vocab_size=300, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_mistakes_are_reported(tmp_path) -> None:
    with pytest.raises(CodebookError, match="vocab_size"):
        train_tokenizer(corpus(10), tmp_path / "a", vocab_size=100)
    with pytest.raises(CodebookError, match="no text"):
        train_tokenizer(["", ""], tmp_path / "b")
    with pytest.raises(CodebookError, match="strings"):
        train_tokenizer(["fine", b"bytes"], tmp_path / "c")  # type: ignore[list-item]
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(CodebookError, match="is a file"):
        train_tokenizer(corpus(10), tmp_path / "file")
