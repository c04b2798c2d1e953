"""Reading a training run's directory without the trainer.

Reports, the command line and other tools look at runs (settings, metrics, plots, the trained
model, how far the checkpoint got) through :class:`RunDir`, which needs neither accelerate nor
the training loop; the trainer uses the same reader for what it reads back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codebook_features.errors import CodebookError
from codebook_features.persist.files import (
    CHECKPOINT_DIR,
    FINAL_DIR,
    METRICS_FILE,
    PLOTS_DIR,
    RUN_CONFIG,
    SUMMARY_FILE,
    TRAINER_STATE,
)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics file; a line cut short by a crash is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


@dataclass(frozen=True)
class RunDir:
    """The files of one run directory (see ``codebook train``), read on demand."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def exists(self) -> bool:
        """Whether the directory holds a run (its settings or a checkpoint)."""
        return (self.path / RUN_CONFIG).exists() or (self.path / CHECKPOINT_DIR).exists()

    def config(self) -> dict[str, Any]:
        """The run's resolved settings, as written to ``config.yaml``."""
        import yaml

        file = self.path / RUN_CONFIG
        if not file.is_file():
            raise CodebookError(f"{self.path} holds no {RUN_CONFIG}: it is not a training run")
        try:
            data = yaml.safe_load(file.read_text())
        except yaml.YAMLError as error:
            raise CodebookError(f"{file} is damaged ({error}); start the run again") from error
        if not isinstance(data, dict):
            raise CodebookError(f"{file} is damaged (not a mapping); start the run again")
        return data

    def metrics(self, split: str | None = None) -> list[dict[str, Any]]:
        """Rows of ``metrics.jsonl`` (``split``: only ``train`` or only ``val`` rows)."""
        rows = read_metrics(self.path / METRICS_FILE)
        return rows if split is None else [r for r in rows if r.get("split") == split]

    def train_rows(self) -> list[dict[str, Any]]:
        """Training rows: step, losses, learning rate, time, throughput."""
        return self.metrics("train")

    def val_rows(self) -> list[dict[str, Any]]:
        """Evaluation rows: loss, accuracy, perplexity, per-site codebook statistics."""
        return self.metrics("val")

    def summary(self) -> dict[str, Any] | None:
        """``summary.json`` of a finished run (``None`` before it finishes)."""
        file = self.path / SUMMARY_FILE
        if not file.is_file():
            return None
        try:
            data = json.loads(file.read_text())
        except json.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None

    def plots(self) -> list[Path]:
        """The PNG plots, sorted by name."""
        return sorted((self.path / PLOTS_DIR).glob("*.png"))

    def final_model(self) -> Path | None:
        """The trained model's directory (``None`` until the run has written one)."""
        final = self.path / FINAL_DIR
        return final if final.is_dir() else None

    def checkpoint_step(self) -> int | None:
        """The step of the latest checkpoint (``None`` without a readable one)."""
        file = self.path / CHECKPOINT_DIR / TRAINER_STATE
        try:
            step = json.loads(file.read_text())["step"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return step if isinstance(step, int) and not isinstance(step, bool) else None

    def finished(self) -> bool:
        """Whether the run wrote its model and summary for the step its checkpoint is at
        (a run killed between its last checkpoint and ``final/`` is not finished)."""
        summary = self.summary()
        return (
            self.final_model() is not None
            and summary is not None
            and summary.get("steps") == self.checkpoint_step()
        )
