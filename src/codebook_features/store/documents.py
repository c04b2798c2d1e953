"""The documents a recording reads: text and labels in the data's own order, tokenized with
character offsets and cut into windows.

The document id is the index in the data's order, so every process of a data-parallel
recording, and every continuation of an interrupted one, agrees on it. A document longer than
a window is cut into consecutive windows whose positions go on across them.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from codebook_features.errors import CodebookError
from codebook_features.persist.checksums import file_sha256
from codebook_features.store.config import RESERVED_COLUMNS

if TYPE_CHECKING:
    from codebook_features.store.config import RecordConfig

logger = logging.getLogger(__name__)

READ_CHUNK = 64
"""Documents read and tokenized together."""


@dataclass
class Document:
    """One tokenized document."""

    index: int
    text: str
    labels: dict[str, Any]
    ids: np.ndarray
    """``(n,)`` token ids."""
    spans: np.ndarray
    """``(n, 2)`` character start and end of each token."""


@dataclass
class Window:
    """Consecutive tokens of one document that run through the model together."""

    document: int
    position: int
    ids: np.ndarray
    spans: np.ndarray


def cut_windows(document: Document, length: int) -> Iterator[Window]:
    """``document`` cut into windows of ``length`` tokens (the last one shorter)."""
    for position in range(0, len(document.ids), length):
        yield Window(
            document.index,
            position,
            document.ids[position : position + length],
            document.spans[position : position + length],
        )


@dataclass
class Corpus:
    """The dataset to record, reduced to its text and label columns."""

    config: RecordConfig
    dataset: Any
    split: str | None
    """The hub split read (None for local files, which have a single split)."""
    data_files: list[list[Any]] | None
    """Local files and the sha256 of their bytes: a recording continues only on the same
    files."""
    label_fields: list[str]
    label_types: dict[str, Any]
    """Arrow type of each label column."""
    label_names: dict[str, list[str]]
    """Names of the classes of class-label columns."""

    def documents(
        self, start: int, rank: int, world: int
    ) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """``(index, text, labels)`` of process ``rank``'s documents from index ``start`` on."""
        import datasets

        c = self.config
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
        without_text = 0
        for index, row in rows:
            text = row[c.text_field]
            if text is None:  # a null text, or a JSON line without the field
                if not without_text:
                    logger.warning(
                        "document %d has no %r (null): recorded as an empty document",
                        index,
                        c.text_field,
                    )
                without_text += 1
                text = ""
            if not isinstance(text, str):
                raise CodebookError(
                    f"column {c.text_field!r} of document {index} holds {type(text).__name__}, "
                    "not text: set --text_field to the text column"
                )
            yield index, text, {name: row[name] for name in self.label_fields}
        if without_text > 1:
            logger.warning("%d documents had no %r: recorded empty", without_text, c.text_field)

    def tokenized(self, tokenizer: Any, start: int, rank: int, world: int) -> Iterator[Document]:
        """Process ``rank``'s documents from ``start`` on, tokenized a chunk at a time."""
        documents = self.documents(start, rank, world)
        while chunk := list(itertools.islice(documents, READ_CHUNK)):
            encoded = tokenizer(
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
                yield Document(index, text, labels, np.asarray(ids, dtype=np.int32), spans)


def load_corpus(config: RecordConfig) -> Corpus:
    """Open ``config``'s dataset and choose its label columns."""
    from codebook_features.training.config import DataConfig
    from codebook_features.training.data import load_split, local_files

    c = config
    data = DataConfig(
        dataset=c.dataset,
        dataset_config=c.dataset_config,
        text_field=c.text_field,
        streaming=c.streaming,
    )
    files = local_files(c.dataset or "")
    local = files is not None
    # by content, not size: a file edited in place at the same size is another corpus
    data_files = [[f, file_sha256(f)] for f in files] if files else None
    dataset = load_split(data, "train" if local else c.split)
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
    label_fields, label_types, label_names = _label_columns(c, columns, features, first)
    return Corpus(
        config=c,
        dataset=dataset.select_columns([c.text_field, *label_fields]),
        split=None if local else c.split,
        data_files=data_files,
        label_fields=label_fields,
        label_types=label_types,
        label_names=label_names,
    )


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
    if config.label_fields == "all":
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
