"""What the steering evaluation measures, as typed records (``steering.json``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from codebook_features.steering.metrics import Rate


@dataclass(frozen=True)
class ConditionResult:
    """One concept under one condition: how often on topic, and how fluent."""

    concept: str
    method: str
    """``none`` (unsteered), ``codes`` (the concept's codes forced) or ``actadd``."""
    codes: int | None
    """Codes forced (the concept's best first)."""
    mode: str | None
    """Slots the codes were forced into (least, all, add)."""
    positions: str | None
    """Tokens steered (all, new)."""
    alpha: float | None
    """Activation-addition scale."""
    regex: Rate | None
    """Generations matching the concept's regex (none without a regex)."""
    classifier: Rate
    """Generations the topic classifier labels as the concept."""
    perplexity: float
    """Of the generated tokens under the unsteered model."""
    distinct_1: float
    distinct_2: float
    samples: int
    examples: list[str] = field(default_factory=list)

    @property
    def strength(self) -> str:
        """The condition in a few words, for tables and plots."""
        if self.method == "none":
            return "unsteered"
        if self.method == "codes":
            return f"{self.codes} code(s), {self.mode}, {self.positions}"
        return f"alpha {self.alpha:g}, {self.positions}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "concept": self.concept,
            "method": self.method,
            "codes": self.codes,
            "mode": self.mode,
            "positions": self.positions,
            "alpha": self.alpha,
            "regex": None if self.regex is None else self.regex.to_dict(),
            "classifier": self.classifier.to_dict(),
            "perplexity": _finite(self.perplexity),
            "distinct_1": _finite(self.distinct_1),
            "distinct_2": _finite(self.distinct_2),
            "samples": self.samples,
            "examples": list(self.examples),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConditionResult:
        values = dict(data)
        values["regex"] = None if data.get("regex") is None else Rate.from_dict(data["regex"])
        values["classifier"] = Rate.from_dict(data["classifier"])
        for name in ("perplexity", "distinct_1", "distinct_2"):
            values[name] = math.nan if data.get(name) is None else float(data[name])
        return cls(**values)


@dataclass(frozen=True)
class SteeringReport:
    """The whole evaluation: settings, the classifier's quality, the concepts and every row."""

    model: str
    store: str
    settings: dict[str, Any]
    classifier: dict[str, Any]
    """Accuracy and per-label precision/recall on the selection half (which it never saw)."""
    concepts: dict[str, dict[str, Any]]
    """Label -> the concept as saved (codes, scores, selection rule)."""
    rows: list[ConditionResult]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "store": self.store,
            "settings": self.settings,
            "classifier": self.classifier,
            "concepts": self.concepts,
            "rows": [row.to_dict() for row in self.rows],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SteeringReport:
        return cls(**{**data, "rows": [ConditionResult.from_dict(r) for r in data["rows"]]})

    def rows_of(self, concept: str, method: str | None = None) -> list[ConditionResult]:
        return [r for r in self.rows if r.concept == concept and method in (None, r.method)]


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)
