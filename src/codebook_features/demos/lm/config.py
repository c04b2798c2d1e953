"""The language demo's settings, each declared once: its corpus (``codebook lm data``), the
sizes of every stage (:class:`LmPreset`) and the demo command (``codebook lm demo``)."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import Field, model_validator
from typing_extensions import Self

from codebook_features.demos.runner import Variant
from codebook_features.errors import CodebookError
from codebook_features.settings.base import (
    NonNegativeInt,
    OpenFraction,
    PositiveInt,
    PositiveNumber,
    Settings,
)
from codebook_features.settings.options import POSITIONAL
from codebook_features.steering.config import GenerationSettings, SelectionRule

SourceName = Literal["brown", "bible", "shakespeare", "austen"]
"""The corpus's sources (see ``corpus_sources.SOURCES``)."""
SOURCE_NAMES: tuple[str, ...] = get_args(SourceName)

GPT_NEOX_1x256 = {
    "model_type": "gpt_neox",
    "hidden_size": 256,
    "num_hidden_layers": 1,
    "num_attention_heads": 16,
    "intermediate_size": 1024,
    "max_position_embeddings": 256,
}
"""The base model: the shape of the paper's steering model, one layer of 16 heads, at width 256
(2.9M parameters with 4,096 tokens). Against 4 layers of 8 heads trained for the same half hour,
it writes more fluent text and its codes steer more topics (README)."""


class LmCorpusConfig(Settings):
    """Which sources, and how they become the demo's training and validation documents."""

    output_dir: str = Field(json_schema_extra=POSITIONAL)
    """The corpus directory (train.jsonl, validation.jsonl, LICENSES.md, corpus.json)."""
    sources: list[SourceName] = Field(default_factory=lambda: list(SOURCE_NAMES), min_length=1)
    """Sources to include: brown (15 genre labels), bible, shakespeare, austen."""
    seed: NonNegativeInt = 0
    """Seed of the split and of the per-label sample: the same seed gives the same files."""
    validation_fraction: OpenFraction = 0.1
    """Share of each label's source documents (Brown files, chapters, scenes) held out for
    validation; at least one per label."""
    max_words_per_document: PositiveInt | None = 500
    """Cut source documents into pieces of at most this many words, between paragraphs;
    none: keep them whole (a Brown file is about 2,000 words, a chapter 300 to 6,000)."""
    max_documents_per_label: int | None = Field(200, ge=2)
    """Keep at most this many documents (pieces) per label, shared between the splits by
    validation_fraction, so that no style dominates; none: keep all."""
    cache_dir: str = ""
    """Where downloads are kept and reused (default: ~/.cache/codebook-features/lm, or under
    $XDG_CACHE_HOME)."""
    overwrite: bool = False
    """Replace a corpus of ours in ``output_dir`` that was built with other settings."""

    @model_validator(mode="after")
    def _each_source_once(self) -> Self:
        if len(set(self.sources)) != len(self.sources):
            raise CodebookError(f"sources names a source twice: {' '.join(self.sources)}")
        return self


class LmPreset(Settings):
    """Sizes of every stage; ``default`` fits 30 minutes on two CPU cores."""

    vocab_size: PositiveInt = 4096
    model: dict[str, Any] = Field(default_factory=lambda: dict(GPT_NEOX_1x256))
    block_size: PositiveInt = 128
    batch_size: PositiveInt = 16
    base_steps: PositiveInt = 4000
    base_lr: PositiveNumber = 3e-3
    variant_steps: PositiveInt = 500
    variant_lr: PositiveNumber = 1e-3
    variants: list[Variant] = Field(
        default_factory=lambda: [
            Variant(name="finetune"),
            Variant(name="attention codebooks", sites=["attn_heads"], k=8, num_codes=1024),
            Variant(name="MLP codebooks", sites=["mlp"], k=8, num_codes=1024, groups=8),
        ]
    )
    steered: str = "attention codebooks"
    """The variant whose codes are recorded, searched and steered."""
    activation_site: str = "layers.0.attn_heads"
    """Site whose activations are kept for the neuron and SAE baselines."""
    activation_tokens: PositiveInt = 50_000
    regexes: list[str] = Field(
        default_factory=lambda: [r"\bthe\b", r"\b(he|she)\b", r"ing\b", r"\d+", r"[.!?]"]
    )
    """Regex features of the codes-vs-neurons-vs-SAE table."""
    topics: dict[str, str] | None = None
    """Steered topics (labels of the corpus) and their on-topic regexes; none: chosen by the
    rule of ``topic_count`` and ``topic_words`` before anything is generated."""
    topic_count: PositiveInt = 6
    """Steer this many labels: those the topic classifier (trained on the training split)
    recognises best, by F1 on windows of ``classifier_window`` words of the validation
    documents."""
    topic_words: PositiveInt = 6
    """Each chosen topic's regex (the paper's on-topic measure): this many words at least 3x
    over-represented in the label's training documents, those found in most of them."""
    classifier_window: PositiveInt | None = 45
    """The judge learns from, and is checked on, windows of this many words of its texts,
    about the length of a generation (60 tokens); none: whole documents. A label whose
    validation windows it recognises badly cannot show steering, however well it works."""
    prompts: list[str] = Field(default_factory=lambda: ["The", "It was", "In the morning", "When"])
    """Openings that lean to no topic (unsteered, each label is rarely written): no label holds
    more than a quarter (and twice an even share) of the rates at which the labels' sentences
    start with their first word (``opening_leans``, in the report). "Then" fails that (the
    Bible holds 39%; "And" 54%)."""
    generation: GenerationSettings = Field(
        default_factory=lambda: GenerationSettings(max_new_tokens=60, samples=10, temperature=0.7)
    )
    """How the reported conditions generate (their seed is the demo's); temperature 0.7
    keeps the small model's text closer to its data than 1."""
    selection_samples: PositiveInt = 10
    """Samples per prompt of the sweep the reported settings are chosen on (other seeds)."""
    strengths: list[PositiveInt] = Field(default_factory=lambda: [4, 8, 12, 16])
    """Numbers of codes forced (best first, one per attention head: a quarter, half, three
    quarters and all of the 16 heads), in all slots at every token (the paper's "all codes"
    condition)."""
    modes: list[Literal["least", "all", "add"]] = Field(default_factory=lambda: ["all"])
    alphas: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0])
    """Activation addition's scales (at 8 its text is far past any code setting's
    perplexity, so it is never the matched one)."""
    generation_batch: PositiveInt = 16
    """Sequences per forward pass of the steering evaluation: all of a prompt's samples at
    once (the texts do not depend on it, each sample has its own seed)."""
    codes_from: Literal["texts", "tokens"] = "texts"
    """How a label's codes are chosen, one per attention head, on the store's documents (which
    the judge never saw). ``texts``: log-odds of firing on ``examples`` of the label's documents
    rather than on twice as many others, among codes that fire on them at least
    ``rule.min_support`` times (``concept_from_label_texts``): the way that moved the most
    topics in ``codebook lm methods`` (README). ``tokens``: codes ranked as classifiers of the
    label's tokens by ``rule.rank``."""
    examples: PositiveInt = 60
    """``codes_from`` texts: at most this many of the label's documents (seeded draw)."""
    rule: SelectionRule = Field(
        default_factory=lambda: SelectionRule(max_codes=32, rank="f1", min_support=20)
    )
    """Which ranked codes a concept keeps (the best one of each head, with at least
    ``min_support`` firings), and, for ``codes_from`` tokens, the rank: F1 favours codes that
    fire on much of the label's text and little else, precision often rare ones."""

    @model_validator(mode="before")
    @classmethod
    def _nested_settings_of_earlier_files(cls, data: Any) -> Any:
        """Results files written before generation settings and the selection rule were
        nested hold them beside the others: read them into ``generation`` and ``rule``."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for section, names in (
            ("generation", ("samples", "max_new_tokens")),
            ("rule", ("max_codes", "rank", "min_support")),
        ):
            flat = {name: data.pop(name) for name in names if name in data}
            if flat and section not in data:
                data[section] = flat
            elif flat:
                data |= flat  # both forms: the unknown flat keys are reported as such
        return data

    @model_validator(mode="after")
    def _variants_named_once(self) -> Self:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names) or "base" in names:
            raise CodebookError(f"preset: variant names must be distinct and not 'base': {names}")
        steered = [v for v in self.variants if v.name == self.steered]
        if not steered or not steered[0].sites:
            raise CodebookError(
                f"preset: steered must name a variant with codebooks, got {self.steered!r}"
            )
        return self

    @property
    def reference(self) -> str | None:
        """The plain finetune that codebook models are compared with (no codebooks)."""
        return next((v.name for v in self.variants if not v.sites), None)


PRESETS = {"default": LmPreset()}


class LmDemoSettings(Settings):
    """The whole language demo (about 30 minutes on two CPU cores)."""

    output_dir: str = "runs/demo-lm"
    """The demo's directory (new, or an earlier demo to continue)."""
    preset: Literal["default"] = "default"
    """Sizes of every stage."""
    seed: NonNegativeInt = 0
    """Seeds the corpus split, every model and the steering evaluation."""
    corpus: str | None = None
    """A corpus directory made by ``codebook lm data`` (default: fetch one)."""
