"""What the steering evaluation measures, as typed records (``steering.json``)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, PlainSerializer

from codebook_features.settings.base import NonNegativeInt, PositiveInt, Record
from codebook_features.steering.classifier import ClassifierReport
from codebook_features.steering.metrics import Measure, Rate


def _finite(value: float) -> float | None:
    return None if not math.isfinite(value) else round(float(value), 6)


Measured = Annotated[Measure, PlainSerializer(_finite)]
"""A measurement, saved rounded to 6 digits, and as null when it is nan or inf (neither is
JSON); read back as nan."""


class ConditionResult(Record):
    """One concept under one condition: how often on topic, and how fluent."""

    model_config = ConfigDict(frozen=True)

    concept: str
    method: Literal["none", "codes", "actadd"]
    """``none`` (unsteered), ``codes`` (the concept's codes forced) or ``actadd``."""
    codes: PositiveInt | None
    """Codes forced (the concept's best first)."""
    mode: Literal["least", "all", "add"] | None
    """Slots the codes were forced into (least, all, add)."""
    positions: Literal["all", "new"] | None
    """Tokens steered (all, new)."""
    alpha: float | None
    """Activation-addition scale."""
    regex: Rate | None
    """Generations matching the concept's regex (none without a regex)."""
    classifier: Rate
    """Generations the topic classifier labels as the concept."""
    perplexity: Measured
    """Of the generated tokens under the unsteered model."""
    distinct_1: Measured
    distinct_2: Measured
    samples: NonNegativeInt
    examples: list[str] = Field(default_factory=list)

    @property
    def strength(self) -> str:
        """The condition in a few words, for tables and plots."""
        if self.method == "none":
            return "unsteered"
        if self.method == "codes":
            return f"{self.codes} code(s), {self.mode}, {self.positions}"
        return f"alpha {self.alpha:g}, {self.positions}"


class SteeringReport(Record):
    """The whole evaluation: settings, the classifier's quality, the concepts and every row."""

    model_config = ConfigDict(frozen=True)

    model: str
    store: str
    settings: dict[str, Any]
    """The settings that decided the generations (:meth:`SteeringEvalConfig.content`)."""
    classifier: ClassifierReport
    """Accuracy and per-label precision/recall on the selection half (which it never saw)."""
    concepts: dict[str, dict[str, Any]]
    """Label -> the concept as saved (codes, scores, selection rule), and ``held_out``."""
    rows: list[ConditionResult]

    def rows_of(self, concept: str, method: str | None = None) -> list[ConditionResult]:
        return [r for r in self.rows if r.concept == concept and method in (None, r.method)]
