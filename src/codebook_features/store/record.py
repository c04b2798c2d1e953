"""Recording a code store: run a codebook model over text and write which codes fire where.

Documents are read in the data's own order (document id = index in that order), tokenized with
the tokenizer's character offsets, cut into windows of ``max_length`` tokens (positions go on
across windows) and run through the model in batches; the code ids of every recorded site are
written, token by token, into the Parquet shards described in :mod:`~.schema`. A shard is full
once it holds ``shard_tokens`` tokens (it ends at a document boundary); its tokens file is
written row group by row group, so memory stays bounded by one batch and one row group,
whatever the size of the corpus.

Every file appears under its final name only when complete (temporary file, then rename).
Each process keeps its finished shards in ``progress/rank-RRRRR.json`` (written after the
shard's files), so a recording that was killed goes on after its last finished shard when it is
run again with the same settings, and gives the same files as one that was never interrupted:
shards start at the same documents and hold the same batches. The manifest is written last,
by the first process, once every process has finished::

    schema_version        format of the store (schema.SCHEMA_VERSION)
    model                 {name, fingerprint (sha256 of codebook_config.json then
                          codebooks.safetensors), model_type}
    tokenizer             the tokenizer's name (hub name or directory)
    data                  {dataset, config, split (None for local files), text_field,
                          label_fields, labels (names of class-label columns)}
    sites                 {site: {groups, k, num_codes, dtype}}
    counts                {documents, tokens}
    shards                [{documents, tokens (file names in shards/), rank, shard,
                          documents_count, tokens_count}] in store order: the global row of a
                          token is its row in the tokens files taken in this order
    activations           None, or {sites: {site: {dim}}, dtype, max_tokens, tokens,
                          files: [{file (in activations/), shard (index in shards), rows}]}:
                          the float16 inputs of those sites for the first ``rows`` rows of
                          that shard's tokens
    recording             {max_length, batch_size, shard_tokens, max_documents, processes}
    files                 {relative path: sha256} of every shard and activations file
    codebook_features_version

Data-parallel recording (``torchrun`` or ``accelerate launch``): process ``r`` of ``w`` records
documents ``r, r + w, ...`` into its own shards (``rank`` in their names); shards are listed
rank by rank.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np

from codebook_features.errors import CodebookError
from codebook_features.saved import Record
from codebook_features.store.schema import (
    ACTIVATIONS_DIR,
    ACTIVATIONS_SHARD,
    DOCUMENT_COLUMNS,
    DOCUMENTS_SHARD,
    MANIFEST,
    PROGRESS_DIR,
    PROGRESS_FILE,
    SCHEMA_VERSION,
    SHARDS_DIR,
    TOKENS_SHARD,
    id_dtype,
)

RESERVED_COLUMNS = ("document", "text")
"""Columns of the documents table that label columns may not replace."""
ROW_GROUP_TOKENS = 1 << 16
"""Tokens per Parquet row group of a tokens shard (what is held in memory before writing)."""
READ_CHUNK = 64
"""Documents read and tokenized together."""
DEFAULT_MAX_LENGTH = 1024
"""Window length when neither ``max_length`` nor the model's context length says otherwise."""


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
_FREE = ("output_dir", "overwrite", "progress", "device", "streaming")
"""Settings that may change when an interrupted recording is continued."""


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


@dataclass
class ShardInfo:
    """One finished shard of one process, as its progress file lists it."""

    rank: int
    shard: int
    documents: str
    tokens: str
    documents_count: int
    tokens_count: int
    next_document: int
    """Index of the document after the shard's last one (where the next shard starts)."""
    activations: str | None = None
    activation_rows: int = 0
    sha256: dict[str, str] = field(default_factory=dict)


def record(
    config: RecordConfig, *, on_shard: Callable[[ShardInfo], None] | None = None
) -> RecordResult:
    """Record ``config.model``'s codes over ``config.dataset`` into ``config.output_dir``
    (see the module's description); ``on_shard`` is called after every finished shard
    (stopping there with an exception leaves a store that a later call continues)."""
    return _Recorder(config, on_shard).run()


# ---------------------------------------------------------------------------- processes
class _Group:
    """The processes of a data-parallel recording (one process: no-ops)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.started = False
        if dist.is_available() and dist.is_initialized():
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
            if not dist.is_available():
                raise CodebookError("this torch build cannot run several processes")
            dist.init_process_group("gloo", timeout=timedelta(hours=12))
            self.started = True
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        else:
            self.rank, self.world = 0, 1

    def barrier(self) -> None:
        if self.world > 1:
            self.dist.barrier()

    def close(self) -> None:
        if self.started:
            self.dist.destroy_process_group()


# ---------------------------------------------------------------------------- the recorder
class _Recorder:
    def __init__(self, config: RecordConfig, on_shard: Callable[[ShardInfo], None] | None):
        self.config = config
        self.on_shard = on_shard
        self.root = Path(config.output_dir or "")

    def run(self) -> RecordResult:
        from codebook_features.ownership import STORE, check_output_dir, clear_own, mark

        started = time.monotonic()
        self.group = group = _Group()
        try:
            c = self.config
            state = check_output_dir(self.root, STORE, overwrite=c.overwrite, option="--output_dir")
            self._load_model()
            self._load_data()
            self.settings = self._settings(group.world)
            tokens_before = 0
            if state == "ours" and not c.overwrite:
                tokens_before = self._check_continuation()
            group.barrier()  # every process checked before anything changes
            if group.rank == 0:
                if state == "ours" and c.overwrite:
                    clear_own(self.root, STORE)
                mark(self.root, STORE)
            group.barrier()
            self._record_own_documents()
            group.barrier()
            if group.rank == 0:
                self._write_manifest()
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

    # ------------------------------------------------------------------ model and tokenizer
    def _load_model(self) -> None:
        import torch
        from transformers import AutoTokenizer

        from codebook_features.model import CodebookModel
        from codebook_features.sources import MODEL_FILES, TOKENIZER_FILES, check_source

        c = self.config
        check_source(c.model, "model", MODEL_FILES)
        source = c.tokenizer or c.model
        check_source(source, "tokenizer", TOKENIZER_FILES)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as error:
            raise CodebookError(f"could not load the tokenizer {source!r}: {error}") from error
        if not getattr(tokenizer, "is_fast", False):
            raise CodebookError(
                f"the tokenizer {source!r} is a slow (Python) tokenizer, which gives no "
                "character offsets: give a fast one (a directory with tokenizer.json)"
            )
        self.tokenizer, self.tokenizer_name = tokenizer, source
        if c.device == "cuda" and not torch.cuda.is_available():
            raise CodebookError("record: device is cuda, but torch sees no GPU")
        use_cuda = c.device == "cuda" or (c.device == "auto" and torch.cuda.is_available())
        local = int(os.environ.get("LOCAL_RANK", "0")) if self.group.world > 1 else 0
        self.device = torch.device(f"cuda:{local}" if use_cuda else "cpu")
        cbm = CodebookModel.from_pretrained(c.model)
        cbm.to(self.device).eval()
        self.cbm = cbm
        self.sites = cbm.select_sites(c.sites)
        self.activation_sites = cbm.select_sites(c.activation_sites) if c.activation_sites else []
        for site in cbm.sites:
            cbm.codebook(site).track_stats = False  # statistics are not needed here
        vocab = cbm.model.get_input_embeddings().num_embeddings
        if len(tokenizer) > vocab:
            raise CodebookError(
                f"the tokenizer {source!r} has {len(tokenizer)} tokens, but the model's "
                f"vocabulary has {vocab}: use the tokenizer the model was trained with"
            )
        context = _context_length(cbm.model.config)
        if c.max_length is not None and context is not None and c.max_length > context:
            raise CodebookError(
                f"record: max_length {c.max_length} is longer than the model's context "
                f"({context} tokens)"
            )
        self.max_length = c.max_length or min(context or DEFAULT_MAX_LENGTH, DEFAULT_MAX_LENGTH)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.fingerprint = _fingerprint(c.model)

    # ------------------------------------------------------------------ data
    def _load_data(self) -> None:
        from codebook_features.training.config import DataConfig
        from codebook_features.training.data import load_split, local_files

        c = self.config
        data = DataConfig(
            dataset=c.dataset,
            dataset_config=c.dataset_config,
            text_field=c.text_field,
            streaming=c.streaming,
        )
        files = local_files(c.dataset or "")
        self.local = files is not None
        # local files and their sizes: a recording continues only on the same files
        self.data_files = [[f, os.path.getsize(f)] for f in files] if files else None
        dataset = load_split(data, "train" if self.local else c.split)
        features = getattr(dataset, "features", None)
        first = None
        if features is None:  # a stream that does not say: its first row does
            first = next(iter(dataset), None)
            if first is None:
                raise CodebookError(f"the dataset {c.dataset!r} holds no rows")
            columns = list(first)
        else:
            columns = list(features)
        if c.text_field not in columns:
            raise CodebookError(
                f"the dataset has no column {c.text_field!r} (it has {', '.join(columns)}): set "
                "--text_field"
            )
        self.label_fields, self.label_types, self.label_names = _label_columns(
            c, columns, features, first
        )
        self.dataset = dataset.select_columns([c.text_field, *self.label_fields])

    def _documents(self, start: int) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """``(index, text, labels)`` of this process's documents from index ``start`` on."""
        import datasets

        c, rank, world = self.config, self.group.rank, self.group.world
        first = start + (rank - start) % world
        limit = c.max_documents
        if isinstance(self.dataset, datasets.Dataset):
            end = len(self.dataset) if limit is None else min(limit, len(self.dataset))
            rows: Iterator[tuple[int, dict[str, Any]]] = zip(
                itertools.count(first, world),
                self.dataset.select(range(first, end, world)) if first < end else [],
            )
        else:
            rows = (
                (i, row)
                for i, row in enumerate(itertools.islice(self.dataset, limit))
                if i >= first and (i - first) % world == 0
            )
        for index, row in rows:
            text = row[c.text_field]
            if text is None:
                text = ""
            if not isinstance(text, str):
                raise CodebookError(
                    f"column {c.text_field!r} of document {index} holds {type(text).__name__}, "
                    "not text: set --text_field to the text column"
                )
            yield index, text, {name: row[name] for name in self.label_fields}

    def _tokenized(self, start: int) -> Iterator[_Document]:
        """This process's documents from ``start`` on, tokenized a chunk at a time."""
        documents = self._documents(start)
        while chunk := list(itertools.islice(documents, READ_CHUNK)):
            encoded = self.tokenizer(
                [text for _, text, _ in chunk],
                add_special_tokens=False,
                return_offsets_mapping=True,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )
            for (index, text, labels), ids, offsets in zip(
                chunk, encoded["input_ids"], encoded["offset_mapping"], strict=True
            ):
                spans = np.asarray(offsets, dtype=np.int32).reshape(-1, 2)
                yield _Document(index, text, labels, np.asarray(ids, dtype=np.int32), spans)

    # ------------------------------------------------------------------ settings and resuming
    def _settings(self, world: int) -> dict[str, Any]:
        """What decides the content of the store: a recording continues only with these."""
        c = self.config
        return {
            "model_fingerprint": self.fingerprint,
            "tokenizer": self.tokenizer_name,
            "dataset": c.dataset,
            "dataset_config": c.dataset_config,
            "data_files": self.data_files,
            "split": None if self.local else c.split,
            "text_field": c.text_field,
            "label_fields": self.label_fields,
            "max_documents": c.max_documents,
            "sites": self.sites,
            "max_length": self.max_length,
            "batch_size": c.batch_size,
            "shard_tokens": c.shard_tokens,
            "activation_sites": self.activation_sites,
            "max_activation_tokens": c.max_activation_tokens if self.activation_sites else None,
            "processes": world,
        }

    def _progress_path(self, rank: int) -> Path:
        return self.root / PROGRESS_DIR / PROGRESS_FILE.format(rank=rank)

    def _read_progress(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
                raise ValueError("not a progress file")
            data["shards"] = [ShardInfo(**s) for s in data["shards"]]
        except (ValueError, TypeError, KeyError) as error:
            raise CodebookError(
                f"{path} is damaged ({error}): record again with --overwrite true"
            ) from error
        return data

    def _check_continuation(self) -> int:
        """Refuse to continue a store recorded with other settings; returns the tokens that
        are already recorded."""
        found = sorted((self.root / PROGRESS_DIR).glob("*.json"))
        if not found and (self.root / MANIFEST).exists():
            raise CodebookError(
                f"{self.root} holds a finished code store that cannot be continued: record "
                "into another --output_dir, or replace it with --overwrite true"
            )
        tokens = 0
        for path in found:
            progress = self._read_progress(path)
            saved, mine = progress["settings"], self.settings
            differ = [k for k in sorted({*saved, *mine}) if saved.get(k) != mine.get(k)]
            if differ:
                raise CodebookError(
                    f"{self.root} holds a store recorded with other settings "
                    f"({', '.join(differ)} differ): run again with the same settings to "
                    "continue it, record into another --output_dir, or replace it with "
                    "--overwrite true"
                )
            tokens += sum(s.tokens_count for s in progress["shards"])
        return tokens

    def _load_own_progress(self) -> dict[str, Any]:
        path = self._progress_path(self.group.rank)
        if path.exists():
            progress = self._read_progress(path)
        else:
            progress = {"settings": self.settings, "shards": [], "finished": False}
        self._clean_unfinished(progress["shards"])
        return progress

    def _clean_unfinished(self, shards: list[ShardInfo]) -> None:
        """Remove this process's temporary files and the files of shards it had not finished
        (a kill can leave them between the renames and the progress file)."""
        kept = {name for s in shards for name in (s.documents, s.tokens, s.activations) if name}
        rank = f"-{self.group.rank:05d}-"
        for folder in (self.root / SHARDS_DIR, self.root / ACTIVATIONS_DIR):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                name = path.name.lstrip(".")
                if rank in name and path.is_file() and path.name not in kept:
                    path.unlink()

    def _save_progress(self, progress: dict[str, Any]) -> None:
        from codebook_features.files import write_json
        from codebook_features.saved import stamp

        data = {**progress, "shards": [s.__dict__ for s in progress["shards"]]}
        write_json(self._progress_path(self.group.rank), stamp(data))

    # ------------------------------------------------------------------ recording
    def _record_own_documents(self) -> None:
        from tqdm.auto import tqdm

        progress = self._load_own_progress()
        if progress["finished"]:
            return
        shards: list[ShardInfo] = progress["shards"]
        start = shards[-1].next_document if shards else 0
        activation_rows = sum(s.activation_rows for s in shards)
        bar = tqdm(
            desc="recording",
            unit="tok",
            unit_scale=True,
            disable=True if not self.config.progress or self.group.rank != 0 else None,
        )
        try:
            documents = self._tokenized(start)
            while (first := next(documents, None)) is not None:
                budget = (
                    self.config.max_activation_tokens - activation_rows
                    if self.activation_sites
                    else 0
                )
                shard = _ShardWriter(self, len(shards), budget, bar)
                info = shard.write(itertools.chain([first], documents))
                shards.append(info)
                activation_rows += info.activation_rows
                self._save_progress(progress)
                if self.on_shard is not None:
                    self.on_shard(info)
            progress["finished"] = True
            self._save_progress(progress)
        finally:
            bar.close()

    def _write_manifest(self) -> None:
        from codebook_features.files import write_json
        from codebook_features.saved import stamp

        shards: list[ShardInfo] = []
        for rank in range(self.group.world):
            progress = self._read_progress(self._progress_path(rank))
            if not progress["finished"]:
                raise CodebookError(f"process {rank} did not finish its part of the recording")
            shards += progress["shards"]
        files: dict[str, str] = {}
        for shard in shards:
            files.update(shard.sha256)
        c = self.config
        activations = None
        if self.activation_sites:
            listed = [
                {"file": s.activations, "shard": i, "rows": s.activation_rows}
                for i, s in enumerate(shards)
                if s.activations
            ]
            activations = {
                "sites": {
                    site: {"dim": self.cbm.codebook(site).config.dim}
                    for site in self.activation_sites
                },
                "dtype": "float16",
                "max_tokens": c.max_activation_tokens,
                "tokens": sum(item["rows"] for item in listed),
                "files": listed,
            }
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "model": {
                "name": c.model,
                "fingerprint": self.fingerprint,
                "model_type": getattr(self.cbm.model.config, "model_type", None),
            },
            "tokenizer": self.tokenizer_name,
            "data": {
                "dataset": c.dataset,
                "config": c.dataset_config,
                "split": self.settings["split"],
                "text_field": c.text_field,
                "label_fields": self.label_fields,
                "labels": self.label_names,
            },
            "sites": {
                site: {
                    "groups": self.cbm.codebook(site).config.groups,
                    "k": self.cbm.codebook(site).config.k,
                    "num_codes": self.cbm.codebook(site).config.num_codes,
                    "dtype": str(id_dtype(self.cbm.codebook(site).config.num_codes)),
                }
                for site in self.sites
            },
            "counts": {
                "documents": sum(s.documents_count for s in shards),
                "tokens": sum(s.tokens_count for s in shards),
            },
            "shards": [
                {
                    "documents": s.documents,
                    "tokens": s.tokens,
                    "rank": s.rank,
                    "shard": s.shard,
                    "documents_count": s.documents_count,
                    "tokens_count": s.tokens_count,
                }
                for s in shards
            ],
            "activations": activations,
            "recording": {
                "max_length": self.max_length,
                "batch_size": c.batch_size,
                "shard_tokens": c.shard_tokens,
                "max_documents": c.max_documents,
                "processes": self.group.world,
            },
            "files": dict(sorted(files.items())),
        }
        write_json(self.root / MANIFEST, stamp(manifest))


@dataclass
class _Document:
    index: int
    text: str
    labels: dict[str, Any]
    ids: np.ndarray
    """``(n,)`` token ids."""
    spans: np.ndarray
    """``(n, 2)`` character start and end of each token."""


@dataclass
class _Window:
    document: int
    position: int
    ids: np.ndarray
    spans: np.ndarray


class _ShardWriter:
    """Writes one shard of one process: its documents, tokens and activations files."""

    def __init__(self, recorder: _Recorder, number: int, activation_budget: int, bar: Any):
        rank = recorder.group.rank
        self.recorder = recorder
        self.config = recorder.config
        self.number = number
        self.bar = bar
        self.documents_name = DOCUMENTS_SHARD.format(rank=rank, shard=number)
        self.tokens_name = TOKENS_SHARD.format(rank=rank, shard=number)
        self.activations_name = ACTIVATIONS_SHARD.format(rank=rank, shard=number)
        self.budget = max(activation_budget, 0)
        self.dtypes = {
            site: id_dtype(recorder.cbm.codebook(site).config.num_codes) for site in recorder.sites
        }
        self.widths = {
            site: recorder.cbm.codebook(site).config.groups * recorder.cbm.codebook(site).config.k
            for site in recorder.sites
        }
        self.documents: list[_Document] = []
        self.tokens = 0
        self.windows: list[_Window] = []
        self.rows: list[dict[str, np.ndarray]] = []
        self.buffered = 0
        self.activations: dict[str, list[np.ndarray]] = {s: [] for s in recorder.activation_sites}
        self.activation_rows = 0

    def _token_schema(self) -> Any:
        import pyarrow as pa

        fields = [
            pa.field("document", pa.int64(), nullable=False),
            pa.field("position", pa.int32(), nullable=False),
            pa.field("token", pa.int32(), nullable=False),
            pa.field("start", pa.int32(), nullable=False),
            pa.field("end", pa.int32(), nullable=False),
        ]
        for site, dtype in self.dtypes.items():
            kind = pa.list_(pa.field("item", pa.from_numpy_dtype(dtype)), self.widths[site])
            fields.append(pa.field(site, kind, nullable=False))
        return pa.schema(fields)

    def write(self, documents: Iterator[_Document]) -> ShardInfo:
        """Take documents until the shard is full; write its files; describe it."""
        import pyarrow.parquet as pq

        from codebook_features.checksums import file_sha256
        from codebook_features.files import atomic_file

        root = self.recorder.root
        limit = self.config.shard_tokens
        tokens_path = root / SHARDS_DIR / self.tokens_name
        with (
            atomic_file(tokens_path) as tmp,
            pq.ParquetWriter(tmp, self._token_schema(), compression="zstd") as writer,
        ):
            self.writer = writer
            for document in documents:
                self._add(document)
                if self.tokens >= limit or len(self.documents) >= limit:
                    break
            self._run_windows()
            self._write_rows()
        documents_path = root / SHARDS_DIR / self.documents_name
        with atomic_file(documents_path) as tmp:
            pq.write_table(self._documents_table(), tmp, compression="zstd")
        sha256 = {
            f"{SHARDS_DIR}/{self.documents_name}": file_sha256(documents_path),
            f"{SHARDS_DIR}/{self.tokens_name}": file_sha256(tokens_path),
        }
        activations = None
        if self.activation_rows:
            activations = self.activations_name
            path = root / ACTIVATIONS_DIR / activations
            self._write_activations(path)
            sha256[f"{ACTIVATIONS_DIR}/{activations}"] = file_sha256(path)
        return ShardInfo(
            rank=self.recorder.group.rank,
            shard=self.number,
            documents=self.documents_name,
            tokens=self.tokens_name,
            documents_count=len(self.documents),
            tokens_count=self.tokens,
            next_document=self.documents[-1].index + 1,
            activations=activations,
            activation_rows=self.activation_rows,
            sha256=sha256,
        )

    def _add(self, document: _Document) -> None:
        # the text is kept for the documents table; the token arrays only until they ran
        self.documents.append(_Document(document.index, document.text, document.labels, *_EMPTY))
        length = self.recorder.max_length
        for position in range(0, len(document.ids), length):
            self.windows.append(
                _Window(
                    document.index,
                    position,
                    document.ids[position : position + length],
                    document.spans[position : position + length],
                )
            )
            if len(self.windows) == self.config.batch_size:
                self._run_windows()
        self.tokens += len(document.ids)

    def _run_windows(self) -> None:
        """Run the pending windows through the model as one padded batch; keep their rows."""
        import torch

        windows, self.windows = self.windows, []
        if not windows:
            return
        recorder = self.recorder
        lengths = np.array([len(w.ids) for w in windows])
        width = int(lengths.max())
        input_ids = np.full((len(windows), width), recorder.pad_id, dtype=np.int64)
        for i, window in enumerate(windows):
            input_ids[i, : len(window.ids)] = window.ids
        valid = np.arange(width)[None, :] < lengths[:, None]
        mask = None if valid.all() else torch.from_numpy(valid.astype(np.int64))
        want_activations = self.budget > self.activation_rows
        dense = (
            recorder.cbm.observe(recorder.activation_sites, ids=False, inputs=True, device="cpu")
            if want_activations
            else contextlib.nullcontext()
        )
        with (
            torch.inference_mode(),
            recorder.cbm.observe(recorder.sites, device="cpu") as seen,
            dense,
        ):
            recorder.cbm.model(
                input_ids=torch.from_numpy(input_ids).to(recorder.device),
                attention_mask=None if mask is None else mask.to(recorder.device),
                use_cache=False,
            )
        keep = torch.from_numpy(valid)
        count = int(lengths.sum())
        rows = {
            "document": np.concatenate(
                [np.full(len(w.ids), w.document, dtype=np.int64) for w in windows]
            ),
            "position": np.concatenate(
                [np.arange(w.position, w.position + len(w.ids), dtype=np.int32) for w in windows]
            ),
            "token": np.concatenate([w.ids for w in windows]).astype(np.int32, copy=False),
        }
        spans = np.concatenate([w.spans for w in windows]).astype(np.int32, copy=False)
        rows["start"], rows["end"] = spans[:, 0], spans[:, 1]
        for site in recorder.sites:
            calls = seen.calls("ids", site)
            if len(calls) != 1:
                raise CodebookError(f"the site {site} ran {len(calls)} times in one forward pass")
            ids = calls[0][keep]  # (tokens, groups, slots), windows in order
            if ids.shape[0] != count or ids.shape[1] * ids.shape[2] != self.widths[site]:
                raise CodebookError(
                    f"the codes at {site} have shape {tuple(ids.shape)}; expected "
                    f"({count}, groups * k = {self.widths[site]})"
                )
            rows[site] = ids.reshape(count, -1).numpy().astype(self.dtypes[site])
        if want_activations:
            take = min(self.budget - self.activation_rows, count)
            for site in recorder.activation_sites:
                inputs = dense.calls("inputs", site)[0]  # type: ignore[union-attr]
                inputs = inputs.reshape(*inputs.shape[:2], -1)[keep][:take]
                self.activations[site].append(inputs.to(torch.float16).numpy())
            self.activation_rows += take
        self.rows.append(rows)
        self.buffered += count
        self.bar.update(count)
        if self.buffered >= min(ROW_GROUP_TOKENS, self.config.shard_tokens):
            self._write_rows()

    def _write_rows(self) -> None:
        """Write the buffered rows as one row group."""
        import pyarrow as pa

        if not self.rows:
            return
        columns = {name: np.concatenate([r[name] for r in self.rows]) for name in self.rows[0]}
        self.rows, self.buffered = [], 0
        schema = self.writer.schema
        arrays = []
        for name in schema.names:
            values = columns[name]
            if values.ndim == 2:
                flat = pa.array(values.reshape(-1), type=schema.field(name).type.value_type)
                arrays.append(pa.FixedSizeListArray.from_arrays(flat, values.shape[1]))
            else:
                arrays.append(pa.array(values, type=schema.field(name).type))
        table = pa.Table.from_arrays(arrays, schema=schema)
        self.writer.write_table(table, row_group_size=table.num_rows)

    def _documents_table(self) -> Any:
        import pyarrow as pa

        recorder = self.recorder
        arrays = {
            "document": pa.array([d.index for d in self.documents], pa.int64()),
            "text": pa.array([d.text for d in self.documents], pa.string()),
        }
        for name in recorder.label_fields:
            values = [d.labels[name] for d in self.documents]
            arrays[name] = pa.array(values, type=recorder.label_types[name])
        assert tuple(arrays)[: len(DOCUMENT_COLUMNS)] == DOCUMENT_COLUMNS
        return pa.table(arrays)

    def _write_activations(self, path: Path) -> None:
        from safetensors.numpy import save_file

        from codebook_features.files import atomic_file

        tensors = {
            site: np.ascontiguousarray(np.concatenate(parts))
            for site, parts in self.activations.items()
        }
        with atomic_file(path) as tmp:
            save_file(
                tensors,
                str(tmp),
                # one key: safetensors writes several in a random order, and the file must
                # be the same whenever the same shard is recorded
                metadata={"tokens_shard": self.tokens_name},
            )


_EMPTY = (np.zeros(0, np.int32), np.zeros((0, 2), np.int32))


# ---------------------------------------------------------------------------- helpers
def _context_length(config: Any) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _fingerprint(model: str) -> str:
    """sha256 over the model's ``codebook_config.json`` and then ``codebooks.safetensors``."""
    from codebook_features.checksums import CHUNK
    from codebook_features.files import CODEBOOK_CONFIG, CODEBOOK_WEIGHTS
    from codebook_features.model import _fetch

    digest = hashlib.sha256()
    for name in (CODEBOOK_CONFIG, CODEBOOK_WEIGHTS):
        with open(_fetch(model, name, {}), "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
    return digest.hexdigest()


def _label_columns(
    config: RecordConfig, columns: list[str], features: Any, first: dict[str, Any] | None
) -> tuple[list[str], dict[str, Any], dict[str, list[str]]]:
    """The label columns to copy, their Arrow types, and the names of class-label columns."""
    import datasets
    import pyarrow as pa

    def arrow_type(name: str) -> Any | None:
        if features is not None:
            feature = features[name]
            if isinstance(feature, datasets.ClassLabel):
                return pa.int64()
            if isinstance(feature, datasets.Value) and "binary" not in feature.dtype:
                return datasets.Features({name: feature}).arrow_schema.field(name).type
            return None
        value = (first or {}).get(name)
        for kind, arrow in ((bool, pa.bool_()), (int, pa.int64()), (float, pa.float64())):
            if isinstance(value, kind):
                return arrow
        return pa.string() if isinstance(value, str) else None

    reserved = {*RESERVED_COLUMNS, config.text_field}
    if config.label_fields is None:
        chosen = [c for c in columns if c not in reserved and arrow_type(c) is not None]
    else:
        missing = [c for c in config.label_fields if c not in columns]
        if missing:
            raise CodebookError(
                f"the dataset has no column {', '.join(map(repr, missing))} (it has "
                f"{', '.join(columns)}): fix --label_fields"
            )
        chosen = list(config.label_fields)
        for name in chosen:
            if arrow_type(name) is None:
                raise CodebookError(
                    f"column {name!r} does not hold one number or string per document: leave "
                    "it out of --label_fields"
                )
    types = {name: arrow_type(name) for name in chosen}
    names = {
        name: list(features[name].names)
        for name in chosen
        if features is not None and isinstance(features[name], datasets.ClassLabel)
    }
    return chosen, types, names
