"""The compiled top-k is built into a private cache and loaded only when it is this user's own
build, byte for byte: a library planted in its place never runs."""

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from codebook_features.codebook import native

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")

PLANTED = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen(MARKER, "w"); if (f) { fputs("ran", f); fclose(f); }
}
void topk_rows_f32(void) {}
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(native.DISABLE_ENV, raising=False)
    native._library.cache_clear()
    yield tmp_path / "codebook_features"
    native._library.cache_clear()  # later tests load from the usual cache again


def working() -> bool:
    native._library.cache_clear()
    if not native.available():
        return False
    scores = torch.randn(3, 50)
    return torch.equal(native.topk_rows(scores, 4), scores.topk(4).indices)


def plant(target: Path, tmp_path: Path) -> Path:
    marker = tmp_path / "marker"
    source = tmp_path / "planted.c"
    source.write_text(f'#define MARKER "{marker}"\n' + PLANTED)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(target), str(source)], check=True)
    return marker


def test_built_privately_with_its_hash_recorded(cache: Path) -> None:
    assert working()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    (library,) = cache.glob("topk_rows-*.so")
    recorded = library.with_suffix(".sha256").read_text().strip()
    assert recorded == native._sha256(library)


def test_a_planted_library_never_runs(cache: Path, tmp_path: Path) -> None:
    assert working()
    (library,) = cache.glob("topk_rows-*.so")
    marker = plant(library, tmp_path)  # same name, other bytes: the recorded hash differs
    assert working()
    assert not marker.exists()
    assert library.with_suffix(".sha256").read_text().strip() == native._sha256(library)


def test_a_planted_library_with_a_forged_hash_but_open_permissions_is_rebuilt(
    cache: Path, tmp_path: Path
) -> None:
    assert working()
    (library,) = cache.glob("topk_rows-*.so")
    marker = plant(library, tmp_path)
    library.with_suffix(".sha256").write_text(native._sha256(library))
    os.chmod(library, 0o777)  # writable by others: not trusted, whatever its hash says
    assert working()
    assert not marker.exists()


def test_garbage_is_rebuilt_and_an_open_cache_is_made_private(cache: Path) -> None:
    assert working()
    (library,) = cache.glob("topk_rows-*.so")
    garbage = cache / "garbage"
    garbage.write_bytes(b"not a library")
    garbage.replace(library)  # a new file: the loaded one must not change under this process
    os.chmod(cache, 0o777)
    assert working()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700


def test_built_and_trusted_under_a_group_writable_umask(cache: Path) -> None:
    old = os.umask(0o002)
    try:
        assert working()
    finally:
        os.umask(old)
    (library,) = cache.glob("topk_rows-*.so")
    assert stat.S_IMODE(library.stat().st_mode) & 0o022 == 0
    native._library.cache_clear()
    assert native._verified(library, library.with_suffix(".sha256"))  # reused, not rebuilt
