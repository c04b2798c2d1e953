"""A tiny language model trained here on a corpus with a planted concept: documents about
dragons (a minority), the sea and a farm, each with its own nouns in a shared grammar. The
attention codebooks learn codes that carry the topic, so forcing the dragon codes should make
the model write about dragons. Built once per test session."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

TOPICS = {
    "dragon": ["dragon", "fire", "wings", "cave", "scales", "smoke"],
    "sea": ["ship", "sail", "waves", "harbor", "fish", "wind"],
    "farm": ["cow", "barn", "field", "wheat", "hay", "goat"],
}
SHARES = {"dragon": 0.15, "sea": 0.45, "farm": 0.40}
DRAGON_REGEX = r"\b(dragon|fire|wings|cave|scales|smoke)\b"
ADJECTIVES = ["old", "big", "small", "red", "quiet"]
VERBS = ["sees", "finds", "likes", "hears"]


@dataclass(frozen=True)
class Planted:
    model: Path
    """The trained codebook model, saved with its tokenizer."""
    store: Path
    """A store of held-out documents recorded from it, labels in ``label``."""


def document(rng: random.Random, topic: str) -> str:
    nouns = TOPICS[topic]
    return " ".join(
        f"the {rng.choice(ADJECTIVES)} {rng.choice(nouns)} {rng.choice(VERBS)} the "
        f"{rng.choice(nouns)} ."
        for _ in range(rng.randint(3, 6))
    )


def write_corpus(path: Path, count: int, seed: int) -> Path:
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(count):
            topic = rng.choices(list(SHARES), weights=list(SHARES.values()))[0]
            f.write(json.dumps({"text": document(rng, topic), "label": topic}) + "\n")
    return path


_PLANTED: dict[Path, Planted] = {}


def planted(factory: pytest.TempPathFactory) -> Planted:
    """The session's planted world (trained on the first call, about 10 s)."""
    key = factory.getbasetemp()
    if key not in _PLANTED:
        _PLANTED[key] = _build(factory.mktemp("planted"))
    return _PLANTED[key]


def _build(root: Path) -> Planted:
    from codebook_features import CodebookModelConfig
    from codebook_features.store.record import RecordConfig, record
    from codebook_features.training import (
        DataConfig,
        ModelConfig,
        RunConfig,
        TrainingConfig,
        train,
    )
    from tests.model_zoo import TINY_NEOX
    from tests.text_fixtures import write_tokenizer

    train_file = write_corpus(root / "train.jsonl", 1000, seed=0)
    valid_file = write_corpus(root / "valid.jsonl", 300, seed=1)
    words = root / "words.txt"
    words.write_text(
        " ".join(["the", ".", *ADJECTIVES, *VERBS, *(w for ws in TOPICS.values() for w in ws)])
    )
    tokenizer = write_tokenizer(root / "tokenizer", words)
    result = train(
        RunConfig(
            model=ModelConfig(init=dict(TINY_NEOX), tokenizer=str(tokenizer)),
            data=DataConfig(dataset=str(train_file), block_size=32),
            codebooks=CodebookModelConfig(num_codes=32, k=2, sites=["attn_heads"]),
            training=TrainingConfig(
                output_dir=str(root / "run"),
                mode="finetune",
                steps=200,
                batch_size=16,
                eval_every=200,
                save_every=200,
                lr=3e-3,
                progress=False,
            ),
        )
    )
    store = root / "store"
    record(
        RecordConfig(
            model=str(result.model_dir),
            dataset=str(valid_file),
            output_dir=str(store),
            max_length=64,
            progress=False,
        )
    )
    return Planted(Path(result.model_dir), store)
