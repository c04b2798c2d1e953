"""What the ``codebook search`` queries take: one settings type per query. Kept apart from the
searches so that reading them (``codebook search regex --help``) imports neither torch nor
numpy."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator
from typing_extensions import Self

from codebook_features.errors import CodebookError
from codebook_features.search.scores import Rank
from codebook_features.settings.base import (
    Fraction,
    Int,
    NonNegativeInt,
    Number,
    PositiveInt,
    PositiveNumber,
    Settings,
    Text,
)


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("should hold more than spaces")
    return text


Share = Annotated[Number, Field(gt=0, le=1)]
"""A share above 0, at most 1."""


class Ranking(Settings):
    """How codes are ranked and filtered (shared by the queries that score codes)."""

    store: Text
    """The code store directory (written by ``codebook record``)."""
    sites: list[str] = Field(default_factory=list)
    """Sites by name, kind or glob, e.g. ``layers.*.mlp`` (default: every recorded site)."""
    sort: Rank = "f1"
    """Rank codes by F1, precision or recall."""
    min_precision: Fraction = 0.0
    """Leave out codes less precise than this."""
    min_recall: Fraction = 0.0
    """Leave out codes with less recall than this."""
    min_support: PositiveInt = 1
    """Leave out codes that fire on fewer tokens than this."""
    top: PositiveInt = 20
    """How many codes to show."""
    examples: NonNegativeInt = 3
    """Example tokens per code (from different documents)."""

    def options(self) -> dict[str, Any]:
        """The ranking options, as the searches take them."""
        return self.model_dump(include=set(Ranking.model_fields) - {"store", "sites"})


class RegexSearch(Ranking):
    """Which codes stand for the tokens a regular expression matches."""

    pattern: Text
    """A Python regular expression; with a capture group, only the group's tokens count."""


class TokenSearch(Ranking):
    """Which codes fire on a token."""

    token: Annotated[str, AfterValidator(_not_blank)]
    """The token's text (matched with surrounding spaces stripped, unless ``exact``)."""
    exact: bool = False
    """Match the token's text exactly, spaces included."""


class TextQuery(Settings):
    """Which codes a model chooses on a text of your own, token by token."""

    model: Text
    """A saved codebook model: a local directory (e.g. a run's ``final/``) or a hub name."""
    text: Annotated[str, AfterValidator(_not_blank)]
    """The text to run the model on (no special tokens are added)."""
    sites: list[str] = Field(default_factory=list)
    """Sites by name, kind or glob, e.g. ``layers.*.mlp`` (default: every site)."""


class TopicSearch(Settings):
    """Codes that fire across a large share of whole documents."""

    store: Text
    """The code store directory (written by ``codebook record``)."""
    sites: list[str] = Field(default_factory=list)
    """Sites by name, kind or glob (default: every recorded site)."""
    min_share: Share = 0.5
    """A code covers a document when it fires on at least this share of its tokens."""
    min_documents: PositiveInt = 2
    """Leave out codes covering fewer documents."""
    label_field: str | None = None
    """A label column of the documents: report each code's best label (precision, recall)."""
    label: str | None = None
    """Rank by how well codes single out this label (needs ``label_field``)."""
    sort: Literal["documents", "precision", "lift", "f1"] | None = None
    """Rank by documents covered, or by precision, lift (precision over the label's base rate)
    or F1 for the label (needs ``label_field``; default: precision with a label, else
    documents)."""
    everywhere: Share = 0.5
    """Codes covering more than this share of all documents are listed apart (1: none)."""
    top: PositiveInt = 20
    """How many codes to show."""

    @model_validator(mode="after")
    def _label_has_a_column(self) -> Self:
        if self.label_field is None and (
            self.label is not None or self.sort not in (None, "documents")
        ):
            what = "label" if self.label is not None else f"sort {self.sort}"
            raise CodebookError(
                f"{what} needs label_field: give the documents' label column (label_field)"
            )
        return self


class DescribeSearch(Settings):
    """Codes by their automatic descriptions (tokens, words, token shapes, previous tokens or
    token pairs found when the store was indexed), best held-out F1 first."""

    store: Text
    """The code store directory (written by ``codebook record``)."""
    query: str | None = None
    """Words to find in the descriptions, e.g. ``ship`` (each must match a term: equal, or
    one starting with the other when the shorter has 3 characters or more); without it, the
    best-described codes."""
    sites: list[str] = Field(default_factory=list)
    """Sites by name, kind or glob (default: every recorded site)."""
    min_f1: Fraction = 0.0
    """Leave out codes whose description scores a lower F1 on held-out documents."""
    top: PositiveInt = 20
    """How many codes to show."""


class CodePageQuery(Settings):
    """Everything about one code."""

    store: Text
    """The code store directory (written by ``codebook record``)."""
    code: Text
    """The code, as ``SITE/GROUP/ID`` (e.g. ``layers.3.attn_heads/2/417``)."""
    model: str | None = None
    """The saved codebook model (adds similar codes and the direct logit effect)."""
    top: PositiveInt = 10
    """How many tokens, codes and logits to list."""
    examples: NonNegativeInt = 8
    """How many contexts to show (one per document first)."""
    offset: NonNegativeInt = 0
    """Skip this many contexts (to page through them all)."""


class BaselinesSearch(Settings):
    """Codes vs the best single neuron vs the best TopK SAE latent, at the code's recall."""

    store: Text
    """The code store directory, recorded with ``--activation_sites`` for ``site``."""
    site: Text
    """The site whose codes, activations and SAE are compared, e.g. ``layers.3.mlp``."""
    patterns: Annotated[list[Text], Field(min_length=1)]
    """Regular expressions, one feature each (a capture group: only its tokens count)."""
    sae_steps: NonNegativeInt = 300
    """Adam steps of the SAE's training."""
    max_tokens: Annotated[Int, Field(ge=2)] = 100_000
    """Score (and train the SAE on) at most this many rows with activations (a seeded sample)."""
    seed: NonNegativeInt = 0
    """Seed of the sample and of the SAE."""


class SAEConfig(Settings):
    """How a TopK SAE is trained (:func:`~codebook_features.search.sae.train_sae`)."""

    latents: PositiveInt
    """Number of latents (the baselines use as many as the site has codes)."""
    k: PositiveInt
    """Latents kept per token (the baselines use the site's ``groups * k``)."""
    steps: NonNegativeInt = 300
    """Adam steps."""
    batch_size: PositiveInt = 1024
    """Rows per step (at most the rows there are)."""
    lr: PositiveNumber = 1e-3
    """Adam's learning rate."""
    seed: Int = 0
    """Seeds the initialization and the batches."""

    @model_validator(mode="after")
    def _k_fits(self) -> Self:
        if self.k > self.latents:
            raise CodebookError(
                f"a TopK SAE needs 1 <= k <= latents, got k={self.k}, {self.latents}: choose "
                "k <= latents"
            )
        return self
