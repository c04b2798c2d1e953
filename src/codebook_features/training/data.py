"""Training text: load (hub or local files), tokenize, pack into blocks, split, and batch.

Batches are a pure function of (seed, micro-batch index, process rank), so a resumed run sees
exactly the batches the interrupted one would have seen, and processes never overlap.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from codebook_features.errors import CodebookError
from codebook_features.persist.sources import MODEL_FILES, TOKENIZER_FILES, check_source
from codebook_features.training.config import DataConfig, ModelConfig

BUILDERS = {
    ".txt": "text",
    ".text": "text",
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
    ".csv": "csv",
}


def load_run_tokenizer(config: ModelConfig) -> Any:
    from transformers import AutoTokenizer

    source = config.tokenizer or config.name_or_path
    if not config.tokenizer:  # the model's own: say so when it is not a model at all
        check_source(source, "model", MODEL_FILES)
    check_source(source, "tokenizer", TOKENIZER_FILES)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise CodebookError(f"could not load the tokenizer {source!r}: {error}") from error
    return tokenizer


def _looks_local(part: str) -> bool:
    """A spec part meant as a path: it exists, is a glob, or looks like one."""
    return (
        Path(part).expanduser().exists()
        or any(ch in part for ch in "*?[")
        or part.startswith(("/", "./", "../", "~"))
        or Path(part).suffix in BUILDERS
    )


def local_files(spec: str) -> list[str] | None:
    """The files a local dataset spec names (a path, glob, directory or comma-list), or None
    for a hub dataset name (such as ``wikitext`` or ``owner/name``)."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise CodebookError("data.dataset is empty: give a hub dataset name or local files")
    local = [_looks_local(p) for p in parts]
    if not any(local):
        if len(parts) > 1:
            raise CodebookError(f"give one hub dataset, not a list: {spec!r}")
        return None
    if not all(local):
        hub = [p for p, is_local in zip(parts, local, strict=True) if not is_local]
        raise CodebookError(
            f"{', '.join(hub)} is neither an existing file nor a path pattern; local files and "
            "a hub dataset cannot be mixed"
        )
    files: list[str] = []
    for part in parts:
        path = Path(part).expanduser()
        if path.is_dir():
            files += sorted(str(p) for p in path.rglob("*") if p.suffix in BUILDERS)
        elif any(ch in part for ch in "*?["):
            files += sorted(glob.glob(os.path.expanduser(part), recursive=True))
        elif path.is_file():
            files.append(str(path))
        else:
            raise CodebookError(f"data file {part} does not exist")
    if not files:
        raise CodebookError(f"no data files match {spec!r}")
    for file in files:
        _check_data_file(Path(file))
    return files


def _check_data_file(path: Path) -> None:
    """Refuse an empty file, and a text file that is not UTF-8 text, naming it (the datasets
    library would only say that generating the dataset failed)."""
    if path.stat().st_size == 0:
        raise CodebookError(f"data file {path} is empty")
    if path.suffix in (".txt", ".jsonl", ".json"):
        with open(path, "rb") as f:
            head = f.read(1 << 16)
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as error:
            if error.start < len(head) - 4:  # not merely a character cut at the block's end
                raise CodebookError(
                    f"data file {path} is not UTF-8 text (byte {error.start}): give text, "
                    "JSON lines or Parquet files"
                ) from error
        if b"\0" in head:
            raise CodebookError(f"data file {path} holds binary data, not text")


def load_split(config: DataConfig, split: str, spec: str | None = None) -> Any:
    """One split of ``spec`` (default: ``config.dataset``) as a ``datasets`` (Iterable)Dataset."""
    import datasets

    spec = spec or config.dataset or ""
    files = local_files(spec)
    try:
        if files is not None:
            suffixes = {Path(f).suffix for f in files}
            builders = {BUILDERS.get(s) for s in suffixes}
            if len(builders) != 1 or None in builders:
                raise CodebookError(
                    f"data files must share one format ({', '.join(sorted(BUILDERS))}), "
                    f"got {', '.join(sorted(suffixes))}"
                )
            if split != "train":
                raise CodebookError(
                    "local files have a single split: use data.validation_dataset for "
                    "separate validation files"
                )
            builder = builders.pop()
            try:
                with _datasets_errors_quiet():
                    return datasets.load_dataset(
                        builder,
                        data_files={"train": files},
                        split="train",
                        streaming=config.streaming,
                    )
            except CodebookError:
                raise
            except (datasets.exceptions.DatasetGenerationError, ValueError) as error:
                # a line it cannot parse raises either, depending on where the reader stops
                raise CodebookError(_unreadable(files, error)) from error
        return datasets.load_dataset(
            spec, config.dataset_config, split=split, streaming=config.streaming
        )
    except CodebookError:
        raise
    except (FileNotFoundError, ValueError, ConnectionError) as error:
        raise CodebookError(f"could not load dataset {spec!r} ({split}): {error}") from error


@contextlib.contextmanager
def _datasets_errors_quiet() -> Iterator[None]:
    """The datasets library logs a file it cannot parse before raising; the error we raise
    instead says it once, with the file and line."""
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _unreadable(files: list[str], error: Exception) -> str:
    """One line naming the file (and for JSON lines the line) the datasets library could not
    parse: found by reading the files again, only on this error path."""
    for file in files:
        if Path(file).suffix != ".jsonl":
            continue
        with open(file, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line.rstrip("\r\n"))  # columns counted in the line
                except json.JSONDecodeError as bad:
                    return (
                        f"data file {file} line {number} is not valid JSON ({bad.msg}, column "
                        f"{bad.colno}): fix or remove that line"
                    )
                if not isinstance(row, dict):
                    return (
                        f"data file {file} line {number} is not a JSON object: each line must "
                        'be one object such as {"text": "..."}'
                    )
    cause = error.__cause__ or error
    first = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    return f"the data files could not be read ({first}): check {', '.join(files)}"


def _validation_source(config: DataConfig) -> Any:
    """The separate validation data, or None when it is held out of the training data."""
    if config.validation_dataset:
        return load_split(config, "train", config.validation_dataset)
    if config.validation_split:
        return load_split(config, config.validation_split)
    return None


def _pack(texts: list[str], tokenizer: Any, block_size: int, carry: list[int]) -> list[list[int]]:
    """Tokenize ``texts``, join them with the end-of-text token, cut into full blocks; the
    remainder stays in ``carry`` for the next call."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        carry.extend(ids + eos)
    count = len(carry) // block_size
    blocks = [carry[i * block_size : (i + 1) * block_size] for i in range(count)]
    del carry[: count * block_size]
    return blocks


def _texts(dataset: Any, field: str) -> Iterator[list[str]]:
    batch: list[str] = []
    for row in dataset:
        if field not in row:
            raise CodebookError(f"the dataset has no column {field!r}; set data.text_field")
        text = row[field]
        if text:
            batch.append(text)
        if len(batch) == 1000:
            yield batch
            batch = []
    if batch:
        yield batch


def iter_blocks(dataset: Any, tokenizer: Any, config: DataConfig) -> Iterator[list[int]]:
    """Blocks of ``block_size`` tokens: rows of the token column as they are, or text
    tokenized, joined with the end-of-text token and cut."""
    carry: list[int] = []
    columns = getattr(dataset, "column_names", None) or []
    if config.token_field in columns:
        for row in dataset:
            ids = list(row[config.token_field])
            if len(ids) == config.block_size:  # a block as it is; other rows are pooled
                yield ids
                continue
            carry.extend(ids)
            while len(carry) >= config.block_size:
                yield carry[: config.block_size]
                del carry[: config.block_size]
        return
    for texts in _texts(dataset, config.text_field):
        yield from _pack(texts, tokenizer, config.block_size, carry)


def build_blocks(config: DataConfig, tokenizer: Any, seed: int) -> tuple[Any, Tensor]:
    """Training blocks (a tensor, or an iterator of blocks when streaming) and a fixed tensor
    of validation blocks."""
    train_split = load_split(config, config.split)
    val_source = _validation_source(config)
    val_limit = config.max_val_blocks
    if config.streaming:
        if val_source is not None:
            val_rows = iter_blocks(val_source, tokenizer, config)
            val = list(itertools.islice(val_rows, val_limit or 256))
            train_iter = iter_blocks(train_split, tokenizer, config)
        else:  # the first blocks of the stream are held out
            stream = iter_blocks(train_split, tokenizer, config)
            val = list(itertools.islice(stream, val_limit or 256))
            train_iter = stream
        if not val:
            raise CodebookError("the dataset is too small for one validation block")
        if config.max_train_blocks:
            train_iter = itertools.islice(train_iter, config.max_train_blocks)
        return train_iter, _as_tensor(val)
    blocks = _as_tensor(list(iter_blocks(train_split, tokenizer, config)), config.block_size)
    if val_source is not None:
        val = _as_tensor(list(iter_blocks(val_source, tokenizer, config)), config.block_size)
        train = blocks
    else:
        order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))
        held = max(1, round(len(blocks) * config.validation_fraction))
        val, train = blocks[order[:held]], blocks[order[held:]]
    if val_limit:
        val = val[:val_limit]
    if config.max_train_blocks:
        train = train[: config.max_train_blocks]
    if len(train) == 0 or len(val) == 0:
        raise CodebookError(
            f"the dataset gives only {len(blocks)} blocks of {config.block_size} tokens: "
            "use more text or a smaller data.block_size"
        )
    return train, val


def _as_tensor(blocks: list[list[int]], block_size: int | None = None) -> Tensor:
    if not blocks:
        return torch.empty(0, block_size or 0, dtype=torch.long)
    return torch.tensor(blocks, dtype=torch.long)


class BatchPlan:
    """Micro-batch ``i`` for process ``rank``: a pure function of the seed and ``i``.

    Each epoch is a seeded permutation of the blocks; one global batch holds
    ``batch_size x world_size`` blocks, of which each process takes its own slice.
    """

    def __init__(
        self, train: Tensor | Iterator[list[int]], batch_size: int, rank: int, world: int, seed: int
    ) -> None:
        self.train, self.batch_size, self.rank, self.world, self.seed = (
            train,
            batch_size,
            rank,
            world,
            seed,
        )
        self.global_size = batch_size * world
        if isinstance(train, Tensor):
            self.per_epoch = len(train) // self.global_size
            if self.per_epoch == 0:
                raise CodebookError(
                    f"{len(train)} training blocks are fewer than one global batch of "
                    f"{self.global_size}: use more data or a smaller training.batch_size"
                )
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)
        self._stream_next = 0
        self._kept: dict[int, Tensor] = {}

    def peek(self, index: int) -> Tensor:
        """Micro-batch ``index`` without using it up: a stream keeps it for the later call
        (k-means initialisation looks at the first batches before training uses them)."""
        batch = self(index)
        if not isinstance(self.train, Tensor):
            self._kept[index] = batch
        return batch

    def __call__(self, index: int) -> Tensor:
        if not isinstance(self.train, Tensor):
            if index in self._kept:
                return self._kept.pop(index)
            return self._from_stream(index)
        epoch, within = divmod(index, self.per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(len(self.train), generator=generator)
        start = within * self.global_size + self.rank * self.batch_size
        return self.train[self._order[start : start + self.batch_size]]

    def _from_stream(self, index: int) -> Tensor:
        if index < self._stream_next:
            raise CodebookError("a streaming dataset can only be read forward")
        while True:
            rows = list(itertools.islice(self.train, self.global_size))
            if len(rows) < self.global_size:
                raise CodebookError("the streaming dataset ran out of blocks: lower training.steps")
            if self._stream_next == index:
                self._stream_next += 1
                mine = rows[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
                return torch.tensor(mine, dtype=torch.long)
            self._stream_next += 1


def check_vocabulary(model: Any, block_sets: list[Any], source: str | None) -> None:
    """Refuse token ids the model has no embedding for (before any training), instead of an
    ``IndexError`` deep inside the forward pass. Streamed blocks are not read ahead."""
    size = model.get_input_embeddings().num_embeddings
    for blocks in block_sets:
        if isinstance(blocks, torch.Tensor) and blocks.numel():
            largest, smallest = int(blocks.max()), int(blocks.min())
            if largest >= size or smallest < 0:
                raise CodebookError(
                    f"the data ({source}) holds token id {largest if largest >= size else smallest}"
                    f", but the model's vocabulary has {size} tokens (0..{size - 1}): use the "
                    "tokenizer the model was trained with"
                )
