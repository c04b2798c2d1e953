"""Compiled CPU kernels for the search and the codes' gradient, built on first use; torch is the
fallback.

``torch.topk`` on CPU costs several times more than reading the scores once, and on a CPU the
selection is a third of the search. ``csrc/topk_rows.c`` selects in about one pass.
``csrc/code_stats.c`` takes the codebook's statistics in one pass. ``csrc/add_rows.c`` adds the
gradient of each chosen code into the codes' gradient with the same sums as ``index_add_``, in a
fraction of its time. The library is compiled with the system C compiler into a private per-user
cache (``0700``) the first time it is needed (well under a second) and called through
``ctypes``; the library's sha256 is recorded at build time, and a library that is not this
user's or no longer matches its hash is never loaded but built again. Built with ``-fopenmp``,
it splits rows over as many OpenMP threads as torch uses; where torch ships the same runtime
(``libgomp.so.1``, as the Linux wheels do) that runtime is shared, so the kernel runs on torch's
own worker threads. (Separate Python threads measured slower: they compete with those workers,
and a kernel on one thread lets the workers fall asleep, which makes every following matmul pay
to wake them.) Without a compiler, or with ``CODEBOOK_FEATURES_NO_NATIVE=1``, the search uses
torch only; the codes chosen are the same, up to the order of exactly tied scores (and rows with
NaN scores).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

SOURCES = [
    Path(__file__).with_name("csrc") / name
    for name in ("topk_rows.c", "add_rows.c", "code_stats.c")
]
DISABLE_ENV = "CODEBOOK_FEATURES_NO_NATIVE"
OUT_OF_MEMORY = "a compiled kernel could not allocate its buffers: free memory and retry"
_lock = threading.Lock()


def available() -> bool:
    """Whether the compiled top-k can be used (compiling it now if needed)."""
    return _library() is not None


def topk_rows(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` largest entries of each row of a contiguous 2-D float32 CPU tensor,
    largest first (ties: lower index first; NaN never preferred, unlike ``torch.topk``)."""
    lib = _library()
    rows, width = scores.shape
    if (
        lib is None
        or scores.dtype != torch.float32
        or not scores.is_contiguous()
        or not 1 <= k <= width
    ):
        raise ValueError(
            "topk_rows needs the compiled kernel, contiguous float32 rows and 1 <= k <= width"
        )
    out = torch.empty(rows, k, dtype=torch.long)
    threads = torch.get_num_threads()
    if lib.topk_rows_f32(scores.data_ptr(), 0, rows, width, width, k, out.data_ptr(), threads):
        raise MemoryError(OUT_OF_MEMORY)
    return out


def screened_topk_bf16(
    cheap: Tensor,
    x: Tensor,
    cheap_x: Tensor,
    matrix: Tensor,
    offset: Tensor | None,
    bound: Tensor,
    relative: float,
    k: int,
    capacity: int,
) -> tuple[Tensor, Tensor]:
    """Exact top-k ids of a tile of rows from cheap bfloat16 scores (see ``csrc/topk_rows.c``).

    Args:
        cheap: ``(G, T, C)`` contiguous bfloat16 scores of ``cheap_x`` against ``matrix``
            rounded to bfloat16; ``-inf`` marks a code left out.
        x: ``(G, T, d)`` float32 inputs, rows contiguous.
        cheap_x: ``x`` rounded to bfloat16, laid out like ``x``.
        matrix: ``(G, C, d)`` contiguous float32 codes as searched.
        offset: ``(G, C)`` contiguous float32 per-code offsets, or ``None``.
        bound: ``(G, 3)`` contiguous float64 coefficients of each group's error bound: a cheap
            score plus offset is within ``b0 |cheap_x| + b1 |cheap_x - x| + b2`` plus
            ``relative`` times its own size of the exact score.
        relative: the relative part of the error bound.
        k: codes per row.
        capacity: most candidates a row is scored again with.

    Returns:
        ``(G * T, k)`` ids and a ``(G * T,)`` bool mask of the rows left for a full search
        (their ids are undefined).
    """
    lib = _library()
    groups, tokens, width = cheap.shape
    dim = x.shape[-1]
    if (
        lib is None
        or cheap.dtype != torch.bfloat16
        or not cheap.is_contiguous()
        or x.dtype != torch.float32
        or x.stride(-1) != 1
        or x.shape != (groups, tokens, dim)
        or matrix.shape != (groups, width, dim)
        or (offset is not None and offset.shape != (groups, width))
        or cheap_x.dtype != torch.bfloat16
        or cheap_x.shape != x.shape
        or cheap_x.stride() != x.stride()
        or matrix.dtype != torch.float32
        or not matrix.is_contiguous()
        or (offset is not None and (offset.dtype != torch.float32 or not offset.is_contiguous()))
        or bound.dtype != torch.float64
        or bound.shape != (groups, 3)
        or not bound.is_contiguous()
        or not 1 <= k <= width
    ):
        raise ValueError("screened_topk_bf16 needs the compiled kernel and the layouts it reads")
    out = torch.empty(groups * tokens, k, dtype=torch.long)
    fallback = torch.empty(groups * tokens, dtype=torch.bool)
    failed = lib.screened_topk_bf16(
        cheap.data_ptr(),
        x.data_ptr(),
        cheap_x.data_ptr(),
        x.stride(0),
        x.stride(1),
        matrix.data_ptr(),
        None if offset is None else offset.data_ptr(),
        bound.data_ptr(),
        relative,
        groups,
        tokens,
        width,
        dim,
        k,
        capacity,
        out.data_ptr(),
        fallback.data_ptr(),
        torch.get_num_threads(),
    )
    if failed:
        raise MemoryError(OUT_OF_MEMORY)
    return out, fallback


def add_rows(table: Tensor, index: Tensor, source: Tensor, valid: Tensor | None) -> None:
    """For each slot, then each row: ``table[index[slot, row]] += source[row]`` (times
    ``valid[row, slot]`` when given), as ``index_add_`` per slot would, with the same sums.

    Args:
        table: ``(T, d)`` contiguous float32, added into.
        index: ``(m, R)`` contiguous int64 rows of ``table``.
        source: ``(R, d)`` contiguous float32.
        valid: ``(R, m)`` contiguous bool, or ``None``.
    """
    lib = _library()
    slots, rows = index.shape
    if (
        lib is None
        or table.dtype != torch.float32
        or not table.is_contiguous()
        or index.dtype != torch.int64
        or not index.is_contiguous()
        or source.dtype != torch.float32
        or not source.is_contiguous()
        or source.shape != (rows, table.shape[1])
        or (valid is not None and (valid.dtype != torch.bool or valid.shape != (rows, slots)))
        or (valid is not None and not valid.is_contiguous())
    ):
        raise ValueError("add_rows needs the compiled kernel and contiguous float32 rows")
    outside = lib.add_rows(
        table.data_ptr(),
        table.shape[0],
        table.shape[1],
        index.data_ptr(),
        source.data_ptr(),
        None if valid is None else valid.data_ptr(),
        rows,
        slots,
        torch.get_num_threads(),
    )
    if outside:
        raise IndexError(f"{outside} row indices lie outside the table's {table.shape[0]} rows")


def stats_sums(inputs: Tensor, outputs: Tensor) -> Tensor:
    """Per group of ``(N, G, d)`` contiguous float32 ``inputs`` and ``outputs``, the sums over
    tokens of ``|y - x|^2``, ``|x|^2``, ``|x|``, ``|y|`` and ``x``: ``(G, 4 + d)`` float64."""
    lib = _library()
    tokens, groups, dim = inputs.shape
    if (
        lib is None
        or inputs.dtype != torch.float32
        or outputs.dtype != torch.float32
        or outputs.shape != inputs.shape
        or not inputs.is_contiguous()
        or not outputs.is_contiguous()
    ):
        raise ValueError("stats_sums needs the compiled kernel and contiguous float32 rows")
    out = torch.zeros(groups, 4 + dim, dtype=torch.float64)
    threads = torch.get_num_threads()
    if lib.stats_sums(
        inputs.data_ptr(), outputs.data_ptr(), tokens, groups, dim, out.data_ptr(), threads
    ):
        raise MemoryError(OUT_OF_MEMORY)
    return out


def code_sizes(matrix: Tensor, cheap: Tensor) -> Tensor:
    """``(G, 4)`` float64: per group of codes ``matrix`` ``(G, C, d)`` (float32) and their
    bfloat16 copy ``cheap``, the largest ``|m|``, ``|m~|`` and ``|m~ - m|``, and the mean
    ``|m|``."""
    lib = _library()
    groups, codes, dim = matrix.shape
    if (
        lib is None
        or matrix.dtype != torch.float32
        or not matrix.is_contiguous()
        or cheap.dtype != torch.bfloat16
        or cheap.shape != matrix.shape
        or not cheap.is_contiguous()
    ):
        raise ValueError("code_sizes needs the compiled kernel and contiguous codes")
    out = torch.empty(groups, 4, dtype=torch.float64)
    lib.code_sizes(
        matrix.data_ptr(),
        cheap.data_ptr(),
        groups,
        codes,
        dim,
        out.data_ptr(),
        torch.get_num_threads(),
    )
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
    lib.topk_rows_f32.restype = ctypes.c_int
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
    lib.screened_topk_bf16.restype = ctypes.c_int
    lib.screened_topk_bf16.argtypes = [
        ctypes.c_void_p,  # cheap scores
        ctypes.c_void_p,  # x
        ctypes.c_void_p,  # x in bfloat16
        ctypes.c_int64,  # x group stride
        ctypes.c_int64,  # x token stride
        ctypes.c_void_p,  # matrix
        ctypes.c_void_p,  # offset or NULL
        ctypes.c_void_p,  # error bound coefficients per group
        ctypes.c_double,  # relative error bound
        ctypes.c_int64,  # groups
        ctypes.c_int64,  # tokens
        ctypes.c_int64,  # width
        ctypes.c_int64,  # dim
        ctypes.c_int,  # k
        ctypes.c_int,  # capacity
        ctypes.c_void_p,  # out
        ctypes.c_void_p,  # fallback
        ctypes.c_int,  # threads
    ]
    lib.add_rows.restype = ctypes.c_int64
    lib.add_rows.argtypes = [
        ctypes.c_void_p,  # table
        ctypes.c_int64,  # table rows
        ctypes.c_int64,  # dim
        ctypes.c_void_p,  # index (slots, rows)
        ctypes.c_void_p,  # source (rows, dim)
        ctypes.c_void_p,  # valid (rows, slots) or NULL
        ctypes.c_int64,  # rows
        ctypes.c_int64,  # slots
        ctypes.c_int,  # threads
    ]
    lib.stats_sums.restype = ctypes.c_int
    lib.stats_sums.argtypes = [
        ctypes.c_void_p,  # inputs (N, G, d)
        ctypes.c_void_p,  # outputs (N, G, d)
        ctypes.c_int64,  # tokens
        ctypes.c_int64,  # groups
        ctypes.c_int64,  # dim
        ctypes.c_void_p,  # out (G, 4 + d) float64, added into
        ctypes.c_int,  # threads
    ]
    lib.code_sizes.restype = None
    lib.code_sizes.argtypes = [
        ctypes.c_void_p,  # matrix
        ctypes.c_void_p,  # its bfloat16 copy
        ctypes.c_int64,  # groups
        ctypes.c_int64,  # codes per group
        ctypes.c_int64,  # dim
        ctypes.c_void_p,  # out
        ctypes.c_int,  # threads
    ]
    return lib


def _build() -> Path:
    """The kernel in the private cache: reused only when this user built it and its bytes still
    hash to what was recorded at build time; compiled (again) otherwise."""
    compiler = os.environ.get("CC", "cc")
    source = b"\0".join(path.read_bytes() for path in SOURCES)
    # 512-bit vectors where the CPU has them: compilers default to 256 bits there, and the
    # kernels' scans over rows of scores run about twice as fast at 512
    wide = ["-mprefer-vector-width=512"] if b"avx512f" in cpu_flags().split() else []
    parts = [
        source,
        compiler.encode(),
        platform.machine().encode(),
        cpu_flags(),
        *map(str.encode, wide),
    ]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    cache = private_cache()
    target = cache / f"topk_rows-{key}.so"
    recorded = target.with_suffix(".sha256")
    if _verified(target, recorded):
        return target
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".so.tmp")
    os.close(fd)
    try:
        base = [compiler, "-O3", "-shared", "-fPIC", "-o", tmp, *map(str, SOURCES)]
        options = (["-march=native", *wide, "-fopenmp"], ["-march=native", "-fopenmp"])
        for extra in (*options, ["-fopenmp"], []):
            try:
                subprocess.run([*base, *extra, "-lm"], check=True, capture_output=True, timeout=120)
                break
            except subprocess.CalledProcessError:
                if not extra:
                    raise
        os.chmod(tmp, 0o700)  # private whatever mode the linker gave it
        digest = _sha256(Path(tmp))
        os.replace(tmp, target)  # atomic: concurrent builders never see a partial file
        _write_private(recorded, digest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if not _verified(target, recorded):  # a concurrent build replaced it: try once more later
        raise OSError(f"the compiled kernel in {cache} changed while it was being built")
    return target


def private_cache() -> Path:
    """This user's cache directory for the kernel, made private (``0700``) if it is not.

    Raises ``OSError`` if it belongs to someone else: nothing from there is ever loaded.
    """
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = base / "codebook_features"
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = cache.lstat()
    if not stat.S_ISDIR(info.st_mode) or not _mine(info):
        raise OSError(f"{cache} is not a directory of this user")
    if info.st_mode & 0o077:
        os.chmod(cache, 0o700)
    return cache


def _verified(library: Path, recorded: Path) -> bool:
    """Whether ``library`` is this user's, writable by nobody else, and hashes as recorded."""
    try:
        info, record = library.lstat(), recorded.lstat()
        if not (stat.S_ISREG(info.st_mode) and _mine(info) and _mine(record)):
            return False
        if (info.st_mode | record.st_mode) & 0o022:
            return False
        return recorded.read_text().strip() == _sha256(library)
    except OSError:
        return False


def _mine(info: os.stat_result) -> bool:
    return not hasattr(os, "getuid") or info.st_uid == os.getuid()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_private(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def cpu_flags() -> bytes:
    """Identifies the instruction set the build was tuned for (``-march=native``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.encode()
    except OSError:
        pass
    return platform.processor().encode()
