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
    seeds: Literal["selection", "fresh"] = "selection"
    """``selection``: the sweep that settings are chosen on; ``fresh``: the reported
    conditions, generated again from other seeds."""

    @property
    def strength(self) -> str:
        """The condition in a few words, for tables and plots."""
        if self.method == "none":
            return "unsteered"
        if self.method == "codes":
            return f"{self.codes} code(s), {self.mode}, {self.positions}"
        return f"alpha {self.alpha:g}, {self.positions}"


GOAL = {"from_at_most": 0.2, "to_at_least": 0.6}
"""What counts as a topic moved (the language demo's goal): unsteered on-topic at most 20%,
steered at least 60% by the classifier, their intervals apart, on fresh generations, at a
perplexity under ``max_perplexity_ratio`` times the unsteered one."""


class Reported(Record):
    """One reported condition of a topic, for scripts: rates, intervals and perplexity."""

    model_config = ConfigDict(frozen=True)

    classifier: float
    classifier_ci: list[float]
    regex: float | None
    regex_ci: list[float] | None
    perplexity: Measured
    settings: dict[str, Any] = Field(default_factory=dict)
    """The condition: method, and codes/mode/positions or alpha."""

    def on_topic(self, measure: Literal["classifier", "regex"]) -> str:
        """The rate by ``measure`` with its interval, for tables (``-`` without a regex)."""
        rate, ci = getattr(self, measure), getattr(self, f"{measure}_ci")
        return "-" if rate is None or ci is None else f"{rate:.0%} [{ci[0]:.0%}, {ci[1]:.0%}]"

    @property
    def setting(self) -> str:
        """The condition in a few words, for tables."""
        s = self.settings
        if s["method"] == "codes":
            return f"{s['codes']} code(s), {s['mode']}, {s['positions']}"
        if s["method"] == "actadd":
            return f"alpha {s['alpha']:g}"
        return "unsteered"

    @classmethod
    def of(cls, row: ConditionResult) -> Reported:
        settings = {"method": row.method}
        if row.method == "codes":
            settings |= {"codes": row.codes, "mode": row.mode, "positions": row.positions}
        elif row.method == "actadd":
            settings |= {"alpha": row.alpha, "positions": row.positions}
        return cls(
            classifier=row.classifier.rate,
            classifier_ci=[row.classifier.low, row.classifier.high],
            regex=None if row.regex is None else row.regex.rate,
            regex_ci=None if row.regex is None else [row.regex.low, row.regex.high],
            perplexity=row.perplexity,
            settings=settings,
        )


class TopicResult(Record):
    """A topic's reported conditions on fresh generations: unsteered, the code setting chosen
    on the sweep, and activation addition at the perplexity closest to it."""

    model_config = ConfigDict(frozen=True)

    unsteered: Reported
    steered: Reported | None
    """None when no code setting changed the sweep's texts."""
    activation_addition: Reported | None
    """None when no alpha changed the sweep's texts."""
    within_perplexity: bool
    """Whether the chosen code setting kept the sweep's perplexity under the limit (if none
    did, the least perplexing one is reported)."""
    moved: bool
    """Whether the codes met the goal (:data:`GOAL`) on the fresh generations."""
    why_not: list[str] = Field(default_factory=list)
    """When not moved: each part of the goal missed, with its numbers (empty in results of
    earlier versions)."""

    @property
    def verdict(self) -> str:
        """``yes``, or ``no`` with the reasons, for tables."""
        if self.moved:
            return "yes"
        return "no: " + "; ".join(self.why_not) if self.why_not else "no"


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
    topics: dict[str, TopicResult] = Field(default_factory=dict)
    """Per concept, the reported conditions (empty in reports of earlier versions)."""

    def rows_of(
        self, concept: str, method: str | None = None, seeds: str = "selection"
    ) -> list[ConditionResult]:
        """A concept's rows of the sweep (or of the ``fresh`` reported conditions)."""
        return [
            r
            for r in self.rows
            if r.concept == concept and method in (None, r.method) and r.seeds == seeds
        ]
