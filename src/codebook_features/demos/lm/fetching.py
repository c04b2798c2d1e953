"""Fetching helpers: run a registry's client, and add files to a source's cache folder without
ever replacing or deleting one we did not make (work happens in hidden scratch folders that are
renamed into place when complete)."""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import gzip
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

from codebook_features.errors import CodebookError
from codebook_features.persist.files import LM_FETCHED_FILE, write_json

QUERY_TIMEOUT = 60
"""Seconds a quick query (``dpkg-query``) may take: a hung package database must not hang us."""


def sudo() -> str:
    """``"sudo "`` where installing a system package needs it (not root), else nothing."""
    return "" if getattr(os, "geteuid", lambda: 0)() == 0 else "sudo "


def run_tool(source: str, argv: list[str], *, cwd: Path, hint: str) -> str:
    """Run a fetching command; a missing tool or a failure is one line naming the source, what
    failed and ``hint`` (how to get it by hand). Returns its standard output."""
    tool = shutil.which(argv[0])
    if tool is None:
        raise CodebookError(f"{source}: `{argv[0]}` is not installed (not found on PATH); {hint}")
    try:
        result = subprocess.run(
            [tool, *argv[1:]], cwd=cwd, capture_output=True, check=True, timeout=900
        )
    except subprocess.CalledProcessError as error:
        raise CodebookError(
            f"{source}: `{' '.join(map(str, argv))}` failed ({_why(error.stderr)}); {hint}"
        ) from error
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CodebookError(f"{source}: could not run `{argv[0]}` ({error}); {hint}") from error
    return result.stdout.decode("utf-8", "replace")


def _why(stderr: bytes) -> str:
    """The error lines of a tool's messages (apt ``E:``, npm ``ERR!``, pip ``ERROR:``), or its
    last line, on one line."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("E:", "ERROR", "error")) or " ERR! " in ln]
    errors = [ln for ln in errors if " ERR! code " not in ln and "complete log" not in ln]
    why = " / ".join(errors[:2] or lines[-1:]) or "no message"
    return why if len(why) <= 300 else why[:297] + "..."


def installed_version(package: str) -> str:
    """The version of an installed Debian package, when dpkg knows it (only for the licences,
    so a failure or a hang is not an error)."""
    query = ["dpkg-query", "-W", "-f=${Version}", package]
    try:
        found = subprocess.run(
            query, capture_output=True, check=True, text=True, timeout=QUERY_TIMEOUT
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        found = ""
    return found or "installed (version unknown)"


@contextlib.contextmanager
def scratch(folder: Path) -> Iterator[Path]:
    """A working folder of ours inside ``folder`` (hidden, so never mistaken for a result),
    removed afterwards with whatever is left in it."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix=".fetch.", suffix=".tmp", dir=folder, ignore_cleanup_errors=True
    ) as work:
        yield Path(work)


@contextlib.contextmanager
def new_folder(source: str, target: Path) -> Iterator[Path]:
    """A folder to fill, renamed to ``target`` when filled.

    Not :func:`codebook_features.persist.files.atomic_directory`: that one replaces an existing
    target (and deletes the old copy), while fetching must never replace or delete what it did not
    make. So a ``target`` that is a file is refused, and one that another fetch finished in the
    meantime is kept (ours is dropped).
    """
    if (target.exists() or target.is_symlink()) and not target.is_dir():
        raise CodebookError(_not_a_folder(source, target))
    with scratch(target.parent) as work:
        yield work / "new"
        try:
            os.rename(work / "new", target)
        except OSError as error:
            if target.is_dir():
                return  # another fetch put it there first: the same files, keep theirs
            if target.exists() or target.is_symlink():
                raise CodebookError(_not_a_folder(source, target)) from error
            raise CodebookError(
                f"{source}: could not move the unpacked files to {target} ({_reason(error)}); "
                "check that its folder is writable and run again"
            ) from error


def _not_a_folder(source: str, target: Path) -> str:
    return (
        f"{source}: {target} exists but is not a folder, so the unpacked files cannot go there; "
        "delete or move it and run again"
    )


def _reason(error: BaseException) -> str:
    """An exception's message on one short line (a tarfile error spans several)."""
    why = " ".join(str(error).split()) or type(error).__name__
    return why if len(why) <= 200 else why[:197] + "..."


DAMAGED_ARCHIVE = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)
"""What reading a damaged or truncated ``.tgz`` / ``.tar.gz`` raises (an interrupted download
that was left in the cache by hand, a disk error)."""


def extract(source: str, tarball: Path, patterns: list[str], target: Path) -> None:
    """Copy the members of ``tarball`` whose path matches a pattern into the new folder
    ``target``, by base name (reading members, so no path in the archive is trusted). A damaged
    ``tarball`` is one line naming it: deleting it makes the next run download it anew."""
    try:
        with tarfile.open(tarball) as archive, new_folder(source, target) as folder:
            folder.mkdir()
            for member in archive.getmembers():
                if member.isfile() and any(fnmatch.fnmatch(member.name, p) for p in patterns):
                    data = archive.extractfile(member)
                    if data is not None:
                        (folder / Path(member.name).name).write_bytes(data.read())
    except DAMAGED_ARCHIVE as error:
        raise CodebookError(
            f"{source}: the cached download {tarball} is damaged ({_reason(error)}); delete that "
            "file and run again to download it anew"
        ) from error


def record_fetched(cache: Path, package: str, version: str, started: float) -> None:
    """Note in the cache what was fetched (the version goes into the corpus's licences)."""
    seconds = round(time.perf_counter() - started, 2)
    write_json(
        cache / LM_FETCHED_FILE, {"package": package, "version": version, "seconds": seconds}
    )


def apt_download(source: str, cache: Path, packages: list[str], hint: str) -> list[Path]:
    """The packages' ``.deb`` files, downloaded into ``cache`` unless there already
    (``apt-get download`` needs no root, only the package lists); of several versions in the
    cache, the newest (by Debian version order, not by name: ``1.10`` is newer than ``1.9``)."""
    found = [sorted(cache.glob(f"{package}_*.deb")) for package in packages]
    missing = [package for package, debs in zip(packages, found, strict=True) if not debs]
    if missing:
        apt_hint = f"if apt-get cannot find it, run `{sudo()}apt-get update` first; or {hint}"
        with scratch(cache) as work:
            run_tool(source, ["apt-get", "download", *missing], cwd=work, hint=apt_hint)
            for deb in work.glob("*.deb"):
                if not (cache / deb.name).exists():
                    os.replace(deb, cache / deb.name)
        found = [sorted(cache.glob(f"{package}_*.deb")) for package in packages]
    if not all(found):
        raise CodebookError(f"{source}: apt-get downloaded no {', '.join(packages)}; {hint}")
    return [newest_deb(debs) for debs in found]


def deb_version(deb: Path) -> str:
    """The version in a ``.deb`` file's name (``name_version_arch.deb``)."""
    return unquote(deb.name.split("_")[1]) if deb.name.count("_") >= 2 else "unknown"


def compare_versions(a: str, b: str) -> int:
    """Negative, zero or positive as Debian version ``a`` is older than, the same as or newer
    than ``b`` (dpkg's order: epoch, then upstream version, then revision; ``~`` sorts before
    anything, even the end: ``1.0~rc1`` < ``1.0``). As ``dpkg --compare-versions``, without
    needing dpkg."""
    (epoch_a, upstream_a, revision_a), (epoch_b, upstream_b, revision_b) = map(_parts, (a, b))
    return (
        (epoch_a > epoch_b) - (epoch_a < epoch_b)
        or _compare_part(upstream_a, upstream_b)
        or _compare_part(revision_a, revision_b)
    )


def _parts(version: str) -> tuple[int, str, str]:
    """``[epoch:]upstream[-revision]``; a missing or malformed epoch counts as 0."""
    epoch, colon, rest = version.partition(":")
    if not colon:
        epoch, rest = "0", version
    upstream, hyphen, revision = rest.rpartition("-")
    if not hyphen:
        upstream, revision = rest, ""
    return (int(epoch) if epoch.isascii() and epoch.isdigit() else 0), upstream, revision


def _order(c: str) -> int:
    """A character's weight outside digit runs: ``~`` first, then the end of the string,
    letters, and other characters after letters."""
    if c == "~":
        return -1
    if not c:
        return 0
    if c.isascii() and c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's ``verrevcmp``: alternate non-digit runs (compared by :func:`_order`) and digit
    runs (compared as numbers)."""
    i = j = 0
    digits = "0123456789"
    while i < len(a) or j < len(b):
        while (i < len(a) and a[i] not in digits) or (j < len(b) and b[j] not in digits):
            ac = _order(a[i]) if i < len(a) and a[i] not in digits else 0
            bc = _order(b[j]) if j < len(b) and b[j] not in digits else 0
            if ac != bc:
                return ac - bc
            i, j = i + 1, j + 1
        start_a, start_b = i, j
        while i < len(a) and a[i] in digits:
            i += 1
        while j < len(b) and b[j] in digits:
            j += 1
        number_a, number_b = int(a[start_a:i] or 0), int(b[start_b:j] or 0)
        if number_a != number_b:
            return -1 if number_a < number_b else 1
    return 0


def newest_deb(debs: list[Path]) -> Path:
    """The ``.deb`` (``name_version_arch.deb``) of the newest version, in Debian's order."""
    key = functools.cmp_to_key(compare_versions)
    return max(debs, key=lambda deb: key(deb_version(deb)))
