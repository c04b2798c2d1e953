"""Every on-disk file name in one place, and atomic writes.

A killed process never leaves a half-written file or checkpoint behind: files are written to a
temporary name and renamed; directories are built beside their target and swapped in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

OWNER_FILE = ".codebook-features.json"
"""Marks a directory as written by codebook-features, and of which kind (see ``ownership``)."""
MANIFEST = "manifest.json"
"""Written last, so that its presence means the directory is complete: in a checkpoint, the
sha256 of every other file; in a code store, its settings, shards and their sha256."""

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
CHECKPOINT_MODEL = "model.safetensors"
"""The model's weights (its ``state_dict``), inside the checkpoint."""
CHECKPOINT_OPTIMIZER = "optimizer.safetensors"
"""The optimizer's tensors (``state.<parameter index>.<name>``), inside the checkpoint."""
CHECKPOINT_OPTIMIZER_STATE = "optimizer.json"
"""The rest of the optimizer's state (parameter groups, numbers), inside the checkpoint."""
CHECKPOINT_SCHEDULER = "scheduler.json"
"""The learning-rate schedule's position, inside the checkpoint."""
CHECKPOINT_SCALER = "scaler.json"
"""The fp16 gradient scaler's state, inside the checkpoint (fp16 runs only)."""
CHECKPOINT_UPKEEP = "upkeep.safetensors"
"""The codebooks' dead-code bookkeeping, inside the checkpoint (runs with codebooks only)."""
CHECKPOINT_RANDOM = "random_states_{rank}.safetensors"
"""One process's torch random generators (CPU, CUDA), inside the checkpoint (format with
``rank``)."""
CHECKPOINT_RANDOM_STATE = "random_states_{rank}.json"
"""One process's Python and NumPy random generators, inside the checkpoint (format with
``rank``)."""
CHECKPOINT_FILES = (
    TRAINER_STATE,
    CHECKPOINT_MODEL,
    CHECKPOINT_OPTIMIZER,
    CHECKPOINT_OPTIMIZER_STATE,
    CHECKPOINT_SCHEDULER,
    MANIFEST,
)
"""Files every checkpoint holds (all safetensors or JSON); besides them, two random-state files
per process, ``upkeep.safetensors`` with codebooks and ``scaler.json`` with fp16."""
OLD_CHECKPOINT_FILES = (
    "optimizer.bin",
    "scheduler.bin",
    "scaler.pt",
    "random_states_*.pkl",
    "custom_checkpoint_*.pkl",
)
"""Patterns of the pickle files of the earlier checkpoint format, which is never loaded."""
TRACKER_DIR = "codebook-features"
"""What the optional loggers (TensorBoard, ...) write, inside a run directory."""
MODEL_CHECKSUMS = "checksums.json"
"""The sha256 of every file of a saved model without codebooks (a baseline's ``final/``);
models with codebooks keep them in ``codebook_config.json``."""

# ---------------------------------------------------------------- a code store
# (its format, columns and dtypes: ``store/schema.py``)
SHARDS_DIR = "shards"
"""The store's Parquet shards (``manifest.json`` lists them)."""
DOCUMENTS_SHARD = "documents-{rank:05d}-{shard:05d}.parquet"
"""One row per document, in ``shards/`` (format with the writing process's ``rank`` and its
``shard`` number, so that the processes of a data-parallel recording never write the same
file)."""
TOKENS_SHARD = "tokens-{rank:05d}-{shard:05d}.parquet"
"""One row per token, with its codes, in ``shards/`` (format with ``rank`` and ``shard``)."""
ACTIVATIONS_DIR = "activations"
"""The optional float16 activations (a bounded count of tokens)."""
ACTIVATIONS_SHARD = "activations-{rank:05d}-{shard:05d}.safetensors"
"""In ``activations/``: float16 inputs of the activation sites for the first rows of the tokens
shard of the same rank and number (one tensor per site, named by the site, ``(rows, width)``)."""
PROGRESS_DIR = "progress"
"""Where each process of a recording keeps its finished shards (to continue after a kill)."""
PROGRESS_FILE = "rank-{rank:05d}.json"
"""One process's progress, in ``progress/`` (format with ``rank``)."""
INDEX_DIR = "index"
"""The index a store's reader builds and caches beside the shards (``store/index.py``)."""
INDEX_INFO = "index.json"
"""Written last, in ``index/``: the index's version and the sha256 of the manifest it was built
from (what decides whether it is current)."""
INDEX_LOCK = f".{INDEX_DIR}.lock"
"""Taken beside ``index/`` while the index is built."""
DESCRIPTIONS = "descriptions.parquet"
"""In ``index/``: every code's automatic description and its held-out scores, one row per
code (``search/describe.py``)."""

# ---------------------------------------------------------------- concepts
CONCEPTS_DIR = "concepts"
"""Where the commands and the browser keep concepts by default (``--concepts_dir``)."""
CONCEPT_SUFFIX = ".json"
"""A concept's file is ``<name>.json`` in its directory."""

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
"""A demo's data (the TokFSM data, the language corpus), inside its output directory."""
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

# ---------------------------------------------------------------- steering evaluation
STEERING_SETTINGS = "settings.json"
"""The settings that decide an evaluation's generations (a continued one must match)."""
STEERING_GENERATIONS_DIR = "generations"
"""One JSON-lines file of generations per condition, kept so a killed evaluation goes on."""
STEERING_RESULTS = "steering.json"
"""Every condition's rates and fluency."""
STEERING_REPORT = "steering.md"
"""The Markdown tables."""
STEERING_PLOT = "steering.png"
"""On-topic rate against perplexity, in ``plots/``."""

# ---------------------------------------------------------------- language demo
LM_TRAIN_FILE = "train.jsonl"
"""The language corpus's training documents, one ``{"text", "label", "source"}`` per line."""
LM_VALIDATION_FILE = "validation.jsonl"
"""Its validation documents (other source documents than training's, every label in both)."""
LM_LICENSES_FILE = "LICENSES.md"
"""Package, version and licence of every source of the corpus."""
LM_DEMO_TOKENIZER = "tokenizer"
"""The language demo's byte-level BPE tokenizer, inside its output directory."""
LM_LOSS_PLOT = "models.png"
"""Validation loss of the language demo's models, in ``plots/``."""
LM_CORPUS_FILE = "corpus.json"
"""Written last: the corpus's settings, sources and counts (what lets a finished one be
reused)."""
LM_FETCHED_FILE = "fetched.json"
"""Per source, in the download cache: the package and version fetched, and how long it
took."""
LM_BASE_RUN = "base"
"""The language demo's base model's training run (the models with codebooks start from it),
inside its output directory."""
LM_STORE_DIR = "store"
"""The language demo's code store, inside its output directory."""
LM_STEERING_DIR = "steering"
"""The language demo's steering evaluation, inside its output directory."""
LM_METHODS_DIR = "methods"
"""``codebook lm methods``' comparison, inside the demo's directory: one steering evaluation
per method, their concepts in ``concepts/<method>/``, and the files below."""
LM_METHODS_RESULTS = "methods.json"
LM_METHODS_REPORT = "methods.md"


def slug(text: str) -> str:
    """A lower-case name fragment for files and directories: ``"Attn+MLP, k=1"`` ->
    ``"attn-mlp-k-1"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


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


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary name beside ``path`` for a writer that takes a file name (such as
    safetensors' ``save_file``); on success the file gets the mode a plain ``open()`` would
    give it (the writer may make it private) and replaces ``path``; on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def follow_umask(directory: Path) -> None:
    """Give every file and folder under ``directory`` the mode a plain ``open()`` or ``mkdir``
    would (some writers, such as safetensors' ``save_file``, make private files)."""
    mask = _umask()
    for path in directory.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


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
    """Yield an empty directory beside ``target``; on success what it holds gets the modes the
    umask gives (:func:`follow_umask`) and it replaces ``target`` (see :func:`swap_directory`).
    On error the new directory is removed and ``target`` is left
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
    follow_umask(tmp)
    swap_directory(tmp, target)
