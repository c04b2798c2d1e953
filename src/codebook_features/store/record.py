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
import logging
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codebook_features.errors import CodebookError
from codebook_features.persist.files import MANIFEST
from codebook_features.settings.base import NonNegativeInt, NonNegativeNumber, Record
from codebook_features.store.config import RESERVED_COLUMNS, RecordConfig
from codebook_features.store.documents import READ_CHUNK, load_corpus
from codebook_features.store.group import ProcessGroup
from codebook_features.store.index import ensure_index
from codebook_features.store.manifest import Manifest, write_store_manifest
from codebook_features.store.model_loading import DEFAULT_MAX_LENGTH, load_recording_model
from codebook_features.store.progress import (
    ShardInfo,
    check_continuation,
    load_own_progress,
    save_progress,
)
from codebook_features.store.shards import ShardWriter

log = logging.getLogger(__name__)

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


class RecordResult(Record):
    """What a recording wrote."""

    path: str
    """The store directory."""
    documents: NonNegativeInt
    """Documents in the store."""
    tokens: NonNegativeInt
    """Tokens in the store."""
    shards: NonNegativeInt
    """Shards in the store (of every process)."""
    seconds: NonNegativeNumber
    """Wall time of this call's recording (the index not counted)."""
    tokens_per_s: NonNegativeNumber
    """Tokens recorded by this call (every process) per second of its recording."""
    index_seconds: NonNegativeNumber = 0.0
    """Wall time of writing the index after the recording."""


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
        self.root = Path(config.output_dir)

    def run(self) -> RecordResult:
        from codebook_features.persist.ownership import STORE, check_output_dir, clear_own, mark

        started = time.monotonic()
        self.group = group = ProcessGroup()
        try:
            c = self.config
            state = check_output_dir(self.root, STORE, overwrite=c.overwrite, option="--output_dir")
            self.model = load_recording_model(c, group.world)
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
                write_store_manifest(self.root, c, self.model, self.corpus, group.world)
            group.barrier()
            manifest = Manifest.from_saved(
                json.loads((self.root / MANIFEST).read_text()), str(self.root / MANIFEST)
            )
            recorded = time.monotonic()
            if group.rank == 0:  # the index too, so that searching only reads the store (the
                self._index(manifest)  # other processes are done: none waits on a failure)
        finally:
            group.close()
        seconds = recorded - started
        tokens = manifest.counts.tokens
        return RecordResult(
            path=str(self.root),
            documents=manifest.counts.documents,
            tokens=tokens,
            shards=len(manifest.shards),
            seconds=round(seconds, 3),
            tokens_per_s=round((tokens - tokens_before) / max(seconds, 1e-9), 1),
            index_seconds=round(time.monotonic() - recorded, 3),
        )

    def _index(self, manifest: Manifest) -> None:
        """Write the store's index; a failure says the recording itself is complete."""
        log.info("indexing %s tokens", f"{manifest.counts.tokens:,}")
        try:
            ensure_index(self.root, manifest)
        except OSError as error:
            raise CodebookError(
                f"the recording of {self.root} is complete, but its index could not be written "
                f"({error.strerror or error}): make room, then run `codebook index --store "
                f"{shlex.quote(str(self.root))}`"
            ) from error

    def _settings(self, world: int) -> dict[str, Any]:
        """What decides the content of the store: a recording continues only with these."""
        c, model, corpus = self.config, self.model, self.corpus
        return {
            "model_fingerprint": model.fingerprint,
            "tokenizer": _same_spelling(model.tokenizer_name),
            "dataset": None if corpus.data_files else c.dataset,  # local: its files say it
            "dataset_config": c.dataset_config,
            "data_files": (
                [[_same_spelling(f), sha] for f, sha in corpus.data_files]
                if corpus.data_files
                else None
            ),
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
        if progress.finished:
            return
        shards = progress.shards
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
            progress.finished = True
            save_progress(self.root, rank, progress)
        finally:
            bar.close()


def _same_spelling(name: str) -> str:
    """A local path as its real absolute path, so that ``corpus.jsonl``, ``./corpus.jsonl`` and
    its absolute path continue one recording; a hub name unchanged."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name
