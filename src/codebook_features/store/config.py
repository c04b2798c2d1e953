"""What ``codebook record`` records (:class:`RecordConfig`); kept apart from the recorder so
that reading the settings (``codebook record --help``) imports neither torch nor numpy."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator
from typing_extensions import Self

from codebook_features.errors import CodebookError
from codebook_features.settings.base import Device, PositiveInt, Settings, Text

RESERVED_COLUMNS = ("document", "text")
"""Columns of the documents table that label columns may not replace."""


def _distinct(names: list[str]) -> list[str]:
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"names {', '.join(twice)} twice")
    return names


Names = Annotated[list[Text], AfterValidator(_distinct)]
"""Non-empty names, each at most once."""


class RecordConfig(Settings):
    """What to record: a codebook model, text data, and where the store goes."""

    model: Text
    """A saved codebook model: a local directory (e.g. a run's ``final/``) or a hub name."""
    dataset: Text
    """A hub dataset name, or local files: a .txt/.jsonl/.json/.parquet path, a directory, a
    glob, or a comma-separated list (as for training)."""
    dataset_config: str | None = None
    """The hub dataset's configuration name, if it has several."""
    split: Text = "validation"
    """Split of a hub dataset to record. Local files have a single split: they are used as
    they are."""
    text_field: Text = "text"
    """Column holding the text (jsonl/parquet/hub datasets)."""
    label_fields: Literal["all"] | Names = "all"
    """Extra columns copied into the documents table (e.g. ``label topic``); ``all``: every
    scalar column the data has besides the text; ``none``: no extra columns."""
    streaming: bool = False
    """Read the dataset lazily, for corpora too large to prepare up front."""
    max_documents: PositiveInt | None = None
    """Record only the first this many documents (default: all)."""
    sites: Annotated[list[Text], Field(min_length=1), AfterValidator(_distinct)] | None = None
    """Sites whose codes are recorded, by name, kind or glob (default: every site)."""
    max_length: PositiveInt | None = None
    """Tokens per forward window; a longer document is cut into consecutive windows, its
    positions going on (default: the model's context length, at most 1024)."""
    batch_size: PositiveInt = 8
    """Windows per forward pass."""
    shard_tokens: PositiveInt = 1_000_000
    """Tokens per shard (a shard ends at the first document boundary past this)."""
    activation_sites: Names = Field(default_factory=list)
    """Sites whose codebook inputs are also kept, as float16, for the baselines (default:
    none)."""
    max_activation_tokens: PositiveInt = 100_000
    """Keep the activations of the first this many tokens (per process when recording
    data-parallel)."""
    tokenizer: str | None = None
    """The tokenizer (hub name or directory; default: the model's own). It must be a fast
    tokenizer, which gives each token's character offsets."""
    output_dir: Text
    """The store directory to write (new, empty, or an unfinished recording to continue)."""
    overwrite: bool = False
    """Replace the store in ``output_dir`` (only a store that holds nothing else)."""
    progress: bool = True
    """Show a progress bar with tokens/s (only in a terminal)."""
    device: Device = "auto"
    """``auto`` uses a GPU when there is one."""

    @field_validator("label_fields", mode="before")
    @classmethod
    def _none_is_all(cls, value: Any) -> Any:
        return "all" if value is None else value  # what ``None`` meant before ``all``

    @model_validator(mode="after")
    def _labels_are_not_text(self) -> Self:
        chosen = () if self.label_fields == "all" else self.label_fields
        clash = sorted({*RESERVED_COLUMNS, self.text_field} & set(chosen))
        if clash:
            raise CodebookError(
                f"label_fields may not name {', '.join(clash)} (the text and the "
                "document id have their own columns): leave them out of label_fields"
            )
        return self


class IndexConfig(Settings):
    """Which store to index."""

    store: Text
    """The store directory (written by ``codebook record``)."""
