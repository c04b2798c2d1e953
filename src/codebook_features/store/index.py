"""The store's index: token columns and code ids as memory-mapped arrays, and per code its token
rows (CSR), built from the shards into ``index/`` beside them by ``codebook record`` (or, for a
store recorded by an earlier version, once by ``codebook index --store STORE``); opening a
store only reads it, so a search or a server never writes into a store.

A code page or a precision/recall query then touches only the rows it needs: the flat code
``c = group * num_codes + id`` fires on ``indptr[c + 1] - indptr[c]`` tokens, whose rows are
kept in compact postings (:mod:`~codebook_features.store.postings`, each code's sorted rows
bit-packed as gaps, read alone). Building streams the shards batch by batch (memory bounded),
fills the arrays in place, and sorts rows by code with a counting sort over chunks, so it is
linear in the number of tokens. The index is rebuilt when the manifest
changes (it records the manifest's sha256), and it records the sha256 of each of its files,
which a reader checks the first time it uses that file. It also holds every code's automatic
description (``descriptions.parquet``, :mod:`~codebook_features.store.descriptions`), derived
from the same arrays.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from codebook_features.errors import CodebookError
from codebook_features.persist.checksums import (
    directory_checksums,
    file_sha256,
    verify_checksums,
)
from codebook_features.persist.files import (
    DESCRIPTIONS,
    INDEX_DIR,
    INDEX_INFO,
    INDEX_LOCK,
    MANIFEST,
    SHARDS_DIR,
    write_json,
)
from codebook_features.store.appender import NpyAppender
from codebook_features.store.descriptions import describe_table, first_token_texts
from codebook_features.store.postings import pack_postings
from codebook_features.store.schema import TOKEN_COLUMNS

if TYPE_CHECKING:
    from codebook_features.store.manifest import Manifest

INDEX_VERSION = 7
TOKEN_ARRAYS = {
    "document": np.int64,
    "position": np.int32,
    "token": np.int32,
    "start": np.int32,
    "end": np.int32,
}
CHUNK_ROWS = 1 << 18


def ids_file(site: str) -> str:
    return f"{site}.ids.npy"


def indptr_file(site: str) -> str:
    return f"{site}.indptr.npy"


def rows_file(site: str) -> str:
    """Plain CSR rows, while the index is built; they are packed into postings at its end."""
    return f"{site}.rows.npy"


def pairs_files(site: str) -> tuple[str, str, str]:
    """Per code, the documents it fires in and how often: ``(indptr, documents, counts)``."""
    return f"{site}.doc_indptr.npy", f"{site}.doc_index.npy", f"{site}.doc_counts.npy"


def index_is_current(store: Path) -> bool:
    info = store / INDEX_DIR / INDEX_INFO
    try:
        data = json.loads(info.read_text())
    except PermissionError as error:
        raise CodebookError(
            f"cannot read the index of {store} ({error.strerror}): ask its owner to make "
            f"{store / INDEX_DIR} readable"
        ) from error
    except (OSError, ValueError):
        return False
    return data.get("index_version") == INDEX_VERSION and data.get(
        "manifest_sha256"
    ) == file_sha256(store / MANIFEST)


def require_index(store: Path) -> None:
    """Refuse a store without a current index, saying how to build it."""
    if not index_is_current(store):
        raise CodebookError(
            f"{store} has no current index (recorded by an earlier version, a recording "
            "stopped while indexing, an edited manifest, or a removed or damaged index): run "
            f"`codebook index --store {shlex.quote(str(store))}` once, which writes "
            f"{store / INDEX_DIR}"
        )


def ensure_index(store: Path, manifest: Manifest, *, rebuild: bool = False) -> bool:
    """Build the index unless a current one is there (``rebuild``: in any case, e.g. over a
    damaged one). Processes building at the same time wait for the first one's build (a lock
    file beside the index) instead of replacing each other's index while it is being read.
    Returns whether it built one."""
    if index_is_current(store) and not rebuild:
        return False
    with open(store / INDEX_LOCK, "a") as lock:
        try:
            import fcntl
        except ImportError:  # no POSIX locks here: build without waiting
            fcntl = None  # type: ignore[assignment]
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        if index_is_current(store) and not rebuild:
            return False
        build_index(store, manifest)
        return True


def build_index(store: Path, manifest: Manifest) -> None:
    """Write ``index/`` for ``store`` (atomically: a finished index replaces the old one)."""

    # a damaged shard is named, not read
    verify_checksums(
        manifest.files, lambda name: store / name, str(store), "record the store again"
    )
    total = manifest.counts.tokens
    sites = manifest.sites
    tmp = Path(tempfile.mkdtemp(prefix=f".{INDEX_DIR}.", suffix=".tmp", dir=store))
    try:
        columns = {
            name: np.lib.format.open_memmap(tmp / f"{name}.npy", "w+", dtype, (total,))
            for name, dtype in TOKEN_ARRAYS.items()
        }
        ids = {
            site: np.lib.format.open_memmap(
                tmp / ids_file(site),
                "w+",
                np.dtype(info.dtype),
                (total, info.groups * info.k),
            )
            for site, info in sites.items()
        }
        row = 0
        for batch in _token_batches(store, manifest, [*TOKEN_COLUMNS, *sites]):
            n = batch.num_rows
            if row + n > total:
                raise CodebookError(
                    f"the shards of {store} hold more tokens than its manifest says ({total}): "
                    "the store is damaged; record it again"
                )
            for name in TOKEN_ARRAYS:
                columns[name][row : row + n] = batch.column(name).to_numpy()
            for site, info in sites.items():
                width = info.groups * info.k
                flat = batch.column(site).flatten().to_numpy(zero_copy_only=False)
                ids[site][row : row + n] = flat.reshape(n, width)
            row += n
        if row != total:
            raise CodebookError(
                f"the shards of {store} hold {row} tokens, its manifest says {total}: the store "
                "is damaged; record it again"
            )
        for array in [*columns.values(), *ids.values()]:
            array.flush()
        document = columns["document"]
        firsts = np.flatnonzero(np.r_[True, document[1:] != document[:-1]]) if total else []
        lengths = np.diff(np.r_[firsts, total]).astype(np.int64)
        for site, info in sites.items():
            _write_csr(tmp, site, ids[site], info.groups, info.k, info.num_codes)
            _write_document_counts(tmp, site, lengths)
            _pack_rows(tmp, site)
        _write_descriptions(tmp, store, manifest, columns, ids)
        del columns, ids, document
        write_json(
            tmp / INDEX_INFO,
            {
                "index_version": INDEX_VERSION,
                "manifest_sha256": file_sha256(store / MANIFEST),
                # each file's digest, checked when a reader first uses it
                "files": directory_checksums(tmp, exclude=[INDEX_INFO]),
            },
        )
        os.chmod(tmp, stat.S_IMODE(store.stat().st_mode))  # readable by whoever reads the store
        target = store / INDEX_DIR
        old = store / f".{INDEX_DIR}.old"
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_descriptions(
    directory: Path,
    store: Path,
    manifest: Manifest,
    columns: dict[str, np.ndarray],
    ids: dict[str, np.ndarray],
) -> None:
    """Every code's description (``search/describe.py``), from the arrays just written and
    the documents' texts."""
    import pyarrow.parquet as pq

    token, document = np.asarray(columns["token"]), np.asarray(columns["document"])
    texts = _document_texts(store, manifest)
    pieces = first_token_texts(token, document, columns["start"], columns["end"], texts)
    per_site = {
        site: (ids[site].reshape(-1, info.groups, info.k), info.num_codes)
        for site, info in manifest.sites.items()
    }
    table = describe_table(token, document, pieces, per_site)
    pq.write_table(table, directory / DESCRIPTIONS, compression="zstd")


def _document_texts(store: Path, manifest: Manifest) -> dict[int, str]:
    paths = [store / SHARDS_DIR / shard.documents for shard in manifest.shards]
    table = documents_table(paths, columns=["document", "text"])
    return dict(
        zip(table.column("document").to_pylist(), table.column("text").to_pylist(), strict=True)
    )


def documents_table(paths: Iterable[Path], columns: list[str] | None = None) -> Any:
    """The documents shards at ``paths`` as one pyarrow Table in document order (``columns``:
    only those); a shard that cannot be read is named as damaged."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = []
    for path in paths:
        try:
            parts.append(pq.read_table(path, columns=columns))
        except (OSError, pa.ArrowException) as error:
            raise damaged(path, error) from error
    table = pa.concat_tables(parts) if parts else pa.table({"document": [], "text": []})
    return table.sort_by("document")


def _token_batches(store: Path, manifest: Manifest, columns: list[str]) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for shard in manifest.shards:
        path = store / SHARDS_DIR / shard.tokens
        try:
            reader = pq.ParquetFile(path)
            yield from reader.iter_batches(batch_size=CHUNK_ROWS, columns=columns)
        except (OSError, pa.ArrowException) as error:
            raise damaged(path, error) from error


def damaged(path: Path, error: Exception, what: str = "shard") -> CodebookError:
    """The one message for a store file that cannot be read."""
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return CodebookError(
        f"the {what} {path} could not be read ({reason}): the store is damaged; record it again"
    )


def _write_csr(
    directory: Path, site: str, ids: np.ndarray, groups: int, k: int, num_codes: int
) -> None:
    """Per flat code (``group * num_codes + id``) its token rows, ascending: a counting sort
    over chunks of rows, so memory stays bounded by the chunk."""
    total, codes = ids.shape[0], groups * num_codes
    offsets = (np.arange(groups, dtype=np.int64) * num_codes).repeat(k)  # slot -> group offset
    counts = np.zeros(codes, dtype=np.int64)
    for start in range(0, total, CHUNK_ROWS):
        flat = _flat(ids[start : start + CHUNK_ROWS], offsets)
        counts += np.bincount(flat[flat >= 0], minlength=codes)
    indptr = np.zeros(codes + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    dtype = row_dtype(total)
    rows = np.lib.format.open_memmap(directory / rows_file(site), "w+", dtype, (int(indptr[-1]),))
    # numpy sorts 16-bit keys stably by radix sort, in linear time
    key_type = np.uint16 if codes <= 1 << 16 else np.int64
    cursor = indptr[:-1].copy()
    for start in range(0, total, CHUNK_ROWS):
        flat = _flat(ids[start : start + CHUNK_ROWS], offsets)
        row_of = np.repeat(np.arange(start, start + flat.shape[0], dtype=dtype), flat.shape[1])
        flat = flat.reshape(-1)
        if (flat < 0).any():
            row_of, flat = row_of[flat >= 0], flat[flat >= 0]
        order = np.argsort(flat.astype(key_type), kind="stable")  # rows stay ascending per code
        here = np.bincount(flat, minlength=codes)
        ends = np.cumsum(here)
        chunk = row_of[order]  # the chunk's rows, code after code
        for code in np.flatnonzero(here).tolist():  # each code's rows go on where they ended
            count = int(here[code])
            rows[cursor[code] : cursor[code] + count] = chunk[ends[code] - count : ends[code]]
        cursor += here
    rows.flush()
    np.save(directory / indptr_file(site), indptr)


def _pack_rows(directory: Path, site: str) -> None:
    """Replace the plain rows of ``site`` by their compact postings
    (:mod:`~codebook_features.store.postings`), about a third of their size."""
    rows = np.load(directory / rows_file(site), mmap_mode="r")
    indptr = np.load(directory / indptr_file(site))
    pack_postings(directory, site, rows, indptr, CHUNK_ROWS)
    del rows
    (directory / rows_file(site)).unlink()


def _write_document_counts(directory: Path, site: str, lengths: np.ndarray) -> None:
    """Per code, the documents (indices in store order) it fires in, ascending, with the
    number of its tokens there: what topic codes need, at a fraction of the rows' size. A
    code's rows are sorted and a document's rows consecutive, so pairs are run lengths,
    computed over chunks of codes."""
    indptr = np.load(directory / indptr_file(site))
    rows = np.load(directory / rows_file(site), mmap_mode="r")
    doc_of_row = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
    pairs = np.zeros(len(indptr), dtype=np.int64)  # becomes the pairs' indptr
    indptr_name, index_name, counts_name = pairs_files(site)
    # 16 bits where they suffice (a code fires at most once on a token: its rows are distinct)
    document_type = np.uint16 if len(lengths) <= 1 << 16 else np.int32
    count_type = np.uint16 if lengths.max(initial=0) < 1 << 16 else np.int32
    with (
        NpyAppender(directory / index_name, document_type) as index,
        NpyAppender(directory / counts_name, count_type) as counts,
    ):
        code, total = 0, len(indptr) - 1
        while code < total:
            last = int(np.searchsorted(indptr, indptr[code] + CHUNK_ROWS, side="right")) - 1
            last = min(max(last, code + 1), total)
            lo, hi = int(indptr[code]), int(indptr[last])
            if hi > lo:
                owner = np.repeat(np.arange(code, last), np.diff(indptr[code : last + 1]))
                docs = doc_of_row[np.asarray(rows[lo:hi])]
                key = owner * len(lengths) + docs  # ascending
                starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
                index.append(docs[starts])
                counts.append(np.diff(np.r_[starts, key.size]))
                pairs[code + 1 : last + 1] = np.bincount(
                    owner[starts] - code, minlength=last - code
                )
            code = last
    np.save(directory / indptr_name, np.cumsum(pairs))


def row_dtype(tokens: int) -> type:
    """The token-row type of the CSR arrays: int32 halves the index of any store under 2**31
    tokens."""
    return np.int32 if tokens < 2**31 else np.int64


def _flat(ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``(rows, slots)`` flat code per slot, ``-1`` for empty slots."""
    values = ids.astype(np.int64) + offsets
    if ids.dtype.kind == "i" and ids.min(initial=0) < 0:  # unsigned ids have no empty slots
        values[ids < 0] = -1
    return values
