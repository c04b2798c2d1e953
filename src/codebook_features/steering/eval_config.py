"""The steering evaluation's settings (:class:`SteeringEvalConfig`, one option each on the
command line) and the names it gives concepts; the evaluation itself is
:mod:`~codebook_features.steering.evaluation`."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from codebook_features.errors import CodebookError
from codebook_features.steering.batches import check_batch_size

PAPER_PROMPTS = ["Once upon a time,", "Once there was a", "A long time ago,", "It was"]
"""The prompts of the paper's steering notebook, but for its empty prompt (which needs a
beginning-of-text token that not every tokenizer has)."""


@dataclass
class SteeringEvalConfig:
    """What to evaluate: a codebook model, a labelled store recorded from it, and concepts."""

    model: str = ""
    """The saved codebook model (directory or hub name)."""
    store: str = ""
    """A code store recorded from this model, with a label column (``codebook record``)."""
    label_field: str = "label"
    """The documents' label column: a concept is the documents of one label."""
    concepts: list[str] = field(default_factory=list)
    """Concepts as ``LABEL`` or ``LABEL=REGEX`` (the regex gives the paper's on-topic measure;
    without one, only the classifier judges)."""
    concepts_dir: str | None = None
    """Use the concept file ``<LABEL>.json`` from here when there is one, instead of choosing
    codes from the selection half of the store."""
    output_dir: str = ""
    """Where the report goes (new, empty, or an earlier evaluation to continue)."""
    overwrite: bool = False
    """Start again in ``output_dir`` (only an evaluation's own files are removed)."""
    selection_fraction: float = 0.5
    """Share of the store's documents that codes and steering vectors are chosen on; the
    classifier learns from the rest."""
    split_seed: int = 0
    sites: list[str] | None = None
    """Sites the codes may come from (names, kinds or globs; default: every recorded site)."""
    per_group: int = 1
    """At most this many codes per site and group (head)."""
    max_codes: int = 8
    """Codes per concept."""
    min_support: int = 5
    """Leave out codes that fire on fewer tokens of the selection half."""
    min_precision: float = 0.0
    """Leave out codes less precise than this (share of their tokens in the label's
    documents)."""
    rank: Literal["precision", "f1", "recall"] = "precision"
    """Rank a label's codes by precision (codes that mean the label and little else) or F1
    (codes that also cover much of it)."""
    prompts: list[str] = field(default_factory=lambda: list(PAPER_PROMPTS))
    samples: int = 10
    """Samples per prompt and condition."""
    max_new_tokens: int = 200
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    strengths: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    """Numbers of codes forced (the concept's best first)."""
    modes: list[Literal["least", "all", "add"]] = field(default_factory=lambda: ["least", "all"])
    """Slots: ``least`` replaces the least similar code of each group (the paper's "one
    code"), ``all`` fills every slot (its "all codes"), ``add`` adds a slot."""
    positions: list[Literal["all", "new"]] = field(default_factory=lambda: ["all"])
    """Tokens forced: ``all`` (prompt and generated, the paper's) or ``new`` (generated)."""
    alphas: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0])
    """Scales of the activation-addition baseline (0 is the unsteered model), which adds at
    the first of ``positions``."""
    vector_documents: int = 200
    """Documents per side (concept, contrast) that steering vectors are averaged over."""
    batch_size: int = 8
    device: Literal["auto", "cpu", "cuda"] = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("model", "store", "output_dir"):
            if not getattr(self, name):
                raise CodebookError(f"evaluate-steering: give --{name}")
        if not self.concepts:
            raise CodebookError("evaluate-steering: give --concepts LABEL or LABEL=REGEX")
        for name in ("strengths", "modes", "positions", "prompts"):
            if not getattr(self, name):
                raise CodebookError(f"evaluate-steering: {name} is empty")
        if self.vector_documents < 1:
            raise CodebookError("evaluate-steering: vector_documents must be at least 1")
        check_batch_size(self.batch_size)
        if not 0 < self.selection_fraction < 1:
            raise CodebookError("evaluate-steering: selection_fraction must be between 0 and 1")
        self.generation()  # refuses bad sampling settings before anything is loaded
        self.rule()
        if any(n < 1 for n in self.strengths):
            raise CodebookError("evaluate-steering: strengths are numbers of codes (>= 1)")
        if any(not np.isfinite(a) for a in self.alphas):
            raise CodebookError("evaluate-steering: alphas must be finite numbers")
        names = [concept_name(parse_concept(c)[0]) for c in self.concepts]
        if len(set(names)) != len(names):
            raise CodebookError("evaluate-steering: a label is named twice in --concepts")

    def generation(self) -> Any:
        from codebook_features.steering.generate import GenerationSettings

        return GenerationSettings.of(self)

    def rule(self) -> Any:
        from codebook_features.steering.selection import SelectionRule

        return SelectionRule(
            sites=tuple(self.sites) if self.sites else None,
            per_group=self.per_group,
            max_codes=self.max_codes,
            min_support=self.min_support,
            min_precision=self.min_precision,
            rank=self.rank,
        )

    def content(self) -> dict[str, Any]:
        """The settings that decide the generations (a continued evaluation must match)."""
        data = asdict(self)
        for name in ("output_dir", "overwrite", "progress", "device", "batch_size"):
            data.pop(name)
        return data


def parse_concept(entry: str) -> tuple[str, str | None]:
    """``LABEL`` or ``LABEL=REGEX`` -> (label, regex or None), the regex checked."""
    label, _, regex = entry.partition("=")
    if not label:
        raise CodebookError(f"--concepts {entry!r}: write LABEL or LABEL=REGEX")
    if regex:
        try:
            re.compile(regex)
        except re.error as error:
            raise CodebookError(f"--concepts {entry!r}: bad regex ({error})") from error
    return label, regex or None


def concept_name(label: str) -> str:
    """A concept name from a label (concept names allow letters, digits, ``-_.``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-.") or "concept"
    if name != label:
        name += "-" + hashlib.sha256(label.encode()).hexdigest()[:6]
    return name
