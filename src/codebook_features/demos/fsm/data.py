"""TokFSM data on disk: the machine (JSON), a tokenizer, and fixed, seeded token datasets.

The directory is self-contained: the training engine reads its parquet files of token blocks,
and the tokenizer makes every trained model an ordinary Hugging Face model.
"""

from __future__ import annotations

import os
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codebook_features.demos.fsm.config import MachineSettings
from codebook_features.demos.fsm.machine import FSM
from codebook_features.errors import CodebookError
from codebook_features.persist.files import (
    FSM_FILE,
    TOKENIZER_DIR,
    TRAIN_FILE,
    VALIDATION_FILE,
    atomic_directory,
)
from codebook_features.persist.ownership import FSM_DATA, check_output_dir, mark

SYMBOLS = string.digits + string.ascii_lowercase


@dataclass(frozen=True)
class FSMData:
    """Paths of a TokFSM data directory."""

    root: Path

    @property
    def fsm_file(self) -> Path:
        return self.root / FSM_FILE

    @property
    def tokenizer(self) -> Path:
        return self.root / TOKENIZER_DIR

    @property
    def train(self) -> Path:
        return self.root / TRAIN_FILE

    @property
    def validation(self) -> Path:
        return self.root / VALIDATION_FILE

    def fsm(self) -> FSM:
        if not self.fsm_file.exists():
            raise CodebookError(
                f"{self.root} holds no {FSM_FILE}: create the data with `codebook fsm make`"
            )
        return FSM.load(self.fsm_file)

    def validation_tokens(self) -> np.ndarray:
        import pyarrow.parquet as pq

        self.fsm()  # refuses a directory that is not TokFSM data at all
        if not self.validation.exists():
            raise CodebookError(
                f"{self.validation} is missing: recreate the data with `codebook fsm make`"
            )
        return np.array(pq.read_table(self.validation)["input_ids"].to_pylist(), dtype=np.int64)


def make_tokenizer(fsm: FSM, directory: str | os.PathLike) -> None:
    """A character-level tokenizer: one token per digit, plus ``<bos>`` (also EOS and pad)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if fsm.base > len(SYMBOLS):
        raise CodebookError(f"bases above {len(SYMBOLS)} have no digit symbols")
    vocab = {SYMBOLS[d]: d for d in range(fsm.base)} | {"<bos>": fsm.bos}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<bos>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("<bos>|."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<bos>",
        pad_token="<bos>",
        unk_token="<bos>",
    )
    tokenizer.save_pretrained(directory)


def make_data(
    out: str | os.PathLike,
    machine: MachineSettings,
    seed: int = 0,
    overwrite: bool = False,
) -> FSMData:
    """Write the machine, tokenizer, training rollouts and a fixed validation set.

    Training and validation rollouts use different seeds derived from ``seed``. An existing,
    non-empty ``out`` is refused unless ``overwrite`` (and it holds TokFSM data).
    """
    target = Path(out)
    m = machine
    if check_output_dir(target, FSM_DATA, overwrite=overwrite) == "ours" and not overwrite:
        raise CodebookError(f"{target} already holds FSM data: pass --overwrite to replace it")
    import pyarrow as pa
    import pyarrow.parquet as pq

    fsm = FSM.generate(m.num_states, m.num_edges, m.base, seed)
    with atomic_directory(out) as tmp:
        mark(tmp, FSM_DATA)
        fsm.save(tmp / FSM_FILE)
        make_tokenizer(fsm, tmp / TOKENIZER_DIR)
        for name, count, salt in (
            (TRAIN_FILE, m.train_sequences, 1),
            (VALIDATION_FILE, m.val_sequences, 2),
        ):
            tokens = fsm.to_tokens(fsm.rollouts(count, m.states_per_sequence, seed * 7919 + salt))
            pq.write_table(pa.table({"input_ids": tokens.tolist()}), tmp / name)
    return FSMData(Path(out))
