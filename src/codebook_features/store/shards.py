"""Writing one shard of one process: its documents, tokens and (optional) activations files.

A shard takes documents until it holds ``shard_tokens`` tokens, so it ends at a document
boundary. Its windows run through the model ``batch_size`` at a time and its tokens file is
written row group by row group, so memory stays bounded by one batch and one row group, whatever
the size of the corpus. Every file appears under its final name only when complete (temporary
file, then rename), and the same shard recorded again gives the same bytes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from codebook_features.errors import CodebookError
from codebook_features.persist.files import (
    ACTIVATIONS_DIR,
    ACTIVATIONS_SHARD,
    DOCUMENTS_SHARD,
    SHARDS_DIR,
    TOKENS_SHARD,
)
from codebook_features.store.documents import Corpus, Document, Window, cut_windows
from codebook_features.store.progress import ShardInfo
from codebook_features.store.schema import DOCUMENT_COLUMNS, id_dtype

if TYPE_CHECKING:
    from codebook_features.store.config import RecordConfig
    from codebook_features.store.model_loading import RecordingModel


class ShardWriter:
    """Writes one shard of one process: its documents, tokens and activations files."""

    def __init__(
        self,
        root: Path,
        rank: int,
        number: int,
        config: RecordConfig,
        model: RecordingModel,
        corpus: Corpus,
        *,
        activation_budget: int,
        row_group_tokens: int,
        bar: Any,
    ) -> None:
        self.root = root
        self.rank = rank
        self.config = config
        self.model = model
        self.corpus = corpus
        self.number = number
        self.row_group_tokens = row_group_tokens
        self.bar = bar
        self.documents_name = DOCUMENTS_SHARD.format(rank=rank, shard=number)
        self.tokens_name = TOKENS_SHARD.format(rank=rank, shard=number)
        self.activations_name = ACTIVATIONS_SHARD.format(rank=rank, shard=number)
        self.budget = max(activation_budget, 0)
        cbm = model.cbm
        self.dtypes = {site: id_dtype(cbm.codebook(site).config.num_codes) for site in model.sites}
        self.widths = {
            site: cbm.codebook(site).config.groups * cbm.codebook(site).config.k
            for site in model.sites
        }
        self.documents: list[Document] = []
        self.tokens = 0
        self.windows: list[Window] = []
        self.rows: list[dict[str, np.ndarray]] = []
        self.buffered = 0
        self.activations: dict[str, list[np.ndarray]] = {s: [] for s in model.activation_sites}
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

    def write(self, documents: Iterator[Document]) -> ShardInfo:
        """Take documents until the shard is full; write its files; describe it."""
        import pyarrow.parquet as pq

        from codebook_features.persist.checksums import file_sha256
        from codebook_features.persist.files import atomic_file

        root = self.root
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
            rank=self.rank,
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

    def _add(self, document: Document) -> None:
        # the text is kept for the documents table; the token arrays only until they ran
        self.documents.append(Document(document.index, document.text, document.labels, *_EMPTY))
        for window in cut_windows(document, self.model.max_length):
            self.windows.append(window)
            if len(self.windows) == self.config.batch_size:
                self._run_windows()
        self.tokens += len(document.ids)

    def _run_windows(self) -> None:
        """Run the pending windows through the model as one padded batch; keep their rows."""
        import torch

        windows, self.windows = self.windows, []
        if not windows:
            return
        model = self.model
        lengths = np.array([len(w.ids) for w in windows])
        width = int(lengths.max())
        input_ids = np.full((len(windows), width), model.pad_id, dtype=np.int64)
        for i, window in enumerate(windows):
            input_ids[i, : len(window.ids)] = window.ids
        valid = np.arange(width)[None, :] < lengths[:, None]
        mask = None if valid.all() else torch.from_numpy(valid.astype(np.int64))
        want_activations = self.budget > self.activation_rows
        dense = (
            model.cbm.observe(model.activation_sites, ids=False, inputs=True, device="cpu")
            if want_activations
            else contextlib.nullcontext()
        )
        with (
            torch.inference_mode(),
            model.cbm.observe(model.sites, device="cpu") as seen,
            dense,
        ):
            model.cbm.model(
                input_ids=torch.from_numpy(input_ids).to(model.device),
                attention_mask=None if mask is None else mask.to(model.device),
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
        for site in model.sites:
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
            for site in model.activation_sites:
                inputs = dense.calls("inputs", site)[0]  # type: ignore[union-attr]
                inputs = inputs.reshape(*inputs.shape[:2], -1)[keep][:take]
                self.activations[site].append(inputs.to(torch.float16).numpy())
            self.activation_rows += take
        self.rows.append(rows)
        self.buffered += count
        self.bar.update(count)
        if self.buffered >= min(self.row_group_tokens, self.config.shard_tokens):
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

        corpus = self.corpus
        arrays = {
            "document": pa.array([d.index for d in self.documents], pa.int64()),
            "text": pa.array([d.text for d in self.documents], pa.string()),
        }
        for name in corpus.label_fields:
            values = [d.labels[name] for d in self.documents]
            arrays[name] = pa.array(values, type=corpus.label_types[name])
        assert tuple(arrays)[: len(DOCUMENT_COLUMNS)] == DOCUMENT_COLUMNS
        return pa.table(arrays)

    def _write_activations(self, path: Path) -> None:
        from safetensors.numpy import save_file

        from codebook_features.persist.files import atomic_file

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
