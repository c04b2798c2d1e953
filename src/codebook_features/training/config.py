"""What a training run is made of: model, data, codebooks and training settings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from codebook_features.attach.model import CodebookModelConfig
from codebook_features.errors import CodebookError

Mode = Literal["finetune", "codebooks", "baseline"]
MODES: tuple[str, ...] = ("finetune", "codebooks", "baseline")


@dataclass
class ModelConfig:
    """The language model to start from."""

    name_or_path: str | None = None
    """A hub name or local directory of a pretrained causal LM (leave empty to use ``init``)."""
    init: dict[str, Any] = field(default_factory=dict)
    """A model built from scratch: ``model_type`` plus config fields, e.g.
    ``{"model_type": "gpt_neox", "hidden_size": 128, ...}``; vocabulary from the tokenizer."""
    tokenizer: str | None = None
    """A hub name or local directory of the tokenizer (default: ``name_or_path``)."""
    attn_implementation: str | None = None
    """Attention kernel passed to transformers (``eager``, ``sdpa``, ...); default: its choice."""

    def __post_init__(self) -> None:
        if bool(self.name_or_path) == bool(self.init):
            raise CodebookError(
                "model: give either model.name_or_path (a pretrained model) or model.init "
                "(a config to build one from scratch), not both or neither"
            )
        if self.init and "model_type" not in self.init:
            raise CodebookError('model.init needs a "model_type", e.g. "gpt_neox"')
        if not (self.tokenizer or self.name_or_path):
            raise CodebookError("model.tokenizer is needed when the model is built from init")


@dataclass
class DataConfig:
    """Text to train on, tokenized and packed into blocks of equal length."""

    dataset: str | None = None
    """A hub dataset name, or local files: a .txt/.jsonl/.json/.parquet path, a glob, or a
    comma-separated list."""
    dataset_config: str | None = None
    """The hub dataset's configuration name, if it has several."""
    split: str = "train"
    """Split to train on."""
    validation_split: str | None = None
    """Split of ``dataset`` to evaluate on (hub datasets)."""
    validation_dataset: str | None = None
    """Separate data to evaluate on (hub name or local files, same format as ``dataset``).
    With neither this nor ``validation_split``, ``validation_fraction`` of the blocks is held
    out."""
    validation_fraction: float = 0.05
    """Share of blocks held out for validation when there is no validation split."""
    text_field: str = "text"
    """Column holding the text (jsonl/parquet/hub datasets)."""
    token_field: str = "input_ids"
    """Column of already tokenized rows; when the data has it, rows are used as they are
    (rows of exactly ``block_size`` tokens are blocks; others are joined and cut)."""
    block_size: int = 128
    """Tokens per training sequence."""
    max_train_blocks: int | None = None
    """Use at most this many training blocks."""
    max_val_blocks: int | None = 256
    """Evaluate on at most this many validation blocks (streaming: always a limit, 256 when
    empty)."""
    streaming: bool = False
    """Read the dataset lazily (for corpora too large to prepare up front). Without separate
    validation data, the first ``max_val_blocks`` blocks are held out (not a fraction)."""

    def __post_init__(self) -> None:
        if not self.dataset:
            raise CodebookError("data.dataset is empty: give a hub dataset name or local files")
        if not 0 < self.validation_fraction < 1:
            raise CodebookError("data.validation_fraction must be between 0 and 1")
        if self.block_size < 2:
            raise CodebookError("data.block_size must be at least 2")
        if self.validation_split and self.validation_dataset:
            raise CodebookError("give data.validation_split or data.validation_dataset, not both")
        for name in ("max_train_blocks", "max_val_blocks"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise CodebookError(f"data.{name} must be a positive integer or empty")


@dataclass
class TrainingConfig:
    """How to train, evaluate and checkpoint."""

    output_dir: str = "runs/train"
    """Run directory: resolved config, metrics.jsonl, plots, checkpoints, final model."""
    mode: Mode = "finetune"
    """``finetune``: codebooks and model together; ``codebooks``: codebooks only, the model
    frozen; ``baseline``: the model alone, no codebooks."""
    steps: int = 1000
    """Optimizer steps of the whole run. A finished run is extended by resuming it with a
    larger value; the learning-rate schedule is then rebuilt for the new total (``constant``
    goes on unchanged, ``linear`` and ``cosine`` continue from their value at that step of the
    longer schedule)."""
    batch_size: int = 16
    """Sequences per step and process (before gradient accumulation)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    lr: float = 1e-3
    """Learning rate of the codebooks (and of the model in baseline mode)."""
    model_lr_factor: float = 1.0
    """The model's own weights train at ``lr * model_lr_factor`` in finetune mode."""
    weight_decay: float = 0.0
    """AdamW weight decay of the model's weights (codebooks: none)."""
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    """Learning-rate schedule after warm-up."""
    warmup_steps: int = 0
    """Steps of linear warm-up."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient norm to this (empty: no clipping)."""
    eval_every: int = 200
    """Evaluate every this many steps (and at the end)."""
    save_every: int = 500
    """Write a checkpoint every this many steps (and at the end)."""
    kmeans_init: bool = False
    """Initialise the codebooks with k-means on activations of the model before training."""
    kmeans_tokens: int = 20000
    """Tokens of training data the k-means initialisation looks at."""
    seed: int = 0
    """Seeds the model initialisation, data order and everything random."""
    device: Literal["auto", "cpu"] = "auto"
    """``auto`` uses a GPU when there is one."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast precision of the forward pass."""
    log_to: list[str] = field(default_factory=list)
    """Extra loggers: ``tensorboard``, ``wandb`` (off by default; never contacted when off)."""
    resume: bool = False
    """Continue the run in ``output_dir`` from its latest checkpoint, with the same settings
    except ``steps``, which may grow to train a finished run longer (see ``steps``)."""
    overwrite: bool = False
    """Start afresh even if ``output_dir`` holds a run (its files are replaced)."""
    stop_at: int | None = None
    """End this session after this step, with a checkpoint; continue later with ``resume``."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        positive = (
            "steps",
            "batch_size",
            "grad_accum",
            "eval_every",
            "save_every",
            "kmeans_tokens",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CodebookError(f"training.{name} must be a positive integer, got {value!r}")
        if self.mode not in MODES:
            raise CodebookError(f"unknown training.mode {self.mode!r}: choose {', '.join(MODES)}")
        numbers = (self.lr, self.model_lr_factor, self.weight_decay)
        if not all(math.isfinite(v) for v in numbers) or (
            self.lr <= 0 or self.model_lr_factor < 0 or self.weight_decay < 0
        ):
            raise CodebookError("training.lr must be > 0; model_lr_factor, weight_decay >= 0")
        if self.warmup_steps < 0:
            raise CodebookError("training.warmup_steps must be >= 0")
        if self.max_grad_norm is not None and not (
            math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0
        ):
            raise CodebookError("training.max_grad_norm must be > 0 (or empty: no clipping)")
        if self.resume and self.overwrite:
            raise CodebookError("training.resume and training.overwrite exclude each other")
        import importlib.util

        for name in self.log_to:
            if name not in ("tensorboard", "wandb"):
                raise CodebookError(f"unknown logger {name!r}: use tensorboard or wandb")
            if importlib.util.find_spec(name) is None:
                raise CodebookError(
                    f"training.log_to names {name}, which is not installed: pip install {name}"
                )
        if self.stop_at is not None and not 0 < self.stop_at <= self.steps:
            raise CodebookError("training.stop_at must be between 1 and training.steps")


RESUME_FREE = {
    "training.resume",
    "training.overwrite",
    "training.stop_at",
    "training.progress",
    "training.log_to",
    "training.eval_every",
    "training.save_every",
    "training.output_dir",
}
"""Settings that may change between an interrupted run and its continuation."""


@dataclass
class RunConfig:
    """A whole training run."""

    model: ModelConfig
    """The language model."""
    data: DataConfig
    """The training text."""
    codebooks: CodebookModelConfig | None = None
    """Codebooks to attach (not used in baseline mode)."""
    training: TrainingConfig = field(default_factory=TrainingConfig)
    """Training, evaluation and checkpoints."""

    def __post_init__(self) -> None:
        if self.training.mode != "baseline" and self.codebooks is None:
            raise CodebookError(
                f"training.mode {self.training.mode!r} needs codebooks: give codebooks.num_codes "
                "(and sites, k, ...), or use mode baseline"
            )
