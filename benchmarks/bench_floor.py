"""How fast the performance goals could be at best: the exact search's score matmul alone.

An exact float32 search cannot skip its scores, every token against every code. This times
that one matmul at the shapes of the two goals, the layer benchmark (16 groups x 64 features,
C = 4,096, 8,192 tokens) and the training-step benchmark (TokFSM size: per layer 4 heads x 32
features and one MLP of 128, C = 1,000, 4,096 tokens), in float32 and in bfloat16, and counts
the training step's own multiply-adds beside it. The table goes to ``benchmarks/README.md``.

    python benchmarks/bench_floor.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from machine import cpu_name
from readme import replace_section

README = Path(__file__).resolve().parent / "README.md"
CHUNK = 1024
"""Tokens per matmul, as the search takes them (its scores stay in cache)."""


def score_time(groups: int, tokens: int, dim: int, codes: int, dtype: torch.dtype) -> float:
    """Median seconds of the scores of ``tokens`` against ``codes`` in each group."""
    x = torch.randn(groups, tokens, dim).to(dtype)
    c = torch.randn(groups, dim, codes).to(dtype)
    out = torch.empty(groups, min(CHUNK, tokens), codes, dtype=dtype)

    def scores() -> None:
        for start in range(0, tokens, CHUNK):
            torch.bmm(x[:, start : start + CHUNK], c, out=out)

    return median_seconds(scores)


def median_seconds(work: Callable[[], None], runs: int = 7) -> float:
    work()  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def train_step_scores(dtype: torch.dtype) -> float:
    """The four layers' codebook scores of one TokFSM training step."""
    heads = score_time(4, 4096, 32, 1000, dtype)
    mlp = score_time(1, 4096, 128, 1000, dtype)
    return 4 * (heads + mlp)


def step_multiply_adds() -> tuple[int, int]:
    """Per token: the plain training step's matmul multiply-adds (forward, and backward at
    twice that) and the codebooks' score multiply-adds (forward only: the search is not
    differentiated)."""
    hidden, mlp, seq, layers, vocab = 128, 512, 64, 4, 128
    per_layer = 3 * hidden * hidden + hidden * hidden + 2 * hidden * mlp + 2 * seq * hidden
    plain = 3 * (layers * per_layer + vocab * hidden)
    codebooks = layers * (4 * 1000 * 32 + 1000 * 128)
    return plain, codebooks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no_readme", action="store_true", help="print only")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    layer32 = score_time(16, 8192, 64, 4096, torch.float32)
    layer16 = score_time(16, 8192, 64, 4096, torch.bfloat16)
    step32 = train_step_scores(torch.float32)
    step16 = train_step_scores(torch.bfloat16)
    plain, codebooks = step_multiply_adds()
    flops = 2 * 16 * 8192 * 4096 * 64 / layer32 / 1e9
    table = "\n".join(
        [
            f"Measured on {cpu_name()}, {args.threads} threads, torch {torch.__version__}:",
            "",
            "| scores alone | float32 | bfloat16 |",
            "|---|---|---|",
            f"| layer benchmark (16 x 8,192 tokens x 4,096 codes x 64) | {layer32:.3f} s "
            f"({flops:.0f} GFLOP/s) | {layer16:.3f} s |",
            f"| training step, 4 layers (heads + MLP, C = 1,000) | {step32 * 1e3:.1f} ms | "
            f"{step16 * 1e3:.1f} ms |",
            "",
            f"Multiply-adds per token of the TokFSM training step: {plain:,} for the plain "
            f"step's matmuls (forward and backward), {codebooks:,} for the codebooks' scores "
            f"({codebooks / plain:.0%} more).",
        ]
    )
    print(table)
    if not args.no_readme:
        replace_section(README, "floor", table)


if __name__ == "__main__":
    main()
