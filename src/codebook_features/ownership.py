"""Which directories are ours to write into: one mechanism for every command that writes one.

Every directory a command creates is marked as its own (a small marker file naming the kind:
training run, TokFSM data, TokFSM demo, ...; a saved model is marked by its
``codebook_config.json``, which lists every file saved with it). Before writing, a command
checks its output path:

- an existing *file* is refused, before any work;
- a missing or empty directory is new: it is created and marked;
- a directory without our marker, or with the marker of another kind, is refused: nothing of
  anyone else's is ever replaced or deleted;
- a directory of the same kind is ours: a command may continue it, and ``overwrite`` may replace
  it, but only if it holds nothing the command did not make (else the foreign entries are named
  and nothing changes).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from codebook_features._version import __version__
from codebook_features.errors import CodebookError
from codebook_features.files import (
    CODEBOOK_CONFIG,
    DATA_DIR,
    FSM_FILE,
    OWNER_FILE,
    PLOTS_DIR,
    REPORT_FILE,
    RESULTS_FILE,
    RUN_FILES,
    TOKENIZER_DIR,
    TRAIN_FILE,
    VALIDATION_FILE,
    write_json,
)
from codebook_features.saved import VERSION_KEY


@dataclass(frozen=True)
class DirKind:
    """A kind of directory we write: how it is marked, and what it holds."""

    name: str
    """How messages call it ("training run")."""
    entries: tuple[str, ...] = ()
    """Names this kind writes at its top level (besides the marker)."""
    marker: str = OWNER_FILE
    """The file that marks a directory as ours."""
    listed: Callable[[Path], Iterable[str]] | None = field(default=None, compare=False)
    """Entries named by the directory itself (a saved model lists its files)."""

    def owns(self, directory: Path) -> bool:
        """Whether ``directory`` carries this kind's marker."""
        marker = directory / self.marker
        if not marker.is_file():
            return False
        if self.marker != OWNER_FILE:
            return True
        return _marked_kind(directory) == self.name

    def foreign_entries(self, directory: Path) -> list[str]:
        """Entries of ``directory`` that this kind did not make (sorted). Subdirectories that
        carry a marker of ours (runs inside a demo) count as ours."""
        known = {self.marker, *self.entries}
        if self.listed is not None:
            known |= {name.split("/")[0] for name in self.listed(directory)}
        return sorted(
            entry.name
            for entry in directory.iterdir()
            if entry.name not in known and not _is_marked(entry)
        )


def _saved_model_files(directory: Path) -> list[str]:
    """The files a saved model lists (models saved before files were listed: all it holds)."""
    try:
        files = json.loads((directory / CODEBOOK_CONFIG).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return []
    if files is None:
        return [entry.name for entry in directory.iterdir()]
    return list(files) if isinstance(files, dict) else []


RUN = DirKind("training run", RUN_FILES)
FSM_DATA = DirKind("TokFSM data", (FSM_FILE, TOKENIZER_DIR, TRAIN_FILE, VALIDATION_FILE))
FSM_DEMO = DirKind("TokFSM demo", (DATA_DIR, RESULTS_FILE, REPORT_FILE, PLOTS_DIR))
SAVED_MODEL = DirKind("saved codebook model", marker=CODEBOOK_CONFIG, listed=_saved_model_files)
KINDS = (RUN, FSM_DATA, FSM_DEMO, SAVED_MODEL)

State = Literal["new", "ours"]


def check_output_dir(
    directory: str | os.PathLike,
    kind: DirKind,
    *,
    overwrite: bool = False,
    option: str = "--out",
) -> State:
    """Whether ``directory`` is ``"new"`` (missing or empty) or ``"ours"`` (of ``kind``);
    refuses anything else with one line saying what to do. With ``overwrite``, ours must also
    hold nothing foreign, since it is about to be replaced. Changes nothing on disk."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise CodebookError(f"{path} is a file, not a directory: give a directory for {option}")
    if not path.exists() or not any(path.iterdir()):
        return "new"
    if not kind.owns(path):
        other = next((k.name for k in KINDS if k is not kind and k.owns(path)), None)
        what = (
            f"holds a {other}, not a {kind.name}"
            if other
            else ("is not empty and was not made by codebook-features")
        )
        raise CodebookError(f"{path} {what}: choose another {option} (nothing was changed)")
    if overwrite:
        foreign = kind.foreign_entries(path)
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise CodebookError(
                f"{path} also holds files it did not make ({shown}): move them away or choose "
                f"another {option}; nothing was changed"
            )
    return "ours"


def mark(directory: str | os.PathLike, kind: DirKind) -> None:
    """Create ``directory`` if needed and mark it as a directory of ``kind``."""
    if kind.marker != OWNER_FILE:
        raise ValueError(f"{kind.name} directories are marked by their own {kind.marker}")
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    if not kind.owns(path):
        write_json(path / OWNER_FILE, {"kind": kind.name, VERSION_KEY: __version__})


def clear_own(directory: str | os.PathLike, kind: DirKind) -> None:
    """Delete what ``kind`` writes in ``directory`` (and nothing else), keeping its marker;
    for ``overwrite`` after :func:`check_output_dir` said the directory is ours."""
    path = Path(directory)
    for name in kind.entries:
        entry = path / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


def _marked_kind(directory: Path) -> str | None:
    try:
        data = json.loads((directory / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data.get("kind") if isinstance(data, dict) else None


def _is_marked(entry: Path) -> bool:
    return entry.is_dir() and any(kind.owns(entry) for kind in KINDS)


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """An output file that can be written: refuses a directory, and an existing file that is
    not a JSON result of ours (results are stamped with the library version), before any work.
    """
    target = Path(path)
    if target.is_dir():
        raise CodebookError(f"{target} is a directory: give a file name for {option}")
    if target.parent.exists() and not target.parent.is_dir():
        raise CodebookError(f"{target.parent} is a file: give a file path for {option}")
    if target.exists():
        try:
            ours = VERSION_KEY in json.loads(target.read_text())
        except (OSError, ValueError, TypeError):
            ours = False
        if not ours:
            raise CodebookError(
                f"{target} exists and was not written by codebook-features: choose another "
                f"{option} (nothing was changed)"
            )
    return target
