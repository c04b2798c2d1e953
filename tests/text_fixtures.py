"""A tiny structured English-like corpus and a word-level tokenizer for it, made offline."""

from __future__ import annotations

import random
from pathlib import Path

ADJECTIVES = ["red", "small", "old", "happy", "green", "quiet", "brave", "tall"]
NOUNS = ["dragon", "cat", "king", "river", "forest", "castle", "child", "ship"]
VERBS = ["sees", "finds", "likes", "follows", "hears", "guards"]
PLACES = ["near the hill", "by the sea", "in the town", "under the tree"]


def write_corpus(path: Path, lines: int = 1500, seed: int = 0) -> Path:
    """Sentences with a fixed grammar, so a tiny model's loss falls quickly."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        a, b = rng.choice(NOUNS), rng.choice(NOUNS)
        out.append(
            f"the {rng.choice(ADJECTIVES)} {a} {rng.choice(VERBS)} the {b} {rng.choice(PLACES)} ."
        )
    path.write_text("\n".join(out) + "\n")
    return path


def write_tokenizer(directory: Path, corpus: Path) -> Path:
    """A word-level tokenizer over the corpus's words, saved like any HF tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for line in corpus.read_text().splitlines() for w in line.split()})
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<eos>", "<unk>", *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<eos>", unk_token="<unk>", pad_token="<pad>"
    )
    tokenizer.save_pretrained(directory)
    return directory
