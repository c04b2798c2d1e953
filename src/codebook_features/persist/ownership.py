"""Which directories are ours to write into: one mechanism for every command that writes one.

Every directory a command creates is marked as its own: a small marker file naming the kind
(training run, TokFSM data, TokFSM demo); a saved model is marked by its
``codebook_config.json`` (or ``checksums.json`` without codebooks), which lists every file saved
with it. Before writing, a command checks its output path:

- an existing *file* is refused, before any work;
- a missing or empty directory is new: it is created and marked;
- a directory without our marker, or with the marker of another kind, is refused: nothing of
  anyone else's is ever replaced or deleted;
- a directory of the same kind is ours: a command may continue it, and ``overwrite`` may replace
  it, but only if it holds nothing the command did not make, at any depth (else the foreign
  files are named and nothing changes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from codebook_features._version import __version__
from codebook_features.errors import CodebookError
from codebook_features.persist.files import (
    ACTIVATIONS_DIR,
    CHECKPOINT_DIR,
    CHECKPOINT_TMP,
    CODE_USAGE_PLOT,
    CODEBOOK_CONFIG,
    CODES_VS_NEURONS_PLOT,
    DATA_DIR,
    FINAL_DIR,
    FSM_FILE,
    INDEX_DIR,
    INDEX_LOCK,
    INTERVENTIONS_PLOT,
    LM_CORPUS_FILE,
    LM_DEMO_TOKENIZER,
    LM_LICENSES_FILE,
    LM_LOSS_PLOT,
    LM_TRAIN_FILE,
    LM_VALIDATION_FILE,
    LOSS_PLOT,
    MANIFEST,
    METRICS_FILE,
    MODEL_CHECKSUMS,
    OWNER_FILE,
    PLOTS_DIR,
    PROGRESS_DIR,
    REPLICAS_DIR,
    REPORT_FILE,
    RESULTS_FILE,
    RUN_CONFIG,
    SHARDS_DIR,
    STEERING_GENERATIONS_DIR,
    STEERING_PLOT,
    STEERING_REPORT,
    STEERING_RESULTS,
    STEERING_SETTINGS,
    SUMMARY_FILE,
    TOKENIZER_DIR,
    TRACKER_DIR,
    TRAIN_FILE,
    TRAINING_PLOT,
    VALIDATION_FILE,
    write_json,
)
from codebook_features.settings.base import VERSION_KEY

RESULT_KEY = "codebook_features_result"
"""Stamps a JSON result written with ``--output_file`` (with the command that wrote it), so that an
existing file is overwritten only when it is such a result."""

Listing = Callable[[Path], "set[str] | None"]
"""Files (relative paths) a directory lists as its own, ``None`` when it lists none."""
Rule = Literal["file", "whole"] | frozenset[str] | Listing
"""What an entry of a directory may hold: a file; a directory wholly ours; a directory of
exactly these files; or a directory whose own manifest lists its files."""


def _listed_in(manifest: str, key: str = "files") -> Listing:
    def listing(directory: Path) -> set[str] | None:
        try:
            files = json.loads((directory / manifest).read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            return None
        return {*files, manifest} if isinstance(files, dict) else None

    return listing


def _saved_model(directory: Path) -> set[str] | None:
    """A saved model's files, as listed by its ``codebook_config.json`` or ``checksums.json``."""
    for manifest in (CODEBOOK_CONFIG, MODEL_CHECKSUMS):
        listed = _listed_in(manifest)(directory)
        if listed is not None:
            return listed
    return None


@dataclass(frozen=True)
class DirKind:
    """A kind of directory we write: how it is marked, and what it may hold."""

    id: str
    """Stable name stored in the marker."""
    name: str
    """How messages call it ("training run")."""
    contents: Mapping[str, Rule] = field(default_factory=dict)
    """Top-level entries this kind writes, with what each may hold."""
    nests: bool = False
    """Whether directories of ours of other kinds live inside (a demo holds runs). Only kinds
    that never replace the whole directory may nest."""
    listing: Listing | None = None
    """For kinds marked by their own manifest: the files it lists (a saved model)."""
    marker: str = OWNER_FILE

    def owns(self, directory: Path) -> bool:
        """Whether ``directory`` carries this kind's marker."""
        if not (directory / self.marker).is_file():
            return False
        return self.marker != OWNER_FILE or _marked_kind(directory) == self.id

    def foreign_files(self, directory: Path) -> list[str]:
        """What in ``directory`` this kind did not make, as relative paths (sorted)."""
        if self.listing is not None:
            listed = self.listing(directory)
            return [] if listed is None else _unlisted(directory, listed)
        found = []
        for entry in sorted(directory.iterdir()):
            rule = self.contents.get(entry.name)
            if entry.name == self.marker or self._leftover(entry.name):
                continue
            if rule is None:
                if not (self.nests and _is_marked(entry)):
                    found.append(entry.name)
                continue
            found += [f"{entry.name}/{inner}".rstrip("/.") for inner in _foreign(entry, rule)]
        return found

    def _leftover(self, name: str) -> bool:
        """A temporary file or directory of ours that a kill left behind (``.<entry>.*.tmp``,
        as the atomic writers name them)."""
        match = _TEMPORARY.match(name)
        return bool(match) and match["entry"] in {self.marker, *self.contents}


_TEMPORARY = re.compile(r"^\.(?P<entry>.+)\.[^./]+\.tmp$")


def _foreign(entry: Path, rule: Rule) -> list[str]:
    if rule == "file":
        return [] if entry.is_file() else ["."]
    if rule == "whole" or not entry.is_dir():
        return []
    if isinstance(rule, frozenset):
        return _unlisted(entry, set(rule))
    listed = rule(entry)
    return [] if listed is None else _unlisted(entry, listed)


def _unlisted(directory: Path, listed: set[str]) -> list[str]:
    return sorted(
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if path.is_file() and path.relative_to(directory).as_posix() not in listed
    )


_CHECKPOINT = _listed_in(MANIFEST)
RUN = DirKind(
    "run",
    "training run",
    {
        RUN_CONFIG: "file",
        METRICS_FILE: "file",
        SUMMARY_FILE: "file",
        FINAL_DIR: _saved_model,
        PLOTS_DIR: frozenset({LOSS_PLOT, CODE_USAGE_PLOT}),
        REPLICAS_DIR: "whole",
        TRACKER_DIR: "whole",
        CHECKPOINT_DIR: _CHECKPOINT,
        CHECKPOINT_TMP: "whole",
        f".{CHECKPOINT_DIR}.old": _CHECKPOINT,
    },
)
FSM_DATA = DirKind(
    "fsm-data",
    "TokFSM data",
    {FSM_FILE: "file", TOKENIZER_DIR: "whole", TRAIN_FILE: "file", VALIDATION_FILE: "file"},
)
LM_DATA = DirKind(
    "lm-data",
    "language corpus",
    {
        LM_TRAIN_FILE: "file",
        LM_VALIDATION_FILE: "file",
        LM_LICENSES_FILE: "file",
        LM_CORPUS_FILE: "file",
    },
)
FSM_DEMO = DirKind(
    "fsm-demo",
    "TokFSM demo",
    {
        DATA_DIR: "whole",
        RESULTS_FILE: "file",
        REPORT_FILE: "file",
        PLOTS_DIR: frozenset({TRAINING_PLOT, CODES_VS_NEURONS_PLOT, INTERVENTIONS_PLOT}),
    },
    nests=True,  # its runs are marked runs; the demo itself only adds to its directory
)
LM_DEMO = DirKind(
    "lm-demo",
    "language demo",
    {
        LM_DEMO_TOKENIZER: "whole",
        RESULTS_FILE: "file",
        REPORT_FILE: "file",
        PLOTS_DIR: frozenset({LM_LOSS_PLOT}),
    },
    nests=True,  # its corpus, runs, store and steering evaluation are marked directories
)
SAVED_MODEL = DirKind("model", "saved codebook model", marker=CODEBOOK_CONFIG, listing=_saved_model)


def _store_part(part: str) -> Listing:
    """The files of a store's ``part`` directory, as its manifest lists them; while the store
    is being recorded (no manifest yet) the directory is wholly the store's."""

    def listing(directory: Path) -> set[str] | None:
        listed = _listed_in(MANIFEST)(directory.parent)
        if listed is None:
            return None
        prefix = f"{part}/"
        return {name[len(prefix) :] for name in listed if name.startswith(prefix)}

    return listing


STORE = DirKind(
    "store",
    "code store",
    {
        MANIFEST: "file",
        SHARDS_DIR: _store_part(SHARDS_DIR),
        ACTIVATIONS_DIR: _store_part(ACTIVATIONS_DIR),
        PROGRESS_DIR: "whole",
        INDEX_DIR: "whole",
        f".{INDEX_DIR}.old": "whole",
        INDEX_LOCK: "file",
    },
)
STEERING_EVAL = DirKind(
    "steering-eval",
    "steering evaluation",
    {
        STEERING_SETTINGS: "file",
        STEERING_GENERATIONS_DIR: "whole",
        STEERING_RESULTS: "file",
        STEERING_REPORT: "file",
        PLOTS_DIR: frozenset({STEERING_PLOT}),
    },
)
KINDS = (RUN, FSM_DATA, LM_DATA, FSM_DEMO, SAVED_MODEL, STORE, STEERING_EVAL, LM_DEMO)

State = Literal["new", "ours"]


def check_output_dir(
    directory: str | os.PathLike,
    kind: DirKind,
    *,
    overwrite: bool = False,
    option: str = "--output_dir",
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
        if other:
            what = f"holds a {other}, not a {kind.name}"
        elif any((path / name).exists() for name in kind.contents):
            what = (
                f"looks like a {kind.name} but is not marked as one (an earlier version's, or "
                "someone else's)"
            )
        else:
            what = "is not empty and was not made by codebook-features"
        raise CodebookError(f"{path} {what}: choose another {option} (nothing was changed)")
    if overwrite:
        foreign = kind.foreign_files(path)
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
        write_json(path / OWNER_FILE, {"kind": kind.id, VERSION_KEY: __version__})


def clear_own(directory: str | os.PathLike, kind: DirKind) -> None:
    """Delete what ``kind`` writes in ``directory``, keeping its marker: for ``overwrite``,
    after :func:`check_output_dir` found nothing foreign in it."""
    path = Path(directory)
    for name in kind.contents:
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


def check_output_file(path: str | os.PathLike, option: str = "--output_file") -> Path:
    """An output file that can be written: refuses a directory, and an existing file that is
    not a JSON result of ours (see :data:`RESULT_KEY`), before any work."""
    target = Path(path)
    if target.is_dir():
        raise CodebookError(f"{target} is a directory: give a file name for {option}")
    if target.parent.exists() and not target.parent.is_dir():
        raise CodebookError(f"{target.parent} is a file: give a file path for {option}")
    if target.exists():
        try:
            data = json.loads(target.read_text())
            ours = isinstance(data, dict) and RESULT_KEY in data
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise CodebookError(
                f"{target} exists and is not a result written by codebook-features: choose "
                f"another {option} (nothing was changed)"
            )
    return target
