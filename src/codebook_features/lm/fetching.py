"""Fetching helpers: run a registry's client, and add files to a source's cache folder without
ever replacing or deleting one we did not make (work happens in hidden scratch folders that are
renamed into place when complete)."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

from codebook_features.errors import CodebookError
from codebook_features.files import write_json

FETCHED_FILE = "fetched.json"
"""Per source, in the cache: the package and version fetched, and how long it took."""


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
    """The version of an installed Debian package, when dpkg knows it."""
    try:
        query = ["dpkg-query", "-W", "-f=${Version}", package]
        found = subprocess.run(query, capture_output=True, check=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        found = ""
    return found or "installed (version unknown)"


@contextlib.contextmanager
def scratch(folder: Path) -> Iterator[Path]:
    """A working folder of ours inside ``folder``, removed afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fetch.", suffix=".tmp", dir=folder))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def new_folder(target: Path) -> Iterator[Path]:
    """A folder to fill, renamed to ``target`` (which must not exist) when filled."""
    with scratch(target.parent) as work:
        yield work / "new"
        os.rename(work / "new", target)


def extract(tarball: Path, patterns: list[str], target: Path) -> None:
    """Copy the members of ``tarball`` whose path matches a pattern into the new folder
    ``target``, by base name (reading members, so no path in the archive is trusted)."""
    with tarfile.open(tarball) as archive, new_folder(target) as folder:
        folder.mkdir()
        for member in archive.getmembers():
            if member.isfile() and any(fnmatch.fnmatch(member.name, p) for p in patterns):
                data = archive.extractfile(member)
                if data is not None:
                    (folder / Path(member.name).name).write_bytes(data.read())


def record(cache: Path, package: str, version: str, started: float) -> None:
    """Note in the cache what was fetched (the version goes into the corpus's licences)."""
    seconds = round(time.perf_counter() - started, 2)
    write_json(cache / FETCHED_FILE, {"package": package, "version": version, "seconds": seconds})


def apt_download(source: str, cache: Path, packages: list[str], hint: str) -> list[Path]:
    """The packages' ``.deb`` files, downloaded into ``cache`` unless there already
    (``apt-get download`` needs no root, only the package lists)."""
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
    return [debs[-1] for debs in found]


def deb_version(deb: Path) -> str:
    """The version in a ``.deb`` file's name (``name_version_arch.deb``)."""
    return unquote(deb.name.split("_")[1]) if deb.name.count("_") >= 2 else "unknown"
