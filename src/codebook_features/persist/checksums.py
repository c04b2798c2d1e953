"""Checksums of saved files: recorded when a directory is written, verified when it is read.

A bit flip in a weights file loads without complaint and silently gives other numbers; a sha256
per file, kept in the directory's own manifest, turns that into a clear refusal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from codebook_features.errors import CodebookError

CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in chunks (weights files can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def directory_checksums(directory: Path, exclude: Iterable[str] = ()) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``directory`` (sorted), except
    ``exclude`` (e.g. the manifest that will hold them)."""
    skip = set(exclude)
    return {
        path.relative_to(directory).as_posix(): file_sha256(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.relative_to(directory).as_posix() not in skip
    }


def verify_checksums(
    expected: Mapping[str, str], locate: Callable[[str], str | Path], where: str, fix: str
) -> None:
    """Refuse, naming the file, if any file of ``expected`` is missing or hashes otherwise.

    ``locate`` gives a file's local path (it may fetch it); ``fix`` says what the user can do.
    """
    if not isinstance(expected, Mapping):
        raise CodebookError(f"the checksums recorded in {where} are damaged: {fix}")
    for name, digest in expected.items():
        path = Path(locate(name))
        if not path.is_file():
            raise CodebookError(f"{where} is missing {name}: {fix}")
        if file_sha256(path) != digest:
            raise CodebookError(
                f"{name} in {where} is damaged: its checksum differs from the one recorded when "
                f"it was saved; {fix}"
            )


def write_model_checksums(directory: Path) -> None:
    """Record the checksums of a model saved without codebooks (``save_pretrained``)."""
    from codebook_features.persist.files import MODEL_CHECKSUMS, write_json
    from codebook_features.settings.base import stamp

    files = directory_checksums(directory, exclude=[MODEL_CHECKSUMS])
    write_json(directory / MODEL_CHECKSUMS, stamp({"files": files}))
