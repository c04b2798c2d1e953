"""The settings steering shares between its commands, declared once: how to generate
(:class:`GenerationSettings`) and which ranked codes a concept keeps (:class:`SelectionRule`).

``codebook steer``, ``codebook concept new`` and ``codebook evaluate-steering`` nest them
(``--generation.samples``, ``--rule.max_codes``). Kept apart from generation and selection so
that reading settings imports neither torch nor numpy.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field

from codebook_features.errors import CodebookError
from codebook_features.search.scores import Rank
from codebook_features.settings.base import (
    Fraction,
    NonNegativeInt,
    NonNegativeNumber,
    Number,
    PositiveInt,
    PositiveNumber,
    Settings,
    Text,
)

Ranked = list[tuple[Any, dict[str, Any]]]
"""Candidate codes (:class:`~codebook_features.attach.code_ref.CodeRef`), best first, with
their scores."""


class GenerationSettings(Settings):
    """How continuations are generated."""

    model_config = ConfigDict(frozen=True)

    max_new_tokens: PositiveInt = 60
    """Tokens to generate after the prompt (fewer when the EOS token comes first)."""
    temperature: NonNegativeNumber = 1.0
    """Sampling temperature; 0 means greedy decoding."""
    top_k: NonNegativeInt = 0
    """Sample only among the k most likely tokens (0: no limit)."""
    top_p: Annotated[Number, Field(gt=0, le=1)] = 1.0
    """Sample only among the most likely tokens that together have this probability."""
    samples: PositiveInt = 1
    """Continuations per prompt (the unsteered and the steered one of a sample share its
    seed)."""
    seed: NonNegativeInt = 0
    """Seed from which every sample's own seed is derived; the same seed gives the same texts."""

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _some_sites(sites: tuple[str, ...]) -> tuple[str, ...]:
    if not sites:
        raise CodebookError("an empty list: name at least one site, or none for every site")
    return sites


Sites = Annotated[tuple[Text, ...], AfterValidator(_some_sites)]
"""Sites by name, kind or glob: at least one."""


class SelectionRule(Settings):
    """Which of the ranked codes a concept keeps."""

    model_config = ConfigDict(frozen=True)

    sites: Sites | None = None
    """Sites by name, kind or glob (``attn_heads``, ``layers.1.*``); none: every site."""
    per_group: PositiveInt = 1
    """At most this many codes per (site, group): the best code of each of several heads is
    what steers in practice, and modes ``least``/``all`` fit at most k codes in a group."""
    max_codes: PositiveInt = 16
    """At most this many codes in all: on the language demo, forcing one code in each of 16
    heads moves most topics, where 8 codes move only the most distinctive ones."""
    min_precision: Fraction = 0.0
    """Leave out less precise codes (texts: share of a code's firings in the examples)."""
    min_support: PositiveInt = 5
    """Leave out codes that fire on fewer tokens (texts: fewer tokens of the examples)."""
    rank: Rank = "f1"
    """Concepts of a store's tokens (a regex, a label's tokens) are ranked by ``f1`` by
    default: codes that fire on much of the feature and little else; ``precision`` favours
    codes that mean only the feature, often rare ones. Concepts of texts (examples, or a
    label's documents) are always ranked by log-odds, which steered the most topics on the
    language demo (``codebook lm methods``)."""
    smoothing: PositiveNumber = 1.0
    """Text concepts: alpha, added to every code's count in the log-odds."""

    def choose(self, ranked: Ranked) -> Ranked:
        """The best codes within ``per_group`` and ``max_codes``."""
        kept: Ranked = []
        per: Counter[tuple[str, int]] = Counter()
        for ref, score in ranked:
            if per[(ref.site, ref.group)] < self.per_group:
                per[(ref.site, ref.group)] += 1
                kept.append((ref, score))
                if len(kept) == self.max_codes:
                    break
        return kept
