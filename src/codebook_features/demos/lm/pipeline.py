"""The language demo end to end, offline, at CPU scale: corpus, tokenizer, a small base model,
the paper's Table 2 (plain finetune vs attention codebooks vs grouped MLP codebooks), a code
store over validation, topic and regex codes, codes vs neurons vs SAE latents, and the steering
evaluation of the paper's Table 3 with its activation-addition baseline.

Every stage writes its results into ``results.json`` and is skipped when they are there, so a
killed demo continues where it stopped (training runs resume from their checkpoints).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codebook_features.errors import CodebookError
from codebook_features.settings.saved import Record, read_saved, stamp

logger = logging.getLogger(__name__)

GPT_NEOX_4x256 = {
    "model_type": "gpt_neox",
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "intermediate_size": 1024,
    "max_position_embeddings": 256,
}
"""The base model: 4 layers, width 256, 8 heads (5.3M parameters with 4,096 tokens)."""

TOPICS = {
    "bible": r"\b(unto|lord|god|israel|thou|thee)\b",
    "shakespeare": r"\b(thou|thee|thy|sir|lord|madam)\b",
    "austen": r"\b(miss|mrs|lady|elizabeth|emma|anne)\b",
    "news": r"\b(said|president|state|city|police|mr)\b",
    "religion": r"\b(god|church|faith|christ|religious|spirit)\b",
    "romance": r"\b(love|kissed|heart|darling|married)\b",
}
"""Concepts steered toward, with the regex of the paper's on-topic measure."""


@dataclass
class Variant:
    """A model of Table 2, finetuned from the base for the same number of steps."""

    name: str
    sites: list[str] = field(default_factory=list)
    """Codebook sites (none: a plain finetune)."""
    k: int = 8
    num_codes: int = 1024
    groups: int = 1
    """Groups of the MLP codebooks (attention heads are always one group per head)."""


@dataclass
class LmPreset:
    """Sizes of every stage; ``default`` fits 30 minutes on two CPU cores."""

    vocab_size: int = 4096
    model: dict[str, Any] = field(default_factory=lambda: dict(GPT_NEOX_4x256))
    block_size: int = 128
    batch_size: int = 16
    base_steps: int = 1500
    base_lr: float = 3e-3
    variant_steps: int = 400
    variant_lr: float = 1e-3
    variants: list[Variant] = field(
        default_factory=lambda: [
            Variant("finetune"),
            Variant("attention codebooks", ["attn_heads"], k=8, num_codes=1024),
            Variant("MLP codebooks", ["mlp"], k=8, num_codes=1024, groups=8),
        ]
    )
    steered: str = "attention codebooks"
    """The variant whose codes are recorded, searched and steered."""
    activation_site: str = "layers.2.attn_heads"
    """Site whose activations are kept for the neuron and SAE baselines."""
    activation_tokens: int = 50_000
    regexes: list[str] = field(
        default_factory=lambda: [r"\bthe\b", r"\b(he|she)\b", r"ing\b", r"\d+", r"[.!?]"]
    )
    """Regex features of the codes-vs-neurons-vs-SAE table."""
    topics: dict[str, str] = field(default_factory=lambda: dict(TOPICS))
    """Steered concepts (labels of the corpus) and their on-topic regexes."""
    prompts: list[str] = field(
        default_factory=lambda: ["The", "It was", "And he said", "In the morning"]
    )
    samples: int = 10
    max_new_tokens: int = 60
    strengths: list[int] = field(default_factory=lambda: [4, 8, 16])
    """Numbers of codes forced (best first), in all slots at every token (the paper's "all
    codes" condition)."""
    modes: list[str] = field(default_factory=lambda: ["all"])
    alphas: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0])
    max_codes: int = 16
    rank: str = "f1"
    """How a label's codes are ranked: codes that fire on much of the label's text and
    little else (F1) steer; the most precise codes are often rare ones that do not."""
    min_support: int = 20

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names) or "base" in names:
            raise CodebookError(f"preset: variant names must be distinct and not 'base': {names}")
        steered = [v for v in self.variants if v.name == self.steered]
        if not steered or not steered[0].sites:
            raise CodebookError(
                f"preset: steered must name a variant with codebooks, got {self.steered!r}"
            )

    @property
    def reference(self) -> str | None:
        """The plain finetune that codebook models are compared with (no codebooks)."""
        return next((v.name for v in self.variants if not v.sites), None)


PRESETS = {"default": LmPreset()}


@dataclass
class LmResults(Record):
    """Everything the demo measured (``results.json``, rewritten after every stage)."""

    preset: str
    seed: int
    settings: LmPreset
    seconds: dict[str, float] = field(default_factory=dict)
    corpus: dict[str, Any] | None = None
    """Documents and words per label and split, where the text came from, and a digest of the
    files (a demo continues only on the same corpus)."""
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per model of Table 2: its run directory and final validation metrics."""
    store: dict[str, Any] | None = None
    search: dict[str, Any] | None = None
    """Topic codes per label, regex codes, and the codes-vs-neurons-vs-SAE table."""
    steering: dict[str, Any] | None = None
    """The steering evaluation's summary rows (the full report is in ``steering/``)."""

    def to_dict(self) -> dict[str, Any]:
        return stamp(asdict(self))

    @classmethod
    def load(cls, path: Path) -> LmResults:
        try:
            return cls.from_dict(read_saved(json.loads(path.read_text()), cls, str(path)))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise CodebookError(
                f"{path} is damaged ({error}); delete it to run every stage again"
            ) from error


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
    ) or LmResults(name, seed, preset)
    stages = Stages(path, results, say)
    LmStages(out, results, stages, corpus=corpus, progress=progress).run()
    return results
