"""Where a saved model's files are, and whether they are intact: one place for local
directories and hub repositories alike.

A model with codebooks lists the sha256 of every file it saved in ``codebook_config.json``; a
model without codebooks (a baseline's ``final/``) in ``checksums.json``. Loading checks them
first, so a damaged file is refused instead of silently giving other numbers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from codebook_features.errors import CodebookError
from codebook_features.persist.checksums import verify_checksums
from codebook_features.persist.files import CODEBOOK_CONFIG, MODEL_CHECKSUMS, MODEL_CONFIG

HUB_OPTIONS = ("revision", "subfolder", "token", "cache_dir", "force_download", "local_files_only")
"""Options of ``from_pretrained`` that say where files are, for the codebook files too."""
REDO = "save the model again, or copy it again from where it came from"


def fetch(name_or_path: str | os.PathLike, filename: str, hub: dict[str, Any]) -> str:
    """A file of a local directory or hub repository (downloaded and cached by transformers)."""
    from transformers.utils import cached_file

    try:
        path = cached_file(
            str(name_or_path), filename, _raise_exceptions_for_missing_entries=False, **hub
        )
    except OSError as error:
        raise CodebookError(f"could not read {filename} from {name_or_path}: {error}") from error
    if path is None:
        if filename == CODEBOOK_CONFIG and _has_model_config(name_or_path, hub):
            raise CodebookError(
                f"{name_or_path} has no codebooks (no {CODEBOOK_CONFIG}): it is a plain model; "
                "add codebooks by training with them (codebook train --model.name_or_path "
                f"{name_or_path} --codebooks.sites attn_heads ...), or in Python with "
                "CodebookModel(model, config)"
            )
        if Path(str(name_or_path)).expanduser().is_dir():
            raise CodebookError(
                f"{name_or_path} has no {filename}: it is not a saved codebook model (save one "
                "with CodebookModel.save, or attach new codebooks with CodebookModel(model, "
                "config))"
            )
        raise CodebookError(
            f"{name_or_path} has no {filename}: it is neither a local directory nor a hub model "
            "that could be reached: give a saved codebook model's directory or a hub name"
        )
    return path


def _has_model_config(name_or_path: str | os.PathLike, hub: dict[str, Any]) -> bool:
    """Whether a Hugging Face model (with or without codebooks) is there."""
    from transformers.utils import cached_file

    try:
        found = cached_file(
            str(name_or_path), MODEL_CONFIG, _raise_exceptions_for_missing_entries=False, **hub
        )
    except OSError:
        return False
    return found is not None


def verify_files(
    name_or_path: str | os.PathLike,
    description: dict[str, Any],
    hub: dict[str, Any],
    only: str | None = None,
) -> None:
    """Check the files against the checksums saved with them (models saved before checksums
    were recorded have none to check)."""
    files = description.get("files", {})
    if only is not None:
        files = {only: files[only]} if isinstance(files, dict) and only in files else {}

    def locate(name: str) -> str | Path:
        try:
            return fetch(name_or_path, name, hub)
        except CodebookError:
            return Path(str(name_or_path)) / name  # not there: reported as missing

    verify_checksums(files, locate, str(name_or_path), REDO)


def read_description(name_or_path: str | os.PathLike, hub: dict[str, Any]) -> dict[str, Any]:
    """The saved model's ``codebook_config.json``, checked for what loading needs."""
    text = Path(fetch(name_or_path, CODEBOOK_CONFIG, hub)).read_text()  # says what is missing
    try:
        description = json.loads(text)
        if not isinstance(description["config"], dict) or not description["sites"]:
            raise ValueError("no codebook settings or sites")
    except (ValueError, KeyError, TypeError) as error:
        raise CodebookError(
            f"{CODEBOOK_CONFIG} in {name_or_path} is damaged ({error}); re-save the model"
        ) from error
    return description


def verify_model_dir(directory: str | Path) -> None:
    """Check a local saved model (with or without codebooks) against the checksums saved with
    it; a hub name, or a model saved without checksums, passes."""
    root = Path(directory)
    for manifest in (CODEBOOK_CONFIG, MODEL_CHECKSUMS):
        path = root / manifest
        if path.is_file():
            try:
                files = json.loads(path.read_text()).get("files") or {}
            except (ValueError, AttributeError) as error:
                raise CodebookError(f"{path} is damaged ({error}): save the model again") from error
            verify_checksums(
                files, lambda name: root / name, str(root), "save or copy the model again"
            )
            return
