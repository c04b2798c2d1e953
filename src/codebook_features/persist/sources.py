"""Where models and tokenizers come from: a local directory or a hub name, told apart up front.

Hugging Face answers a missing local directory with "Repo id must be in the form ..." and a
directory without tokenizer files by asking to install sentencepiece; checking the path first
gives one line that names the real problem.
"""

from __future__ import annotations

from pathlib import Path

from codebook_features.errors import CodebookError
from codebook_features.persist.files import MODEL_CONFIG

MODEL_FILES = (MODEL_CONFIG,)
"""A local model directory holds at least these (Hugging Face's names)."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
"""A local tokenizer directory holds at least one of these (Hugging Face's names)."""


def looks_local(name: str) -> bool:
    """Whether ``name`` is meant as a path rather than a hub name (``name`` or ``owner/name``):
    it is written as a path, or its first part is a folder here (``runs/missing`` where
    ``runs/`` exists)."""
    return _written_as_path(name) or _owner_folder(name) is not None


def _written_as_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or "\\" in name


def _owner_folder(name: str) -> str | None:
    """The folder here named like the first part of ``owner/name``, if there is one."""
    owner, _, rest = name.partition("/")
    return owner if owner and rest and Path(owner).is_dir() else None


def check_source(name: str, what: str, needs: tuple[str, ...]) -> None:
    """Refuse a local path that does not exist, is a file, or holds none of ``needs`` (the files
    a ``what`` directory has); hub names pass unchanged (they are checked when fetched)."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CodebookError(f"{name} is a file: give the {what}'s directory or a hub name")
        if not any((path / file).exists() for file in needs):
            raise CodebookError(
                f"{name} is not a {what} directory (it has no {' or '.join(needs)}): give a "
                f"directory saved with save_pretrained, or a hub name"
            )
    else:
        check_exists(name, what)


def check_exists(name: str, what: str) -> None:
    """Refuse a local path that does not exist (a hub name passes)."""
    if Path(name).expanduser().exists():
        return
    if _written_as_path(name):
        raise CodebookError(
            f"{name} does not exist: give an existing {what} directory, or a hub name such as "
            "EleutherAI/pythia-70m"
        )
    owner = _owner_folder(name)
    if owner is not None:
        raise CodebookError(
            f"{name} does not exist (taken as a path, since ./{owner} is a folder here): give "
            f"an existing {what} directory, or run from another directory to use the hub's {name}"
        )
