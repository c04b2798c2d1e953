"""One F1 for every ranking of codes (and neurons, and latents) as classifiers of a feature."""

from __future__ import annotations

from typing import Any, Literal

Rank = Literal["f1", "precision", "recall"]
"""How codes are ranked as classifiers of a feature: by F1, precision or recall."""


def f1(precision: Any, recall: Any) -> Any:
    """The harmonic mean of precision and recall, 0 where both are 0; for numbers, NumPy
    arrays and torch tensors alike."""
    total = precision + recall
    if isinstance(total, (int, float)):
        return 2 * precision * recall / total if total else 0.0
    return 2 * precision * recall / (total + (total == 0))
