"""The language demo end to end, offline, at CPU scale: corpus, tokenizer, a small base model,
the paper's Table 2 (plain finetune vs attention codebooks vs grouped MLP codebooks), a code
store over validation, topic and regex codes, codes vs neurons vs SAE latents, and the steering
evaluation of the paper's Table 3 with its activation-addition baseline.

Every stage writes its results into ``results.json`` and is skipped when they are there, so a
killed demo continues where it stopped (training runs resume from their checkpoints).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from codebook_features.demos.lm.config import PRESETS, LmPreset
from codebook_features.demos.runner import DemoResults
from codebook_features.errors import CodebookError

logger = logging.getLogger(__name__)


class LmResults(DemoResults[LmPreset]):
    """Everything the demo measured (``results.json``, rewritten after every stage)."""

    corpus: dict[str, Any] | None = None
    """Documents and words per label and split, where the text came from, and a digest of the
    files (a demo continues only on the same corpus)."""
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per model of Table 2: its run directory and final validation metrics."""
    store: dict[str, Any] | None = None
    search: dict[str, Any] | None = None
    """Topic codes per label, regex codes, and the codes-vs-neurons-vs-SAE table."""
    steering: dict[str, Any] | None = None
    """The steering evaluation's summary rows (the full report is in ``steering/``)."""

    @model_validator(mode="before")
    @classmethod
    def _codes_of_earlier_files(cls, data: Any) -> Any:
        """Results files written before ``codes_from`` chose codes by the label's tokens."""
        if isinstance(data, dict) and isinstance(data.get("settings"), dict):
            data = dict(data)
            data["settings"] = {"codes_from": "tokens"} | data["settings"]
        return data


def run_lm_pipeline(
    out: str | Path,
    preset: str | LmPreset = "default",
    seed: int = 0,
    *,
    corpus: str | Path | None = None,
    progress: bool = True,
    say: Callable[[str], None] = logger.info,
) -> LmResults:
    """Run every stage into ``out``. ``corpus`` names a directory with ``train.jsonl`` and
    ``validation.jsonl`` (``text`` and ``label`` per line) to use instead of fetching one."""
    from codebook_features.demos.lm.stages import LmStages
    from codebook_features.demos.runner import Stages, resume_results
    from codebook_features.persist.files import RESULTS_FILE
    from codebook_features.persist.ownership import LM_DEMO, check_output_dir, mark

    if isinstance(preset, str):
        if preset not in PRESETS:
            raise CodebookError(f"unknown preset {preset!r}: choose {', '.join(PRESETS)}")
        name, preset = preset, PRESETS[preset]
    else:
        name = "custom"
    out = Path(out)
    check_output_dir(out, LM_DEMO)
    mark(out, LM_DEMO)
    path = out / RESULTS_FILE
    results = resume_results(
        path, LmResults.load, lambda r: r.settings == preset and r.seed == seed
    ) or LmResults(preset=name, seed=seed, settings=preset)
    stages = Stages(path, results, say)
    LmStages(out, results, stages, corpus=corpus, progress=progress).run()
    return results
