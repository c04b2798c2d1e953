"""A compiled row-wise top-k for the CPU search, built on first use; torch is the fallback.

``torch.topk`` on CPU costs several times more than reading the scores once, and on a CPU the
selection is a third of the search. ``csrc/topk_rows.c`` selects in about one pass. It is
compiled with the system C compiler into a per-user cache the first time it is needed (well
under a second) and called through ``ctypes``. Built with ``-fopenmp``, it splits rows over as
many OpenMP threads as torch uses; where torch ships the same runtime (``libgomp.so.1``, as
the Linux wheels do) that runtime is shared, so the kernel runs on torch's own worker threads.
(Separate Python threads measured slower: they compete with those workers, and a kernel on one
thread lets the workers fall asleep, which makes every following matmul pay to wake them.)
Without a compiler, or with ``CODEBOOK_FEATURES_NO_NATIVE=1``, the search uses torch only; the
codes chosen are the same, up to the order of exactly tied scores (and rows with NaN scores).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "topk_rows.c"
DISABLE_ENV = "CODEBOOK_FEATURES_NO_NATIVE"
_lock = threading.Lock()


def available() -> bool:
    """Whether the compiled top-k can be used (compiling it now if needed)."""
    return _library() is not None


def topk_rows(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` largest entries of each row of a contiguous 2-D float32 CPU tensor,
    largest first (ties: lower index first; NaN never preferred, unlike ``torch.topk``)."""
    lib = _library()
    rows, width = scores.shape
    if lib is None or scores.dtype != torch.float32 or not scores.is_contiguous() or k > width:
        raise ValueError(
            "topk_rows needs the compiled kernel, contiguous float32 rows and k <= width"
        )
    out = torch.empty(rows, k, dtype=torch.long)
    threads = torch.get_num_threads()
    lib.topk_rows_f32(scores.data_ptr(), 0, rows, width, width, k, out.data_ptr(), threads)
    return out


@functools.lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    if os.environ.get(DISABLE_ENV):
        return None
    with _lock:
        try:
            path = _build()
            lib = ctypes.CDLL(str(path))
        except (OSError, subprocess.SubprocessError) as error:
            logger.info("compiled top-k unavailable (%s); using torch.topk", error)
            return None
    lib.topk_rows_f32.restype = None
    lib.topk_rows_f32.argtypes = [
        ctypes.c_void_p,  # scores
        ctypes.c_int64,  # first row
        ctypes.c_int64,  # end row
        ctypes.c_int64,  # width
        ctypes.c_int64,  # row stride
        ctypes.c_int,  # k
        ctypes.c_void_p,  # out
        ctypes.c_int,  # threads
    ]
    return lib


def _build() -> Path:
    """Compile the kernel into the cache unless this exact build is already there."""
    compiler = os.environ.get("CC", "cc")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join([source, compiler.encode(), platform.machine().encode(), _cpu_flags()])
    ).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "codebook_features"
    target = cache / f"topk_rows-{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".so.tmp")
    os.close(fd)
    try:
        base = [compiler, "-O3", "-shared", "-fPIC", "-o", tmp, str(SOURCE)]
        for extra in (["-march=native", "-fopenmp"], ["-fopenmp"], []):
            try:
                subprocess.run([*base, *extra], check=True, capture_output=True, timeout=120)
                break
            except subprocess.CalledProcessError:
                if not extra:
                    raise
        os.replace(tmp, target)  # atomic: concurrent builders never see a partial file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _cpu_flags() -> bytes:
    """Identifies the instruction set the build was tuned for (``-march=native``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.encode()
    except OSError:
        pass
    return platform.processor().encode()
