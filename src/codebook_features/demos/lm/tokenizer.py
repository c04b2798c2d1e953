"""A byte-level BPE tokenizer trained on the demo's own text, saved as an ordinary HF tokenizer.

Byte-level (as GPT-2's): every string encodes, with no unknown token, and decodes back to
itself exactly. The pre-tokenizer keeps each token's leading space and nothing trims offsets,
so the offsets the fast tokenizer returns cover exactly the token's characters, which is what
the code store's regex search reads (see ``store/model_loading.py``). Saved with
``save_pretrained``, it loads with ``AutoTokenizer.from_pretrained`` and travels with every model
trained on it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from codebook_features.errors import CodebookError
from codebook_features.persist.files import atomic_directory

END_OF_TEXT = "<|endoftext|>"
"""The one special token: end of a document (the training data puts it between documents),
and also beginning, padding and unknown, as in GPT-2."""
BYTE_ALPHABET = 256
"""Tokens every byte-level vocabulary starts with, one per byte."""
SAVED_TOKENIZER_FILES = frozenset(
    {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
)
"""What ``save_pretrained`` writes for this tokenizer (the last one only in older transformers);
a directory holding nothing else may be replaced with ``overwrite``."""


def train_tokenizer(
    texts: Iterable[str],
    out: str | os.PathLike,
    vocab_size: int = 4096,
    min_frequency: int = 2,
    overwrite: bool = False,
) -> Path:
    """Train a byte-level BPE on ``texts`` and save it into the directory ``out``.

    ``vocab_size`` counts the 256 byte tokens and ``<|endoftext|>``; a small or repetitive text
    may give fewer tokens. ``min_frequency`` is how often a pair must occur to be merged.
    Training involves no randomness: the same texts in the same order give the same tokenizer.
    The directory is written whole or not at all; an existing one is refused unless
    ``overwrite`` and it holds only tokenizer files. Returns ``out``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    target = Path(out)
    _check_target(target, overwrite)
    least = BYTE_ALPHABET + 1
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < least:
        raise CodebookError(
            f"vocab_size must be an integer of at least {least} (256 bytes and {END_OF_TEXT}), "
            f"got {vocab_size!r}"
        )
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise CodebookError(f"min_frequency must be a positive integer, got {min_frequency!r}")

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    # as GPT-2's: a token's offsets keep its leading space (trim_offsets would cut it off)
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte, seen or not
        show_progress=False,
    )
    counted = _Counted(texts)
    core.train_from_iterator(counted, trainer)
    if counted.characters == 0:
        raise CodebookError("no text to train the tokenizer on: give at least one non-empty text")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        clean_up_tokenization_spaces=False,  # " ," must decode to " ,", not ","
    )
    with atomic_directory(target) as tmp:
        tokenizer.save_pretrained(tmp)
    return target


class _Counted:
    """The texts, checked to be strings and counted while the trainer reads them."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.texts = texts
        self.characters = 0

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            if not isinstance(text, str):
                raise CodebookError(f"tokenizer texts must be strings, got {type(text).__name__}")
            self.characters += len(text)
            yield text


def _check_target(target: Path, overwrite: bool) -> None:
    """Refuse a file, or a directory that holds anything, unless ``overwrite`` may replace a
    directory of tokenizer files."""
    if target.exists() and not target.is_dir():
        raise CodebookError(f"{target} is a file, not a directory: give a directory")
    if not target.exists() or not any(target.iterdir()):
        return
    if not overwrite:
        raise CodebookError(f"{target} is not empty: choose another directory or overwrite it")
    other = sorted(p.name for p in target.iterdir() if p.name not in SAVED_TOKENIZER_FILES)
    if other:
        raise CodebookError(
            f"{target} also holds {', '.join(other[:5])}, which is not a tokenizer's: move them "
            "away or choose another directory (nothing was changed)"
        )
