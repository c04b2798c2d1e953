"""CPU time of the ``codebook`` command's start-up: ``--help`` of commands that run no model.

Each command runs in a fresh process ``--rounds`` times; the CPU time (user + system, of the
child process, from ``os.wait4``) is reported as the median. The goal: well under a second for
``codebook search regex --help``, since a command that runs no model imports neither torch nor
transformers nor the web stack (see ``cli.py``).

Results go to ``benchmarks/results/cli_cpu.json``; the table in ``benchmarks/README.md`` is
rewritten from them.

    python benchmarks/bench_cli.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from codebook_features.persist.files import write_text
from machine import cpu_name
from readme import replace_section

HERE = Path(__file__).resolve().parent
COMMANDS = [
    ["--help"],
    ["search", "regex", "--help"],
    ["concept", "list", "--help"],
    ["train", "--help"],
    ["serve", "--help"],
    ["steer", "--help"],
]
GOAL_S = 1.0


def cpu_seconds(argv: list[str]) -> float:
    """User + system CPU seconds of one ``python -m codebook_features ARGV`` process."""
    process = subprocess.Popen(
        [sys.executable, "-m", "codebook_features", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) not in (0, 2):
        raise SystemExit(f"codebook {' '.join(argv)} failed")
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    cpu_seconds(["--help"])  # warm the file cache
    rows = []
    for argv in COMMANDS:
        times = [cpu_seconds(argv) for _ in range(args.rounds)]
        rows.append({"command": " ".join(["codebook", *argv]), "cpu_s": statistics.median(times)})
        print(f"{rows[-1]['command']:<32} {rows[-1]['cpu_s']:.2f} s CPU")
    (HERE / "results").mkdir(exist_ok=True)
    write_text(HERE / "results" / "cli_cpu.json", json.dumps({"rows": rows}, indent=2) + "\n")
    lines = [
        f"Measured on {cpu_name()}, median of {args.rounds} runs (goal: under {GOAL_S:.0f} s):",
        "",
        "| command | CPU time |",
        "|---|---|",
        *(f"| `{row['command']}` | {row['cpu_s']:.2f} s |" for row in rows),
    ]
    replace_section(HERE / "README.md", "cli-results", "\n".join(lines))


if __name__ == "__main__":
    main()
