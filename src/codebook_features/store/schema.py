"""The code store's on-disk format: plain Parquet shards plus a manifest written last.

A store directory (marked as a ``store`` by ``ownership``) holds::

    manifest.json                      written last, atomically (see below)
    shards/documents-RRRRR-SSSSS.parquet   one row per document
    shards/tokens-RRRRR-SSSSS.parquet      one row per token, with its codes
    activations/...                    optional float16 activations (bounded count)
    progress/rank-RRRRR.json           while recording: each process's finished shards
    index/                             the reader's cache (``store/index.py``)

``RRRRR`` is the writing process's rank, ``SSSSS`` its shard number, so processes of a
data-parallel recording never write the same file. Shards are zstd-compressed Parquet that
DuckDB, Polars or Spark read as they are.

Documents (``DOCUMENT_COLUMNS``): ``document`` (int64, unique in the store), ``text`` (string),
then any label or metadata columns the data has.

Tokens (``TOKEN_COLUMNS``): ``document`` (int64), ``position`` (int32, index in the document's
token sequence), ``token`` (int32 token id), ``start``/``end`` (int32, character offsets of the
token in its document's text, from the tokenizer's offset mapping; ``start == end`` for tokens
that cover no characters), then one column per recorded site named by the site
(``layers.3.attn_heads``): a fixed-size list of ``groups * k`` ids, group-major (group 0's k
slots first), in the smallest signed integer type that holds ``num_codes`` (``-1``: no code).

Rows of a tokens shard are in (document, position) order; the global token row of a token is
its row in the shards taken in manifest order.

The file and directory names are in :mod:`codebook_features.persist.files` (``MANIFEST``,
``SHARDS_DIR``, ``DOCUMENTS_SHARD``, ``TOKENS_SHARD``, ``ACTIVATIONS_DIR``, ``ACTIVATIONS_SHARD``,
``PROGRESS_DIR``, ``PROGRESS_FILE``), with every other on-disk name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

SCHEMA_VERSION = 2
"""Bumped when a change of the format makes older readers wrong. 2: the manifest names the
model by its codebooks' fingerprint (format 1: by the sha256 of its saved codebook files);
this version reads both."""
DOCUMENT_COLUMNS = ("document", "text")
TOKEN_COLUMNS = ("document", "position", "token", "start", "end")


def id_dtype(num_codes: int) -> np.dtype:
    """The smallest signed integer type that holds ids ``-1 .. num_codes - 1``."""
    import numpy as np

    for dtype in (np.int8, np.int16, np.int32):
        if num_codes - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)
