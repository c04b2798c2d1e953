"""What a training run is made of: model, data, codebooks and training settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from typing_extensions import Self

from codebook_features.attach.config import CodebookModelConfig
from codebook_features.errors import CodebookError
from codebook_features.settings.base import (
    Int,
    NonNegativeInt,
    NonNegativeNumber,
    OpenFraction,
    PositiveInt,
    PositiveNumber,
    Settings,
)

Mode = Literal["finetune", "codebooks", "baseline"]


class ModelConfig(Settings):
    """The language model to start from."""

    name_or_path: str | None = None
    """A hub name or local directory of a pretrained causal LM (leave empty to use ``init``)."""
    init: dict[str, Any] = Field(default_factory=dict)
    """A model built from scratch: ``model_type`` plus config fields, e.g.
    ``{"model_type": "gpt_neox", "hidden_size": 128, ...}``; vocabulary from the tokenizer."""
    tokenizer: str | None = None
    """A hub name or local directory of the tokenizer (default: ``name_or_path``)."""
    attn_implementation: str | None = None
    """Attention kernel passed to transformers (``eager``, ``sdpa``, ...); default: its choice."""

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if bool(self.name_or_path) == bool(self.init):
            raise CodebookError(
                "model: give either model.name_or_path (a pretrained model) or model.init "
                "(a config to build one from scratch), not both or neither"
            )
        if self.init and "model_type" not in self.init:
            raise CodebookError('model.init needs a "model_type", e.g. "gpt_neox"')
        if not (self.tokenizer or self.name_or_path):
            raise CodebookError("model.tokenizer is needed when the model is built from init")
        return self


class DataConfig(Settings):
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
    validation_fraction: OpenFraction = 0.05
    """Share of blocks held out for validation when there is no validation split."""
    text_field: str = "text"
    """Column holding the text (jsonl/parquet/hub datasets)."""
    token_field: str = "input_ids"
    """Column of already tokenized rows; when the data has it, rows are used as they are
    (rows of exactly ``block_size`` tokens are blocks; others are joined and cut)."""
    block_size: Int = Field(128, ge=2)
    """Tokens per training sequence."""
    max_train_blocks: PositiveInt | None = None
    """Use at most this many training blocks."""
    max_val_blocks: PositiveInt | None = 256
    """Evaluate on at most this many validation blocks (streaming: always a limit, 256 when
    empty)."""
    streaming: bool = False
    """Read the dataset lazily (for corpora too large to prepare up front). Without separate
    validation data, the first ``max_val_blocks`` blocks are held out (not a fraction)."""

    @model_validator(mode="after")
    def _one_validation_source(self) -> Self:
        if not self.dataset:
            raise CodebookError("data.dataset is empty: give a hub dataset name or local files")
        if self.validation_split and self.validation_dataset:
            raise CodebookError("give data.validation_split or data.validation_dataset, not both")
        return self


class TrainingConfig(Settings):
    """How to train, evaluate and checkpoint."""

    output_dir: str = "runs/train"
    """Run directory: resolved config, metrics.jsonl, plots, checkpoints, final model."""
    mode: Mode = "finetune"
    """``finetune``: codebooks and model together; ``codebooks``: codebooks only, the model
    frozen; ``baseline``: the model alone, no codebooks."""
    steps: PositiveInt = 1000
    """Optimizer steps of the whole run. A finished run is extended by resuming it with a
    larger value; the learning-rate schedule is then rebuilt for the new total (``constant``
    goes on unchanged, ``linear`` and ``cosine`` continue from their value at that step of the
    longer schedule)."""
    batch_size: PositiveInt = 16
    """Sequences per step and process (before gradient accumulation)."""
    grad_accum: PositiveInt = 1
    """Micro-batches accumulated per optimizer step."""
    lr: PositiveNumber = 1e-3
    """Learning rate of the codebooks (and of the model in baseline mode)."""
    model_lr_factor: NonNegativeNumber = 1.0
    """The model's own weights train at ``lr * model_lr_factor`` in finetune mode."""
    weight_decay: NonNegativeNumber = 0.0
    """AdamW weight decay of the model's weights (codebooks: none)."""
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    """Learning-rate schedule after warm-up."""
    warmup_steps: NonNegativeInt = 0
    """Steps of linear warm-up."""
    max_grad_norm: PositiveNumber | None = 1.0
    """Clip the gradient norm to this (empty: no clipping)."""
    eval_every: PositiveInt = 200
    """Evaluate every this many steps (and at the end)."""
    save_every: PositiveInt = 500
    """Write a checkpoint every this many steps (and at the end)."""
    kmeans_init: bool = False
    """Initialise the codebooks with k-means on activations of the model before training."""
    kmeans_tokens: PositiveInt = 20000
    """Tokens of training data the k-means initialisation looks at."""
    seed: NonNegativeInt = 0
    """Seeds the model initialisation, data order and everything random."""
    device: Literal["auto", "cpu"] = "auto"
    """``auto`` uses a GPU when there is one."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast precision of the forward pass."""
    log_to: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)
    """Extra loggers: ``tensorboard``, ``wandb`` (off by default; never contacted when off)."""
    resume: bool = False
    """Continue the run in ``output_dir`` from its latest checkpoint, with the same settings
    except ``steps``, which may grow to train a finished run longer (see ``steps``)."""
    overwrite: bool = False
    """Start afresh even if ``output_dir`` holds a run (its files are replaced)."""
    stop_at: PositiveInt | None = None
    """End this session after this step, with a checkpoint; continue later with ``resume``."""
    progress: bool = True
    """Show a progress bar."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.resume and self.overwrite:
            raise CodebookError("training.resume and training.overwrite exclude each other")
        if self.stop_at is not None and self.stop_at > self.steps:
            raise CodebookError("training.stop_at must be between 1 and training.steps")
        return self


def check_loggers(training: TrainingConfig) -> None:
    """Refuse a logger that is not installed, before a run starts (not in the settings' own
    checks: a checkpoint's saved settings must read on a machine without that logger)."""
    import importlib.util

    for name in training.log_to:
        if importlib.util.find_spec(name) is None:
            raise CodebookError(
                f"training.log_to names {name}, which is not installed: pip install {name}"
            )


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


class RunConfig(Settings):
    """A whole training run."""

    model: ModelConfig
    """The language model."""
    data: DataConfig
    """The training text."""
    codebooks: CodebookModelConfig | None = None
    """Codebooks to attach (not used in baseline mode)."""
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    """Training, evaluation and checkpoints."""

    @model_validator(mode="after")
    def _codebooks_for_the_mode(self) -> Self:
        if self.training.mode != "baseline" and self.codebooks is None:
            raise CodebookError(
                f"training.mode {self.training.mode!r} needs codebooks: give codebooks.num_codes "
                "(and sites, k, ...), or use mode baseline"
            )
        return self
