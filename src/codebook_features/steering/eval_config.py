"""The steering evaluation's settings (:class:`SteeringEvalConfig`, one option each on the
command line: ``--generation.samples``, ``--rule.max_codes``, ...) and the names it gives
concepts; the evaluation itself is :mod:`~codebook_features.steering.evaluation`."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator
from typing_extensions import Self

from codebook_features.errors import CodebookError
from codebook_features.settings.base import (
    Device,
    NonNegativeInt,
    Number,
    OpenFraction,
    PositiveInt,
    PositiveNumber,
    Settings,
    Text,
)
from codebook_features.steering.config import GenerationSettings, SelectionRule

PAPER_PROMPTS = ["Once upon a time,", "Once there was a", "A long time ago,", "It was"]
"""The prompts of the paper's steering notebook, but for its empty prompt (which needs a
beginning-of-text token that not every tokenizer has)."""

PAPER_GENERATION = GenerationSettings(max_new_tokens=200, samples=10)
"""The paper's protocol: 10 samples of 200 new tokens per prompt, temperature 1."""

RESUME_FREE = ("output_dir", "overwrite", "progress", "device", "batch_size")
"""Settings that do not change the generations (an evaluation may continue with others)."""


def _concepts(entries: list[str]) -> list[str]:
    names = [concept_name(parse_concept(entry)[0]) for entry in entries]
    if len(set(names)) != len(names):
        raise CodebookError("concepts names a label twice: give each label once")
    return entries


class SteeringEvalConfig(Settings):
    """What to evaluate: a codebook model, a labelled store recorded from it, and concepts."""

    model: Text
    """The saved codebook model (directory or hub name)."""
    store: Text
    """A code store recorded from this model, with a label column (``codebook record``)."""
    label_field: str = "label"
    """The documents' label column: a concept is the documents of one label."""
    concepts: Annotated[list[str], Field(min_length=1), AfterValidator(_concepts)]
    """Concepts as ``LABEL`` or ``LABEL=REGEX`` (the regex gives the paper's on-topic measure;
    without one, only the classifier judges)."""
    concepts_dir: str | None = None
    """Use the concept file ``<LABEL>.json`` from here when there is one, instead of choosing
    codes from the selection half of the store."""
    output_dir: Text
    """Where the report goes (new, empty, or an earlier evaluation to continue)."""
    overwrite: bool = False
    """Start again in ``output_dir`` (only an evaluation's own files are removed)."""
    selection_fraction: OpenFraction = 0.5
    """Share of the store's documents that codes and steering vectors are chosen on; the
    classifier learns from the rest (not used with ``classifier_data``)."""
    classifier_data: str | None = None
    """Labelled texts for the topic classifier to learn from instead of the store's other
    half (JSON lines or Parquet with a ``text`` and the label column, or a dataset name);
    codes are then chosen on all of the store's documents, and none of them may be among
    these texts. A larger set of texts gives a judge that errs less."""
    classifier_window: PositiveInt | None = None
    """Words per text the classifier learns from and is checked on: its texts (and the held-out
    documents of its report) are cut into windows of this many words, about the generations'
    length (60 tokens are some 45 words), so it judges texts like those it learned from, and
    its recall per label says how often genuine text of that length counts as on topic;
    none: whole texts."""
    split_seed: NonNegativeInt = 0
    """Seed of the split of the store's documents."""
    rule: SelectionRule = Field(default_factory=SelectionRule)
    """How a label's codes are chosen on the selection half (sites: default every recorded
    site; ``rank f1`` favours codes that also cover much of the label; ``min_support``,
    ``min_precision`` over the selection half's tokens)."""
    prompts: Annotated[list[str], Field(min_length=1)] = Field(
        default_factory=lambda: list(PAPER_PROMPTS)
    )
    """Prompts every condition continues."""
    generation: GenerationSettings = PAPER_GENERATION
    """How the reported conditions generate (``samples`` per prompt and condition; ``seed``
    also seeds the classifier and the documents steering vectors average over); the sweep
    generates alike with ``selection_samples`` and ``selection_seed``. The default is the
    paper's protocol, and settings given in part keep it for the others."""
    strengths: Annotated[list[PositiveInt], Field(min_length=1)] = Field(
        default_factory=lambda: [1, 2, 4, 8]
    )
    """Numbers of codes forced (the concept's best first)."""
    modes: Annotated[list[Literal["least", "all", "add"]], Field(min_length=1)] = Field(
        default_factory=lambda: ["least", "all"]
    )
    """Slots: ``least`` replaces the least similar code of each group (the paper's "one
    code"), ``all`` fills every slot (its "all codes"), ``add`` adds a slot."""
    positions: Annotated[list[Literal["all", "new"]], Field(min_length=1)] = Field(
        default_factory=lambda: ["all"]
    )
    """Tokens forced: ``all`` (prompt and generated, the paper's) or ``new`` (generated)."""
    alphas: list[Number] = Field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0])
    """Scales of the activation-addition baseline (0 is the unsteered model), which adds at
    the first of ``positions``."""
    selection_samples: PositiveInt | None = None
    """Samples per prompt of the sweep over strengths (none: ``generation.samples``)."""
    selection_seed: NonNegativeInt | None = None
    """Seed of the sweep's samples (none: ``generation.seed`` + 1). The reported code setting
    and the activation addition it is compared with are chosen on the sweep and generated
    again from ``generation.seed``, so they are judged on texts they were not chosen on."""
    max_perplexity_ratio: PositiveNumber = 2.0
    """The reported code setting is the sweep's highest classifier on-topic rate among the
    settings whose perplexity stays under this multiple of the unsteered one."""
    vector_documents: PositiveInt = 200
    """Documents per side (concept, contrast) that steering vectors are averaged over."""
    batch_size: PositiveInt = 8
    """Sequences per forward pass."""
    device: Device = "auto"
    """Where to run the model (auto: a GPU when there is one)."""
    progress: bool = True
    """Show a progress bar."""

    @property
    def sweep(self) -> GenerationSettings:
        """How the sweep generates: as reported conditions, from other seeds."""
        return self.generation.replace(
            samples=self.selection_samples or self.generation.samples,
            seed=self.generation.seed + 1 if self.selection_seed is None else self.selection_seed,
        )

    @model_validator(mode="after")
    def _sweep_seeds_differ(self) -> Self:
        if self.selection_seed == self.generation.seed:
            raise CodebookError(
                "selection_seed equals generation.seed: the sweep the reported settings are "
                "chosen on needs other seeds than the reported generations"
            )
        return self

    def content(self) -> dict[str, Any]:
        """The settings that decide the generations (a continued evaluation must match)."""
        return self.model_dump(mode="json", exclude=set(RESUME_FREE))


_FLAT_GENERATION = tuple(GenerationSettings.model_fields)
_FLAT_RULE = ("sites", "per_group", "max_codes", "min_support", "min_precision", "rank")


def nested_content(saved: dict[str, Any]) -> dict[str, Any]:
    """:meth:`SteeringEvalConfig.content` as an earlier version saved it (generation and rule
    settings side by side with the others) in today's form; today's form as it is."""
    if "generation" in saved or "rule" in saved:
        return saved
    rest = {k: v for k, v in saved.items() if k not in (*_FLAT_GENERATION, *_FLAT_RULE)}
    rule = {k: saved[k] for k in _FLAT_RULE if k in saved}
    rule["sites"] = rule.get("sites") or None  # an empty list meant every site
    rule["smoothing"] = SelectionRule().smoothing  # not used by store concepts, not saved
    generation = {k: saved[k] for k in _FLAT_GENERATION if k in saved}
    return rest | {"rule": rule, "generation": generation}


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
