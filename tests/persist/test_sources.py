"""A model or tokenizer name is told apart as a local path or a hub name before anything loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from codebook_features.errors import CodebookError
from codebook_features.persist.sources import MODEL_FILES, check_source, looks_local


@pytest.mark.parametrize("name", ["/abs/model", "./model", "../model", "~/model", "a/b/c"])
def test_paths_written_as_paths_are_local(name: str) -> None:
    assert looks_local(name)


def test_owner_slash_name_is_a_hub_name_unless_its_owner_is_a_folder_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert not looks_local("EleutherAI/pythia-70m")
    assert not looks_local("gpt2")
    (tmp_path / "runs").mkdir()
    assert looks_local("runs/missing")
    with pytest.raises(CodebookError, match=r"runs/missing does not exist \(taken as a path"):
        check_source("runs/missing", "model", MODEL_FILES)
    check_source("EleutherAI/pythia-70m", "model", MODEL_FILES)  # checked when fetched


def test_a_missing_run_folder_is_refused_at_once_by_from_pretrained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from codebook_features.attach.model import CodebookModel

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(CodebookError, match="runs/missing does not exist"):
        CodebookModel.from_pretrained("runs/missing")
