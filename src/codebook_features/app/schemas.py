"""The HTTP API's request and response bodies, kept apart from what computes them: the OpenAPI
description is generated from these, and the pages render the same objects."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from codebook_features.steering.config import GenerationSettings


class Strict(BaseModel):
    """Request bodies refuse unknown keys, so a misspelt option is not silently ignored."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------- overview
class SiteOut(BaseModel):
    name: str
    groups: int
    k: int
    num_codes: int


class RunOut(BaseModel):
    name: str
    """The run directory's name."""
    summary: dict[str, Any] | None
    """The run's final metrics (its ``summary.json``)."""
    last_metrics: dict[str, Any] | None
    """The last validation row of its metrics."""
    plots: list[str]
    """Plot names, served at ``/api/plots/{name}``."""


class OverviewOut(BaseModel):
    store: str
    model: str | None
    """The model the store was recorded with."""
    model_type: str | None
    model_loaded: bool
    """Whether the app has the model (similar codes, logit effects, concepts, steering)."""
    documents: int
    tokens: int
    sites: list[SiteOut]
    label_fields: list[str]
    run: RunOut | None
    limits: dict[str, float | int]


# ---------------------------------------------------------------------- codes
class ExampleOut(BaseModel):
    document: int
    position: int
    token: str
    before: str
    after: str
    url: str
    """The document's page, at this token."""
    marks: list[list[int]] = Field(default_factory=list)
    """On code pages: ``(start, end)`` in ``before + token + after`` of every token shown where
    the code fires."""


class ScoredCode(BaseModel):
    code: str
    url: str
    """The code's page."""
    precision: float
    recall: float
    f1: float
    support: int
    """Tokens it fires on."""
    hits: int
    """Of those, tokens that match."""
    examples: list[ExampleOut]


class RegexOut(BaseModel):
    pattern: str
    tokens: int
    """Tokens that match the pattern."""
    sort: str
    codes: list[ScoredCode]


class TokenCountOut(BaseModel):
    text: str
    count: int
    share: float
    """Of the code's firings."""
    of_token: float
    """Of the token's occurrences in the store, the share the code fires on."""


class LabelShareOut(BaseModel):
    field: str
    label: str
    count: int
    share: float
    """Of the code's firings."""
    base: float
    """Of all tokens in the store."""
    lift: float
    """``share / base``."""


class PositionBinOut(BaseModel):
    start: int
    stop: int | None
    """Exclusive; null: to the end of the document."""
    count: int
    share: float
    base: float


class RelatedCode(BaseModel):
    code: str
    url: str
    count: int
    """Tokens fired on together with the page's code."""
    share: float
    """Share of the page's code's tokens."""


class SimilarCode(BaseModel):
    code: str
    url: str
    cosine: float | None
    """Cosine similarity of the two code vectors (null when not finite)."""


class TokenValue(BaseModel):
    token: str
    value: float | None
    """The logit change (null when not finite)."""


class LogitEffectOut(BaseModel):
    up: list[TokenValue]
    down: list[TokenValue]


class DescriptionOut(BaseModel):
    """A code's automatic description and how well it predicts the code's firings on held-out
    documents (null scores: nothing to score)."""

    code: str
    url: str
    kind: str
    """token, word, after or pair; empty: no description (see ``fit_support``)."""
    terms: list[str]
    text: str
    precision: float | None
    recall: float | None
    f1: float | None
    support: int
    """Held-out tokens the code fires on."""
    fit_support: int
    """Tokens it fires on in the documents the description was found on (0: none)."""


class DescriptionsOut(BaseModel):
    query: str | None
    codes: list[DescriptionOut]


class CodePageOut(BaseModel):
    code: str
    url: str
    site: str
    group: int
    id: int
    frequency: int
    share: float
    documents: int
    per_document: float
    """Mean firings per document it fires in."""
    most_in_a_document: int
    top_tokens: list[TokenCountOut]
    examples: list[ExampleOut]
    offset: int
    """The first context in ``examples``, of ``frequency``."""
    positions: list[PositionBinOut]
    labels: list[LabelShareOut]
    description: DescriptionOut | None
    cooccurring: list[RelatedCode]
    similar: list[SimilarCode] | None
    logit_effect: LogitEffectOut | None
    notes: list[str]


class DocumentRef(BaseModel):
    document: int
    url: str
    snippet: str
    label: str | None = None


class TopicCodeOut(BaseModel):
    code: str
    url: str
    documents: int
    mean_share: float
    label: str | None
    precision: float | None
    recall: float | None
    lift: float | None
    """``precision`` over the label's share of all documents."""
    examples: list[DocumentRef]


TopicSortIn = Literal["documents", "precision", "lift", "f1"]


class TopicsOut(BaseModel):
    label_field: str | None
    label: str | None
    labels: list[str]
    """The values of ``label_field``."""
    sort: TopicSortIn
    codes: list[TopicCodeOut]
    everywhere: list[TopicCodeOut]
    """Codes covering more than the ``everywhere`` share of all documents, kept apart."""


class DocumentOut(BaseModel):
    document: int
    text: str
    tokens: int
    fields: dict[str, str]
    """Its label and metadata columns."""
    spans: list[list[int]]
    """Each token's ``(start, end)`` in ``text``, by position."""


class DocumentTokenOut(BaseModel):
    document: int
    position: int
    token: int
    text: str
    codes: dict[str, list[list[int]]]
    """Site -> per group, the ids of its slots (``-1``: empty), as recorded."""


# ---------------------------------------------------------------------- concepts
Mode = Literal["least", "all", "add"]
PositionsIn = Literal["new", "all"]


class ConceptSummary(BaseModel):
    name: str
    url: str
    description: str
    codes: int
    first_codes: list[str]
    method: str | None


class ConceptsOut(BaseModel):
    concepts: list[ConceptSummary]
    writable: bool
    """Whether concepts can be saved here (it needs the model)."""
    problems: list[str]
    """Concept files that could not be read, and why."""


class ConceptOut(BaseModel):
    name: str
    url: str
    description: str
    codes: list[str]
    scores: list[dict[str, Any]]
    mode: str
    positions: Any
    selection: dict[str, Any]
    fingerprint: str
    """The fingerprint of the codebooks it was made for."""
    fits_model: bool | None
    """Whether it was made for the loaded model (None: no model loaded)."""


class ConceptIn(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
    codes: list[str] = Field(min_length=1, max_length=1000)
    description: str = Field(default="", max_length=10_000)
    mode: Mode = "all"
    positions: PositionsIn = "new"


class ConceptEdit(Strict):
    codes: list[str] | None = Field(default=None, min_length=1, max_length=1000)
    description: str | None = Field(default=None, max_length=10_000)
    mode: Mode | None = None
    positions: PositionsIn | None = None


class CodesIn(Strict):
    codes: list[str] = Field(min_length=1, max_length=1000)
    description: str = Field(default="", max_length=10_000)
    mode: Mode | None = None
    """How the concept is forced (a new one: ``all`` unless given; an existing one changes to
    it): ``all`` and ``least`` put a head's codes in its k slots, so a head takes at most k
    codes; ``add`` adds slots and takes any number."""


class Deleted(BaseModel):
    deleted: str


# ---------------------------------------------------------------------- steering
class SteerIn(Strict):
    prompt: str = Field(min_length=1, max_length=4000)
    concept: str | None = Field(default=None, max_length=100)
    """A saved concept's name."""
    codes: list[str] = Field(default_factory=list, max_length=100)
    """Codes to force, as ``SITE/GROUP/ID``."""
    top: int | None = Field(default=None, ge=1, le=1000)
    """Force only the concept's first N codes."""
    mode: Mode | None = None
    positions: PositionsIn | None = None
    generation: GenerationSettings | None = None
    """How to generate (default: the library's settings, with at most the server's
    ``max_new_tokens``)."""


class SampleOut(BaseModel):
    seed: int
    unsteered: str
    steered: str


class SteerOut(BaseModel):
    prompt: str
    steering: list[str]
    """What was forced, one line per intervention."""
    samples: list[SampleOut]
    stopped_early: bool
    """Whether the time limit cut a continuation short."""
    seconds: float


# ---------------------------------------------------------------------- your own text
MAX_TEXT = 4000
"""Characters of a text the app runs the model on."""


class TextIn(Strict):
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    sites: str = Field(default="", max_length=1000)
    """Sites by name, kind or glob, comma separated (default: every site)."""


class TokenCodesOut(BaseModel):
    position: int
    token: int
    text: str
    """Its characters in the text."""
    start: int
    end: int
    codes: dict[str, list[list[int]]]
    """Site -> per group, the ids of its slots (``-1``: empty)."""


class TextOut(BaseModel):
    text: str
    sites: list[str]
    tokens: list[TokenCodesOut]


class NextIn(Strict):
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    force: list[str] = Field(default_factory=list, max_length=100)
    """Codes to force, as ``SITE/GROUP/ID``."""
    ablate: list[str] = Field(default_factory=list, max_length=100)
    """Codes to remove, as ``SITE/GROUP/ID``."""
    position: int | None = Field(default=None, ge=0, le=1_000_000)
    """The token where the codes are forced or removed (default: the last)."""
    mode: Mode = "all"
    """Which slots a forced code takes (``least``: the least similar one, ``all``: every slot of
    its group, ``add``: one more slot)."""


class NextTokenOut(BaseModel):
    token: int
    text: str
    probability: float


class NextOut(BaseModel):
    plain: list[NextTokenOut]
    """The most likely next tokens after the text."""
    changed: list[NextTokenOut] | None
    """The same with the codes forced or removed (none without codes)."""


class ErrorOut(BaseModel):
    detail: str
