"""Every on-disk file name in one place, and atomic writes.

A killed process never leaves a half-written file or checkpoint behind: files are written to a
temporary name and renamed; directories are built beside their target and swapped in.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------- a saved codebook model
CODEBOOK_CONFIG = "codebook_config.json"
"""Codebook settings, site widths and the library version, beside the base model's files."""
CODEBOOK_WEIGHTS = "codebooks.safetensors"
"""The codebooks' parameters."""
MODEL_CONFIG = "config.json"
"""The base model's Hugging Face configuration (written by ``save_pretrained``)."""

# ---------------------------------------------------------------- a training run directory
RUN_CONFIG = "config.yaml"
"""The run's resolved settings."""
METRICS_FILE = "metrics.jsonl"
"""One JSON row per training log and per evaluation."""
SUMMARY_FILE = "summary.json"
"""Written last when a run finishes: steps, timing, throughput and the final evaluation."""
FINAL_DIR = "final"
"""The trained model."""
PLOTS_DIR = "plots"
"""PNG plots (of a run, or of the TokFSM report)."""
LOSS_PLOT = "loss.png"
"""Loss curves, in ``plots/``."""
CODE_USAGE_PLOT = "code_usage.png"
"""Code usage per site, in ``plots/``."""
REPLICAS_DIR = "replicas"
"""Per-process parameter digests of a data-parallel run."""
REPLICA_FILE = "rank{rank}.json"
"""One process's digests, in ``replicas/`` (format with ``rank``)."""
CHECKPOINT_DIR = "checkpoint"
"""The latest checkpoint."""
CHECKPOINT_TMP = f".{CHECKPOINT_DIR}.tmp"
"""Where the next checkpoint is written before it is swapped in."""
TRAINER_STATE = "trainer_state.json"
"""The trainer's position and settings, inside the checkpoint."""
CHECKPOINT_FILES = ("model.safetensors", "optimizer.bin", "random_states_0.pkl")
"""Files accelerate writes into every checkpoint (one random state file per process)."""
RUN_FILES = (
    RUN_CONFIG,
    METRICS_FILE,
    SUMMARY_FILE,
    FINAL_DIR,
    PLOTS_DIR,
    REPLICAS_DIR,
    CHECKPOINT_DIR,
    CHECKPOINT_TMP,
    f".{CHECKPOINT_DIR}.old",  # see swap_directory
)
"""Everything a run writes into its directory."""

# ---------------------------------------------------------------- TokFSM data and demo
FSM_FILE = "fsm.json"
"""The machine."""
TOKENIZER_DIR = "tokenizer"
"""Its digit tokenizer."""
TRAIN_FILE = "train.parquet"
"""Training rollouts (token blocks)."""
VALIDATION_FILE = "validation.parquet"
"""The fixed validation rollouts."""
DATA_DIR = "data"
"""The demo's FSM data, inside its output directory."""
BASELINE_RUN = "baseline"
"""The demo's baseline training run, inside its output directory."""
RESULTS_FILE = "results.json"
"""The demo's results, written after every stage (what lets it continue where it stopped)."""
REPORT_FILE = "report.md"
"""The demo's report."""
TRAINING_PLOT = "training.png"
"""Validation loss of every model of the demo, in ``plots/``."""
CODES_VS_NEURONS_PLOT = "codes_vs_neurons.png"
"""State codes against the best neurons, in ``plots/``."""
INTERVENTIONS_PLOT = "interventions.png"
"""Effect of swapping state codes, in ``plots/``."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # as a plain open() would (mkstemp makes it private)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def holds_own_files(directory: Path, marker: str, refusal: str) -> bool:
    """Whether ``directory`` holds what we write (it has ``marker``); raises ``refusal`` when it
    is not empty but holds something else, so that nothing of the user's is replaced."""
    from codebook_features.errors import CodebookError

    if not directory.exists() or not any(directory.iterdir()):
        return False
    if not (directory / marker).exists():
        raise CodebookError(refusal)
    return True


def swap_directory(new: Path, target: Path) -> None:
    """Replace ``target`` by the finished directory ``new``.

    Two renames: ``target`` moves aside to ``.<name>.old``, then ``new`` takes its place. A crash
    in between leaves the old copy there, and :func:`recover_directory` puts it back.
    """
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    if old.exists():
        shutil.rmtree(old)


def recover_directory(target: Path) -> None:
    """Undo a swap that a crash interrupted: bring back ``.<name>.old`` if ``target`` is gone."""
    old = target.with_name(f".{target.name}.old")
    if not target.exists() and old.exists():
        os.replace(old, target)


@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty directory beside ``target``; on success it replaces ``target``
    (see :func:`swap_directory`). On error the new directory is removed and ``target`` is left
    as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # as a plain mkdir would (mkdtemp makes it private)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_directory(tmp, target)
