"""Recording a code store: run a codebook model over text and write which codes fire where.

Documents are read in the data's own order (:mod:`~.documents`), tokenized with character
offsets, cut into windows of ``max_length`` tokens and run through the model in batches; the
code ids of every recorded site are written, token by token, into the Parquet shards described
in :mod:`~.schema` (:mod:`~.shards`). Each process lists its finished shards in a progress file
(:mod:`~.progress`), so a recording that was killed goes on when run again with the same
settings. The first process writes the manifest (:mod:`~.manifest`) once every process of a
data-parallel recording (:mod:`~.group`) has finished.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from codebook_features.errors import CodebookError
from codebook_features.settings.saved import Record
from codebook_features.store.documents import READ_CHUNK, RESERVED_COLUMNS, load_corpus
from codebook_features.store.group import ProcessGroup
from codebook_features.store.manifest import write_manifest
from codebook_features.store.model_loading import DEFAULT_MAX_LENGTH, load_model
from codebook_features.store.progress import (
    ShardInfo,
    check_continuation,
    load_own_progress,
    save_progress,
)
from codebook_features.store.schema import MANIFEST
from codebook_features.store.shards import ShardWriter

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "READ_CHUNK",
    "RESERVED_COLUMNS",
    "ROW_GROUP_TOKENS",
    "RecordConfig",
    "RecordResult",
    "ShardInfo",
    "record",
]

ROW_GROUP_TOKENS = 1 << 16
"""Tokens per Parquet row group of a tokens shard (what is held in memory before writing)."""


@dataclass
class RecordConfig:
    """What to record: a codebook model, text data, and where the store goes."""

    model: str | None = None
    """A saved codebook model: a local directory (e.g. a run's ``final/``) or a hub name."""
    dataset: str | None = None
    """A hub dataset name, or local files: a .txt/.jsonl/.json/.parquet path, a directory, a
    glob, or a comma-separated list (as for training)."""
    dataset_config: str | None = None
    """The hub dataset's configuration name, if it has several."""
    split: str = "validation"
    """Split of a hub dataset to record. Local files have a single split: they are used as
    they are."""
    text_field: str = "text"
    """Column holding the text (jsonl/parquet/hub datasets)."""
    label_fields: list[str] | None = None
    """Extra columns copied into the documents table (e.g. ``label topic``); default: every
    scalar column the data has besides the text; ``none``: no extra columns."""
    streaming: bool = False
    """Read the dataset lazily, for corpora too large to prepare up front."""
    max_documents: int | None = None
    """Record only the first this many documents (default: all)."""
    sites: list[str] | None = None
    """Sites whose codes are recorded, by name, kind or glob (default: every site)."""
    max_length: int | None = None
    """Tokens per forward window; a longer document is cut into consecutive windows, its
    positions going on (default: the model's context length, at most 1024)."""
    batch_size: int = 8
    """Windows per forward pass."""
    shard_tokens: int = 1_000_000
    """Tokens per shard (a shard ends at the first document boundary past this)."""
    activation_sites: list[str] = field(default_factory=list)
    """Sites whose codebook inputs are also kept, as float16, for the baselines (default:
    none)."""
    max_activation_tokens: int = 100_000
    """Keep the activations of the first this many tokens (per process when recording
    data-parallel)."""
    tokenizer: str | None = None
    """The tokenizer (hub name or directory; default: the model's own). It must be a fast
    tokenizer, which gives each token's character offsets."""
    output_dir: str | None = None
    """The store directory to write (new, empty, or an unfinished recording to continue)."""
    overwrite: bool = False
    """Replace the store in ``output_dir`` (only a store that holds nothing else)."""
    progress: bool = True
    """Show a progress bar with tokens/s (only in a terminal)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` uses a GPU when there is one."""

    def __post_init__(self) -> None:
        for name in ("model", "dataset", "output_dir"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise CodebookError(f"record: {name} is empty: {_REQUIRED[name]}")
        for name in ("split", "text_field"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise CodebookError(f"record: {name} must be a non-empty string")
        for name in ("label_fields", "sites", "activation_sites"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [value]
                setattr(self, name, value)
            if value is None:
                continue
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise CodebookError(f"record: {name} must be a list of names, got {value!r}")
            if len(set(value)) != len(value):
                raise CodebookError(f"record: {name} names a column or site twice: {value}")
        if self.sites == []:
            raise CodebookError("record: sites is empty: name sites, or leave it out for all")
        if self.label_fields:
            clash = sorted({*RESERVED_COLUMNS, self.text_field} & set(self.label_fields))
            if clash:
                raise CodebookError(
                    f"record: label_fields may not name {', '.join(clash)} (the text and the "
                    "document id have their own columns)"
                )
        positive = ("batch_size", "shard_tokens", "max_activation_tokens")
        optional = ("max_documents", "max_length")
        for name in positive + optional:
            value = getattr(self, name)
            if value is None and name in optional:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CodebookError(f"record: {name} must be a positive integer, got {value!r}")
        for name in ("streaming", "overwrite", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise CodebookError(f"record: {name} must be true or false")
        if self.device not in ("auto", "cpu", "cuda"):
            raise CodebookError(f"record: device must be auto, cpu or cuda, got {self.device!r}")


_REQUIRED = {
    "model": "give a saved codebook model (a directory or a hub name)",
    "dataset": "give a hub dataset name or local files",
    "output_dir": "give the directory to write the store into",
}


@dataclass
class RecordResult(Record):
    """What a recording wrote."""

    path: str
    """The store directory."""
    documents: int
    """Documents in the store."""
    tokens: int
    """Tokens in the store."""
    shards: int
    """Shards in the store (of every process)."""
    seconds: float
    """Wall time of this call."""
    tokens_per_s: float
    """Tokens recorded by this call (every process) per second of it."""


def record(
    config: RecordConfig, *, on_shard: Callable[[ShardInfo], None] | None = None
) -> RecordResult:
    """Record ``config.model``'s codes over ``config.dataset`` into ``config.output_dir``
    (see the module's description); ``on_shard`` is called after every finished shard
    (stopping there with an exception leaves a store that a later call continues)."""
    return _Recorder(config, on_shard).run()


class _Recorder:
    """One call of :func:`record`: the steps of a recording, in order, in every process."""

    def __init__(self, config: RecordConfig, on_shard: Callable[[ShardInfo], None] | None) -> None:
        self.config = config
        self.on_shard = on_shard
        self.root = Path(config.output_dir or "")

    def run(self) -> RecordResult:
        from codebook_features.persist.ownership import STORE, check_output_dir, clear_own, mark

        started = time.monotonic()
        self.group = group = ProcessGroup()
        try:
            c = self.config
            state = check_output_dir(self.root, STORE, overwrite=c.overwrite, option="--output_dir")
            self.model = load_model(c, group.world)
            self.corpus = load_corpus(c)
            self.settings = self._settings(group.world)
            tokens_before = 0
            if state == "ours" and not c.overwrite:
                tokens_before = check_continuation(self.root, self.settings)
            group.barrier()  # every process checked before anything changes
            if group.rank == 0:
                if state == "ours" and c.overwrite:
                    clear_own(self.root, STORE)
                mark(self.root, STORE)
            group.barrier()
            self._record_own_documents()
            group.barrier()
            if group.rank == 0:
                write_manifest(self.root, c, self.model, self.corpus, group.world)
            group.barrier()
            manifest = json.loads((self.root / MANIFEST).read_text())
        finally:
            group.close()
        seconds = time.monotonic() - started
        tokens = int(manifest["counts"]["tokens"])
        return RecordResult(
            path=str(self.root),
            documents=int(manifest["counts"]["documents"]),
            tokens=tokens,
            shards=len(manifest["shards"]),
            seconds=round(seconds, 3),
            tokens_per_s=round((tokens - tokens_before) / max(seconds, 1e-9), 1),
        )

    def _settings(self, world: int) -> dict[str, Any]:
        """What decides the content of the store: a recording continues only with these."""
        c, model, corpus = self.config, self.model, self.corpus
        return {
            "model_fingerprint": model.fingerprint,
            "tokenizer": model.tokenizer_name,
            "dataset": c.dataset,
            "dataset_config": c.dataset_config,
            "data_files": corpus.data_files,
            "split": corpus.split,
            "text_field": c.text_field,
            "label_fields": corpus.label_fields,
            "max_documents": c.max_documents,
            "sites": model.sites,
            "max_length": model.max_length,
            "batch_size": c.batch_size,
            "shard_tokens": c.shard_tokens,
            "activation_sites": model.activation_sites,
            "max_activation_tokens": c.max_activation_tokens if model.activation_sites else None,
            "processes": world,
        }

    def _record_own_documents(self) -> None:
        """Record this process's documents, shard after shard, from its last finished one."""
        from tqdm.auto import tqdm

        rank, world = self.group.rank, self.group.world
        progress = load_own_progress(self.root, rank, self.settings)
        if progress["finished"]:
            return
        shards: list[ShardInfo] = progress["shards"]
        start = shards[-1].next_document if shards else 0
        activation_rows = sum(s.activation_rows for s in shards)
        bar = tqdm(
            desc="recording",
            unit="tok",
            unit_scale=True,
            disable=True if not self.config.progress or rank != 0 else None,
        )
        try:
            documents = self.corpus.tokenized(self.model.tokenizer, start, rank, world)
            while (first := next(documents, None)) is not None:
                budget = (
                    self.config.max_activation_tokens - activation_rows
                    if self.model.activation_sites
                    else 0
                )
                shard = ShardWriter(
                    self.root,
                    rank,
                    len(shards),
                    self.config,
                    self.model,
                    self.corpus,
                    activation_budget=budget,
                    row_group_tokens=ROW_GROUP_TOKENS,
                    bar=bar,
                )
                info = shard.write(itertools.chain([first], documents))
                shards.append(info)
                activation_rows += info.activation_rows
                save_progress(self.root, rank, progress)
                if self.on_shard is not None:
                    self.on_shard(info)
            progress["finished"] = True
            save_progress(self.root, rank, progress)
        finally:
            bar.close()
