"""A small recorded world for steering tests, built once per test session: a labelled
word-level corpus, a tiny codebook model saved with its tokenizer, and a code store recorded
from it (as ``tests/store/test_record.py`` records one)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from codebook_features import CodebookModel, CodebookModelConfig
from codebook_features.store.record import RecordConfig, record
from tests.model_zoo import neox_model
from tests.text_fixtures import write_corpus, write_tokenizer

CODEBOOKS = {"sites": ["attn_heads", "mlp"], "num_codes": 16, "k": 2}
"""Small codebooks, so that codes fire often enough in a few hundred tokens."""


@dataclass(frozen=True)
class World:
    root: Path
    model: Path
    """The saved codebook model (with its tokenizer)."""
    store: Path
    """A code store of ``corpus.jsonl`` recorded from it (label column ``topic``)."""
    corpus: Path


def save_model(directory: Path, tokenizer, seed: int = 0, **codebooks: object) -> CodebookModel:
    """A tiny GPT-NeoX with codebooks (:data:`CODEBOOKS`, changed by ``codebooks``), saved."""
    model = neox_model(seed, vocab_size=len(tokenizer))
    cbm = CodebookModel(model, CodebookModelConfig(**(CODEBOOKS | codebooks)))
    cbm.save(directory, tokenizer=tokenizer)
    return cbm


_WORLD: dict[Path, World] = {}


def world(factory: pytest.TempPathFactory) -> World:
    """The session's world (built on the first call)."""
    key = factory.getbasetemp()
    if key not in _WORLD:
        _WORLD[key] = _build(factory.mktemp("steering-world"))
    return _WORLD[key]


def _build(root: Path) -> World:
    text = write_corpus(root / "corpus.txt", lines=120, seed=0)
    record_corpus(root, text, root / "model")
    return World(root, root / "model", root / "store", root / "corpus.jsonl")


def record_corpus(root: Path, text: Path, model: Path) -> None:
    """From the lines of ``text``: a word-level tokenizer, ``corpus.jsonl`` labelled by topic
    (dragon or other), a tiny codebook model saved to ``model``, and the store ``root/store``
    recorded from it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(write_tokenizer(root / "tokenizer", text))
    with open(root / "corpus.jsonl", "w") as f:
        for line in text.read_text().splitlines():
            topic = "dragon" if "dragon" in line else "other"
            f.write(json.dumps({"text": line, "topic": topic}) + "\n")
    save_model(model, tokenizer)
    config = RecordConfig(
        model=str(model),
        dataset=str(root / "corpus.jsonl"),
        output_dir=str(root / "store"),
        max_length=32,
        batch_size=32,
        progress=False,
        device="cpu",
    )
    record(config)
