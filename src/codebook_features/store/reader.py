"""Reading a code store: its manifest, documents, token columns, code ids per site (memory
mapped), the occurrences of a code, and SQL over the shards through DuckDB.

Opening only reads: the index (``store/index.py``) is written by ``codebook record`` (or by
``codebook index`` for a store of an earlier version) and mapped here. A manifest from
a newer version loads with a warning (unknown keys dropped); a newer *format* is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from codebook_features.attach.code_ref import CodeRef
from codebook_features.attach.site_names import match_sites
from codebook_features.errors import CodebookError
from codebook_features.persist.checksums import verify_checksums
from codebook_features.persist.files import (
    ACTIVATIONS_DIR,
    DESCRIPTIONS,
    INDEX_DIR,
    INDEX_INFO,
    MANIFEST,
    SHARDS_DIR,
)
from codebook_features.store import index as idx
from codebook_features.store.descriptions import CodeDescription, descriptions_from_table
from codebook_features.store.manifest import Manifest, SiteRecord
from codebook_features.store.postings import postings_files, unpack_postings
from codebook_features.store.schema import SCHEMA_VERSION


class CodeStore:
    """A recorded code store, opened read-only."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.manifest: Manifest = read_manifest(self.path)
        self.sites: dict[str, SiteRecord] = self.manifest.sites
        """What each recorded site holds."""
        self.num_tokens = self.manifest.counts.tokens
        self.num_documents = self.manifest.counts.documents
        idx.require_index(self.path)  # only read: record (or codebook index) writes it

    @classmethod
    def open(cls, path: str | os.PathLike) -> CodeStore:
        return cls(path)

    # ------------------------------------------------------------------ integrity
    @cached_property
    def _verified(self) -> set[Path]:
        """Files checked against their recorded sha256 since this store was opened."""
        return set()

    @cached_property
    def _index_digests(self) -> dict[str, str]:
        path = self.path / INDEX_DIR / INDEX_INFO
        try:
            files = json.loads(path.read_text()).get("files")
        except (OSError, ValueError, AttributeError):
            files = None
        if not isinstance(files, dict):
            raise CodebookError(
                f"{path} is damaged (it does not list the index's checksums): {self._rebuild}"
            )
        return files

    @property
    def _rebuild(self) -> str:
        return f"run `codebook index --store {shlex.quote(str(self.path))}` to rebuild its index"

    def _verify(self, path: Path, digest: str | None, fix: str) -> None:
        """Refuse ``path`` unless it hashes to ``digest``; each file once per open, so a
        query reads only what was recorded, at the cost of one pass over the files it uses."""
        if path in self._verified:
            return
        name = path.relative_to(self.path).as_posix()
        if digest is None:
            raise CodebookError(f"{name} in {self.path} has no recorded checksum: {fix}")
        verify_checksums({name: digest}, lambda _: path, str(self.path), fix)
        self._verified.add(path)

    def verify(self) -> None:
        """Check every file of the store and its index against its recorded sha256 now, so
        that no later query pays for it (each file is checked once per open either way)."""
        for name in self._index_digests:
            self._verify(self.path / INDEX_DIR / name, self._index_digests[name], self._rebuild)
        for relative in self.manifest.files:
            self._verify_recorded(relative)

    def _verify_recorded(self, relative: str) -> Path:
        """A shard or activations file, checked against the manifest."""
        path = self.path / relative
        if self.manifest.files:  # stores of the first format recorded none: nothing to check
            self._verify(path, self.manifest.files.get(relative), "record the store again")
        return path

    # ------------------------------------------------------------------ tokens and documents
    def _array(self, name: str) -> np.ndarray:
        path = self.path / INDEX_DIR / name
        self._verify(path, self._index_digests.get(name), self._rebuild)
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise CodebookError(
                f"the index file {path} is damaged ({str(error).splitlines()[0]}): {self._rebuild}"
            ) from error

    @cached_property
    def document(self) -> np.ndarray:
        """``(tokens,)`` the document of every token row."""
        return self._array("document.npy")

    @cached_property
    def position(self) -> np.ndarray:
        return self._array("position.npy")

    @cached_property
    def token(self) -> np.ndarray:
        """``(tokens,)`` token ids."""
        return self._array("token.npy")

    @cached_property
    def start(self) -> np.ndarray:
        """``(tokens,)`` character offset where each token starts in its document's text."""
        return self._array("start.npy")

    @cached_property
    def end(self) -> np.ndarray:
        return self._array("end.npy")

    @cached_property
    def documents(self) -> Any:
        """The documents table (``document``, ``text``, label and metadata columns), as a
        pyarrow Table in document order."""
        return idx.documents_table(
            self._verify_recorded(f"{SHARDS_DIR}/{shard.documents}")
            for shard in self.manifest.shards
        )

    @cached_property
    def texts(self) -> dict[int, str]:
        """Document id -> text."""
        table = self.documents
        return dict(
            zip(table.column("document").to_pylist(), table.column("text").to_pylist(), strict=True)
        )

    def documents_fingerprint(self, ids: Any = None) -> str:
        """A digest of the store's documents, or of ``ids`` among them: their ids and texts,
        so two stores (or parts of stores) match only when they hold the same documents, not
        merely as many or with the same ids."""
        if ids is None:
            return self._all_documents_fingerprint
        return self._fingerprint(sorted({int(i) for i in ids}))

    @cached_property
    def _all_documents_fingerprint(self) -> str:
        return self._fingerprint(sorted(self.texts))

    def _fingerprint(self, chosen: list[int]) -> str:
        texts = self.texts
        unknown = [i for i in chosen if i not in texts]
        if unknown:
            raise CodebookError(
                f"{len(unknown)} document id(s) are not in the store {self.path}: "
                + ", ".join(map(str, unknown[:5]))
            )
        digest = hashlib.sha256()
        for document in chosen:
            text = texts[document].encode()
            digest.update(f"{document}:{len(text)}:".encode() + text)
        return digest.hexdigest()[:16]

    @cached_property
    def document_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """``(documents, first rows)``: each document's id and its first token row (rows of a
        document are consecutive); a final entry holds the total number of rows."""
        doc = self.document
        if not len(doc):
            return np.zeros(0, np.int64), np.zeros(1, np.int64)
        change = np.flatnonzero(np.diff(doc)) + 1
        firsts = np.concatenate([[0], change, [len(doc)]]).astype(np.int64)
        return np.asarray(doc[firsts[:-1]]), firsts

    def document_range(self, document: int) -> tuple[int, int]:
        """The first token row of ``document`` and the row after its last (equal for a
        document without tokens, or one the store lacks)."""
        ids, firsts = self.document_rows
        i = int(np.searchsorted(ids, document))
        if i == len(ids) or ids[i] != document:
            return int(firsts[i]), int(firsts[i])
        return int(firsts[i]), int(firsts[i + 1])

    def token_text(self, row: int) -> str:
        """The characters of the token at ``row``."""
        text = self.texts[int(self.document[row])]
        return text[int(self.start[row]) : int(self.end[row])]

    # ------------------------------------------------------------------ codes
    def select_sites(self, sites: Any = None) -> list[str]:
        """Recorded sites by name, kind or glob (all by default), in natural order."""
        return list(self.sites) if sites is None else match_sites(sites, list(self.sites))

    def ids(self, site: str) -> np.ndarray:
        """``(tokens, groups, k)`` code ids of ``site`` (memory mapped; ``-1``: none)."""
        info = self._site(site)
        return self._array(idx.ids_file(site)).reshape(-1, info.groups, info.k)

    def counts(self, site: str) -> np.ndarray:
        """``(groups, num_codes)`` how many tokens each code fires on."""
        info = self._site(site)
        return np.diff(self._indptr(site)).reshape(info.groups, info.num_codes)

    def code_counts(self, site: str, rows: np.ndarray) -> np.ndarray:
        """How often each code of ``site`` fires on the token ``rows``, by flat code
        (``group * num_codes + id``); reads only those rows."""
        info = self._site(site)
        offsets = (np.arange(info.groups) * info.num_codes)[None, :, None]
        counts = np.zeros(info.groups * info.num_codes, dtype=np.int64)
        for start in range(0, len(rows), idx.CHUNK_ROWS):  # memory bounded by a chunk
            ids = np.asarray(self.ids(site)[rows[start : start + idx.CHUNK_ROWS]])
            flat = ids.astype(np.int64) + offsets
            counts += np.bincount(flat[ids >= 0], minlength=counts.size)
        return counts

    def occurrences(self, ref: CodeRef | str) -> np.ndarray:
        """Token rows where the code fires, ascending."""
        ref, info = self._code(ref)
        flat = ref.group * info.num_codes + ref.id
        packed, offsets, widths, firsts = (self._array(name) for name in postings_files(ref.site))
        return unpack_postings(
            packed, offsets, widths, firsts, self._indptr(ref.site), flat, flat + 1
        )

    def document_counts(self, site: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(indptr, documents, counts)``: flat code ``c`` fires in the documents (indices in
        :attr:`document_rows` order) ``documents[indptr[c]:indptr[c + 1]]``, ascending, on
        ``counts[...]`` of their tokens (memory mapped)."""
        self._site(site)
        return tuple(self._array(name) for name in idx.pairs_files(site))  # type: ignore[return-value]

    # ------------------------------------------------------------------ descriptions
    @cached_property
    def descriptions(self) -> Any:
        """Every code's automatic description and its held-out scores, as a pyarrow Table with
        one row per code in site, group, id order (columns: ``code``, ``site``, ``group``,
        ``id``, ``kind``, ``terms``, ``text``, ``precision``, ``recall``, ``f1``, ``support``,
        ``fit_support``; see :mod:`~codebook_features.store.descriptions`). Found when the index
        was built, so reading it costs no search."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.path / INDEX_DIR / DESCRIPTIONS
        self._verify(path, self._index_digests.get(DESCRIPTIONS), self._rebuild)
        try:
            return pq.read_table(path)
        except (OSError, pa.ArrowException) as error:
            raise CodebookError(f"the index file {path} is damaged: {self._rebuild}") from error

    def description(self, ref: CodeRef | str) -> CodeDescription:
        """One code's automatic description (:attr:`descriptions`)."""
        ref, info = self._code(ref)
        row = ref.group * info.num_codes + ref.id
        for site, other in self.sites.items():  # the sites before it, in the table's order
            if site == ref.site:
                break
            row += other.groups * other.num_codes
        table = self.descriptions
        if row >= table.num_rows or table.column("code")[row].as_py() != str(ref):
            raise CodebookError(
                f"the descriptions in {self.path / INDEX_DIR} do not match the store: "
                f"{self._rebuild}"
            )
        return descriptions_from_table(table.slice(row, 1))[0]

    def _indptr(self, site: str) -> np.ndarray:
        self._site(site)
        return self._array(idx.indptr_file(site))

    def _code(self, ref: CodeRef | str) -> tuple[CodeRef, SiteRecord]:
        """The code named, and its site; refused unless this store has it."""
        ref = CodeRef.parse(ref) if isinstance(ref, str) else ref
        info = self._site(ref.site)
        if ref.group >= info.groups or ref.id >= info.num_codes:
            raise CodebookError(
                f"{ref} is not in this store: {ref.site} has {info.groups} group(s) of "
                f"{info.num_codes} codes"
            )
        return ref, info

    def _site(self, site: str) -> SiteRecord:
        if site not in self.sites:
            raise CodebookError(
                f"site {site!r} was not recorded in {self.path}; recorded: {', '.join(self.sites)}"
            )
        return self.sites[site]

    # ------------------------------------------------------------------ activations
    @cached_property
    def activation_sites(self) -> list[str]:
        """Sites whose dense inputs were recorded (``codebook record --activation_sites``)."""
        activations = self.manifest.activations
        return list(activations.sites) if activations is not None else []

    @cached_property
    def activation_rows(self) -> np.ndarray:
        """``(rows,)`` the token rows (ascending) that :meth:`activations` covers: the first
        rows of the shards that kept activations (the first ``max_activation_tokens`` tokens
        of each recording process)."""
        activations = self.manifest.activations
        counts = [s.tokens_count for s in self.manifest.shards]
        firsts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        parts = [
            firsts[f.shard] + np.arange(f.rows, dtype=np.int64)
            for f in (activations.files if activations is not None else [])
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def activations(self, site: str) -> np.ndarray:
        """``(rows, width)`` float16 inputs of ``site``'s codebook for the token rows
        :attr:`activation_rows` (read-only; memory mapped when one file holds them all)."""
        if site not in self.activation_sites:
            recorded = ", ".join(self.activation_sites) or "none"
            raise CodebookError(
                f"the activations of {site!r} were not recorded in {self.path} (recorded: "
                f"{recorded}); record the store again with --activation_sites {site}"
            )
        files = self.manifest.activations.files if self.manifest.activations else []
        parts = [
            _safetensors_array(self._verify_recorded(f"{ACTIVATIONS_DIR}/{f.file}"), site, f.rows)
            for f in files
        ]
        if len(parts) == 1:
            return parts[0]
        width = parts[0].shape[1] if parts else 0
        joined = np.concatenate(parts) if parts else np.zeros((0, width), np.float16)
        joined.flags.writeable = False
        return joined

    # ------------------------------------------------------------------ SQL
    def sql(self, query: str) -> Any:
        """Run SQL through DuckDB, with the views ``documents`` and ``tokens`` over the shards
        (site columns are named by the site, quoted: ``"layers.0.mlp"``) and ``descriptions``
        (every code's automatic description, :attr:`descriptions`). Returns a DuckDB
        relation: ``.fetchall()``, ``.arrow()``, ``.df()``."""
        import duckdb

        connection = duckdb.connect()
        for view, key in (("documents", "documents"), ("tokens", "tokens")):
            files = [
                str(self._verify_recorded(f"{SHARDS_DIR}/{getattr(s, key)}"))
                for s in self.manifest.shards
            ]
            connection.execute(
                f"create view {view} as select * from read_parquet([{_listed(files)}])"
            )
        described = self.path / INDEX_DIR / DESCRIPTIONS
        self._verify(described, self._index_digests.get(DESCRIPTIONS), self._rebuild)
        connection.execute(
            f"create view descriptions as select * from read_parquet([{_listed([str(described)])}])"
        )
        try:
            return connection.sql(query)
        except duckdb.Error as error:
            raise CodebookError(f"the query failed: {str(error).splitlines()[0]}") from error


def _listed(files: list[str]) -> str:
    """File names as a SQL list's items, each quoted."""
    return ", ".join("'" + f.replace("'", "''") + "'" for f in files)


def _safetensors_array(path: Path, name: str, rows: int) -> np.ndarray:
    """The float16 tensor ``name`` of a safetensors file, memory mapped (its layout: an
    8-byte little-endian header size, a JSON header, then the raw tensors)."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        entry = header[name]
        begin, end = (int(x) for x in entry["data_offsets"])
        shape = tuple(int(x) for x in entry["shape"])
        if entry["dtype"] != "F16" or len(shape) != 2 or shape[0] != rows:
            raise ValueError(f"{name} is {entry['dtype']} {list(shape)}, not F16 [{rows}, width]")
        if end - begin != shape[0] * shape[1] * 2:
            raise ValueError("its data size does not match its shape")
        if not shape[0] * shape[1]:
            return np.zeros(shape, np.float16)
        return np.memmap(path, np.float16, "r", offset=8 + size + begin, shape=shape)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise idx.damaged(path, error, "activations file") from error


def read_manifest(path: Path) -> Manifest:
    file = path / MANIFEST
    if not path.is_dir():
        raise CodebookError(f"{path} is not a directory: give a code store's directory")
    if not file.is_file():
        raise CodebookError(
            f"{path} holds no {MANIFEST}: it is not a finished code store (record one with "
            "`codebook record`, or let an interrupted recording finish)"
        )
    try:
        data = json.loads(file.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        version = int(data.get("schema_version", 0))
    except (ValueError, TypeError) as error:
        raise CodebookError(f"{file} is damaged ({error}); record the store again") from error
    if version > SCHEMA_VERSION:
        raise CodebookError(
            f"{path} was recorded in store format {version}; this version reads format "
            f"{SCHEMA_VERSION}: upgrade codebook-features"
        )
    try:
        return Manifest.from_saved(data, str(file))
    except CodebookError as error:
        reason = str(error).removeprefix(f"{file}: ")
        raise CodebookError(f"{file} is damaged ({reason}); record the store again") from error
