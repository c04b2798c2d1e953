"""Progress files: what lets a killed recording go on after its last finished shard.

Each process lists its finished shards in ``progress/rank-RRRRR.json``, written after the
shard's files, together with the settings that decide the store's content. Run again with the
same settings, a recording starts after the last listed shard and gives the same files as one
that was never interrupted; with other settings it is refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import Field

from codebook_features.errors import CodebookError
from codebook_features.persist.files import (
    ACTIVATIONS_DIR,
    MANIFEST,
    PROGRESS_DIR,
    PROGRESS_FILE,
    SHARDS_DIR,
)
from codebook_features.settings.base import NonNegativeInt, Record

_FREE = ("output_dir", "overwrite", "progress", "device", "streaming")
"""Settings that may change when an interrupted recording is continued."""


class ShardInfo(Record):
    """One finished shard of one process, as its progress file lists it."""

    rank: NonNegativeInt
    shard: NonNegativeInt
    documents: str
    tokens: str
    documents_count: NonNegativeInt
    tokens_count: NonNegativeInt
    next_document: NonNegativeInt
    """Index of the document after the shard's last one (where the next shard starts)."""
    activations: str | None = None
    activation_rows: NonNegativeInt = 0
    sha256: dict[str, str] = Field(default_factory=dict)


class Progress(Record):
    """A progress file: one process's finished shards, and the settings of the recording."""

    settings: dict[str, Any]
    """What decides the content of the store (a recording continues only with the same)."""
    shards: list[ShardInfo] = Field(default_factory=list)
    finished: bool = False
    """Whether the process recorded all of its documents."""


def progress_path(root: Path, rank: int) -> Path:
    """The progress file of process ``rank``."""
    return root / PROGRESS_DIR / PROGRESS_FILE.format(rank=rank)


def read_progress(path: Path) -> Progress:
    """A progress file; a damaged one is refused."""
    try:
        return Progress.from_saved(json.loads(path.read_text()), str(path))
    except ValueError as error:  # not JSON, or not a progress file (a CodebookError)
        reason = str(error).removeprefix(f"{path}: ")
        raise CodebookError(
            f"{path} is damaged ({reason}): record again with --overwrite true"
        ) from error


def check_continuation(root: Path, settings: dict[str, Any]) -> int:
    """Refuse to continue a store recorded with other settings; returns the tokens that are
    already recorded."""
    found = sorted((root / PROGRESS_DIR).glob("*.json"))
    if not found and (root / MANIFEST).exists():
        raise CodebookError(
            f"{root} holds a finished code store that cannot be continued: record "
            "into another --output_dir, or replace it with --overwrite true"
        )
    tokens = 0
    for path in found:
        progress = read_progress(path)
        saved, mine = progress.settings, settings
        differ = [k for k in sorted({*saved, *mine}) if saved.get(k) != mine.get(k)]
        if differ:
            raise CodebookError(
                f"{root} holds a store recorded with other settings "
                f"({', '.join(differ)} differ): run again with the same settings to "
                "continue it, record into another --output_dir, or replace it with "
                "--overwrite true"
            )
        tokens += sum(s.tokens_count for s in progress.shards)
    return tokens


def load_own_progress(root: Path, rank: int, settings: dict[str, Any]) -> Progress:
    """Process ``rank``'s progress (new if it has none), its unfinished files removed."""
    path = progress_path(root, rank)
    progress = read_progress(path) if path.exists() else Progress(settings=settings)
    _clean_unfinished(root, rank, progress.shards)
    return progress


def _clean_unfinished(root: Path, rank: int, shards: list[ShardInfo]) -> None:
    """Remove this process's temporary files and the files of shards it had not finished
    (a kill can leave them between the renames and the progress file)."""
    kept = {name for s in shards for name in (s.documents, s.tokens, s.activations) if name}
    # only names this process writes: a shard of its rank, or a temporary file of one
    ours = re.compile(
        rf"^\.?(documents|tokens|activations)-{rank:05d}-\d{{5}}\.(parquet|safetensors)"
        r"(\.[^.]+\.tmp)?$"
    )
    for folder in (root / SHARDS_DIR, root / ACTIVATIONS_DIR):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if ours.match(path.name) and path.is_file() and path.name not in kept:
                path.unlink()


def save_progress(root: Path, rank: int, progress: Progress) -> None:
    """Write process ``rank``'s progress file (atomically)."""
    from codebook_features.persist.files import write_json
    from codebook_features.settings.base import stamp

    write_json(progress_path(root, rank), stamp(progress.to_dict()))


def finished_shards(root: Path, world: int) -> list[ShardInfo]:
    """The shards of every process, rank by rank; refused unless every process finished."""
    shards: list[ShardInfo] = []
    for rank in range(world):
        progress = read_progress(progress_path(root, rank))
        if not progress.finished:
            raise CodebookError(f"process {rank} did not finish its part of the recording")
        shards += progress.shards
    return shards
